package rollout

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
)

const validHead = `apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata:
  name: checkout
spec:
  listen: 127.0.0.1:8080
  stable: {url: http://127.0.0.1:9101}
  canary: {url: http://127.0.0.1:9102}
`

// The seed's plan, exactly as the architecture note writes the contract.
const seedSpec = validHead + `  xds: {service: checkout}
  strategy:
    canary:
      steps:
        - setWeight: 1
        - pause: {duration: 10m}
        - setWeight: 5
        - pause: {duration: 20m}
        - setWeight: 25
        - pause: {duration: 30m}
        - setWeight: 50
        - pause: {duration: 30m}
        - setWeight: 100
  analysis:
    interval: 1s
    confidence: 0.95
    metrics:
      - {name: error_rate,  test: two-proportion-z, maxIncrease: 2%}
      - {name: latency_p50, test: mann-whitney-u,  maxRatio: 1.2}
      - {name: latency_p99, test: mann-whitney-u,  maxRatio: 1.5}
  rollbackTriggers:
    critical:
      - error_rate > 5%
      - p99_latency > 5000ms
    sustained:
      - {condition: error_rate > 2%, for: 5m}
`

func TestParseSeedSpec(t *testing.T) {
	specs, err := Parse("rollout.yaml", []byte(seedSpec))
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 1 {
		t.Fatalf("got %d specs, want 1", len(specs))
	}
	s := specs[0]
	var weights []int
	var pauses []time.Duration
	for _, st := range s.Strategy.Canary.Steps {
		if st.SetWeight != nil {
			weights = append(weights, *st.SetWeight)
		}
		if st.Pause != nil {
			pauses = append(pauses, st.Pause.Duration)
		}
	}
	if want := []int{1, 5, 25, 50, 100}; !slices.Equal(weights, want) {
		t.Errorf("weights = %v, want %v", weights, want)
	}
	if want := []time.Duration{10 * time.Minute, 20 * time.Minute, 30 * time.Minute, 30 * time.Minute}; !slices.Equal(pauses, want) {
		t.Errorf("pauses = %v, want %v", pauses, want)
	}
	if got := s.Analysis.Metrics[0]; got.Name != "error_rate" || got.MaxIncrease != 0.02 || got.Test != "two-proportion-z" {
		t.Errorf("metric 0 = %+v", got)
	}
	if got := s.RollbackTriggers.Critical[1]; got.Metric != "p99_latency" || got.Threshold() != 5000 {
		t.Errorf("critical[1] = %+v", got)
	}
	if got := s.RollbackTriggers.Sustained[0]; got.For != 5*time.Minute || got.Condition.Threshold() != 0.02 {
		t.Errorf("sustained[0] = %+v", got)
	}
	// Defaults were filled in.
	if s.ProgressDeadline != DefaultProgressDeadline || s.Match.PathPrefix != "/" {
		t.Errorf("defaults: progressDeadline=%v pathPrefix=%q", s.ProgressDeadline, s.Match.PathPrefix)
	}
	if s.File != "rollout.yaml" || s.Line != 1 {
		t.Errorf("location = %s:%d", s.File, s.Line)
	}
}

func TestDefaults(t *testing.T) {
	specs, err := Parse("r.yaml", []byte(validHead+`  strategy:
    canary:
      steps:
        - setWeight: 10
        - analysis: {}
  hooks:
    rollback:
      - exec: [kubectl, rollout, undo, deployment/app]
  webhooks:
    - {type: pre-rollout, url: http://127.0.0.1:7000/pre}
    - {type: confirm-promotion, url: http://127.0.0.1:7000/ok}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := specs[0]
	if s.Analysis.Interval != time.Second || s.Analysis.Confidence != 0.95 {
		t.Errorf("analysis defaults: %+v", s.Analysis)
	}
	var names []string
	for _, m := range s.Analysis.Metrics {
		names = append(names, m.Name+":"+m.Test)
	}
	if want := []string{"error_rate:sequential", "latency_p50:sequential", "latency_p99:sequential"}; !slices.Equal(names, want) {
		t.Errorf("default metrics = %v, want %v", names, want)
	}
	if d := s.Strategy.Canary.Steps[1].Analysis.Duration; d != DefaultAnalysisStep {
		t.Errorf("analysis step duration = %v", d)
	}
	if h := s.Hooks.Rollback[0]; h.Timeout != DefaultHookTimeout || h.Retries != DefaultHookRetries {
		t.Errorf("hook defaults: %+v", h)
	}
	if s.Webhooks[0].FailurePolicy != "fail" || s.Webhooks[1].FailurePolicy != "hold" {
		t.Errorf("webhook failure policies: %q %q", s.Webhooks[0].FailurePolicy, s.Webhooks[1].FailurePolicy)
	}
}

// TestValidation checks the exact file:line: field: message of each problem.
func TestValidation(t *testing.T) {
	steps := func(body string) string {
		return validHead + "  strategy:\n    canary:\n      steps:\n" + body
	}
	cases := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "weight out of range",
			yaml: steps("        - setWeight: 10\n        - pause: {}\n        - setWeight: 140\n"),
			want: []string{"rollout.yaml:14: spec.strategy.canary.steps[2].setWeight: 140 is not between 0 and 100"},
		},
		{
			name: "unknown field",
			yaml: steps("        - setWeight: 10\n        - pause: {duration: 10m, forever: true}\n"),
			want: []string{"rollout.yaml:13: spec.strategy.canary.steps[1].pause.forever: unknown field (known: duration)"},
		},
		{
			name: "two kinds in one step",
			yaml: steps("        - setWeight: 10\n          pause: {}\n"),
			want: []string{"rollout.yaml:12: spec.strategy.canary.steps[0]: a step has exactly one of setWeight, pause, analysis, smoke, setHeaderRoute, setMirror, approval; got pause and setWeight"},
		},
		{
			name: "bad duration",
			yaml: steps("        - setWeight: 10\n        - pause: {duration: 10 minutes}\n"),
			want: []string{`rollout.yaml:13: spec.strategy.canary.steps[1].pause.duration: "10 minutes" is not a duration (e.g. 30s, 10m, 1h30m)`},
		},
		{
			name: "empty step",
			yaml: steps("        - {}\n"),
			want: []string{"rollout.yaml:12: spec.strategy.canary.steps[0]: empty step: set one of setWeight, pause, analysis, smoke, setHeaderRoute, setMirror, approval"},
		},
		{
			name: "bad condition and test",
			yaml: steps("        - setWeight: 10\n") + `  analysis:
    metrics:
      - {name: latency_p99, test: two-proportion-z, maxRatio: 0.5}
      - {name: error_rate, maxIncrease: 20ms, maxRatio: 2}
      - {name: cpu}
  rollbackTriggers:
    critical: [error_rate > 5, memory_usage > 90%]
    sustained:
      - {condition: p95_latency > 2s}
`,
			want: []string{
				`rollout.yaml:15: spec.analysis.metrics[0].test: "two-proportion-z" cannot judge latency_p99; use one of sequential, mann-whitney-u`,
				"rollout.yaml:15: spec.analysis.metrics[0].maxRatio: 0.5 is below 1 (a ratio of canary to baseline)",
				"rollout.yaml:16: spec.analysis.metrics[1].maxIncrease: error_rate takes a percentage, e.g. 2%",
				"rollout.yaml:16: spec.analysis.metrics[1].maxRatio: error_rate is judged by its absolute increase: use maxIncrease, e.g. 2%",
				`rollout.yaml:17: spec.analysis.metrics[2].name: "cpu" is not one of error_rate, latency_mean, latency_p50, latency_p90, latency_p95, latency_p99, latency_p999`,
				`rollout.yaml:19: spec.rollbackTriggers.critical[0]: "error_rate > 5": error_rate takes a percentage, e.g. 5%`,
				`rollout.yaml:19: spec.rollbackTriggers.critical[1]: "memory_usage > 90%": unknown metric "memory_usage" (known: consecutive_errors, error_rate, health_check_failures, p50_latency, p90_latency, p95_latency, p999_latency, p99_latency, success_rate)`,
				"rollout.yaml:21: spec.rollbackTriggers.sustained[0].for: missing: how long the condition must hold (e.g. 5m)",
			},
		},
		{
			name: "header problems",
			yaml: `apiVersion: guardian.dev/v1beta9
kind: Rollout
metadata:
  name: Checkout_Service
spec:
  stable: {url: ftp://x}
  canary: {url: http://a, endpoints: ["10.0.0.1:80"]}
  strategy:
    canary:
      steps: []
`,
			want: []string{
				`rollout.yaml:1: apiVersion: "guardian.dev/v1beta9" is not guardian.dev/v1alpha1`,
				`rollout.yaml:4: metadata.name: "Checkout_Service" must be lower-case letters, digits and '-', at most 63 characters`,
				"rollout.yaml:5: spec.listen: missing: set listen (Guardian's proxy) or xds (the fleet), or both",
				`rollout.yaml:6: spec.stable.url: "ftp://x" is not an http(s) URL`,
				"rollout.yaml:7: spec.canary: set url or endpoints, not both",
				"rollout.yaml:10: spec.strategy.canary.steps: needs at least one step",
			},
		},
		{
			name: "secret in the file",
			yaml: steps("        - setWeight: 10\n") + "  notifications:\n    - {url: http://127.0.0.1:7001, secret: hunter2}\n",
			want: []string{"rollout.yaml:14: spec.notifications[0].secret: secrets must not be written in the file: put it in an environment variable and name that in secretEnv"},
		},
		{
			name: "feature flag",
			yaml: validHead + `  strategy:
    featureFlag:
      cohorts:
        - name: internal
          match: [{header: X-Internal}]
      stages:
        - cohort: staff
        - percent: 25
        - percent: 5
`,
			want: []string{
				"rollout.yaml:10: spec.strategy.featureFlag.userKey: missing: set header or cookie, so a user stays on one version as the percentage grows",
				"rollout.yaml:13: spec.strategy.featureFlag.cohorts[0].match[0]: a match rule has exactly one of exact, prefix, regex",
				`rollout.yaml:15: spec.strategy.featureFlag.stages[0].cohort: "staff" is not a cohort defined in spec.strategy.featureFlag.cohorts`,
				"rollout.yaml:17: spec.strategy.featureFlag.stages[2].percent: 5 is below the previous stage's 25: a feature-flag rollout only grows, so users who got the feature keep it",
			},
		},
		{
			name: "two strategies",
			yaml: steps("        - setWeight: 10\n") + "    blueGreen: {monitor: {duration: 5m}}\n",
			want: []string{"rollout.yaml:9: spec.strategy: set only one of canary, blueGreen, featureFlag"},
		},
		{
			name: "yaml syntax",
			yaml: validHead + "  strategy:\n    canary:\n      steps:\n        - setWeight: [1\n",
			// yaml.v3 reports the line where the flow sequence's context
			// began being parsed.
			want: []string{"rollout.yaml:11: did not find expected ',' or ']'"},
		},
		{
			name: "business trigger without prometheus",
			yaml: steps("        - setWeight: 10\n") + "  rollbackTriggers:\n    business:\n      - {query: 'sum(rate(orders[5m]))', condition: drop > 10%}\n",
			want: []string{"rollout.yaml:15: spec.rollbackTriggers.business[0]: needs spec.businessMetrics.prometheus to know where to query"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			specs, err := Parse("rollout.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatalf("accepted, want %d problems", len(c.want))
			}
			if specs != nil {
				t.Errorf("got specs with an error; a bad input must be refused whole")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T is not a *ValidationError: %v", err, err)
			}
			got := strings.Split(err.Error(), "\n")
			if !slices.Equal(got, c.want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

// A file with one good and one bad document is refused whole.
func TestMultiDocumentRefusedWhole(t *testing.T) {
	good := strings.Replace(seedSpec, "name: checkout", "name: good", 1)
	bad := strings.NewReplacer("name: checkout", "name: bad", ":8080", ":8081").Replace(validHead) + "  strategy: {canary: {steps: [{setWeight: -1}]}}\n"
	specs, err := Parse("two.yaml", []byte(good+"---\n"+bad))
	if err == nil || specs != nil {
		t.Fatalf("got %d specs, err %v; want refusal", len(specs), err)
	}
	want := "two.yaml:44: spec.strategy.canary.steps[0].setWeight: -1 is not between 0 and 100"
	if err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	// Both good: two rollouts from one file.
	other := strings.NewReplacer("name: checkout", "name: search", "pathPrefix: /", "pathPrefix: /search").Replace(seedSpec)
	other = strings.Replace(other, "listen: 127.0.0.1:8080", "listen: 127.0.0.1:8080\n  match: {pathPrefix: /search}", 1)
	specs, err = Parse("two.yaml", []byte(seedSpec+"---\n"+other))
	if err != nil {
		t.Fatal(err)
	}
	if line := strings.Count(seedSpec, "\n") + 2; len(specs) != 2 || specs[1].Name != "search" || specs[1].Line != line {
		t.Fatalf("got %d specs (second %q at line %d)", len(specs), specs[1].Name, specs[1].Line)
	}
}

func TestLoadFilesCrossChecks(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	b := filepath.Join(dir, "b.yaml")
	os.WriteFile(a, []byte(seedSpec), 0o644)
	os.WriteFile(b, []byte(seedSpec), 0o644)
	_, err := LoadFiles(a, b)
	if err == nil {
		t.Fatal("two rollouts with one name were accepted")
	}
	want := b + `:4: metadata.name: "checkout" is already used at ` + a + ":4"
	if err.Error() != want {
		t.Errorf("got %q\nwant %q", err, want)
	}
	os.WriteFile(b, []byte(strings.Replace(seedSpec, "name: checkout", "name: other", 1)), 0o644)
	_, err = LoadFiles(a, b)
	if err == nil || !strings.Contains(err.Error(), `shares listener 127.0.0.1:8080 with "checkout"`) {
		t.Errorf("same listener and match: got %v", err)
	}
	_, err = LoadFiles(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: got %v", err)
	}
}

// Blue-green accepts blue/green as names for stable/canary.
func TestBlueGreenAliases(t *testing.T) {
	y := `apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: pay}
spec:
  listen: 127.0.0.1:8080
  blue: {url: http://127.0.0.1:9101}
  green: {url: http://127.0.0.1:9102}
  strategy:
    blueGreen: {validate: {smoke: smoke.yaml}}
`
	specs, err := Parse("bg.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	s := specs[0]
	if s.Stable.URL != "http://127.0.0.1:9101" || s.Canary.URL != "http://127.0.0.1:9102" {
		t.Errorf("stable=%q canary=%q", s.Stable.URL, s.Canary.URL)
	}
	if !s.Strategy.BlueGreen.AutoPromotion || s.Strategy.BlueGreen.Monitor != DefaultMonitor {
		t.Errorf("blue-green defaults: %+v", s.Strategy.BlueGreen)
	}
	_, err = Parse("bg.yaml", []byte(strings.Replace(y, "  blue:", "  stable: {url: http://127.0.0.1:1}\n  blue:", 1)))
	if err == nil || !strings.Contains(err.Error(), "spec.blue: set either stable or blue") {
		t.Errorf("stable and blue: got %v", err)
	}
}

// Every example shipped in deploy/examples must parse.
func TestDeployExamples(t *testing.T) {
	files, err := filepath.Glob("../deploy/examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no examples in deploy/examples")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			specs, err := ParseFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range specs {
				if _, err := NewEngine(s); err != nil {
					t.Errorf("%s: NewEngine: %v", s.Name, err)
				}
			}
		})
	}
}

// Every metric a valid spec accepts is accepted by analysis.NewMonitor, so
// a driver never meets a spec the analysis refuses.
func TestMonitorMetricsAccepted(t *testing.T) {
	var lines []string
	for _, name := range AnalysisMetrics() {
		for _, test := range metricTests[name] {
			bound := "maxRatio: 1.3"
			if name == "error_rate" {
				bound = "maxIncrease: 1%"
			}
			lines = append(lines, "      - {name: "+name+", test: "+test+", "+bound+"}")
		}
	}
	// One spec per line: names may repeat across tests.
	for _, l := range lines {
		y := validHead + "  strategy: {canary: {steps: [{setWeight: 5}]}}\n  analysis:\n    metrics:\n" + l + "\n"
		specs, err := Parse("m.yaml", []byte(y))
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		if _, err := analysis.NewMonitor(specs[0].MonitorMetrics(), specs[0].Analysis.Confidence, specs[0].MonitorOptions()); err != nil {
			t.Errorf("%s: analysis refuses it: %v", l, err)
		}
	}
}

func TestAliasBombRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		b.WriteString("a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + string(rune('0'+i-1)))
		}
		b.WriteString("]\n")
	}
	_, err := Parse("bomb.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "bomb.yaml:1: document expands to more than") {
		t.Fatalf("got %v", err)
	}
}

package rollout

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of rollout/testdata/*.txt scripts")

// TestScripts runs the engine scenarios in testdata/*.txt. A script is a
// list of directives, each a command line (plus input lines for `spec`),
// a `----` line, and the expected output up to a blank line:
//
//	spec                      the YAML up to ----; output: ok or problems
//	init                      Init at 2026-01-01T00:00:00Z
//	tick D [obs...]           advance the clock by D, then Step with obs
//	observe obs...            Step at the current time with obs
//	trip CONDITION [reason]   a critical trip from the proxy's guard
//	gate ID pass|fail|inconclusive [METRIC=Outcome...] [message]
//	promote [--full] | abort | pause | resume | set-weight N | jump N
//	restore D                 marshal the last persisted state to JSON and
//	                          back, let D of downtime pass, then Restore
//
// obs items are METRIC=Pass|Fail|Inconclusive|NoData (a verdict),
// NAME=NUMBER (a value for sustained triggers) or score=S.
// Each directive prints the actions in order and the resulting state.
// `go test ./rollout -rewrite` regenerates the outputs; review the diff.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

type directive struct {
	comments []string
	cmd      string
	input    []string
	output   []string
	line     int
}

func readScript(t *testing.T, path string) []directive {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var out []directive
	var comments []string
	for i := 0; i < len(lines); {
		l := lines[i]
		if strings.HasPrefix(l, "#") {
			comments = append(comments, l)
		}
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			i++
			continue
		}
		d := directive{cmd: l, line: i + 1, comments: comments}
		comments = nil
		i++
		for i < len(lines) && lines[i] != "----" {
			d.input = append(d.input, lines[i])
			i++
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: directive without ----", path, d.line)
		}
		i++
		for i < len(lines) && lines[i] != "" {
			d.output = append(d.output, lines[i])
			i++
		}
		out = append(out, d)
	}
	return out
}

type scriptEnv struct {
	t     *testing.T
	eng   *Engine
	state State
	// persisted is the state as of the last Persist action: what a restart
	// finds in the store.
	persisted State
	now       time.Time
}

func runScript(t *testing.T, path string) {
	ds := readScript(t, path)
	env := &scriptEnv{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var rewritten strings.Builder
	for _, d := range ds {
		got := env.run(d)
		if *rewrite {
			for _, c := range d.comments {
				rewritten.WriteString(c + "\n")
			}
			rewritten.WriteString(d.cmd + "\n")
			for _, l := range d.input {
				rewritten.WriteString(l + "\n")
			}
			rewritten.WriteString("----\n")
			for _, l := range got {
				rewritten.WriteString(l + "\n")
			}
			rewritten.WriteString("\n")
			continue
		}
		if !slices.Equal(got, d.output) {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, d.line, d.cmd, strings.Join(got, "\n"), strings.Join(d.output, "\n"))
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(rewritten.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (env *scriptEnv) run(d directive) []string {
	t := env.t
	f := strings.Fields(d.cmd)
	switch f[0] {
	case "spec":
		specs, err := Parse("rollout.yaml", []byte(strings.Join(d.input, "\n")))
		if err != nil {
			return strings.Split(err.Error(), "\n")
		}
		env.eng, err = NewEngine(specs[0])
		if err != nil {
			t.Fatalf("line %d: %v", d.line, err)
		}
		var out []string
		for i, n := range env.eng.StepNames() {
			out = append(out, fmt.Sprintf("%d: %s", i, n))
		}
		return out
	case "init":
		s, acts := env.eng.Init(env.now)
		return env.show(s, acts)
	case "restore":
		down := mustDur(t, f[1])
		b, err := json.Marshal(env.persisted)
		if err != nil {
			t.Fatal(err)
		}
		var s State
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		env.now = env.now.Add(down)
		s, acts := env.eng.Restore(s, env.now)
		return env.show(s, acts)
	}
	var obs Observation
	args := f[1:]
	switch f[0] {
	case "tick":
		env.now = env.now.Add(mustDur(t, f[1]))
		args = f[2:]
		env.observe(&obs, args)
	case "observe":
		env.observe(&obs, args)
	case "trip":
		obs.Trips = []Trip{{Trigger: f[1], Reason: strings.Join(f[2:], " "), Data: json.RawMessage(`{"lower_bound":0.31,"n":25}`)}}
	case "gate":
		r := GateResult{ID: f[1]}
		var words []string
		for _, a := range f[3:] {
			if m, o, ok := strings.Cut(a, "="); ok && slices.Contains([]string{"Pass", "Fail", "Inconclusive", "NoData"}, o) {
				r.Verdicts = append(r.Verdicts, verdict(m, analysis.Outcome(o)))
				continue
			}
			words = append(words, a)
		}
		r.Message = strings.Join(words, " ")
		switch f[2] {
		case "pass":
			r.Outcome = analysis.Pass
		case "fail":
			r.Outcome = analysis.Fail
		case "inconclusive":
			r.Outcome = analysis.Inconclusive
		default:
			t.Fatalf("line %d: gate outcome %q", d.line, f[2])
		}
		obs.GateResults = []GateResult{r}
	case "promote":
		obs.Command = &Command{Kind: CmdPromote, Full: slices.Contains(args, "--full")}
	case "abort", "pause", "resume":
		obs.Command = &Command{Kind: CommandKind(f[0])}
	case "set-weight":
		n, _ := strconv.Atoi(f[1])
		obs.Command = &Command{Kind: CmdSetWeight, Weight: n}
	case "jump":
		n, _ := strconv.Atoi(f[1])
		obs.Command = &Command{Kind: CmdJump, Step: n}
	default:
		t.Fatalf("line %d: unknown directive %q", d.line, f[0])
	}
	s, acts := env.eng.Step(env.state, obs, env.now)
	return env.show(s, acts)
}

func (env *scriptEnv) observe(obs *Observation, args []string) {
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			env.t.Fatalf("observation %q is not NAME=VALUE", a)
		}
		switch v {
		case "Pass", "Fail", "Inconclusive", "NoData":
			obs.Verdicts = append(obs.Verdicts, verdict(k, analysis.Outcome(v)))
			continue
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			env.t.Fatalf("observation %q: %v", a, err)
		}
		if k == "score" {
			obs.Score = &x
			continue
		}
		if obs.Values == nil {
			obs.Values = map[string]float64{}
		}
		obs.Values[k] = x
	}
}

// verdict builds a verdict with evidence shaped like the analysis
// package's, so events can be checked for it.
func verdict(metric string, o analysis.Outcome) analysis.Verdict {
	v := analysis.Verdict{Metric: metric, Test: "sequential", Outcome: o, NCanary: 400, NBaseline: 3600, Threshold: "+2%"}
	e := 1.5
	switch o {
	case analysis.Pass:
		v.Canary, v.Baseline, v.CI = 0.011, 0.010, &[2]float64{-0.004, 0.006}
		v.Reason = "upper bound 0.6% within +2%"
	case analysis.Fail:
		e = 412
		v.Canary, v.Baseline, v.CI = 0.19, 0.010, &[2]float64{0.12, 0.25}
		v.Reason = "e-value 412 >= 20; increase 12% to 25% beyond +2%"
	case analysis.Inconclusive:
		v.NCanary = 12
		v.Reason = "12 canary samples < minSamples 100"
	case analysis.NoData:
		v.NCanary = 0
		v.Reason = "no canary requests"
	}
	v.EValue = &e
	return v
}

func mustDur(t *testing.T, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (env *scriptEnv) show(s State, acts []Action) []string {
	env.state = s
	var out []string
	for _, a := range acts {
		if a.Kind == ActPersist {
			env.persisted = s
		}
		out = append(out, describeAction(a)...)
	}
	st := fmt.Sprintf("state: %s step=%d/%d", s.Phase, s.Step, s.Steps)
	if s.StepName != "" && !s.Phase.Done() {
		st += fmt.Sprintf(" (%s)", s.StepName)
	}
	st += " weights: " + fmtWeights(s.Weights)
	if s.Remaining > 0 {
		st += " remaining=" + s.Remaining.String()
	}
	if s.Stalled > 0 {
		st += " stalled=" + s.Stalled.String()
	}
	if s.PausedBy != "" {
		st += " pausedBy=" + s.PausedBy
	}
	out = append(out, st)
	if s.Message != "" {
		out = append(out, "  message: "+s.Message)
	}
	return out
}

// Events whose evidence the scripts print in full.
var showData = map[string]bool{EventRolledBack: true, EventAborted: true, EventAdaptive: true}

func describeAction(a Action) []string {
	switch a.Kind {
	case ActSetWeights:
		return []string{"SetWeights " + fmtWeights(a.Weights)}
	case ActSetRoutes:
		var names []string
		for _, r := range a.Routes {
			var rules []string
			for _, m := range r.Match {
				rules = append(rules, fmt.Sprintf("%s:%s %s %q", m.Source, m.Name, m.Op, m.Value))
			}
			names = append(names, fmt.Sprintf("%s→%s[%s]", r.Name, r.Version, strings.Join(rules, ",")))
		}
		if len(names) == 0 {
			names = []string{"(none)"}
		}
		return []string{"SetRoutes " + strings.Join(names, " ")}
	case ActSetMirror:
		return []string{fmt.Sprintf("SetMirror %d%%", a.Mirror)}
	case ActPersist:
		out := []string{"Persist"}
		for _, e := range a.Events {
			out = append(out, fmt.Sprintf("  event %s: %s", e.Type, e.Message))
			if showData[e.Type] {
				out = append(out, "    data: "+string(e.Data))
			}
		}
		return out
	case ActRunGate:
		g := a.Gate
		s := fmt.Sprintf("RunGate %s kind=%s", g.ID, g.Kind)
		if g.Target != "" {
			s += " target=" + g.Target
		}
		if g.File != "" {
			s += " file=" + g.File
		}
		if g.URL != "" {
			s += " url=" + g.URL
		}
		if g.Window > 0 {
			s += " window=" + g.Window.String()
		}
		if len(g.Metrics) > 0 {
			s += " metrics=" + strings.Join(g.Metrics, ",")
		}
		return []string{s}
	case ActNotify:
		return []string{"Notify " + a.Events[0].Type}
	case ActRunHooks:
		return []string{"RunHooks " + a.Hooks}
	case ActResetAnalysis:
		return []string{"ResetAnalysisWindow"}
	}
	return []string{string(a.Kind)}
}

package driver

import (
	"strings"
	"testing"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/report"
)

func TestDashboard(t *testing.T) {
	base := Status{
		Name: "checkout", Strategy: "canary", Phase: rollout.Progressing, Step: 3, Steps: 5, StepName: "pause 30m",
		Weights: rollout.Weights{"stable": 75, "canary": 25}, StepElapsed: 754, Target: "127.0.0.1:8080/",
		Message: "pause 30m at canary 25%",
	}
	pass := analysis.Verdict{Metric: "error_rate", Outcome: analysis.Pass, Baseline: 0.001, Canary: 0.0012}
	slow := analysis.Verdict{Metric: "latency_p99", Outcome: analysis.Fail, Baseline: 230, Canary: 480}
	wait := analysis.Verdict{Metric: "latency_p50", Outcome: analysis.Inconclusive, Baseline: 45, Canary: 47}
	cases := []struct {
		name     string
		mut      func(s *Status)
		stage    string
		decision string
		status   report.Status
		rows     []string // "name|baseline|current|status"
	}{
		{"no verdicts yet", func(s *Status) {}, "Canary 25% (step 4/5: pause 30m)", "WAITING FOR DATA", report.StatusInconclusive, nil},
		{"all pass", func(s *Status) { s.Analysis = []analysis.Verdict{pass}; s.Remaining = 1046 }, "Canary 25% (step 4/5: pause 30m)",
			"PROCEED TO NEXT STAGE", report.StatusOK, []string{"Error Rate|0.10%|0.12%|ok"}},
		{"one waits", func(s *Status) { s.Analysis = []analysis.Verdict{pass, wait} }, "Canary 25% (step 4/5: pause 30m)",
			"WAITING FOR EVIDENCE", report.StatusWarn, []string{"Error Rate|0.10%|0.12%|ok", "P50 Latency|45ms|47ms|warn"}},
		{"one fails", func(s *Status) { s.Analysis = []analysis.Verdict{pass, slow} }, "Canary 25% (step 4/5: pause 30m)",
			"ROLL BACK", report.StatusFail, []string{"Error Rate|0.10%|0.12%|ok", "P99 Latency|230ms|480ms|fail"}},
		{"rolled back", func(s *Status) {
			s.Phase, s.Weights, s.Analysis = rollout.RolledBack, rollout.Weights{"stable": 100, "canary": 0}, []analysis.Verdict{slow}
		}, "Rolled back (canary 0%)", "ROLLED BACK", report.StatusFail, []string{"P99 Latency|230ms|480ms|fail"}},
		{"promoted", func(s *Status) { s.Phase, s.Weights = rollout.Promoted, rollout.Weights{"stable": 0, "canary": 100} },
			"Full Rollout (canary 100%)", "PROMOTED", report.StatusOK, nil},
		{"paused", func(s *Status) { s.Phase = rollout.Paused }, "Canary 25% (step 4/5: pause 30m)", "PAUSED", report.StatusWarn, nil},
		{"raw interval without verdicts", func(s *Status) {
			s.Interval = map[string]lastInterval{"canary": {Requests: 100, Errors: 1, P50: 47, P99: 245}, "stable": {Requests: 300, P50: 45, P99: 230}}
		}, "Canary 25% (step 4/5: pause 30m)", "WAITING FOR DATA", report.StatusInconclusive,
			[]string{"Error Rate|0.00%|1.00%|inconclusive", "P50 Latency|45.0ms|47.0ms|inconclusive", "P99 Latency|230.0ms|245.0ms|inconclusive"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := base
			c.mut(&s)
			d := Dashboard(s)
			if d.Stage != c.stage || d.Decision != c.decision || d.DecisionStatus != c.status {
				t.Errorf("stage %q decision %q (%s); want %q %q (%s)", d.Stage, d.Decision, d.DecisionStatus, c.stage, c.decision, c.status)
			}
			var rows []string
			for _, r := range d.Health {
				rows = append(rows, strings.Join([]string{r.Name, r.Baseline, r.Current, string(r.Status)}, "|"))
			}
			if strings.Join(rows, "\n") != strings.Join(c.rows, "\n") {
				t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(c.rows, "\n"))
			}
			if d.Duration.Seconds() != 754 || d.Target != "127.0.0.1:8080/" {
				t.Errorf("duration %s target %q", d.Duration, d.Target)
			}
		})
	}
	t.Run("next step countdown", func(t *testing.T) {
		s := base
		s.Analysis, s.Remaining = []analysis.Verdict{pass}, 1046
		if d := Dashboard(s); d.Reason != "pause 30m at canary 25%; next step in 17m 26s" {
			t.Errorf("reason %q", d.Reason)
		}
	})
}

// Business gate verdicts in the status show as the dashboard's business
// rows, apart from the health metrics.
func TestDashboardBusinessRows(t *testing.T) {
	s := Status{Name: "checkout", Phase: rollout.Progressing, Weights: rollout.Weights{"stable": 90, "canary": 10},
		Business: []analysis.Verdict{
			{Metric: "conversion_rate", Outcome: analysis.Fail, Canary: 0.021, Threshold: ">= 3%"},
			{Metric: "conversion_rate_drop", Outcome: analysis.Pass, Canary: 0.034, Baseline: 0.035, Threshold: "conversion_rate_drop > 10%"},
		}}
	d := Dashboard(s)
	var got []string
	for _, r := range d.Business {
		got = append(got, strings.Join([]string{r.Name, r.Baseline, r.Current, string(r.Status)}, "|"))
	}
	want := []string{"business conversion_rate|-|2.10%|fail", "business conversion_rate_drop|0.035|0.034|ok"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("business rows %q, want %q", got, want)
	}
	if len(d.Health) != 0 {
		t.Errorf("health rows %v, want none from business verdicts", d.Health)
	}
}

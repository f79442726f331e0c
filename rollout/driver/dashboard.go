package driver

import (
	"fmt"
	"strings"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/report"
)

// Dashboard turns a rollout's status (as the admin API serves it) into the
// seed's "Deployment Status Dashboard": the stage, its duration and target,
// the health metrics baseline vs canary with the judge's verdicts, and the
// decision with its reason. It is pure, so `guardian status` and
// `guardian demo` render exactly the same thing from the same JSON.
func Dashboard(s Status) report.DashboardData {
	d := report.DashboardData{
		Name:     s.Name,
		Stage:    stageName(s),
		Phase:    string(s.Phase),
		Duration: time.Duration(s.StepElapsed * float64(time.Second)),
		Target:   s.Target,
		Weights:  s.Weights,
		Reason:   s.Message,
	}
	if d.Target == "" {
		d.Target = "-"
	}
	for _, r := range metricRows(s.Analysis, s.Interval) {
		if strings.HasPrefix(r.Name, "business") {
			d.Business = append(d.Business, r)
		} else {
			d.Health = append(d.Health, r)
		}
	}
	d.Business = append(d.Business, businessVerdictRows(s.Business)...)
	d.Decision, d.DecisionStatus = decision(s)
	if s.Phase == rollout.Progressing && s.Remaining > 0 && d.DecisionStatus == report.StatusOK {
		d.Reason = fmt.Sprintf("%s; next step in %s", strings.TrimSuffix(d.Reason, "."), report.FormatDuration(time.Duration(s.Remaining*float64(time.Second))))
	}
	return d
}

// stageName is the seed's "Canary 25%" headline, with the plan position.
func stageName(s Status) string {
	canary := s.Weights["canary"]
	var stage string
	switch {
	case s.Phase == rollout.Promoted:
		stage = "Full Rollout (canary 100%)"
	case s.Phase == rollout.RolledBack || s.Phase == rollout.Aborted:
		stage = fmt.Sprintf("Rolled back (canary %d%%)", canary)
	case s.Strategy != "" && s.Strategy != "canary":
		stage = fmt.Sprintf("%s, canary %d%%", s.Strategy, canary)
	default:
		stage = fmt.Sprintf("Canary %d%%", canary)
	}
	if !s.Phase.Done() && s.Steps > 0 {
		step := fmt.Sprintf("step %d/%d", min(s.Step+1, s.Steps), s.Steps)
		if s.StepName != "" {
			step += ": " + s.StepName
		}
		stage += " (" + step + ")"
	}
	return stage
}

// decision is the dashboard's headline: what the rollout does next, judged
// from its phase and the latest verdicts.
func decision(s Status) (string, report.Status) {
	switch s.Phase {
	case rollout.Promoted:
		return "PROMOTED", report.StatusOK
	case rollout.RolledBack:
		return "ROLLED BACK", report.StatusFail
	case rollout.Aborted:
		return "ABORTED", report.StatusFail
	case rollout.Paused:
		return "PAUSED", report.StatusWarn
	}
	if len(s.Analysis) == 0 {
		return "WAITING FOR DATA", report.StatusInconclusive
	}
	pass := true
	for _, v := range s.Analysis {
		switch v.Outcome {
		case analysis.Fail:
			return "ROLL BACK", report.StatusFail
		case analysis.Pass:
		default:
			pass = false
		}
	}
	if pass {
		return "PROCEED TO NEXT STAGE", report.StatusOK
	}
	return "WAITING FOR EVIDENCE", report.StatusWarn
}

// metricTitle names a metric the way the seed's dashboard does.
func metricTitle(name string) string {
	switch name {
	case "error_rate":
		return "Error Rate"
	case "success_rate":
		return "Success Rate"
	}
	if q, ok := strings.CutPrefix(name, "latency_"); ok {
		return strings.ToUpper(q) + " Latency"
	}
	return name
}

package driver

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/report"
)

// Report builds the deployment report, live or final, from the stored
// history, the current state and the metric source's totals.
func (d *Driver) Report() (report.Report, error) {
	st := d.State()
	stored, err := d.cfg.Store.Events(d.name, 0)
	if err != nil {
		return report.Report{}, err
	}
	events := make([]rollout.Event, len(stored))
	for i, e := range stored {
		events[i] = e.Event
	}
	end := d.now()
	if st.Phase.Done() && len(events) > 0 {
		end = events[len(events)-1].Time
	}
	r := report.Report{
		Name:     d.name,
		Version:  d.cfg.Spec.Canary.URL,
		Strategy: st.Strategy,
		Start:    st.Started,
		End:      end,
		Phase:    string(st.Phase),
		Target:   d.target(),
		Stages:   stages(events, st, end),
		Events:   events,
		Reason:   st.Message,
	}
	if len(d.cfg.Spec.Canary.Endpoints) > 0 && r.Version == "" {
		r.Version = strings.Join(d.cfg.Spec.Canary.Endpoints, ",")
	}
	switch st.Phase {
	case rollout.Promoted:
		r.Decision = "PROMOTED"
	case rollout.RolledBack:
		r.Decision = "ROLLED BACK"
	case rollout.Aborted:
		r.Decision = "ABORTED"
	case rollout.Paused:
		r.Decision = "PAUSED"
	default:
		r.Decision = "IN PROGRESS"
	}
	if snap, err := d.cfg.Source.Snapshot(d.name); err == nil {
		r.Metrics = summaryMetrics(snap, st.Verdicts)
	}
	r.Evidence = evidence(st.Verdicts, events)
	r.Issues = issues(events)
	r.Recommendations = recommendations(st, r.Metrics)
	return r, nil
}

// stages lists the traffic stages from the Weights events: each lasts
// until the next weight change, and passed if traffic moved on upward.
func stages(events []rollout.Event, st rollout.State, end time.Time) []report.Stage {
	var out []report.Stage
	for _, e := range events {
		if e.Type != rollout.EventWeights {
			continue
		}
		var w struct{ From, To int }
		if json.Unmarshal(e.Data, &w) != nil {
			continue
		}
		if n := len(out); n > 0 {
			prev := &out[n-1]
			prev.Duration = e.Time.Sub(prev.Start)
			if w.To > prev.Weight {
				prev.Outcome = report.OutcomePassed
			} else {
				prev.Outcome = report.OutcomeFailed
			}
		}
		if w.To == 0 {
			continue
		}
		out = append(out, report.Stage{Weight: w.To, Start: e.Time, Outcome: report.OutcomeRunning})
	}
	if n := len(out); n > 0 && out[n-1].Outcome == report.OutcomeRunning {
		last := &out[n-1]
		last.Duration = end.Sub(last.Start)
		switch st.Phase {
		case rollout.Promoted:
			last.Outcome = report.OutcomePassed
		case rollout.RolledBack, rollout.Aborted:
			last.Outcome = report.OutcomeFailed
		case rollout.Paused:
			last.Outcome = report.OutcomePaused
		}
	}
	return out
}

// summaryMetrics compares the versions' totals: error rate and latency
// quantiles, with each metric's latest verdict.
func summaryMetrics(snap rollout.Snapshot, vs []analysis.Verdict) []report.Metric {
	c, okc := snap.Versions["canary"]
	b, okb := snap.Versions["stable"]
	if !okc || !okb || c.Requests == 0 || b.Requests == 0 {
		return nil
	}
	verdict := map[string]analysis.Verdict{}
	for _, v := range vs {
		verdict[v.Metric] = v
	}
	rate := func(s rollout.VersionStats) float64 { return 100 * float64(s.Errors) / float64(s.Requests) }
	q := func(s rollout.VersionStats, p float64) float64 {
		if s.Latency == nil || s.Latency.TotalCount() == 0 {
			return 0
		}
		return float64(s.Latency.ValueAtQuantile(p)) / 1000
	}
	rows := []report.Metric{
		{Name: "Error Rate", Baseline: rate(b), Canary: rate(c), Unit: "%"},
		{Name: "P50 Latency", Baseline: q(b, 50), Canary: q(c, 50), Unit: "ms"},
		{Name: "P99 Latency", Baseline: q(b, 99), Canary: q(c, 99), Unit: "ms"},
		{Name: "Requests", Baseline: float64(b.Requests), Canary: float64(c.Requests)},
	}
	for i, key := range []string{"error_rate", "latency_p50", "latency_p99"} {
		if v, ok := verdict[key]; ok {
			rows[i].Verdict, rows[i].Test, rows[i].Evidence = string(v.Outcome), v.Test, shortEvidence(v)
		}
	}
	return rows
}

func shortEvidence(v analysis.Verdict) string {
	var parts []string
	if v.EValue != nil {
		parts = append(parts, fmt.Sprintf("e=%.3g", *v.EValue))
	}
	if v.PValue != nil {
		parts = append(parts, fmt.Sprintf("p=%.3g", *v.PValue))
	}
	if v.CI != nil {
		parts = append(parts, fmt.Sprintf("CI [%.3g, %.3g]", v.CI[0], v.CI[1]))
	}
	if v.Threshold != "" {
		parts = append(parts, "allowed "+v.Threshold)
	}
	return strings.Join(parts, ", ")
}

// evidence lists the verdicts behind the decision: the latest verdicts and
// whatever the deciding event recorded.
func evidence(vs []analysis.Verdict, events []rollout.Event) []report.Evidence {
	var out []report.Evidence
	for _, v := range vs {
		out = append(out, report.Evidence{Metric: v.Metric, Test: v.Test, Statistic: v.Statistic, PValue: v.PValue,
			EValue: v.EValue, CI: v.CI, Threshold: v.Threshold, Verdict: string(v.Outcome), Reason: v.Reason})
	}
	for i := len(events) - 1; i >= 0; i-- {
		e := events[i]
		if e.Type == rollout.EventRolledBack || e.Type == rollout.EventAborted || e.Type == rollout.EventPromoted {
			if len(e.Data) > 0 {
				out = append(out, report.Evidence{Metric: "decision", Verdict: e.Type, Reason: e.Message, Data: e.Data})
			}
			break
		}
	}
	return out
}

// issues are the events a reader should know about: waits, refusals,
// gate failures and the end of a failed rollout.
func issues(events []rollout.Event) []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range events {
		switch e.Type {
		case rollout.EventWaiting, rollout.EventCommandRefused, rollout.EventRolledBack, rollout.EventAborted, rollout.EventGate:
			if e.Type == rollout.EventWaiting && strings.HasPrefix(e.Message, "pause ") {
				continue // a planned pause is not an issue
			}
			if e.Type == rollout.EventGate && !strings.Contains(strings.ToLower(e.Message), "fail") {
				continue
			}
			if seen[e.Message] {
				continue
			}
			seen[e.Message] = true
			out = append(out, fmt.Sprintf("%s: %s", e.Time.UTC().Format("15:04:05"), e.Message))
		}
	}
	return out
}

func recommendations(st rollout.State, ms []report.Metric) []string {
	var out []string
	switch st.Phase {
	case rollout.RolledBack:
		out = append(out, "Investigate the failed metric before redeploying; the evidence above shows what was measured.")
	case rollout.Aborted:
		if strings.Contains(st.Message, "deadline") {
			out = append(out, "The rollout lacked evidence in time: raise progressDeadline or send more traffic to the canary.")
		}
	}
	for _, m := range ms {
		if pct, ok := m.Change(); ok && m.Unit == "ms" && pct > 10 {
			out = append(out, fmt.Sprintf("%s rose %s on the canary; check for a performance regression.", m.Name, report.FormatChange(pct)))
		}
	}
	return out
}

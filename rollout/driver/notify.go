package driver

import (
	"encoding/json"
	"fmt"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/notify"
	"github.com/deployment-guardian/guardian/rollout/report"
)

// NotifyEvent turns an engine event into a notification carrying the
// seed's dashboard rows: the latest interval's numbers per metric.
func NotifyEvent(name string, st rollout.State, e rollout.Event, last map[string]lastInterval) notify.Event {
	typ := notify.TypeStep
	decision := ""
	switch e.Type {
	case rollout.EventStarted:
		typ = notify.TypeStart
	case rollout.EventPaused:
		typ = notify.TypePause
	case rollout.EventGate, rollout.EventAnalysis:
		typ = notify.TypeGate
	case rollout.EventPromoted:
		typ, decision = notify.TypePromote, "PROMOTED"
	case rollout.EventRolledBack:
		typ, decision = notify.TypeRollback, "ROLLED BACK"
	case rollout.EventAborted:
		typ, decision = notify.TypeAbort, "ABORTED"
	case rollout.EventProceed:
		decision = "PROCEED TO NEXT STAGE"
	}
	rows := metricRows(st.Verdicts, last)
	if e.Type == rollout.EventGate {
		rows = append(rows, businessRows(e.Data)...)
	}
	return notify.Event{
		Rollout: name, Type: typ, Message: e.Message, Time: e.Time,
		Phase: string(st.Phase), Step: st.Step, Elapsed: st.StepElapsed,
		Weights: st.Weights, Metrics: rows,
		Decision: decision, Data: e.Data,
	}
}

// businessRows renders a business gate's answer as the dashboard's
// business rows: stable's and the canary's values with the verdict.
func businessRows(data json.RawMessage) []report.MetricRow {
	var g struct {
		Kind     rollout.GateKind   `json:"kind"`
		Verdicts []analysis.Verdict `json:"verdicts"`
	}
	if len(data) == 0 || json.Unmarshal(data, &g) != nil || g.Kind != rollout.GateBusiness {
		return nil
	}
	return businessVerdictRows(g.Verdicts)
}

// businessVerdictRows renders business verdicts as dashboard rows.
func businessVerdictRows(vs []analysis.Verdict) []report.MetricRow {
	rows := make([]report.MetricRow, 0, len(vs))
	for _, v := range vs {
		c, err := rollout.ParseBusinessCondition(v.Threshold)
		format := func(x float64) string { return fmt.Sprintf("%.4g", x) }
		if err == nil && c.Unit == "%" && c.Compare == "" {
			format = func(x float64) string { return fmt.Sprintf("%.2f%%", 100*x) }
		}
		r := report.MetricRow{Name: "business " + v.Metric, Baseline: "-", Current: "-", Status: statusOf(v.Outcome)}
		if v.Outcome == analysis.Pass || v.Outcome == analysis.Fail {
			r.Current = format(v.Canary)
			if err == nil && c.Compare != "" {
				r.Baseline = format(v.Baseline)
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// metricRows renders verdicts as the dashboard's health table; without
// verdicts it shows the latest interval's raw numbers.
func metricRows(vs []analysis.Verdict, last map[string]lastInterval) []report.MetricRow {
	var rows []report.MetricRow
	for _, v := range vs {
		rows = append(rows, report.MetricRow{
			Name:     metricTitle(v.Metric),
			Baseline: formatMetric(v.Metric, v.Baseline),
			Current:  formatMetric(v.Metric, v.Canary),
			Status:   statusOf(v.Outcome),
		})
	}
	if len(rows) > 0 || last == nil {
		return rows
	}
	c, b := last["canary"], last["stable"]
	rate := func(l lastInterval) float64 {
		if l.Requests == 0 {
			return 0
		}
		return float64(l.Errors) / float64(l.Requests)
	}
	return []report.MetricRow{
		{Name: "Error Rate", Baseline: fmt.Sprintf("%.2f%%", 100*rate(b)), Current: fmt.Sprintf("%.2f%%", 100*rate(c)), Status: report.StatusInconclusive},
		{Name: "P50 Latency", Baseline: fmt.Sprintf("%.1fms", b.P50), Current: fmt.Sprintf("%.1fms", c.P50), Status: report.StatusInconclusive},
		{Name: "P99 Latency", Baseline: fmt.Sprintf("%.1fms", b.P99), Current: fmt.Sprintf("%.1fms", c.P99), Status: report.StatusInconclusive},
	}
}

func formatMetric(name string, v float64) string {
	if name == "error_rate" || name == "success_rate" {
		return fmt.Sprintf("%.2f%%", 100*v)
	}
	return report.FormatValue(v, "ms")
}

func statusOf(o analysis.Outcome) report.Status {
	switch o {
	case analysis.Pass:
		return report.StatusOK
	case analysis.Fail:
		return report.StatusFail
	case analysis.Inconclusive:
		return report.StatusWarn
	}
	return report.StatusInconclusive
}

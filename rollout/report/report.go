// Package report renders what a rollout did and why: the deployment report
// after the seed's "Deployment Report Template" (Markdown and JSON, live and
// final) and the seed's "Deployment Status Dashboard" for `guardian status`.
// It is pure rendering: callers fill plain values from the engine's state
// and pass in the time, so the same input always gives the same text.
package report

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
)

// Outcome is how a stage ended (or where it is).
type Outcome string

const (
	OutcomePassed  Outcome = "passed"
	OutcomeFailed  Outcome = "failed"
	OutcomePaused  Outcome = "paused"
	OutcomeRunning Outcome = "running"
	OutcomeSkipped Outcome = "skipped"
)

// Symbol is the outcome as the seed's report shows it.
func (o Outcome) Symbol() string {
	switch o {
	case OutcomePassed:
		return "✅"
	case OutcomeFailed:
		return "❌"
	case OutcomePaused:
		return "⏸"
	case OutcomeRunning:
		return "▶"
	case OutcomeSkipped:
		return "⏭"
	}
	return "·"
}

// Stage is one step of the rollout as the report lists it.
type Stage struct {
	// Name defaults to "Canary N%" from Weight when empty.
	Name     string        `json:"name"`
	Weight   int           `json:"weight"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"-"`
	Outcome  Outcome       `json:"outcome"`
}

func (s Stage) title() string {
	if s.Name != "" {
		return oneLine(s.Name)
	}
	return fmt.Sprintf("Canary %d%%", s.Weight)
}

// Metric is one line of the metrics summary: baseline (stable) against
// canary, in Unit (percent values for "%": 0.1 means 0.1%).
type Metric struct {
	Name     string  `json:"name"`
	Baseline float64 `json:"baseline"`
	Canary   float64 `json:"canary"`
	Unit     string  `json:"unit,omitempty"`
	// Verdict is the judge's classification: Pass, High, Low, NoData...
	Verdict string `json:"verdict,omitempty"`
	Test    string `json:"test,omitempty"`
	// Evidence is a short summary of the test result ("p=0.41", "e=3.2").
	Evidence string `json:"evidence,omitempty"`
}

// Change is the canary's relative change from the baseline in percent; ok
// is false when it is undefined (a zero baseline with a non-zero canary, or
// a value that is not finite).
func (m Metric) Change() (pct float64, ok bool) {
	if !finite(m.Baseline) || !finite(m.Canary) {
		return 0, false
	}
	if m.Baseline == 0 {
		if m.Canary == 0 {
			return 0, true
		}
		return 0, false
	}
	return (m.Canary - m.Baseline) / math.Abs(m.Baseline) * 100, true
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Evidence is what a decision rested on, one entry per metric or trigger.
type Evidence struct {
	Metric    string          `json:"metric"`
	Test      string          `json:"test,omitempty"`
	Statistic *float64        `json:"statistic,omitempty"`
	PValue    *float64        `json:"p_value,omitempty"`
	EValue    *float64        `json:"e_value,omitempty"`
	CI        *[2]float64     `json:"ci,omitempty"`
	Threshold string          `json:"threshold,omitempty"` // as written in the spec: "maxIncrease 2%"
	Verdict   string          `json:"verdict,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
}

// Report is a deployment report, live (End is now, Phase still moving) or
// final.
type Report struct {
	Name     string    `json:"name"`
	Version  string    `json:"version,omitempty"`
	Strategy string    `json:"strategy"`
	Start    time.Time `json:"start"`
	// End is when the rollout finished, or the report's time for a live one.
	End    time.Time `json:"end"`
	Phase  string    `json:"phase"`
	Target string    `json:"target,omitempty"`

	Stages          []Stage         `json:"stages"`
	Metrics         []Metric        `json:"metrics"`
	Issues          []string        `json:"issues"`
	Decision        string          `json:"decision"` // headline: "PROMOTED", "ROLLED BACK"...
	Reason          string          `json:"reason,omitempty"`
	Evidence        []Evidence      `json:"evidence,omitempty"`
	Recommendations []string        `json:"recommendations,omitempty"`
	Events          []rollout.Event `json:"events,omitempty"`
}

// Duration is the time from Start to End (zero if either is unset).
func (r Report) Duration() time.Duration {
	if r.Start.IsZero() || r.End.IsZero() || r.End.Before(r.Start) {
		return 0
	}
	return r.End.Sub(r.Start)
}

// Markdown renders the report after the seed's template.
func (r Report) Markdown() string {
	var b strings.Builder
	b.WriteString("## Deployment Report\n\n")
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "**%s**: %s\n", k, oneLine(v))
		}
	}
	field("Rollout", r.Name)
	field("Version", r.Version)
	if !r.Start.IsZero() {
		field("Date", r.Start.UTC().Format("2006-01-02 15:04 MST"))
	}
	field("Duration", FormatDuration(r.Duration()))
	field("Strategy", r.Strategy)
	field("Target", r.Target)
	field("Phase", r.Phase)

	b.WriteString("\n### Stages Completed\n")
	if len(r.Stages) == 0 {
		b.WriteString("- None\n")
	}
	for _, s := range r.Stages {
		fmt.Fprintf(&b, "- %s %s (%s)\n", s.Outcome.Symbol(), s.title(), FormatDuration(s.Duration))
	}

	b.WriteString("\n### Metrics Summary\n")
	if len(r.Metrics) == 0 {
		b.WriteString("- No metrics recorded\n")
	}
	for _, m := range r.Metrics {
		fmt.Fprintf(&b, "- **%s**: %s\n", oneLine(m.Name), metricLine(m))
	}

	b.WriteString("\n### Issues Encountered\n")
	if len(r.Issues) == 0 {
		b.WriteString("- None\n")
	}
	for _, is := range r.Issues {
		fmt.Fprintf(&b, "- %s\n", oneLine(is))
	}

	b.WriteString("\n### Decision\n")
	decision := r.Decision
	if decision == "" {
		decision = "PENDING"
	}
	fmt.Fprintf(&b, "**%s**", oneLine(decision))
	if r.Reason != "" {
		fmt.Fprintf(&b, ": %s", oneLine(r.Reason))
	}
	b.WriteString("\n")
	if len(r.Evidence) > 0 {
		b.WriteString("\nEvidence:\n")
		for _, e := range r.Evidence {
			fmt.Fprintf(&b, "- %s\n", evidenceLine(e))
		}
	}

	b.WriteString("\n### Recommendations\n")
	if len(r.Recommendations) == 0 {
		b.WriteString("- None\n")
	}
	for _, rec := range r.Recommendations {
		fmt.Fprintf(&b, "- %s\n", oneLine(rec))
	}

	if len(r.Events) > 0 {
		b.WriteString("\n### Timeline\n")
		for _, e := range r.Events {
			at := e.Time.UTC().Format("15:04:05")
			if !r.Start.IsZero() && !e.Time.Before(r.Start) {
				at = "+" + FormatDuration(e.Time.Sub(r.Start))
			}
			fmt.Fprintf(&b, "- `%s` **%s** %s\n", at, oneLine(e.Type), oneLine(e.Message))
		}
	}
	return b.String()
}

func metricLine(m Metric) string {
	var s string
	b, c := FormatValue(m.Baseline, m.Unit), FormatValue(m.Canary, m.Unit)
	pct, ok := m.Change()
	switch {
	case ok && FormatChange(pct) == "no change":
		s = c + " (no change)"
		if b != c {
			s = b + " → " + c + " (no change)"
		}
	case ok:
		s = fmt.Sprintf("%s → %s (%s)", b, c, FormatChange(pct))
	default:
		s = fmt.Sprintf("%s → %s", b, c)
	}
	var detail []string
	if m.Test != "" {
		detail = append(detail, oneLine(m.Test))
	}
	if m.Evidence != "" {
		detail = append(detail, oneLine(m.Evidence))
	}
	if m.Verdict != "" {
		s += " — " + oneLine(m.Verdict)
	}
	if len(detail) > 0 {
		s += " (" + strings.Join(detail, ", ") + ")"
	}
	return s
}

func evidenceLine(e Evidence) string {
	parts := []string{"**" + oneLine(e.Metric) + "**"}
	if e.Verdict != "" {
		parts[0] += " " + oneLine(e.Verdict)
	}
	var nums []string
	if e.Test != "" {
		nums = append(nums, oneLine(e.Test))
	}
	if e.Statistic != nil {
		nums = append(nums, "statistic "+formatNumber(*e.Statistic))
	}
	if e.PValue != nil {
		nums = append(nums, "p "+formatP(*e.PValue))
	}
	if e.EValue != nil {
		nums = append(nums, "e-value "+formatNumber(*e.EValue))
	}
	if e.CI != nil {
		nums = append(nums, fmt.Sprintf("CI [%s, %s]", formatNumber(e.CI[0]), formatNumber(e.CI[1])))
	}
	if e.Threshold != "" {
		nums = append(nums, "threshold "+oneLine(e.Threshold))
	}
	if len(nums) > 0 {
		parts = append(parts, strings.Join(nums, ", "))
	}
	if e.Reason != "" {
		parts = append(parts, oneLine(e.Reason))
	}
	return strings.Join(parts, " — ")
}

// formatP shows small p-values in scientific form instead of as 0.
func formatP(p float64) string {
	if finite(p) && p > 0 && p < 0.001 {
		return fmt.Sprintf("%.2g", p)
	}
	return formatNumber(p)
}

// JSON renders the report for `guardian report -o json`. Durations are in
// seconds and each metric carries its computed change. Values that are not
// finite numbers (a metric with no data) are null, never an encoding error.
func (r Report) JSON() ([]byte, error) {
	type stage struct {
		Stage
		DurationS float64 `json:"duration_s"`
	}
	type metric struct {
		Name      string   `json:"name"`
		Baseline  *float64 `json:"baseline"`
		Canary    *float64 `json:"canary"`
		ChangePct *float64 `json:"change_pct"`
		Unit      string   `json:"unit,omitempty"`
		Verdict   string   `json:"verdict,omitempty"`
		Test      string   `json:"test,omitempty"`
		Evidence  string   `json:"evidence,omitempty"`
	}
	type wire struct {
		Report
		DurationS float64    `json:"duration_s"`
		Stages    []stage    `json:"stages"`
		Metrics   []metric   `json:"metrics"`
		Issues    []string   `json:"issues"`
		Evidence  []Evidence `json:"evidence,omitempty"`
	}
	w := wire{Report: r, DurationS: r.Duration().Seconds(), Stages: []stage{}, Metrics: []metric{}, Issues: r.Issues}
	if w.Issues == nil {
		w.Issues = []string{}
	}
	for _, s := range r.Stages {
		w.Stages = append(w.Stages, stage{Stage: s, DurationS: s.Duration.Seconds()})
	}
	for _, m := range r.Metrics {
		wm := metric{Name: m.Name, Baseline: finitePtr(m.Baseline), Canary: finitePtr(m.Canary),
			Unit: m.Unit, Verdict: m.Verdict, Test: m.Test, Evidence: m.Evidence}
		if pct, ok := m.Change(); ok {
			wm.ChangePct = &pct
		}
		w.Metrics = append(w.Metrics, wm)
	}
	for _, e := range r.Evidence {
		if e.Statistic != nil {
			e.Statistic = finitePtr(*e.Statistic)
		}
		if e.PValue != nil {
			e.PValue = finitePtr(*e.PValue)
		}
		if e.EValue != nil {
			e.EValue = finitePtr(*e.EValue)
		}
		if e.CI != nil && (!finite(e.CI[0]) || !finite(e.CI[1])) {
			e.CI = nil
		}
		w.Evidence = append(w.Evidence, e)
	}
	return json.MarshalIndent(w, "", "  ")
}

func finitePtr(v float64) *float64 {
	if !finite(v) {
		return nil
	}
	return &v
}

package report

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
)

// MetricRow is one line of the dashboard's metric tables, already formatted
// (see FormatValue) so every producer shows the same units.
type MetricRow struct {
	Name     string `json:"name"`
	Baseline string `json:"baseline"`
	Current  string `json:"current"`
	Status   Status `json:"status"`
}

// DashboardData is what `guardian status` shows.
type DashboardData struct {
	Name     string
	Stage    string // "Canary 25%", "Blue-green: monitor"
	Phase    string
	Duration time.Duration // time in the current stage; not shown when zero
	Target   string
	Weights  rollout.Weights
	Health   []MetricRow
	Business []MetricRow
	// Decision is the headline ("PROCEED TO NEXT STAGE", "WAITING FOR DATA",
	// "ROLL BACK"); DecisionStatus colours it; Reason says why.
	Decision       string
	DecisionStatus Status
	Reason         string
	// Color adds ANSI colours; set it only when writing to a terminal.
	Color bool
}

const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiRed    = "\x1b[31m"
	ansiGrey   = "\x1b[90m"
)

func (d DashboardData) paint(s Status, text string) string {
	if !d.Color {
		return text
	}
	c := ansiGrey
	switch s {
	case StatusOK:
		c = ansiGreen
	case StatusWarn:
		c = ansiYellow
	case StatusFail:
		c = ansiRed
	}
	return c + ansiBold + text + ansiReset
}

// Dashboard renders the seed's "Deployment Status Dashboard".
func Dashboard(d DashboardData) string {
	var b strings.Builder
	b.WriteString("## Deployment Status Dashboard")
	if d.Name != "" {
		b.WriteString(": " + oneLine(d.Name))
	}
	b.WriteString("\n\n")
	stage := d.Stage
	if stage == "" {
		stage = "-"
	}
	fmt.Fprintf(&b, "### Current Stage: %s\n", oneLine(stage))
	if d.Phase != "" {
		fmt.Fprintf(&b, "📍 Phase: %s\n", oneLine(d.Phase))
	}
	if d.Duration > 0 {
		fmt.Fprintf(&b, "⏱️ Duration: %s\n", FormatDuration(d.Duration))
	}
	if d.Target != "" {
		fmt.Fprintf(&b, "🎯 Target: %s\n", oneLine(d.Target))
	}
	if len(d.Weights) > 0 {
		fmt.Fprintf(&b, "⚖️ Weights: %s\n", FormatWeights(d.Weights))
	}
	metricTable := func(title string, rows []MetricRow) {
		fmt.Fprintf(&b, "\n### %s\n", title)
		if len(rows) == 0 {
			b.WriteString("No data yet\n")
			return
		}
		cells := make([][]string, len(rows))
		for i, r := range rows {
			cells[i] = []string{cell(r.Name), cell(r.Baseline), cell(r.Current), r.Status.Symbol()}
		}
		table(&b, []string{"Metric", "Baseline", "Current", "Status"}, cells)
	}
	metricTable("Health Metrics", d.Health)
	if len(d.Business) > 0 {
		metricTable("Business Metrics", d.Business)
	}
	decision := d.Decision
	if decision == "" {
		decision = "PENDING"
	}
	fmt.Fprintf(&b, "\n### Decision: %s\n", d.paint(d.DecisionStatus, oneLine(decision)))
	if d.Reason != "" {
		b.WriteString(oneLine(d.Reason) + "\n")
	}
	return b.String()
}

// FormatWeights renders weights as "stable 75% · canary 25%", stable first,
// then the other versions by name.
func FormatWeights(w rollout.Weights) string {
	names := make([]string, 0, len(w))
	for n := range w {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == "stable") != (names[j] == "stable") {
			return names[i] == "stable"
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %d%%", oneLine(n), w[n])
	}
	return strings.Join(parts, " · ")
}

package report

import (
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.golden with the current output")

// golden compares got with testdata/name; -rewrite regenerates it, and the
// diff is reviewed like code.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *rewrite {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -rewrite to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -rewrite to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

var start = time.Date(2024, 1, 15, 14, 0, 0, 0, time.UTC)

func f(v float64) *float64 { return &v }

// seedReport is the seed's template example, a promoted canary.
func seedReport() Report {
	at := start
	stage := func(name string, weight int, d time.Duration) Stage {
		s := Stage{Name: name, Weight: weight, Start: at, Duration: d, Outcome: OutcomePassed}
		at = at.Add(d)
		return s
	}
	return Report{
		Name: "checkout", Version: "v2.3.4", Strategy: "Canary", Target: "Production-US-East",
		Start: start, End: start.Add(45 * time.Minute), Phase: "Promoted",
		Stages: []Stage{
			stage("Smoke Tests", 0, 2*time.Minute),
			stage("", 1, 10*time.Minute),
			stage("", 5, 10*time.Minute),
			stage("", 25, 15*time.Minute),
			stage("Full Rollout", 100, 8*time.Minute),
		},
		Metrics: []Metric{
			{Name: "Error Rate", Baseline: 0.1, Canary: 0.11, Unit: "%", Verdict: "Pass", Test: "two-proportion-z", Evidence: "p=0.41"},
			{Name: "P50 Latency", Baseline: 45, Canary: 46, Unit: "ms", Verdict: "Pass", Test: "mann-whitney-u"},
			{Name: "P99 Latency", Baseline: 230, Canary: 235, Unit: "ms"},
			{Name: "Success Rate", Baseline: 99.9, Canary: 99.9, Unit: "%"},
		},
		Issues:          []string{"Minor latency spike at 25% (auto-recovered)", "One canary pod restart (memory limit)"},
		Decision:        "PROMOTED",
		Reason:          "every metric passed at every step",
		Recommendations: []string{"Increase memory limits by 10%", "Add cache warming to smoke tests", "Consider slower rollout for database changes"},
	}
}

func rolledBackReport() Report {
	fail := start.Add(3*time.Minute + 12*time.Second)
	return Report{
		Name: "checkout", Version: "v2.4.0", Strategy: "Canary",
		Start: start, End: fail.Add(4 * time.Second), Phase: "RolledBack",
		Stages: []Stage{
			{Weight: 1, Start: start, Duration: 2 * time.Minute, Outcome: OutcomePassed},
			{Weight: 10, Start: start.Add(2 * time.Minute), Duration: 72 * time.Second, Outcome: OutcomeFailed},
		},
		Metrics: []Metric{
			{Name: "Error Rate", Baseline: 0.12, Canary: 38.5, Unit: "%", Verdict: "High", Test: "guard (Wilson lower bound)", Evidence: "lower bound 31% > 5%"},
			{Name: "P99 Latency", Baseline: 0, Canary: 0, Unit: "ms", Verdict: "NoData"},
			{Name: "Conversion", Baseline: 0, Canary: 2.9, Unit: "%", Verdict: "NoData"},
		},
		Issues:   []string{"canary answered 500 to 25 of 65 requests | within 40ms"},
		Decision: "ROLLED BACK",
		Reason:   "critical trigger error_rate > 5%",
		Evidence: []Evidence{
			{Metric: "error_rate", Test: "wilson", Statistic: f(0.385), CI: &[2]float64{0.31, 0.46}, Threshold: "error_rate > 5%", Verdict: "Fail", Reason: "lower bound of the 95% interval is above the limit"},
			{Metric: "latency_p99", Test: "mann-whitney-u", PValue: f(2.5e-7), EValue: f(41.2), Threshold: "maxRatio 1.5", Verdict: "Pass"},
		},
		Events: []rollout.Event{
			{Time: start, Type: "start", Message: "rollout started"},
			{Time: start.Add(2 * time.Minute), Type: "weight", Message: "canary 10%"},
			{Time: fail, Type: "rollback", Message: "error_rate > 5%:\nweight set to 0"},
		},
	}
}

func TestMarkdownGolden(t *testing.T) {
	golden(t, "seed_report.md.golden", seedReport().Markdown())
	golden(t, "rolled_back_report.md.golden", rolledBackReport().Markdown())
	golden(t, "empty_report.md.golden", Report{Name: "x"}.Markdown())
}

func TestMarkdownFollowsSeedTemplate(t *testing.T) {
	md := seedReport().Markdown()
	for _, want := range []string{
		"## Deployment Report\n", "**Version**: v2.3.4", "**Date**: 2024-01-15", "**Duration**: 45m", "**Strategy**: Canary",
		"### Stages Completed\n- ✅ Smoke Tests (2m)\n- ✅ Canary 1% (10m)",
		"### Metrics Summary", "- **Error Rate**: 0.1% → 0.11% (+10%)", "- **P50 Latency**: 45ms → 46ms (+2.2%)",
		"- **P99 Latency**: 230ms → 235ms (+2.2%)", "- **Success Rate**: 99.9% (no change)",
		"### Issues Encountered\n- Minor latency spike", "### Decision\n**PROMOTED**", "### Recommendations\n- Increase memory limits by 10%",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestJSON(t *testing.T) {
	r := rolledBackReport()
	r.Metrics = append(r.Metrics, Metric{Name: "nan", Baseline: math.NaN(), Canary: math.Inf(1)})
	r.Evidence = append(r.Evidence, Evidence{Metric: "nan", PValue: f(math.NaN())})
	b, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Name      string  `json:"name"`
		Phase     string  `json:"phase"`
		DurationS float64 `json:"duration_s"`
		Stages    []struct {
			Weight    int     `json:"weight"`
			Outcome   string  `json:"outcome"`
			DurationS float64 `json:"duration_s"`
		} `json:"stages"`
		Metrics []struct {
			Name      string   `json:"name"`
			Baseline  *float64 `json:"baseline"`
			ChangePct *float64 `json:"change_pct"`
		} `json:"metrics"`
		Evidence []struct {
			Metric string      `json:"metric"`
			PValue *float64    `json:"p_value"`
			CI     *[2]float64 `json:"ci"`
		} `json:"evidence"`
		Events []rollout.Event `json:"events"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if got.Name != "checkout" || got.Phase != "RolledBack" || got.DurationS != 196 {
		t.Errorf("header = %q %q %v, want checkout RolledBack 196s", got.Name, got.Phase, got.DurationS)
	}
	if len(got.Stages) != 2 || got.Stages[1].Outcome != "failed" || got.Stages[1].DurationS != 72 || got.Stages[1].Weight != 10 {
		t.Errorf("stages = %+v", got.Stages)
	}
	if len(got.Metrics) != 4 {
		t.Fatalf("metrics = %+v", got.Metrics)
	}
	if c := got.Metrics[0].ChangePct; c == nil || math.Abs(*c-(38.5-0.12)/0.12*100) > 1e-9 {
		t.Errorf("error rate change = %v, want %v", c, (38.5-0.12)/0.12*100)
	}
	if c := got.Metrics[1].ChangePct; c == nil || *c != 0 {
		t.Errorf("0 → 0 change = %v, want 0", c)
	}
	if got.Metrics[2].ChangePct != nil {
		t.Errorf("0 → 2.9 change = %v, want null", *got.Metrics[2].ChangePct)
	}
	if got.Metrics[3].Baseline != nil || got.Metrics[3].ChangePct != nil {
		t.Errorf("NaN metric encoded as %+v, want nulls", got.Metrics[3])
	}
	if len(got.Evidence) != 3 || got.Evidence[0].CI == nil || got.Evidence[0].CI[1] != 0.46 || got.Evidence[1].PValue == nil || got.Evidence[2].PValue != nil {
		t.Errorf("evidence = %+v", got.Evidence)
	}
	if len(got.Events) != 3 || got.Events[2].Type != "rollback" {
		t.Errorf("events = %+v", got.Events)
	}
}

func seedDashboard() DashboardData {
	return DashboardData{
		Name: "checkout", Stage: "Canary 25%", Phase: "Progressing",
		Duration: 12*time.Minute + 34*time.Second, Target: "Production-US-East",
		Weights: rollout.Weights{"canary": 25, "stable": 75},
		Health: []MetricRow{
			{"Error Rate", "0.1%", "0.12%", StatusOK},
			{"P50 Latency", "45ms", "47ms", StatusOK},
			{"P99 Latency", "230ms", "245ms", StatusOK},
			{"CPU Usage", "45%", "48%", StatusOK},
			{"Memory", "2.1GB", "2.2GB", StatusOK},
		},
		Business: []MetricRow{
			{"Conversion", "3.2%", "3.1%", StatusWarn},
			{"Cart Value", "$125", "$123", StatusOK},
			{"API Success", "99.9%", "99.8%", StatusOK},
		},
		Decision: "PROCEED TO NEXT STAGE", DecisionStatus: StatusOK,
		Reason: "all metrics pass (sequential tests, 95% confidence); next step in 17m 26s",
	}
}

func TestDashboardGolden(t *testing.T) {
	golden(t, "seed_dashboard.golden", Dashboard(seedDashboard()))
	waiting := DashboardData{
		Name: "search", Stage: "Canary 1%", Phase: "Progressing", Duration: 8 * time.Second,
		Weights: rollout.Weights{"stable": 99, "canary": 1},
		Health: []MetricRow{
			{"Error Rate", "0.2%", "n/a", StatusInconclusive},
			{"P99 Latency | tail", "120ms", "❌ 900ms", StatusFail},
		},
		Decision: "WAITING FOR DATA", DecisionStatus: StatusInconclusive,
		Reason: "canary has 12 requests, needs 100 to judge error_rate",
	}
	golden(t, "waiting_dashboard.golden", Dashboard(waiting))
}

func TestDashboardColorOnlyWhenAsked(t *testing.T) {
	d := seedDashboard()
	if plain := Dashboard(d); strings.Contains(plain, "\x1b[") {
		t.Fatalf("plain dashboard has ANSI escapes:\n%q", plain)
	}
	d.Color = true
	d.DecisionStatus = StatusFail
	if colored := Dashboard(d); !strings.Contains(colored, ansiRed+ansiBold+"PROCEED TO NEXT STAGE"+ansiReset) {
		t.Fatalf("colored dashboard lacks the red decision:\n%q", colored)
	}
}

func TestDashboardTableIsAligned(t *testing.T) {
	var widths []int
	for _, line := range strings.Split(Dashboard(seedDashboard()), "\n") {
		if strings.HasPrefix(line, "|") {
			widths = append(widths, displayWidth(line))
		}
	}
	if len(widths) != 12 {
		t.Fatalf("got %d table lines, want 12 (2 tables × header, rule, rows)", len(widths))
	}
	for _, w := range widths[:7] {
		if w != widths[0] {
			t.Fatalf("health table lines have widths %v, want all equal", widths[:7])
		}
	}
}

func TestFormatting(t *testing.T) {
	values := []struct {
		v    float64
		unit string
		want string
	}{
		{0.1, "%", "0.1%"}, {0.12, "%", "0.12%"}, {45, "ms", "45ms"}, {230, "ms", "230ms"}, {2.1, "GB", "2.1GB"},
		{125, "$", "$125"}, {-3, "$", "-$3"}, {1200, "req/s", "1200 req/s"}, {0, "%", "0%"}, {99.95, "%", "99.95%"},
		{123.456, "", "123.5"}, {0.00012, "", "0.00012"}, {1e-7, "", "1e-07"}, {math.NaN(), "ms", "n/a"}, {math.Inf(-1), "", "n/a"},
	}
	for _, c := range values {
		if got := FormatValue(c.v, c.unit); got != c.want {
			t.Errorf("FormatValue(%v, %q) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
	changes := []struct {
		pct  float64
		want string
	}{{10, "+10%"}, {2.2222, "+2.2%"}, {-3.14, "-3.1%"}, {0.01, "no change"}, {math.NaN(), "n/a"}}
	for _, c := range changes {
		if got := FormatChange(c.pct); got != c.want {
			t.Errorf("FormatChange(%v) = %q, want %q", c.pct, got, c.want)
		}
	}
	durations := []struct {
		d    time.Duration
		want string
	}{{754 * time.Second, "12m 34s"}, {45 * time.Minute, "45m"}, {65 * time.Minute, "1h 5m"}, {2 * time.Hour, "2h"}, {8 * time.Second, "8s"}, {-time.Second, "0s"}, {1499 * time.Millisecond, "1s"}}
	for _, c := range durations {
		if got := FormatDuration(c.d); got != c.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
	if got := FormatWeights(rollout.Weights{"canary": 5, "green": 0, "stable": 95}); got != "stable 95% · canary 5% · green 0%" {
		t.Errorf("FormatWeights = %q", got)
	}
}

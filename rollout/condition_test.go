package rollout

import (
	"math"
	"testing"
)

func TestParseCondition(t *testing.T) {
	cases := []struct {
		in        string
		metric    string
		op        string
		value     float64
		unit      string
		baseline  string
		threshold float64
	}{
		{"error_rate > 5%", "error_rate", ">", 5, "%", "", 0.05},
		{"p99_latency > 5000ms", "p99_latency", ">", 5000, "ms", "", 5000},
		{"p95_latency >= 2s", "p95_latency", ">=", 2, "s", "", 2000},
		{"success_rate < 99.5%", "success_rate", "<", 99.5, "%", "", 0.995},
		{"consecutive_errors > 10", "consecutive_errors", ">", 10, "", "", 10},
		{"health_check_failures>3", "health_check_failures", ">", 3, "", "", 3},
		{"error_rate > baseline + 2%", "error_rate", ">", 2, "%", "+", 0.02},
		{"p99_latency > baseline * 1.5", "p99_latency", ">", 1.5, "", "*", 1.5},
		{"  p50_latency <= 250ms ", "p50_latency", "<=", 250, "ms", "", 250},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseCondition(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if got.Metric != c.metric || got.Op != c.op || got.Value != c.value || got.Unit != c.unit || got.Baseline != c.baseline {
				t.Errorf("got %+v", got)
			}
			if th := got.Threshold(); math.Abs(th-c.threshold) > 1e-12 {
				t.Errorf("threshold = %v, want %v", th, c.threshold)
			}
		})
	}
}

func TestParseConditionErrors(t *testing.T) {
	cases := map[string]string{
		"":                                  `"" is not a condition: want METRIC OP VALUE, e.g. "error_rate > 5%"`,
		"error_rate":                        `"error_rate" is not a condition: want METRIC OP VALUE, e.g. "error_rate > 5%"`,
		"cpu_usage > 85%":                   `"cpu_usage > 85%": unknown metric "cpu_usage" (known: consecutive_errors, error_rate, health_check_failures, p50_latency, p90_latency, p95_latency, p999_latency, p99_latency, success_rate)`,
		"error_rate == 5%":                  `"error_rate == 5%": operator "==" is not one of >, >=, <, <=`,
		"error_rate > 5":                    `"error_rate > 5": error_rate takes a percentage, e.g. 5%`,
		"error_rate > 150%":                 `"error_rate > 150%": 150% is above 100%`,
		"p99_latency > 5000":                `"p99_latency > 5000": p99_latency takes a duration in ms or s, e.g. 500ms`,
		"p99_latency > fast":                `"p99_latency > fast": "fast" is not a number with an optional unit (%, ms, s)`,
		"consecutive_errors > 2.5":          `"consecutive_errors > 2.5": consecutive_errors is a count; 2.5 is not a whole number`,
		"consecutive_errors > 5%":           `"consecutive_errors > 5%": consecutive_errors is a count and takes a plain number, not "%"`,
		"consecutive_errors > baseline + 1": `"consecutive_errors > baseline + 1": consecutive_errors has no baseline; compare it with a number`,
		"p99_latency > baseline * 2ms":      `"p99_latency > baseline * 2ms": a baseline factor is a plain number, not "ms"`,
		"error_rate >":                      `"error_rate >": missing value after ">"`,
	}
	for in, want := range cases {
		t.Run(in, func(t *testing.T) {
			_, err := ParseCondition(in)
			if err == nil {
				t.Fatalf("accepted")
			}
			if err.Error() != want {
				t.Errorf("got  %s\nwant %s", err, want)
			}
		})
	}
}

func TestConditionHolds(t *testing.T) {
	mk := func(s string) Condition {
		c, err := ParseCondition(s)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := []struct {
		cond            string
		value, baseline float64
		want            bool
	}{
		{"error_rate > 5%", 0.051, 0, true},
		{"error_rate > 5%", 0.05, 0, false},
		{"error_rate >= 5%", 0.05, 0, true},
		{"success_rate < 99.5%", 0.99, 0, true},
		{"p99_latency > 2s", 2500, 0, true},
		{"error_rate > baseline + 2%", 0.031, 0.01, true},
		{"error_rate > baseline + 2%", 0.029, 0.01, false},
		{"p99_latency > baseline * 1.5", 160, 100, true},
		{"p99_latency > baseline * 1.5", 140, 100, false},
		{"p99_latency > baseline * 1.5", math.NaN(), 100, false},
	}
	for _, c := range cases {
		if got := mk(c.cond).Holds(c.value, c.baseline); got != c.want {
			t.Errorf("%s with %v (baseline %v) = %v, want %v", c.cond, c.value, c.baseline, got, c.want)
		}
	}
}

func TestBusinessCondition(t *testing.T) {
	cases := []struct {
		in             string
		canary, stable float64
		want           bool
	}{
		{">= 3%", 0.031, 0, true},
		{"conversion_rate >= 3%", 0.029, 0, false},
		{"conversion_rate_drop > 10%", 0.027, 0.031, true}, // a 12.9% drop
		{"drop > 10%", 0.030, 0.031, false},
		{"cart_abandonment_increase > 15%", 0.70, 0.60, true},
		{"revenue_impact > 10000/hour", 12000, 0, true},
		{"revenue_impact > $10000/hour", 9000, 0, false},
		{"drop > 10%", 0.01, 0, false}, // no stable value: never a silent verdict
	}
	for _, c := range cases {
		bc, err := ParseBusinessCondition(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if got := bc.Holds(c.canary, c.stable); got != c.want {
			t.Errorf("%s with canary %v stable %v = %v, want %v", c.in, c.canary, c.stable, got, c.want)
		}
	}
	for _, bad := range []string{"", "conversion_rate", "drop > 10", "x > abc"} {
		if _, err := ParseBusinessCondition(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

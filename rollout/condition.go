package rollout

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Condition is a parsed trigger condition such as `error_rate > 5%` or
// `p99_latency > baseline * 1.5`.
//
// Values are compared in base units: rates as fractions (5% is 0.05),
// latencies in milliseconds, counts as plain numbers. Threshold holds the
// written value converted to that unit.
type Condition struct {
	Raw    string  `json:"raw"`
	Metric string  `json:"metric"`
	Op     string  `json:"op"`    // >, >=, <, <=
	Value  float64 `json:"value"` // as written: 5 for "5%", 5000 for "5000ms"
	Unit   string  `json:"unit"`  // "%", "ms", "s" or "" (a plain number)
	// Baseline is "" for an absolute threshold, "+" for `baseline + X` and
	// "*" for `baseline * X`.
	Baseline string `json:"baseline,omitempty"`
}

// Condition metrics. Rates are fractions, latencies milliseconds.
var conditionMetrics = map[string]string{
	"error_rate":            "rate",
	"success_rate":          "rate",
	"p50_latency":           "latency",
	"p90_latency":           "latency",
	"p95_latency":           "latency",
	"p99_latency":           "latency",
	"p999_latency":          "latency",
	"consecutive_errors":    "count",
	"health_check_failures": "count",
}

// ConditionMetrics lists the metric names a Condition may use.
func ConditionMetrics() []string {
	names := make([]string, 0, len(conditionMetrics))
	for n := range conditionMetrics {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

var condRE = regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<|==|=|!=)\s*(.*?)\s*$`)
var baselineRE = regexp.MustCompile(`^baseline\s*([+*])\s*(.+)$`)
var numberRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-z%/]*)$`)

// ParseCondition parses `METRIC OP VALUE[UNIT]` or
// `METRIC OP baseline + VALUE[UNIT]` / `METRIC OP baseline * FACTOR`.
func ParseCondition(s string) (Condition, error) {
	m := condRE.FindStringSubmatch(s)
	if m == nil {
		return Condition{}, fmt.Errorf("%q is not a condition: want METRIC OP VALUE, e.g. \"error_rate > 5%%\"", s)
	}
	c := Condition{Raw: strings.TrimSpace(s), Metric: m[1], Op: m[2]}
	kind, ok := conditionMetrics[c.Metric]
	if !ok {
		return Condition{}, fmt.Errorf("%q: unknown metric %q (known: %s)", s, c.Metric, strings.Join(ConditionMetrics(), ", "))
	}
	switch c.Op {
	case ">", ">=", "<", "<=":
	default:
		return Condition{}, fmt.Errorf("%q: operator %q is not one of >, >=, <, <=", s, c.Op)
	}
	rhs := m[3]
	if b := baselineRE.FindStringSubmatch(rhs); b != nil {
		if kind == "count" {
			return Condition{}, fmt.Errorf("%q: %s has no baseline; compare it with a number", s, c.Metric)
		}
		c.Baseline = b[1]
		rhs = strings.TrimSpace(b[2])
	} else if strings.HasPrefix(rhs, "baseline") {
		return Condition{}, fmt.Errorf("%q: want `baseline + VALUE` or `baseline * FACTOR`", s)
	}
	n := numberRE.FindStringSubmatch(rhs)
	if n == nil {
		if rhs == "" {
			return Condition{}, fmt.Errorf("%q: missing value after %q", s, c.Op)
		}
		return Condition{}, fmt.Errorf("%q: %q is not a number with an optional unit (%%, ms, s)", s, rhs)
	}
	v, err := strconv.ParseFloat(n[1], 64)
	if err != nil || math.IsInf(v, 0) {
		return Condition{}, fmt.Errorf("%q: %q is not a finite number", s, n[1])
	}
	c.Value, c.Unit = v, n[2]
	if c.Baseline == "*" {
		if c.Unit != "" {
			return Condition{}, fmt.Errorf("%q: a baseline factor is a plain number, not %q", s, c.Unit)
		}
		if v <= 0 {
			return Condition{}, fmt.Errorf("%q: baseline factor must be positive", s)
		}
		return c, nil
	}
	switch kind {
	case "rate":
		if c.Unit != "%" {
			return Condition{}, fmt.Errorf("%q: %s takes a percentage, e.g. 5%%", s, c.Metric)
		}
		if v > 100 {
			return Condition{}, fmt.Errorf("%q: %v%% is above 100%%", s, v)
		}
	case "latency":
		if c.Unit != "ms" && c.Unit != "s" {
			return Condition{}, fmt.Errorf("%q: %s takes a duration in ms or s, e.g. 500ms", s, c.Metric)
		}
	case "count":
		if c.Unit != "" {
			return Condition{}, fmt.Errorf("%q: %s is a count and takes a plain number, not %q", s, c.Metric, c.Unit)
		}
		if v != math.Trunc(v) {
			return Condition{}, fmt.Errorf("%q: %s is a count; %v is not a whole number", s, c.Metric, v)
		}
	}
	return c, nil
}

// Threshold is the written value in base units (fraction, ms, count); for a
// `baseline *` condition it is the factor.
func (c Condition) Threshold() float64 {
	switch {
	case c.Baseline == "*":
		return c.Value
	case c.Unit == "%":
		return c.Value / 100
	case c.Unit == "s":
		return c.Value * 1000
	}
	return c.Value
}

// Holds reports whether the condition is true for value (the canary's, in
// base units) given the baseline's value (ignored for absolute conditions).
func (c Condition) Holds(value, baseline float64) bool {
	if math.IsNaN(value) || (c.Baseline != "" && math.IsNaN(baseline)) {
		return false
	}
	limit := c.Threshold()
	switch c.Baseline {
	case "+":
		limit = baseline + limit
	case "*":
		limit = baseline * limit
	}
	switch c.Op {
	case ">":
		return value > limit
	case ">=":
		return value >= limit
	case "<":
		return value < limit
	case "<=":
		return value <= limit
	}
	return false
}

// BaselineKey is the Observation.Values key holding the baseline's value of
// a metric, for `baseline + X` / `baseline * X` conditions.
func BaselineKey(metric string) string { return "baseline:" + metric }

func (c Condition) String() string { return c.Raw }

// MarshalText and UnmarshalText let a Condition travel as its source text.
func (c Condition) MarshalText() ([]byte, error) { return []byte(c.Raw), nil }

// UnmarshalText parses the condition again.
func (c *Condition) UnmarshalText(b []byte) error {
	p, err := ParseCondition(string(b))
	if err != nil {
		return err
	}
	*c = p
	return nil
}

// BusinessCondition is a condition on a business metric's value:
// absolute (`conversion_rate >= 3%`, `>= 3%`), or a comparison of the
// canary's value against stable's (`conversion_rate_drop > 10%`,
// `drop > 10%`, `cart_abandonment_increase > 15%`), or a rate
// (`revenue_impact > 10000/hour`).
type BusinessCondition struct {
	Raw     string  `json:"raw"`
	Subject string  `json:"subject,omitempty"` // the name written before the operator, if any
	Op      string  `json:"op"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit,omitempty"` // "%", "/hour", "/minute", "/second" or ""
	// Compare is "" (absolute), "drop" (relative decrease of canary vs
	// stable) or "increase" (relative increase).
	Compare string `json:"compare,omitempty"`
}

var bizRE = regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)?\s*(>=|<=|>|<)\s*\$?\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(%|/hour|/h|/minute|/min|/second|/s)?\s*$`)

// ParseBusinessCondition parses a business metric condition.
func ParseBusinessCondition(s string) (BusinessCondition, error) {
	m := bizRE.FindStringSubmatch(s)
	if m == nil {
		return BusinessCondition{}, fmt.Errorf("%q is not a business condition: want [NAME] OP VALUE[%%|/hour], e.g. \">= 3%%\" or \"conversion_rate_drop > 10%%\"", s)
	}
	v, _ := strconv.ParseFloat(m[3], 64)
	c := BusinessCondition{Raw: strings.TrimSpace(s), Subject: m[1], Op: m[2], Value: v}
	switch m[4] {
	case "/h", "/hour":
		c.Unit = "/hour"
	case "/min", "/minute":
		c.Unit = "/minute"
	case "/s", "/second":
		c.Unit = "/second"
	default:
		c.Unit = m[4]
	}
	switch {
	case c.Subject == "drop" || strings.HasSuffix(c.Subject, "_drop"):
		c.Compare = "drop"
	case c.Subject == "increase" || strings.HasSuffix(c.Subject, "_increase"):
		c.Compare = "increase"
	}
	if c.Compare != "" && c.Unit != "%" {
		return BusinessCondition{}, fmt.Errorf("%q: a %s is relative to stable and takes a percentage, e.g. 10%%", s, c.Compare)
	}
	return c, nil
}

// Threshold is the value in base units (a fraction for %, per hour for
// rates, else as written).
func (c BusinessCondition) Threshold() float64 {
	switch c.Unit {
	case "%":
		return c.Value / 100
	case "/minute":
		return c.Value * 60
	case "/second":
		return c.Value * 3600
	}
	return c.Value
}

// Holds evaluates the condition. For comparisons, canary and stable are
// the query's values for each version; otherwise only canary is used.
func (c BusinessCondition) Holds(canary, stable float64) bool {
	if math.IsNaN(canary) || math.IsInf(canary, 0) {
		return false
	}
	v := canary
	switch c.Compare {
	case "drop", "increase":
		if stable == 0 || math.IsNaN(stable) || math.IsInf(stable, 0) {
			return false
		}
		v = (canary - stable) / math.Abs(stable)
		if c.Compare == "drop" {
			v = -v
		}
	}
	limit := c.Threshold()
	switch c.Op {
	case ">":
		return v > limit
	case ">=":
		return v >= limit
	case "<":
		return v < limit
	case "<=":
		return v <= limit
	}
	return false
}

// MarshalText and UnmarshalText let a BusinessCondition travel as text.
func (c BusinessCondition) MarshalText() ([]byte, error) { return []byte(c.Raw), nil }

// UnmarshalText parses the condition again.
func (c *BusinessCondition) UnmarshalText(b []byte) error {
	p, err := ParseBusinessCondition(string(b))
	if err != nil {
		return err
	}
	*c = p
	return nil
}

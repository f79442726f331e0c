package guard

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Trigger metrics.
const (
	ErrorRate           = "error_rate"
	ConsecutiveErrors   = "consecutive_errors"
	HealthCheckFailures = "health_check_failures"
)

// latencyQuantiles maps the latency trigger names to their quantile.
var latencyQuantiles = map[string]float64{
	"p50_latency":  0.50,
	"p90_latency":  0.90,
	"p95_latency":  0.95,
	"p99_latency":  0.99,
	"p999_latency": 0.999,
}

// Trigger is one critical rollback condition, "Metric > Threshold".
// Thresholds are in base units: error_rate a fraction (0.05 for 5%),
// pNN_latency seconds, consecutive_errors and health_check_failures counts.
type Trigger struct {
	Metric    string  `json:"metric"`
	Threshold float64 `json:"threshold"`
}

// String renders the trigger as ParseTrigger reads it.
func (t Trigger) String() string {
	switch {
	case t.Metric == ErrorRate:
		return fmt.Sprintf("%s > %s%%", t.Metric, strconv.FormatFloat(t.Threshold*100, 'g', -1, 64))
	case isLatency(t.Metric):
		return fmt.Sprintf("%s > %s", t.Metric, time.Duration(t.Threshold*float64(time.Second)))
	default:
		return fmt.Sprintf("%s > %s", t.Metric, strconv.FormatFloat(t.Threshold, 'g', -1, 64))
	}
}

func isLatency(metric string) bool { _, ok := latencyQuantiles[metric]; return ok }

// validate reports what is wrong with t, naming the metric and the value.
func (t Trigger) validate() error {
	switch {
	case t.Metric == ErrorRate:
		if !(t.Threshold > 0 && t.Threshold < 1) {
			return fmt.Errorf("error_rate threshold %v is not a fraction between 0 and 1 (exclusive)", t.Threshold)
		}
	case isLatency(t.Metric):
		if !(t.Threshold > 0) || math.IsInf(t.Threshold, 0) || t.Threshold > 60 {
			return fmt.Errorf("%s threshold %vs is not a latency between 0 and 60s", t.Metric, t.Threshold)
		}
	case t.Metric == ConsecutiveErrors || t.Metric == HealthCheckFailures:
		if !(t.Threshold >= 0) || t.Threshold != math.Trunc(t.Threshold) || t.Threshold > 1e9 {
			return fmt.Errorf("%s threshold %v is not a whole count >= 0", t.Metric, t.Threshold)
		}
	default:
		return fmt.Errorf("unknown metric %q (want error_rate, p50_latency, p90_latency, p95_latency, p99_latency, p999_latency, consecutive_errors or health_check_failures)", t.Metric)
	}
	return nil
}

// ParseTrigger reads the rollout spec's form of a critical trigger:
//
//	error_rate > 5%            (or a fraction: error_rate > 0.05)
//	p99_latency > 5000ms       (any of us, ms, s, m, or a Go duration; also p50/p90/p95/p999)
//	consecutive_errors > 10
//	health_check_failures > 3
//
// latency_p99 is accepted as a spelling of p99_latency.
func ParseTrigger(s string) (Trigger, error) {
	fail := func(format string, args ...any) (Trigger, error) {
		return Trigger{}, fmt.Errorf("trigger %q: %s", s, fmt.Sprintf(format, args...))
	}
	lhs, rhs, ok := strings.Cut(s, ">")
	if !ok {
		if strings.ContainsAny(s, "<=") {
			return fail("only '>' is supported: a trigger fires when the metric rises above the threshold")
		}
		return fail("want METRIC > THRESHOLD, for example error_rate > 5%%")
	}
	if strings.HasPrefix(rhs, "=") {
		return fail("'>=' is not supported; use '>' with the threshold one step lower")
	}
	metric := strings.TrimSpace(lhs)
	if q, ok := strings.CutPrefix(metric, "latency_"); ok {
		metric = q + "_latency"
	}
	val := strings.TrimSpace(rhs)
	if metric == "" {
		return fail("missing metric before '>'")
	}
	if val == "" {
		return fail("missing threshold after '>'")
	}
	t := Trigger{Metric: metric}
	switch {
	case metric == ErrorRate:
		num, pct := strings.CutSuffix(val, "%")
		f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil {
			return fail("threshold %q is not a number or a percentage", val)
		}
		if pct {
			f /= 100
		} else if f >= 1 {
			return fail("threshold %s is not a fraction below 1; write %s%% for a percentage", val, val)
		}
		t.Threshold = f
	case isLatency(metric):
		d, err := parseLatency(val)
		if err != nil {
			return fail("%v", err)
		}
		t.Threshold = d.Seconds()
	case metric == ConsecutiveErrors || metric == HealthCheckFailures:
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return fail("threshold %q is not a whole number", val)
		}
		t.Threshold = float64(n)
	}
	if err := t.validate(); err != nil {
		return fail("%v", err)
	}
	return t, nil
}

func parseLatency(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(strings.ReplaceAll(s, " ", "")); err == nil {
		return d, nil
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, fmt.Errorf("latency threshold %q needs a unit (us, ms, s), for example 5000ms", s)
	}
	return 0, fmt.Errorf("latency threshold %q is not a duration such as 5000ms or 5s", s)
}

package driver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
)

// businessSpec is a canary rollout whose promotion is gated on a business
// metric kept in Prometheus under metric{version="stable"|"canary"}.
func businessSpec(name, prom, metric, extra string) string {
	return fmt.Sprintf(`
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: %s}
spec:
  listen: 127.0.0.1:0
  stable: {url: http://127.0.0.1:9101}
  canary: {url: http://127.0.0.1:9102}
  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: 1s}
        - setWeight: 50
        - pause: {duration: 1s}
        - setWeight: 100
  analysis:
    interval: 200ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
  businessMetrics:
    prometheus: %s
    metrics:
      - name: conversion_rate
        query: 'sum(%[3]s{version="{{version}}"})'
        condition: ">= 3%%"
      - name: conversion_vs_stable
        query: 'sum(%[3]s{version="{{version}}"})'
        condition: conversion_rate_drop > 10%%
%s`, name, prom, metric, extra)
}

func healthyTraffic() *trafficSource {
	return newTrafficSource(profile{Requests: 4000, ErrorRate: 0.001, LatencyMs: 20, Jitter: 0.2}, profile{Requests: 4000, ErrorRate: 0.001, LatencyMs: 20, Jitter: 0.2})
}

// TestBusinessMetricsPrometheus runs business gates and triggers through
// the real driver against a real Prometheus scraping a test exporter.
func TestBusinessMetricsPrometheus(t *testing.T) {
	t.Parallel()
	exp := newExporter(t)
	prom := startPrometheus(t, exp.srv.URL)

	t.Run("query", func(t *testing.T) {
		t.Parallel()
		exp.set(`q_value{version="stable"}`, 0.25)
		exp.set(`q_value{version="canary"}`, 0.5)
		waitForQuery(t, prom, `sum(q_value{version="canary"})`, 0.5)
		p := Prometheus{}
		ctx := context.Background()
		if v, ok, err := p.Query(ctx, prom, `sum(q_value{version="stable"})`); err != nil || !ok || v != 0.25 {
			t.Errorf("vector: got %v ok=%v err=%v, want 0.25", v, ok, err)
		}
		if v, ok, err := p.Query(ctx, prom, `scalar(sum(q_value)) * 2`); err != nil || !ok || v != 1.5 {
			t.Errorf("scalar: got %v ok=%v err=%v, want 1.5", v, ok, err)
		}
		if _, ok, err := p.Query(ctx, prom, `sum(q_missing{version="canary"})`); err != nil || ok {
			t.Errorf("no series: got ok=%v err=%v, want no data and no error", ok, err)
		}
		if _, _, err := p.Query(ctx, prom, `q_value`); err == nil || !strings.Contains(err.Error(), "2 series") {
			t.Errorf("two series: got err %v, want one naming 2 series", err)
		}
		if _, _, err := p.Query(ctx, prom, `sum(q_value{`); err == nil {
			t.Errorf("bad PromQL: got no error")
		}
		if _, ok, err := p.Query(ctx, prom, `sum(q_value{version="canary"}) / 0 * 0`); err != nil || ok {
			t.Errorf("NaN: got ok=%v err=%v, want no data", ok, err)
		}
	})

	// No data for the canary: the gate is Inconclusive and the rollout waits
	// at 10% (never passes silently); once the canary's value appears and
	// meets the conditions, the rollout goes on to promotion.
	t.Run("no data waits, then passes", func(t *testing.T) {
		t.Parallel()
		exp.set(`a_conversion{version="stable"}`, 0.035)
		waitForQuery(t, prom, `sum(a_conversion{version="stable"})`, 0.035)
		h := startDriver(t, businessSpec("biz-nodata", prom, "a_conversion", ""), healthyTraffic(), Config{Business: Prometheus{}})
		st := h.waitFor("business gate answered Inconclusive", 30*time.Second, func(s rollout.State) bool {
			g := s.Gates["business-2"]
			return g != nil && g.Status == "retry"
		})
		if g := st.Gates["business-2"]; !strings.Contains(g.Message, "the canary's query returned no data") {
			t.Errorf("gate message %q: want it to say the query returned no data", g.Message)
		}
		if !strings.Contains(st.Message, "waiting for gate business-2") {
			t.Errorf("state message %q: want it to say it waits for the business gate", st.Message)
		}
		if got := h.router.maxCanary(); got != 10 {
			t.Fatalf("canary weight reached %d%% while the business gate had no data; want it held at 10%%", got)
		}
		exp.set(`a_conversion{version="canary"}`, 0.034) // 3.4% >= 3%, 2.9% below stable
		st = h.waitEnd(60 * time.Second)
		if st.Phase != rollout.Promoted {
			t.Fatalf("phase %s (%s), want Promoted", st.Phase, st.Message)
		}
		if got, want := fmt.Sprint(h.router.weights()), "[0 10 50 100]"; got != want {
			t.Errorf("canary weights %s, want %s", got, want)
		}
		var inconclusive, passed bool
		for _, e := range h.events() {
			inconclusive = inconclusive || strings.HasPrefix(e.Message, "gate business-2: Inconclusive")
			passed = passed || (inconclusive && strings.HasPrefix(e.Message, "gate business-2: Pass"))
		}
		if !inconclusive || !passed {
			t.Errorf("events: want gate business-2 Inconclusive then Pass; inconclusive=%v pass=%v", inconclusive, passed)
		}
	})

	// A value breaching the gate's condition rolls back before the canary
	// gets more traffic: an absolute threshold, and a drop against stable.
	for _, tc := range []struct {
		name, metric   string
		stable, canary float64
		reason         string
	}{
		{"below threshold", "b_conversion", 0.021, 0.02, "conversion_rate: canary 2% breaches >= 3%"},
		{"drop against stable", "c_conversion", 0.045, 0.034, "conversion_vs_stable: canary 0.034 vs stable 0.045 (drop 24.44%) breaches conversion_rate_drop > 10%"},
	} {
		t.Run("breach "+tc.name, func(t *testing.T) {
			t.Parallel()
			exp.set(tc.metric+`{version="stable"}`, tc.stable)
			exp.set(tc.metric+`{version="canary"}`, tc.canary)
			waitForQuery(t, prom, `sum(`+tc.metric+`{version="canary"})`, tc.canary)
			waitForQuery(t, prom, `sum(`+tc.metric+`{version="stable"})`, tc.stable)
			h := startDriver(t, businessSpec("biz-"+strings.ReplaceAll(tc.metric, "_", "-"), prom, tc.metric, ""), healthyTraffic(), Config{Business: Prometheus{}})
			st := h.waitEnd(30 * time.Second)
			if st.Phase != rollout.RolledBack {
				t.Fatalf("phase %s (%s), want RolledBack", st.Phase, st.Message)
			}
			if !strings.HasPrefix(st.Message, "business metrics failed") || !strings.Contains(st.Message, tc.reason) {
				t.Errorf("message %q: want the business gate's failure naming %q", st.Message, tc.reason)
			}
			if got := h.router.maxCanary(); got != 10 {
				t.Errorf("canary weight reached %d%%; want the gate to stop it at 10%%", got)
			}
			if got := h.router.canary(); got != 0 {
				t.Errorf("canary weight %d%% after rollback, want 0", got)
			}
		})
	}

	// A business rollback trigger: healthy values keep the rollout going;
	// once the canary's conversion drops more than 10% below stable for the
	// trigger's duration, it rolls back.
	t.Run("trigger rolls back", func(t *testing.T) {
		t.Parallel()
		exp.set(`d_conversion{version="stable"}`, 0.040)
		exp.set(`d_conversion{version="canary"}`, 0.039)
		waitForQuery(t, prom, `sum(d_conversion{version="canary"})`, 0.039)
		waitForQuery(t, prom, `sum(d_conversion{version="stable"})`, 0.040)
		spec := fmt.Sprintf(`
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: biz-trigger}
spec:
  listen: 127.0.0.1:0
  stable: {url: http://127.0.0.1:9101}
  canary: {url: http://127.0.0.1:9102}
  strategy:
    canary:
      steps:
        - setWeight: 20
        - pause: {duration: 10m}
        - setWeight: 100
  analysis:
    interval: 200ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
  businessMetrics:
    prometheus: %s
    metrics: []
  rollbackTriggers:
    business:
      - query: 'sum(d_conversion{version="{{version}}"})'
        condition: conversion_rate_drop > 10%%
        for: 2s
`, prom)
		h := startDriver(t, spec, healthyTraffic(), Config{Business: Prometheus{}})
		h.waitFor("canary at 20%", 10*time.Second, func(s rollout.State) bool { return s.Weights["canary"] == 20 })
		// Longer than the trigger's 2s hold, with values arriving: a
		// trigger that held on healthy values would have fired by now.
		time.Sleep(4 * time.Second)
		if st := h.drv.State(); st.Phase != rollout.Progressing || len(st.Holding) > 0 {
			t.Fatalf("with canary 3.9%% vs stable 4.0%%: phase %s holding %v (%s); want Progressing, nothing holding", st.Phase, st.Holding, st.Message)
		}
		exp.set(`d_conversion{version="canary"}`, 0.030) // a 25% drop
		breached := time.Now()
		st := h.waitEnd(30 * time.Second)
		if st.Phase != rollout.RolledBack {
			t.Fatalf("phase %s (%s), want RolledBack", st.Phase, st.Message)
		}
		if want := `business trigger "conversion_rate_drop > 10%" held for 2s`; !strings.HasPrefix(st.Message, want) {
			t.Errorf("message %q, want it to start with %q", st.Message, want)
		}
		// Scrape (1s) + poll (1s) + hold (2s) + intervals: a loose bound.
		if took := time.Since(breached); took < 2*time.Second || took > 15*time.Second {
			t.Errorf("rolled back %s after the breach; want between the 2s hold and 15s", took)
		}
		if got := h.router.canary(); got != 0 {
			t.Errorf("canary weight %d%% after rollback, want 0", got)
		}
	})
}

// fakeBusiness answers queries from a table; a missing query has no data.
type fakeBusiness map[string]float64

func (f fakeBusiness) Query(_ context.Context, _, query string) (float64, bool, error) {
	if query == "broken" {
		return 0, false, fmt.Errorf("query %q: bad_data: parse error", query)
	}
	v, ok := f[query]
	return v, ok, nil
}

func TestBusinessGateOutcomes(t *testing.T) {
	q := `sum(conv{version="{{version}}"})`
	for _, tc := range []struct {
		name, query, cond string
		values            fakeBusiness
		want              analysis.Outcome
		reason            string
	}{
		{"requirement met", q, ">= 3%", fakeBusiness{`sum(conv{version="canary"})`: 0.034}, analysis.Pass, "canary 3.4% meets >= 3%"},
		{"requirement breached", q, "conversion_rate >= 3%", fakeBusiness{`sum(conv{version="canary"})`: 0.029}, analysis.Fail, "canary 2.9% breaches conversion_rate >= 3%"},
		{"limit within", q, "conversion_rate_drop > 10%", fakeBusiness{`sum(conv{version="canary"})`: 0.033, `sum(conv{version="stable"})`: 0.034}, analysis.Pass, "(drop 2.94%) does not breach conversion_rate_drop > 10%"},
		{"limit breached", q, "conversion_rate_drop > 10%", fakeBusiness{`sum(conv{version="canary"})`: 0.030, `sum(conv{version="stable"})`: 0.034}, analysis.Fail, "(drop 11.76%) breaches"},
		{"requirement form of a drop", q, "conversion_rate_drop <= 10%", fakeBusiness{`sum(conv{version="canary"})`: 0.030, `sum(conv{version="stable"})`: 0.034}, analysis.Fail, "breaches conversion_rate_drop <= 10%"},
		{"increase limit", q, "cart_abandonment_increase > 15%", fakeBusiness{`sum(conv{version="canary"})`: 0.5, `sum(conv{version="stable"})`: 0.4}, analysis.Fail, "(increase 25.00%) breaches"},
		{"impact limit", "revenue_loss", "revenue_impact > 10000/hour", fakeBusiness{"revenue_loss": 12000}, analysis.Fail, "canary 12000 breaches"},
		{"impact within", "revenue_loss", "revenue_impact > 10000/hour", fakeBusiness{"revenue_loss": 900}, analysis.Pass, "canary 900 does not breach"},
		{"no canary data", q, ">= 3%", fakeBusiness{}, analysis.Inconclusive, "the canary's query returned no data"},
		{"no stable data", q, "drop > 10%", fakeBusiness{`sum(conv{version="canary"})`: 0.03}, analysis.Inconclusive, "stable's query returned no data"},
		{"stable at zero", q, "drop > 10%", fakeBusiness{`sum(conv{version="canary"})`: 0.03, `sum(conv{version="stable"})`: 0}, analysis.Inconclusive, "stable's value is 0"},
		{"query error", "broken", ">= 3%", fakeBusiness{}, analysis.Inconclusive, "bad_data"},
		{"comparison without placeholder", "sum(conv)", "drop > 10%", fakeBusiness{"sum(conv)": 0.03}, analysis.Inconclusive, "needs {{version}}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := rollout.ParseBusinessCondition(tc.cond)
			if err != nil {
				t.Fatal(err)
			}
			d := &Driver{cfg: Config{Business: tc.values, Spec: rollout.Spec{BusinessMetrics: &rollout.BusinessMetrics{
				Prometheus: "http://127.0.0.1:9090",
				Metrics:    []rollout.BusinessMetric{{Name: "m", Query: tc.query, Condition: c}},
			}}}}
			res := d.businessGate(context.Background(), rollout.Gate{ID: "business-1"})
			if res.Outcome != tc.want || !strings.Contains(res.Message, tc.reason) {
				t.Errorf("got %s %q; want %s containing %q", res.Outcome, res.Message, tc.want, tc.reason)
			}
		})
	}
	t.Run("no client", func(t *testing.T) {
		d := &Driver{cfg: Config{Spec: rollout.Spec{BusinessMetrics: &rollout.BusinessMetrics{}}}}
		if res := d.businessGate(context.Background(), rollout.Gate{ID: "b"}); res.Outcome != analysis.Inconclusive {
			t.Errorf("without a client: %s, want Inconclusive", res.Outcome)
		}
	})
}

// TestBusinessTriggerValuesGoStale checks that trigger values older than
// three polls are not handed to the engine.
func TestBusinessTriggerValuesGoStale(t *testing.T) {
	now := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	d := &Driver{now: func() time.Time { return now }}
	d.business.Store(&businessPoll{at: now, values: map[string]float64{rollout.BusinessKey(0): 0.02}})
	got := map[string]float64{}
	d.addBusiness(got, time.Second)
	if got[rollout.BusinessKey(0)] != 0.02 {
		t.Fatalf("fresh values: got %v", got)
	}
	now = now.Add(3*time.Second + time.Millisecond)
	got = map[string]float64{}
	d.addBusiness(got, time.Second)
	if len(got) != 0 {
		t.Errorf("values from more than 3 polls ago: got %v, want none", got)
	}
}

package driver

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
)

func adaptiveSpec(name string) string {
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
      adaptive: {enabled: true, maxWeight: 50, maxStepWeight: 20}
      steps:
        - setWeight: 5
        - pause: {duration: 500ms}
        - setWeight: 10
        - pause: {duration: 500ms}
        - setWeight: 40
        - pause: {duration: 500ms}
        - setWeight: 100
  analysis:
    interval: 100ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
      - {name: latency_p50, maxRatio: 1.2}
`, name)
}

func adaptiveEvents(evs []rollout.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == rollout.EventAdaptive {
			out = append(out, e.Message)
		}
	}
	return out
}

// TestAdaptiveProgressionDriver runs the seed's adaptive algorithm through
// the driver with the real Monitor and judge: a canary that performs like
// stable doubles its weight after every healthy pause (bounded by
// maxStepWeight 20 and maxWeight 50), one measurably worse (but within the
// analysis bounds) advances one point at a time, and a failing one scores
// 0 and rolls back.
func TestAdaptiveProgressionDriver(t *testing.T) {
	t.Parallel()
	t.Run("healthy doubles", func(t *testing.T) {
		t.Parallel()
		// The canary is a little faster, so the judge (which only counts an
		// increase against it) cannot call it High by chance.
		stable := profile{Requests: 4000, LatencyMs: 20, Jitter: 0.2}
		canary := profile{Requests: 4000, LatencyMs: 19, Jitter: 0.2}
		h := startDriver(t, adaptiveSpec("adaptive-fast"), newTrafficSource(stable, canary), Config{})
		st := h.waitEnd(60 * time.Second)
		if st.Phase != rollout.Promoted {
			t.Fatalf("phase %s (%s), want Promoted", st.Phase, st.Message)
		}
		// 5 → 10 (double, reaching the planned 10), 10 → 20 (double, held),
		// 20 → 40 (double, reaching the planned 40), 40 → 50 (capped by
		// maxWeight), then the plan's 100.
		if got, want := fmt.Sprint(h.router.weights()), "[0 5 10 20 40 50 100]"; got != want {
			t.Errorf("canary weights %s, want %s", got, want)
		}
		ad := adaptiveEvents(h.events())
		if len(ad) != 4 {
			t.Fatalf("adaptive events %q, want 4", ad)
		}
		for _, m := range ad {
			if !strings.HasPrefix(m, "adaptive: score 1.000 (score > 0.95: double)") {
				t.Errorf("adaptive event %q: want a doubling on score 1.000", m)
			}
		}
	})

	t.Run("worse canary adds one point", func(t *testing.T) {
		t.Parallel()
		// Enough requests that every interval's canary sample has errors, so
		// the judge sees the increase each time.
		stable := profile{Requests: 20000, LatencyMs: 20, Jitter: 0.2}
		canary := profile{Requests: 20000, ErrorRate: 0.01, LatencyMs: 20, Jitter: 0.2} // +1 point of errors: within the 2% bound
		h := startDriver(t, adaptiveSpec("adaptive-slow"), newTrafficSource(stable, canary), Config{})
		st := h.waitFor("canary at 7%", 60*time.Second, func(s rollout.State) bool { return h.router.canary() >= 7 || s.Phase.Done() })
		if st.Phase.Done() {
			t.Fatalf("phase %s (%s), want the rollout still progressing", st.Phase, st.Message)
		}
		if got := h.router.weights(); !slices.Equal(got[:4], []int{0, 5, 6, 7}) {
			t.Errorf("canary weights %v, want 0, 5, 6, 7 first", got)
		}
		for _, m := range adaptiveEvents(h.events())[:2] {
			if !strings.Contains(m, "score <= 0.90: add one point") {
				t.Errorf("adaptive event %q: want one point added", m)
			}
		}
		if st := h.drv.State(); st.Score == nil || *st.Score > 0.90 {
			t.Errorf("score %v, want at most 0.90", st.Score)
		}
	})

	t.Run("failing canary scores 0 and rolls back", func(t *testing.T) {
		t.Parallel()
		stable := profile{Requests: 4000, LatencyMs: 20, Jitter: 0.2}
		canary := profile{Requests: 4000, ErrorRate: 0.2, LatencyMs: 20, Jitter: 0.2}
		h := startDriver(t, adaptiveSpec("adaptive-fail"), newTrafficSource(stable, canary), Config{})
		st := h.waitEnd(30 * time.Second)
		if st.Phase != rollout.RolledBack {
			t.Fatalf("phase %s (%s), want RolledBack", st.Phase, st.Message)
		}
		if st.Score == nil || *st.Score != 0 {
			t.Errorf("score %v, want 0 when a verdict fails", st.Score)
		}
		if got := h.router.maxCanary(); got != 5 {
			t.Errorf("canary reached %d%%, want 5%% (no adaptive move on a failing canary)", got)
		}
	})
}

// interval builds one interval's stats: n requests, errs errors, latencies
// drawn uniformly from [lo, hi] ms.
func interval(rng *rand.Rand, n, errs int64, lo, hi float64) rollout.VersionStats {
	v := rollout.VersionStats{Requests: n, Errors: errs, Latency: rollout.NewLatencyHistogram()}
	for range n {
		_ = v.Latency.RecordValue(int64(1000 * (lo + (hi-lo)*rng.Float64())))
	}
	return v
}

func TestScorer(t *testing.T) {
	spec := rollout.Spec{}
	spec.Strategy.Canary = &rollout.CanaryStrategy{Adaptive: &rollout.Adaptive{Enabled: true, MaxWeight: 100, MaxStepWeight: 25}}
	spec.Analysis.Metrics = []rollout.MetricSpec{
		{Name: "error_rate", MaxIncrease: 0.02},
		{Name: "latency_p50", MaxRatio: 1.2},
		{Name: "latency_p99", MaxRatio: 1.5},
	}
	pass := []analysis.Verdict{{Metric: "error_rate", Outcome: analysis.Pass}}
	for _, tc := range []struct {
		name           string
		canaryLo       float64
		canaryHi       float64
		verdicts       []analysis.Verdict
		intervals      int
		wantLo, wantHi float64
	}{
		{"like stable", 10, 30, pass, 12, 0.951, 1},
		{"latency 3x", 30, 90, pass, 12, 0, 0.34},
		{"a verdict fails", 10, 30, []analysis.Verdict{{Metric: "latency_p99", Outcome: analysis.Fail}}, 12, 0, 0},
		{"one interval", 10, 30, pass, 1, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScorer(spec)
			rng := rand.New(rand.NewPCG(7, 9))
			var got float64
			for range tc.intervals {
				var err error
				got, err = s.observe("1/10", interval(rng, 400, 2, tc.canaryLo, tc.canaryHi), interval(rng, 400, 2, 10, 30), tc.verdicts)
				if err != nil {
					t.Fatal(err)
				}
			}
			if got < tc.wantLo || got > tc.wantHi {
				t.Errorf("score %v, want in [%v, %v]; judge: %s (%s)", got, tc.wantLo, tc.wantHi, s.last.Verdict, s.last.Reason)
			}
		})
	}

	t.Run("new traffic starts over", func(t *testing.T) {
		s := newScorer(spec)
		rng := rand.New(rand.NewPCG(3, 4))
		for range 10 {
			if _, err := s.observe("1/10", interval(rng, 400, 2, 30, 90), interval(rng, 400, 2, 10, 30), pass); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(s.canary["latency_p50"]); n != 10 {
			t.Fatalf("%d samples, want 10", n)
		}
		if _, err := s.observe("3/20", interval(rng, 400, 2, 10, 30), interval(rng, 400, 2, 10, 30), pass); err != nil {
			t.Fatal(err)
		}
		if n := len(s.canary["latency_p50"]); n != 1 {
			t.Errorf("%d samples after the weight changed, want 1 (the 10%% samples dropped)", n)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		s := newScorer(spec)
		rng := rand.New(rand.NewPCG(5, 6))
		for range maxScoreSamples + 30 {
			if _, err := s.observe("1/10", interval(rng, 50, 0, 10, 30), interval(rng, 50, 0, 10, 30), pass); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(s.stable["latency_p99"]); n != maxScoreSamples {
			t.Errorf("%d samples kept, want the latest %d", n, maxScoreSamples)
		}
	})

	t.Run("off", func(t *testing.T) {
		if s := newScorer(rollout.Spec{}); s != nil {
			t.Errorf("scorer without adaptive: got %v, want nil", s)
		}
	})

	t.Run("percentiles", func(t *testing.T) {
		for in, want := range map[string]float64{"50": 50, "99": 99, "999": 99.9, "99.9": 99.9, "9": 9} {
			if got, err := percentile(in); err != nil || got != want {
				t.Errorf("percentile(%q) = %v, %v; want %v", in, got, err, want)
			}
		}
	})
}

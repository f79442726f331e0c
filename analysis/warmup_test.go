package analysis

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// startup simulates the traffic of a freshly started rollout as Guardian's
// end-to-end runs see it on loopback: 1000 req/s in 1 s batches, each
// request routed to the canary with probability rho, log-normal latencies
// around 0.8 ms with a heavier tail (1 request in 50 takes 2–8× longer),
// and a start-up transient (first connections, cold caches) in which the
// first 50–200 requests of both versions are 5–50× slower.
type startup struct {
	rng       *rand.Rand
	rho       float64
	slowLeft  int                     // requests of the transient still to come
	canaryAdd float64                 // ms added to every canary latency
	hx, hy    *hdrhistogram.Histogram // reused: a Batch is read before the next one is made
}

func newStartup(seed uint64, rho, canaryAddMS float64) *startup {
	rng := rand.New(rand.NewPCG(seed, 31))
	return &startup{rng: rng, rho: rho, slowLeft: 50 + rng.IntN(151), canaryAdd: canaryAddMS,
		hx: hdrhistogram.New(1, 60_000_000, 3), hy: hdrhistogram.New(1, 60_000_000, 3)}
}

func (s *startup) latencyMS() float64 {
	v := 0.8 * math.Exp(0.35*s.rng.NormFloat64())
	if s.rng.Float64() < 0.02 {
		v *= 2 + 6*s.rng.Float64()
	}
	if s.slowLeft > 0 {
		s.slowLeft--
		v *= 5 + 45*s.rng.Float64()
	}
	return v
}

func (s *startup) batch() Batch {
	hx, hy := s.hx, s.hy
	hx.Reset()
	hy.Reset()
	b := Batch{CanaryShare: s.rho, CanaryLatency: hx, BaselineLatency: hy}
	for range 1000 {
		v := s.latencyMS()
		if s.rng.Float64() < s.rho {
			b.CanaryRequests++
			_ = hx.RecordValue(int64((v + s.canaryAdd) * 1000))
		} else {
			b.BaselineRequests++
			_ = hy.RecordValue(int64(v * 1000))
		}
	}
	return b
}

func latencySpecs() []MetricSpec {
	return []MetricSpec{
		{Name: "error_rate", MaxIncrease: 0.02},
		{Name: "latency_p50", MaxRatio: 1.2},
		{Name: "latency_p99", MaxRatio: 1.5},
	}
}

// A healthy canary Passes latency_p99 despite a slow start-up that inflates
// the warm-up's tail: thresholds measured on the transient alone left both
// sides' exceedances so rare that "within" gathered no evidence in 120
// batches (and +30 ms went unnoticed at p99). Measured over these 20 seeds:
// p50 Passes at batch 2–3, p99 at batch 7–47, median 20.
func TestMonitorPassesHealthyP99AfterSlowStartup(t *testing.T) {
	const bound = 60
	worst := 0
	for seed := range 20 {
		s := newStartup(uint64(seed), 0.2, 0)
		m := mustMonitor(t, latencySpecs(), 0.95)
		passed := map[string]int{}
		var last []Verdict
		for i := 1; i <= 120; i++ {
			vs, err := m.Observe(s.batch())
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				if v.Outcome == Fail {
					t.Fatalf("seed %d batch %d: healthy canary failed: %s", seed, i, v.Reason)
				}
				if v.Outcome == Pass && passed[v.Metric] == 0 {
					passed[v.Metric] = i
				}
			}
			last = vs
		}
		for _, name := range []string{"latency_p50", "latency_p99"} {
			if passed[name] == 0 || passed[name] > bound {
				t.Errorf("seed %d: %s first Passed at batch %d, want within %d; last: %s", seed, name, passed[name], bound, outcomes(last)[name].Reason)
			}
			worst = max(worst, passed[name])
		}
	}
	t.Logf("latest first Pass over 20 seeds: batch %d", worst)
}

// +30 ms on the canary still Fails p50 and p99 within 10 batches when the
// warm-up holds the start-up transient.
func TestMonitorFailsLatencyRegressionAfterSlowStartup(t *testing.T) {
	worst := 0
	for seed := range 20 {
		s := newStartup(uint64(seed), 0.2, 30)
		m := mustMonitor(t, latencySpecs(), 0.95)
		failed := map[string]int{}
		for i := 1; i <= 10; i++ {
			vs, err := m.Observe(s.batch())
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				if v.Outcome == Fail && failed[v.Metric] == 0 {
					failed[v.Metric] = i
				}
			}
		}
		for _, name := range []string{"latency_p50", "latency_p99"} {
			if failed[name] == 0 {
				t.Errorf("seed %d: %s did not Fail within 10 batches", seed, name)
			}
			worst = max(worst, failed[name])
		}
	}
	t.Logf("latest Fail over 20 seeds: batch %d", worst)
}

// A/A with the start-up transient: the chance that a latency metric ever
// Fails stays within α per metric (maxRatio 1: H₀ holds with equality).
//
// 30 looks span five threshold epochs (ending at batches 1, 3, 6, 11, 21).
func TestMonitorAALatencyAfterSlowStartup(t *testing.T) {
	t.Parallel() // the longest simulation of the package: overlap it with the others
	runs := simRuns(t, 500)
	const alpha, looks = 0.05, 30
	fails := map[string]int{}
	for seed := range runs {
		s := newStartup(uint64(seed)+1000, 0.2, 0)
		m, err := NewMonitor([]MetricSpec{{Name: "latency_p99", MaxRatio: 1}}, 1-alpha, MonitorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for range looks {
			vs, err := m.Observe(s.batch())
			if err != nil {
				t.Fatal(err)
			}
			if vs[0].Outcome == Fail {
				fails[vs[0].Metric]++
				break
			}
		}
	}
	for name, n := range fails {
		rate := float64(n) / float64(runs)
		if rate > fpBound(alpha, runs) {
			t.Errorf("%s: A/A false-Fail rate %.4f > %.4f", name, rate, fpBound(alpha, runs))
		}
	}
	t.Logf("%d A/A runs × %d looks after a slow start-up: false Fails %v", runs, looks, fails)
}

// The threshold epochs survive State/RestoreMonitor: a monitor restored in
// the middle of an epoch re-measures its thresholds at the same batches.
func TestMonitorStateKeepsThresholdEpoch(t *testing.T) {
	s := newStartup(7, 0.2, 0)
	m := mustMonitor(t, latencySpecs(), 0.95)
	for range 4 {
		if _, err := m.Observe(s.batch()); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := json.Marshal(m.State())
	if err != nil {
		t.Fatal(err)
	}
	var st MonitorState
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.Metrics[2].Slowdown.WarmN == 0 || st.Metrics[2].Slowdown.Target != 2000 {
		t.Fatalf("state after 4 batches holds %d epoch samples toward %d, want some toward 2000",
			st.Metrics[2].Slowdown.WarmN, st.Metrics[2].Slowdown.Target)
	}
	r, err := RestoreMonitor(st)
	if err != nil {
		t.Fatal(err)
	}
	changed := 0
	prev := m.metrics[2].slow.Thresholds()[0]
	for i := range 10 {
		b := s.batch()
		want, err1 := m.Observe(b)
		got, err2 := r.Observe(b)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		wj, _ := json.Marshal(want)
		gj, _ := json.Marshal(got)
		if string(wj) != string(gj) {
			t.Fatalf("batch %d after restore:\n got %s\nwant %s", i, gj, wj)
		}
		if th := m.metrics[2].slow.Thresholds()[0]; th != prev {
			changed++
			prev = th
		}
	}
	if changed == 0 {
		t.Error("p99 threshold never re-measured over 10 batches (epochs of 2000 and 4000 samples end in them)")
	}
	st.Metrics[2].Slowdown.WarmN++
	if _, err := RestoreMonitor(st); !errors.Is(err, ErrInput) {
		t.Errorf("epoch sample count disagreeing with its counts restored: %v", err)
	}
}

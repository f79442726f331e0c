package analysis

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// binomial draws Binomial(n, p): waiting times for small means, the normal
// approximation for large ones (the simulations only need realistic counts).
func binomial(rng *rand.Rand, n int64, p float64) int64 {
	switch {
	case n <= 0 || p <= 0:
		return 0
	case p >= 1:
		return n
	case p > 0.5:
		return n - binomial(rng, n, 1-p)
	}
	mean := float64(n) * p
	if mean < 40 {
		var k, pos int64
		lq := math.Log1p(-p)
		for {
			pos += int64(math.Floor(math.Log(1-rng.Float64())/lq)) + 1
			if pos > n {
				return k
			}
			k++
		}
	}
	k := int64(math.Round(mean + math.Sqrt(mean*(1-p))*rng.NormFloat64()))
	return min(max(k, 0), n)
}

// traffic simulates one batch of requests split at share rho.
type traffic struct {
	rate           int64   // requests per batch, both sides
	rho            float64 // canary share
	pCanary, pBase float64 // error rates
}

func (tr traffic) batch(rng *rand.Rand) Batch {
	nx := binomial(rng, tr.rate, tr.rho)
	ny := tr.rate - nx
	return Batch{
		CanaryRequests: nx, CanaryErrors: binomial(rng, nx, tr.pCanary),
		BaselineRequests: ny, BaselineErrors: binomial(rng, ny, tr.pBase),
		CanaryShare: tr.rho,
	}
}

// latencies records n log-normal latencies (median ms, shape sigma) plus
// shiftMS into a histogram with the shared geometry.
func latencies(rng *rand.Rand, n int64, medianMS, sigma, shiftMS float64) *hdrhistogram.Histogram {
	h := hdrhistogram.New(1, 60_000_000, 3)
	for range n {
		v := (medianMS*math.Exp(sigma*rng.NormFloat64()) + shiftMS) * 1000
		_ = h.RecordValue(int64(v))
	}
	return h
}

func outcomes(vs []Verdict) map[string]Verdict {
	m := map[string]Verdict{}
	for _, v := range vs {
		m[v.Metric] = v
	}
	return m
}

func mustMonitor(t testing.TB, specs []MetricSpec, conf float64) *Monitor {
	t.Helper()
	m, err := NewMonitor(specs, conf, MonitorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func threeMetrics() []MetricSpec {
	return []MetricSpec{
		{Name: "error_rate", MaxIncrease: 0.02},
		{Name: "latency_p50", MaxRatio: 1.2},
		{Name: "latency_p99", MaxRatio: 1.5},
	}
}

// A canary failing every request at 10% weight under 2000 req/s, judged
// every 50 ms (100 requests), fails on a handful of canary requests.
func TestMonitorFailsBrokenCanaryFast(t *testing.T) {
	runs := 200
	worst := int64(0)
	for seed := range runs {
		rng := rand.New(rand.NewPCG(uint64(seed), 11))
		m := mustMonitor(t, threeMetrics(), 0.95)
		tr := traffic{rate: 100, rho: 0.1, pCanary: 1, pBase: 0.005}
		failedAt := int64(-1)
		for range 40 {
			vs, err := m.Observe(tr.batch(rng))
			if err != nil {
				t.Fatal(err)
			}
			if v := outcomes(vs)["error_rate"]; v.Outcome == Fail {
				failedAt = v.NCanary
				if !strings.Contains(v.Reason, "canary worse beyond allowed +2%") {
					t.Errorf("reason %q does not say why", v.Reason)
				}
				break
			}
		}
		if failedAt < 0 {
			t.Fatalf("seed %d: no Fail after 40 batches (4000 requests)", seed)
		}
		worst = max(worst, failedAt)
	}
	// Batches are 100 requests, so this includes the rest of the failing batch.
	if worst >= 25 {
		t.Errorf("worst case: Fail after %d canary requests, want under 25", worst)
	}
	t.Logf("worst case over %d runs: Fail after %d canary requests", runs, worst)
}

// Canary +30 ms on a 5 ms baseline, 1000 req/s at 20% weight, 1 s batches.
func TestMonitorFailsLatencyRegression(t *testing.T) {
	for seed := range 10 {
		rng := rand.New(rand.NewPCG(uint64(seed), 12))
		m := mustMonitor(t, threeMetrics(), 0.95)
		tr := traffic{rate: 1000, rho: 0.2, pCanary: 0.005, pBase: 0.005}
		failed := map[string]int{}
		for i := 1; i <= 10; i++ {
			b := tr.batch(rng)
			b.CanaryLatency = latencies(rng, b.CanaryRequests, 5, 0.3, 30)
			b.BaselineLatency = latencies(rng, b.BaselineRequests, 5, 0.3, 0)
			vs, err := m.Observe(b)
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
		}
		if failed["error_rate"] != 0 {
			t.Errorf("seed %d: error_rate failed with equal error rates", seed)
		}
	}
}

// An A/A rollout with realistic limits passes every metric within a minute.
func TestMonitorPassesHealthyCanary(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 13))
	m := mustMonitor(t, threeMetrics(), 0.95)
	tr := traffic{rate: 1000, rho: 0.2, pCanary: 0.005, pBase: 0.005}
	var last []Verdict
	passedAt := map[string]int{}
	for i := 1; i <= 60; i++ {
		b := tr.batch(rng)
		b.CanaryLatency = latencies(rng, b.CanaryRequests, 5, 0.5, 0)
		b.BaselineLatency = latencies(rng, b.BaselineRequests, 5, 0.5, 0)
		vs, err := m.Observe(b)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			for _, v := range vs {
				if v.Outcome != Inconclusive {
					t.Errorf("after one batch %s = %s (%s), want Inconclusive", v.Metric, v.Outcome, v.Reason)
				}
			}
		}
		for _, v := range vs {
			if v.Outcome == Pass && passedAt[v.Metric] == 0 {
				passedAt[v.Metric] = i
			}
		}
		last = vs
	}
	for _, v := range last {
		if v.Outcome != Pass {
			t.Errorf("%s after 60 s of A/A: %s (%s), want Pass", v.Metric, v.Outcome, v.Reason)
		}
		if v.EValue == nil || *v.EValue < 1/m.Alpha() || v.NCanary == 0 || v.NBaseline == 0 || v.Threshold == "" {
			t.Errorf("%s: verdict lacks evidence: %+v", v.Metric, v)
		}
	}
	t.Logf("first Pass (batch): %v", passedAt)
	if _, err := json.Marshal(last); err != nil {
		t.Errorf("verdicts do not encode: %v", err)
	}
}

func simRuns(t *testing.T, full int) int {
	if testing.Short() {
		return full / 5
	}
	return full
}

func fpBound(alpha float64, runs int) float64 {
	return alpha + 3*math.Sqrt(alpha*(1-alpha)/float64(runs))
}

// statistics.md §5: at least 2000 A/A runs at α = 0.05 with a look after
// every batch. The limit is 0 (no increase allowed), so H₀ holds with
// equality: the hardest case for the false-Fail rate. The fixed-horizon z
// test re-run after every batch on the same data must exceed α.
func TestMonitorAAFalseFailRate(t *testing.T) {
	runs := simRuns(t, 2000)
	const alpha = 0.05
	var seqFail, zFail int
	for seed := range runs {
		rng := rand.New(rand.NewPCG(uint64(seed), 14))
		m := mustMonitor(t, []MetricSpec{{Name: "error_rate", MaxIncrease: 0}}, 1-alpha)
		tr := traffic{rate: 1000, rho: 0.1, pCanary: 0.005, pBase: 0.005}
		var kx, nx, ky, ny int64
		sFailed, zFailed := false, false
		for range 60 {
			b := tr.batch(rng)
			vs, err := m.Observe(b)
			if err != nil {
				t.Fatal(err)
			}
			sFailed = sFailed || vs[0].Outcome == Fail
			kx, nx, ky, ny = kx+b.CanaryErrors, nx+b.CanaryRequests, ky+b.BaselineErrors, ny+b.BaselineRequests
			if r, err := TwoProportionZ(kx, nx, ky, ny, Greater); err == nil && r.PValue < alpha {
				zFailed = true
			}
		}
		if sFailed {
			seqFail++
		}
		if zFailed {
			zFail++
		}
	}
	seqRate, zRate := float64(seqFail)/float64(runs), float64(zFail)/float64(runs)
	t.Logf("%d A/A runs, 60 looks: sequential false-Fail %.4f, repeated z-test %.4f", runs, seqRate, zRate)
	if seqRate > fpBound(alpha, runs) {
		t.Errorf("sequential false-Fail rate %.4f > %.4f", seqRate, fpBound(alpha, runs))
	}
	if zRate <= alpha {
		t.Errorf("repeated z-test false-Fail rate %.4f, want above α = %v (peeking inflates it)", zRate, alpha)
	}
}

// The Pass side is a test too: a canary exactly at the allowed limit must
// not Pass more often than α.
func TestMonitorFalsePassRateAtLimit(t *testing.T) {
	runs := simRuns(t, 1000)
	const alpha = 0.05
	passes := 0
	for seed := range runs {
		rng := rand.New(rand.NewPCG(uint64(seed), 15))
		m, err := NewMonitor([]MetricSpec{{Name: "error_rate", MaxIncrease: 0.02}}, 1-alpha, MonitorOptions{MinSamples: 1})
		if err != nil {
			t.Fatal(err)
		}
		tr := traffic{rate: 1000, rho: 0.2, pCanary: 0.025, pBase: 0.005}
		for range 60 {
			vs, err := m.Observe(tr.batch(rng))
			if err != nil {
				t.Fatal(err)
			}
			if vs[0].Outcome == Pass {
				passes++
				break
			}
		}
	}
	rate := float64(passes) / float64(runs)
	t.Logf("%d runs at the limit: false-Pass %.4f", runs, rate)
	if rate > fpBound(alpha, runs) {
		t.Errorf("false-Pass rate %.4f > %.4f", rate, fpBound(alpha, runs))
	}
}

// A real shift beyond the limit is found: 3% vs 0.5% errors with +1% allowed.
func TestMonitorDetectsErrorShift(t *testing.T) {
	runs := 200
	detected := 0
	for seed := range runs {
		rng := rand.New(rand.NewPCG(uint64(seed), 16))
		m := mustMonitor(t, []MetricSpec{{Name: "error_rate", MaxIncrease: 0.01}}, 0.95)
		tr := traffic{rate: 1000, rho: 0.2, pCanary: 0.03, pBase: 0.005}
		for range 60 {
			vs, err := m.Observe(tr.batch(rng))
			if err != nil {
				t.Fatal(err)
			}
			if vs[0].Outcome == Fail {
				detected++
				break
			}
		}
	}
	if power := float64(detected) / float64(runs); power < 0.95 {
		t.Errorf("detected %d of %d shifts within 60 s (power %.3f), want ≥ 0.95", detected, runs, power)
	}
}

// A Fail never turns back, even if later traffic looks healthy.
func TestMonitorFailIsSticky(t *testing.T) {
	m := mustMonitor(t, threeMetrics()[:1], 0.95)
	if _, err := m.Observe(Batch{CanaryRequests: 50, CanaryErrors: 50, BaselineRequests: 450, BaselineErrors: 1, CanaryShare: 0.1}); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		vs, err := m.Observe(Batch{CanaryRequests: 100, BaselineRequests: 900, CanaryShare: 0.1})
		if err != nil {
			t.Fatal(err)
		}
		if vs[0].Outcome != Fail {
			t.Fatalf("after healthy traffic: %s (%s), want Fail to stay", vs[0].Outcome, vs[0].Reason)
		}
	}
}

func TestMonitorNoData(t *testing.T) {
	m := mustMonitor(t, threeMetrics(), 0.95)
	vs, err := m.Observe(Batch{BaselineRequests: 500, BaselineErrors: 2, CanaryShare: 0.1,
		BaselineLatency: latencies(rand.New(rand.NewPCG(1, 1)), 500, 5, 0.3, 0)})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Outcome != NoData || !strings.Contains(v.Reason, "no canary") {
			t.Errorf("%s: %s (%s), want NoData naming the canary", v.Metric, v.Outcome, v.Reason)
		}
	}
	for _, v := range m.Evaluate() {
		if v.Outcome != NoData {
			t.Errorf("Evaluate %s: %s, want NoData", v.Metric, v.Outcome)
		}
	}
}

func TestMonitorEvaluateWindow(t *testing.T) {
	specs := []MetricSpec{
		{Name: "error_rate", Test: TestTwoProportionZ, MaxIncrease: 0.02},
		{Name: "latency_p50", Test: TestMannWhitneyU, MaxRatio: 1.2},
		{Name: "latency_mean", Test: TestWelch, MaxRatio: 1.2},
	}
	rng := rand.New(rand.NewPCG(5, 17))
	m := mustMonitor(t, specs, 0.95)
	// Healthy window: equal error rates and latencies, plenty of data.
	for range 20 {
		b := traffic{rate: 5000, rho: 0.2, pCanary: 0.005, pBase: 0.005}.batch(rng)
		b.CanaryLatency = latencies(rng, b.CanaryRequests, 5, 0.3, 0)
		b.BaselineLatency = latencies(rng, b.BaselineRequests, 5, 0.3, 0)
		if _, err := m.Observe(b); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range m.Evaluate() {
		if v.Outcome != Pass || v.CI == nil || v.PValue == nil || v.Statistic == nil {
			t.Errorf("healthy %s: %s (%s), want Pass with CI, statistic and p", v.Metric, v.Outcome, v.Reason)
		}
	}
	// A new window with a broken canary: the old healthy data must not dilute it.
	m.ResetWindow()
	for range 5 {
		b := traffic{rate: 5000, rho: 0.2, pCanary: 0.10, pBase: 0.005}.batch(rng)
		b.CanaryLatency = latencies(rng, b.CanaryRequests, 5, 0.3, 5)
		b.BaselineLatency = latencies(rng, b.BaselineRequests, 5, 0.3, 0)
		if _, err := m.Observe(b); err != nil {
			t.Fatal(err)
		}
	}
	got := outcomes(m.Evaluate())
	for _, name := range []string{"error_rate", "latency_p50", "latency_mean"} {
		v := got[name]
		if v.Outcome != Fail {
			t.Errorf("broken %s: %s (%s), want Fail", name, v.Outcome, v.Reason)
		}
		if v.NCanary > 6000 {
			t.Errorf("%s: n_canary %d counts the previous window", name, v.NCanary)
		}
	}
	if r := got["error_rate"].Reason; !strings.Contains(r, "CI of the increase") || !strings.Contains(r, "+2%") {
		t.Errorf("error_rate reason %q lacks the CI or the limit", r)
	}
	// A tiny window cannot separate either way.
	m.ResetWindow()
	if _, err := m.Observe(Batch{CanaryRequests: 8, CanaryErrors: 1, BaselineRequests: 30, BaselineErrors: 0, CanaryShare: 0.2,
		CanaryLatency: latencies(rng, 8, 5, 1, 0), BaselineLatency: latencies(rng, 30, 5, 1, 0)}); err != nil {
		t.Fatal(err)
	}
	for _, v := range m.Evaluate() {
		if v.Outcome != Inconclusive {
			t.Errorf("tiny window %s: %s (%s), want Inconclusive", v.Metric, v.Outcome, v.Reason)
		}
	}
}

func TestNewMonitorRejectsBadSpecs(t *testing.T) {
	cases := []struct {
		name  string
		specs []MetricSpec
		conf  float64
		want  string
	}{
		{"confidence 1", threeMetrics(), 1, "confidence"},
		{"no metrics", nil, 0.95, "no metrics"},
		{"unknown metric", []MetricSpec{{Name: "cpu"}}, 0.95, "unknown metric"},
		{"error rate ratio", []MetricSpec{{Name: "error_rate", MaxRatio: 1.2}}, 0.95, "maxIncrease"},
		{"increase 1", []MetricSpec{{Name: "error_rate", MaxIncrease: 1}}, 0.95, "maxIncrease"},
		{"latency test", []MetricSpec{{Name: "latency_p99", Test: "fisher", MaxRatio: 1.2}}, 0.95, "mann-whitney-u"},
		{"error test", []MetricSpec{{Name: "error_rate", Test: "welch", MaxIncrease: 0.01}}, 0.95, "two-proportion-z"},
		{"ratio below 1", []MetricSpec{{Name: "latency_p50", MaxRatio: 0.9}}, 0.95, "maxRatio"},
		{"ratio missing", []MetricSpec{{Name: "latency_p50"}}, 0.95, "maxRatio"},
		{"quantile 100", []MetricSpec{{Name: "latency_p100", MaxRatio: 1.2}}, 0.95, "latency_pNN"},
		{"quantile junk", []MetricSpec{{Name: "latency_pabc", MaxRatio: 1.2}}, 0.95, "latency_pNN"},
		{"quantile exponent", []MetricSpec{{Name: "latency_p1e1", MaxRatio: 1.2}}, 0.95, "latency_pNN"},
		{"quantile 0", []MetricSpec{{Name: "latency_p0", MaxRatio: 1.2}}, 0.95, "latency_pNN"},
		{"duplicate", []MetricSpec{{Name: "error_rate", MaxIncrease: 0.01}, {Name: "error_rate", MaxIncrease: 0.02}}, 0.95, "twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewMonitor(c.specs, c.conf, MonitorOptions{})
			if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want ErrInput mentioning %q", err, c.want)
			}
		})
	}
	for name, want := range map[string]float64{"latency_p99.9": 0.999, "latency_p999": 0.999, "latency_p50": 0.5, "latency_p9999": 0.9999, "latency_p5": 0.05} {
		m, err := NewMonitor([]MetricSpec{{Name: name, MaxRatio: 1.5}}, 0.95, MonitorOptions{})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := m.metrics[0].quantile; math.Abs(got-want) > 1e-12 {
			t.Errorf("%s: quantile %v, want %v", name, got, want)
		}
	}
}

func TestMonitorObserveRejectsBadBatches(t *testing.T) {
	cases := map[string]Batch{
		"negative":          {CanaryRequests: -1, BaselineRequests: 10, CanaryShare: 0.1},
		"errors > requests": {CanaryRequests: 1, CanaryErrors: 2, BaselineRequests: 10, CanaryShare: 0.1},
		"share 1":           {CanaryRequests: 1, BaselineRequests: 10, CanaryShare: 1},
		"share NaN":         {CanaryRequests: 1, BaselineRequests: 10, CanaryShare: math.NaN()},
		"geometry":          {CanaryRequests: 1, BaselineRequests: 1, CanaryShare: 0.5, CanaryLatency: hdrhistogram.New(1, 1000, 2), BaselineLatency: testHistogram([]int64{5})},
	}
	m := mustMonitor(t, threeMetrics(), 0.95)
	for name, b := range cases {
		if _, err := m.Observe(b); !errors.Is(err, ErrInput) {
			t.Errorf("%s: err = %v, want ErrInput", name, err)
		}
	}
	// Nothing was counted.
	vs, err := m.Observe(Batch{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.NCanary != 0 || v.NBaseline != 0 {
			t.Errorf("%s: refused batches were counted: %d/%d", v.Metric, v.NCanary, v.NBaseline)
		}
	}
}

// A restarted driver resumes from State: after a JSON round trip the
// restored monitor gives exactly the verdicts the original gives.
func TestMonitorStateRoundTrip(t *testing.T) {
	specs := append(threeMetrics(), MetricSpec{Name: "latency_mean", Test: TestWelch, MaxRatio: 1.3})
	for _, warmOnly := range []bool{true, false} {
		rng := rand.New(rand.NewPCG(8, 18))
		m, err := NewMonitor(specs, 0.95, MonitorOptions{WarmupSamples: 2000})
		if err != nil {
			t.Fatal(err)
		}
		tr := traffic{rate: 1000, rho: 0.2, pCanary: 0.01, pBase: 0.005}
		mk := func() Batch {
			b := tr.batch(rng)
			b.CanaryLatency = latencies(rng, b.CanaryRequests, 5, 0.4, 0.5)
			b.BaselineLatency = latencies(rng, b.BaselineRequests, 5, 0.4, 0)
			return b
		}
		first := 1
		if !warmOnly {
			first = 8
		}
		for range first {
			if _, err := m.Observe(mk()); err != nil {
				t.Fatal(err)
			}
		}
		m.ResetWindow()
		if _, err := m.Observe(mk()); err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(m.State())
		if err != nil {
			t.Fatal(err)
		}
		var st MonitorState
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatal(err)
		}
		r, err := RestoreMonitor(st)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			b := mk()
			want, err1 := m.Observe(b)
			got, err2 := r.Observe(b)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			wj, _ := json.Marshal(want)
			gj, _ := json.Marshal(got)
			if string(wj) != string(gj) {
				t.Fatalf("warm-up only %v, batch %d after restore:\n got %s\nwant %s", warmOnly, i, gj, wj)
			}
		}
		wj, _ := json.Marshal(append(m.Evaluate(), m.SampleRatio()))
		gj, _ := json.Marshal(append(r.Evaluate(), r.SampleRatio()))
		if string(wj) != string(gj) {
			t.Fatalf("Evaluate after restore:\n got %s\nwant %s", gj, wj)
		}
	}
}

func TestRestoreMonitorRejectsBadState(t *testing.T) {
	m := mustMonitor(t, threeMetrics(), 0.95)
	if _, err := m.Observe(Batch{CanaryRequests: 10, BaselineRequests: 90, CanaryShare: 0.1,
		CanaryLatency: testHistogram([]int64{5000}), BaselineLatency: testHistogram([]int64{4000})}); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*MonitorState){
		"version":      func(s *MonitorState) { s.Version = 9 },
		"metric count": func(s *MonitorState) { s.Metrics = s.Metrics[:1] },
		"metric name":  func(s *MonitorState) { s.Metrics[0].Name = "latency_p50" },
		"counts":       func(s *MonitorState) { s.Total[1] = s.Total[0] + 1 },
		"geometry":     func(s *MonitorState) { s.Latency.Geometry[2] = 9 },
		"histogram":    func(s *MonitorState) { s.Latency.CanaryTotal = [][2]int64{{-1, 3}} },
		"bets":         func(s *MonitorState) { s.Metrics[0].Worse.LogWealth = nil },
		"max below e":  func(s *MonitorState) { s.Metrics[0].Worse.MaxLogE = -1 },
		"grid":         func(s *MonitorState) { s.Metrics[1].Slowdown.Slower[0].LogLik = []float64{1} },
		"missing":      func(s *MonitorState) { s.Metrics[1].Slowdown = nil },
		"spec":         func(s *MonitorState) { s.Specs[0].MaxIncrease = 2 },
	}
	for name, breakIt := range cases {
		raw, _ := json.Marshal(m.State())
		var st MonitorState
		_ = json.Unmarshal(raw, &st)
		breakIt(&st)
		if _, err := RestoreMonitor(st); !errors.Is(err, ErrInput) {
			t.Errorf("%s: err = %v, want ErrInput", name, err)
		}
	}
}

func TestMonitorSampleRatio(t *testing.T) {
	m := mustMonitor(t, threeMetrics()[:1], 0.95)
	if v := m.SampleRatio(); v.Outcome != NoData {
		t.Errorf("before traffic: %s, want NoData", v.Outcome)
	}
	// Routed 10% throughout, with a weight step to 20%: no false alarm in 200 runs beyond the bound.
	runs, alarms := 200, 0
	for seed := range runs {
		rng := rand.New(rand.NewPCG(uint64(seed), 19))
		m := mustMonitor(t, threeMetrics()[:1], 0.95)
		for i := range 60 {
			tr := traffic{rate: 1000, rho: 0.1, pCanary: 0.005, pBase: 0.005}
			if i >= 30 {
				tr.rho = 0.2
			}
			if _, err := m.Observe(tr.batch(rng)); err != nil {
				t.Fatal(err)
			}
		}
		if m.SampleRatio().Outcome == Fail {
			alarms++
		}
	}
	if rate := float64(alarms) / float64(runs); rate > fpBound(0.05, runs) {
		t.Errorf("sample-ratio false alarms %.3f > %.3f", rate, fpBound(0.05, runs))
	}
	// Routed 10% but the canary receives 7% (say, sticky sessions).
	rng := rand.New(rand.NewPCG(1, 20))
	for range 30 {
		b := traffic{rate: 1000, rho: 0.07, pCanary: 0.005, pBase: 0.005}.batch(rng)
		b.CanaryShare = 0.1
		if _, err := m.Observe(b); err != nil {
			t.Fatal(err)
		}
	}
	v := m.SampleRatio()
	if v.Outcome != Fail || !strings.Contains(v.Reason, "not split as routed") || math.Abs(v.Baseline-0.1) > 1e-12 {
		t.Errorf("mismatch: %s (%s), routed %v; want Fail at routed 10%%", v.Outcome, v.Reason, v.Baseline)
	}
}

// The Monitor keeps raw counts instead of Histograms; its values must be
// the ones HdrHistogram itself reports.
func TestLatencyCountsMatchHistogram(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 25))
	h := latencies(rng, 20000, 5, 0.8, 0)
	g := geometryOf(h)
	var c latencyCounts
	c.add(h.Export().Counts)
	if c.n != h.TotalCount() {
		t.Fatalf("n = %d, want %d", c.n, h.TotalCount())
	}
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999} {
		if got, want := c.quantile(g, q), float64(h.ValueAtQuantile(100*q)); got != want {
			t.Errorf("quantile %v = %v, ValueAtQuantile says %v", q, got, want)
		}
	}
	mean, sd := c.moments(g)
	if math.Abs(mean-h.Mean()) > 1e-9*h.Mean() || math.Abs(sd-h.StdDev()) > 1e-9*h.StdDev() {
		t.Errorf("moments %v, %v; Histogram says %v, %v", mean, sd, h.Mean(), h.StdDev())
	}
	if !c.histogram(g).Equals(h) {
		t.Error("rebuilt histogram differs")
	}
}

package analysis

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

func loadSequentialFixtures(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile("testdata/sequential.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func decode(t *testing.T, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
}

// Worked values of statistics.md §4 A, κ = 100.
func TestErrorRateEProcessWorkedValues(t *testing.T) {
	cases := []struct {
		name   string
		cx, cy int64
		rho    float64
		alt    Alternative
		want   float64
		tol    float64 // half a unit of the last printed digit
	}{
		{"two-sided 30/40", 30, 40, 0.25, TwoSided, 7.1701, 5e-5},
		{"greater 30/40", 30, 40, 0.25, Greater, 14.549, 5e-4},
		{"two-sided 10/90", 10, 90, 0.1, TwoSided, 0.7041, 5e-5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := NewErrorRateEProcess(c.rho, 100, c.alt)
			if err != nil {
				t.Fatal(err)
			}
			// Two batches: only the cumulative counts matter.
			if err := p.Update(c.cx/2, c.cy/3); err != nil {
				t.Fatal(err)
			}
			if err := p.Update(c.cx-c.cx/2, c.cy-c.cy/3); err != nil {
				t.Fatal(err)
			}
			if got := p.E(); math.Abs(got-c.want) > c.tol {
				t.Errorf("E = %.6f, want %.4f", got, c.want)
			}
		})
	}
}

func TestErrorRateEProcessMatchesScipy(t *testing.T) {
	var cases []struct {
		CX           int64   `json:"cx"`
		CY           int64   `json:"cy"`
		Rho          float64 `json:"rho"`
		Kappa        float64 `json:"kappa"`
		LogETwoSided float64 `json:"log_e_two_sided"`
		LogEGreater  float64 `json:"log_e_greater"`
	}
	decode(t, loadSequentialFixtures(t)["closed_form"], &cases)
	if len(cases) == 0 {
		t.Fatal("no closed-form fixtures")
	}
	for _, c := range cases {
		for _, alt := range []Alternative{TwoSided, Greater} {
			p, err := NewErrorRateEProcess(c.Rho, c.Kappa, alt)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Update(c.CX, c.CY); err != nil {
				t.Fatal(err)
			}
			want := c.LogETwoSided
			if alt == Greater {
				want = c.LogEGreater
			}
			if got := p.LogE(); math.Abs(got-want) > 1e-9 {
				t.Errorf("C_x=%d C_y=%d ρ=%v κ=%v %v: ln E = %.12f, want %.12f", c.CX, c.CY, c.Rho, c.Kappa, alt, got, want)
			}
		}
	}
}

func TestRatioEProcessMatchesReference(t *testing.T) {
	var cases []struct {
		Alt       string  `json:"alt"`
		NullRatio float64 `json:"null_ratio"`
		Batches   []struct {
			Canary, Baseline int64
			Rho              float64
		} `json:"batches"`
		LogE float64 `json:"log_e"`
	}
	decode(t, loadSequentialFixtures(t)["grid"], &cases)
	if len(cases) == 0 {
		t.Fatal("no grid fixtures")
	}
	for _, c := range cases {
		alt, err := ParseAlternative(c.Alt)
		if err != nil {
			t.Fatal(err)
		}
		p, err := NewRatioEProcess(alt, c.NullRatio)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range c.Batches {
			if err := p.Update(b.Canary, b.Baseline, b.Rho); err != nil {
				t.Fatal(err)
			}
		}
		if got := p.LogE(); math.Abs(got-c.LogE) > 1e-9 {
			t.Errorf("%s null %v: ln E = %.12f, want %.12f", c.Alt, c.NullRatio, got, c.LogE)
		}
	}
}

func TestLatencyEProcessMatchesReference(t *testing.T) {
	var c struct {
		Kappa   float64 `json:"kappa"`
		Batches []struct {
			Canary, Baseline []int64
			Rho              float64
		} `json:"batches"`
		LogE float64 `json:"log_e"`
	}
	decode(t, loadSequentialFixtures(t)["latency_bins"], &c)
	p, err := NewLatencyEProcess(c.Kappa)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range c.Batches {
		hx, hy := testHistogram(b.Canary), testHistogram(b.Baseline)
		if err := p.Update(hx, hy, b.Rho); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.LogE(); math.Abs(got-c.LogE) > 1e-9 {
		t.Errorf("ln E = %.12f, want %.12f", got, c.LogE)
	}
}

// testHistogram uses the geometry every Guardian producer uses
// (rollout.NewLatencyHistogram: 1 µs..60 s, 3 significant figures).
func testHistogram(values []int64) *hdrhistogram.Histogram {
	h := hdrhistogram.New(1, 60_000_000, 3)
	for _, v := range values {
		if err := h.RecordValue(v); err != nil {
			panic(err)
		}
	}
	return h
}

func TestHdrGeometryMatchesHistogram(t *testing.T) {
	for _, g := range []struct {
		low, high int64
		sig       int
	}{{1, 60_000_000, 3}, {1, 3_600_000_000, 2}, {1000, 60_000_000, 4}} {
		h := hdrhistogram.New(g.low, g.high, g.sig)
		rng := rand.New(rand.NewPCG(1, 2))
		for range 5000 {
			_ = h.RecordValue(g.low + int64(math.Exp(rng.Float64()*math.Log(float64(g.high-g.low)))))
		}
		geo := geometryOf(h)
		counts := h.Export().Counts
		var fromCounts []struct{ lo, hi, c int64 }
		for i, c := range counts {
			if c > 0 {
				lo, hi := geo.bucket(i)
				fromCounts = append(fromCounts, struct{ lo, hi, c int64 }{lo, hi, c})
			}
		}
		var fromDist []struct{ lo, hi, c int64 }
		for _, b := range h.Distribution() {
			if b.Count > 0 {
				fromDist = append(fromDist, struct{ lo, hi, c int64 }{b.From, b.To, b.Count})
			}
		}
		if len(fromCounts) != len(fromDist) {
			t.Fatalf("%v: %d non-empty buckets from counts, %d from Distribution", g, len(fromCounts), len(fromDist))
		}
		for i := range fromDist {
			if fromCounts[i] != fromDist[i] {
				t.Fatalf("%v: bucket %d = %v, Distribution says %v", g, i, fromCounts[i], fromDist[i])
			}
		}
	}
}

func TestKappaFor(t *testing.T) {
	k, err := KappaFor(0.05, 1.5)
	if err != nil {
		t.Fatal(err)
	}
	// statistics.md: "With ρ = 0.05 and r = 1.5, κ ≈ 90".
	if k < 85 || k > 95 {
		t.Errorf("KappaFor(0.05, 1.5) = %v, want about 90", k)
	}
}

func TestSequentialRejectsBadInput(t *testing.T) {
	bad := map[string]error{}
	_, bad["rho 0"] = NewErrorRateEProcess(0, 100, TwoSided)
	_, bad["rho 1"] = NewErrorRateEProcess(1, 100, Greater)
	_, bad["rho NaN"] = NewErrorRateEProcess(math.NaN(), 100, Greater)
	_, bad["less"] = NewErrorRateEProcess(0.1, 100, Less)
	_, bad["null ratio 0"] = NewRatioEProcess(Greater, 0)
	_, bad["two-sided null 2"] = NewRatioEProcess(TwoSided, 2)
	_, bad["margin 1"] = NewRateDifferenceEProcess(1, Greater)
	_, bad["margin two-sided"] = NewRateDifferenceEProcess(0.01, TwoSided)
	_, bad["tau 0"] = NewMSPRT(0)
	_, bad["quantile 1"] = NewSlowdownEProcess([]float64{1}, 1.2, 100)
	_, bad["ratio 0.9"] = NewSlowdownEProcess([]float64{0.5}, 0.9, 100)
	_, bad["kappa NaN"] = NewLatencyEProcess(math.NaN())
	_, bad["KappaFor ratio 1"] = KappaFor(0.1, 1)
	e, _ := NewErrorRateEProcess(0.1, 100, Greater)
	bad["negative count"] = e.Update(-1, 0)
	r, _ := NewRatioEProcess(Greater, 1)
	bad["ratio rho 0"] = r.Update(1, 1, 0)
	d, _ := NewRateDifferenceEProcess(0.02, Greater)
	bad["errors > requests"] = d.Update(5, 6, 10, 0, 0.1)
	l, _ := NewLatencyEProcess(100)
	bad["nil histogram"] = l.Update(nil, testHistogram(nil), 0.1)
	bad["geometry"] = l.Update(hdrhistogram.New(1, 1000, 2), testHistogram(nil), 0.1)
	for name, err := range bad {
		if !errors.Is(err, ErrInput) {
			t.Errorf("%s: err = %v, want ErrInput", name, err)
		}
	}
	if e.LogE() != 0 || r.LogE() != 0 || d.LogE() != 0 || l.LogE() != 0 {
		t.Error("a refused update changed an e-value")
	}
}

// statistics.md §5: A/A with a look after every batch. Errors drift over
// time (shared by both versions), which the conditional tests must absorb.
func TestEProcessesAAFalseRejectionRate(t *testing.T) {
	// The ≥ 2000-run check of statistics.md §5 is TestMonitorAAFalseFailRate;
	// here every e-process gets 1000 runs with 100 looks each.
	runs := simRuns(t, 1000)
	const alpha, looks = 0.05, 100
	weights := []float64{0.01, 0.05, 0.2, 0.5} // weight steps for the δ-grid test
	rejected := map[string]int{}
	for seed := range runs {
		rng := rand.New(rand.NewPCG(uint64(seed), 21))
		two, _ := NewErrorRateEProcess(0.05, 100, TwoSided)
		one, _ := NewErrorRateEProcess(0.05, 100, Greater)
		grid, _ := NewRatioEProcess(Greater, 1)
		gridTwo, _ := NewRatioEProcess(TwoSided, 1)
		diff, _ := NewRateDifferenceEProcess(0, Greater)
		for s := range looks {
			p := 0.01 * (1 + 0.8*math.Sin(float64(s)/8))
			errs := binomial(rng, 2000, p)
			cx := binomial(rng, errs, 0.05)
			_ = two.Update(cx, errs-cx)
			_ = one.Update(cx, errs-cx)
			rho := weights[s*len(weights)/looks]
			gx := binomial(rng, errs, rho)
			_ = grid.Update(gx, errs-gx, rho)
			_ = gridTwo.Update(gx, errs-gx, rho)
			nx := binomial(rng, 2000, rho)
			_ = diff.Update(nx, binomial(rng, nx, p), 2000-nx, binomial(rng, 2000-nx, p), rho)
		}
		for name, e := range map[string]EProcess{"conditional two-sided": two, "conditional greater": one,
			"δ-grid greater": grid, "δ-grid two-sided": gridTwo, "rate difference": diff} {
			if e.Rejected(alpha) {
				rejected[name]++
			}
			if p := e.PValue(); p < 0 || p > 1 || (p <= alpha) != e.Rejected(alpha) {
				t.Fatalf("%s: anytime p-value %v disagrees with Rejected(%v) = %v", name, p, alpha, e.Rejected(alpha))
			}
		}
	}
	for _, name := range []string{"conditional two-sided", "conditional greater", "δ-grid greater", "δ-grid two-sided", "rate difference"} {
		rate := float64(rejected[name]) / float64(runs)
		t.Logf("%s: %d A/A runs × %d looks: false rejection %.4f", name, runs, looks, rate)
		if rate > fpBound(alpha, runs) {
			t.Errorf("%s: false rejection rate %.4f > %.4f", name, rate, fpBound(alpha, runs))
		}
	}
}

// discreteLatencies records a batch of n latencies drawn from a fixed set
// of values (µs) scaled by factor, in a small-geometry histogram: fast
// enough for thousands of simulated runs.
func discreteLatencies(rng *rand.Rand, n int64, factor float64) *hdrhistogram.Histogram {
	h := hdrhistogram.New(1, 100_000, 1)
	vals := []int64{900, 1300, 1800, 2500, 3300, 4700, 6800, 9100, 15000, 40000}
	probs := []float64{0.05, 0.15, 0.25, 0.2, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005}
	left, mass := n, 1.0
	for i, v := range vals {
		k := left
		if i < len(vals)-1 {
			k = binomial(rng, left, math.Min(1, probs[i]/mass))
		}
		mass -= probs[i]
		left -= k
		if k > 0 {
			_ = h.RecordValues(int64(float64(v)*factor), k)
		}
	}
	return h
}

func TestLatencyEProcessesAAFalseRejectionRate(t *testing.T) {
	runs := simRuns(t, 500)
	const alpha, looks = 0.05, 60
	var slow, bins int
	for seed := range runs {
		rng := rand.New(rand.NewPCG(uint64(seed), 22))
		// maxRatio 1: H₀ holds with equality, the hardest case.
		s, _ := NewSlowdownEProcess([]float64{0.5, 0.9, 0.99}, 1, 200)
		l, _ := NewLatencyEProcess(100)
		for i := range looks {
			rho := 0.1
			if i >= looks/2 {
				rho = 0.3
			}
			nx := binomial(rng, 1000, rho)
			hx, hy := discreteLatencies(rng, nx, 1), discreteLatencies(rng, 1000-nx, 1)
			if err := s.Update(hx, hy, rho); err != nil {
				t.Fatal(err)
			}
			if err := l.Update(hx, hy, rho); err != nil {
				t.Fatal(err)
			}
		}
		if s.Slower().Rejected(alpha) {
			slow++
		}
		if l.Rejected(alpha) {
			bins++
		}
	}
	for name, n := range map[string]int{"slowdown (exceedance)": slow, "histogram bins": bins} {
		rate := float64(n) / float64(runs)
		t.Logf("%s: %d A/A runs × %d looks: false rejection %.4f", name, runs, looks, rate)
		if rate > fpBound(alpha, runs) {
			t.Errorf("%s: false rejection rate %.4f > %.4f", name, rate, fpBound(alpha, runs))
		}
	}
}

func TestEProcessesDetectRealShifts(t *testing.T) {
	const alpha = 0.05
	rng := rand.New(rand.NewPCG(9, 23))
	found := map[string]int{}
	const runs = 50
	for range runs {
		one, _ := NewErrorRateEProcess(0.05, 100, Greater)
		grid, _ := NewRatioEProcess(Greater, 1)
		ms, _ := NewMSPRT(0.01)
		s, _ := NewSlowdownEProcess([]float64{0.5, 0.9, 0.99}, 1.1, 200)
		l, _ := NewLatencyEProcess(100)
		for range 80 {
			// Canary error rate doubled: 2% vs 1%.
			cx, cy := binomial(rng, 100, 0.02), binomial(rng, 1900, 0.01)
			_ = one.Update(cx, cy)
			_ = grid.Update(cx, cy, 0.05)
			_ = ms.Update(binomial(rng, 1000, 0.03), 1000, binomial(rng, 1000, 0.01), 1000)
			// Canary 30% slower against an allowed 10%.
			hx, hy := discreteLatencies(rng, 100, 1.3), discreteLatencies(rng, 900, 1)
			_ = s.Update(hx, hy, 0.1)
			_ = l.Update(hx, hy, 0.1)
		}
		for name, e := range map[string]EProcess{"conditional": one, "δ-grid": grid, "mSPRT": ms, "slowdown": s.Slower(), "bins": l} {
			if e.Rejected(alpha) {
				found[name]++
			}
		}
	}
	for _, name := range []string{"conditional", "δ-grid", "mSPRT", "slowdown", "bins"} {
		if found[name] < runs*9/10 {
			t.Errorf("%s detected %d of %d real shifts, want ≥ 90%%", name, found[name], runs)
		}
	}
}

func TestSlowdownEProcessFreezesThresholdsBeforeTesting(t *testing.T) {
	s, err := NewSlowdownEProcess([]float64{0.5}, 1.2, 100)
	if err != nil {
		t.Fatal(err)
	}
	// Warm-up batch: a grossly slower canary is not tested yet.
	if err := s.Update(testHistogram([]int64{90000, 90000}), testHistogram(repeat(2000, 60)), 0.5); err != nil {
		t.Fatal(err)
	}
	if s.Frozen() || s.Slower().LogE() != 0 {
		t.Fatalf("tested during warm-up: frozen %v, ln E %v", s.Frozen(), s.Slower().LogE())
	}
	if err := s.Update(testHistogram(nil), testHistogram(append(repeat(1000, 30), repeat(3000, 20)...)), 0.5); err != nil {
		t.Fatal(err)
	}
	if !s.Frozen() {
		t.Fatal("not frozen after 110 baseline samples")
	}
	// 110 samples: 30 at 1000 µs, 60 at 2000, 20 at 3000: the median is in 2000's bucket.
	if th := s.Thresholds(); len(th) != 1 || th[0] < 2000 || th[0] > 2002 {
		t.Errorf("thresholds %v, want the median bucket's top, 2000..2002 µs", th)
	}
	// Canary at 2300 µs is above the median but within ×1.2: it counts for
	// neither side of "slower"; baseline 3000s are events against it.
	for range 20 {
		if err := s.Update(testHistogram(repeat(2300, 50)), testHistogram(append(repeat(1000, 25), repeat(3000, 25)...)), 0.5); err != nil {
			t.Fatal(err)
		}
	}
	if s.Slower().Rejected(0.05) || !s.Within().Rejected(0.05) {
		t.Errorf("canary within ×1.2: slower ln E %.2f, within ln E %.2f; want within rejected, slower not",
			s.Slower().LogE(), s.Within().LogE())
	}
}

func repeat(v int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestDKWTest(t *testing.T) {
	// statistics.md §4 C2: "with 10⁴ samples per arm the band totals about 0.057".
	if b := DKWBand(10_000, 0.025) * 2; math.Abs(b-0.057) > 0.0005 {
		t.Errorf("band at 10⁴ per arm, α = 0.05: %.4f, want about 0.057", b)
	}
	rng := rand.New(rand.NewPCG(2, 24))
	aa, _ := NewDKWTest(0.05)
	slow, _ := NewDKWTest(0.05)
	for range 30 {
		if err := aa.Update(discreteLatencies(rng, 300, 1), discreteLatencies(rng, 700, 1)); err != nil {
			t.Fatal(err)
		}
		if err := slow.Update(discreteLatencies(rng, 300, 1.5), discreteLatencies(rng, 700, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if aa.Rejected() {
		t.Errorf("A/A rejected: gap %.4f > band %.4f", aa.Gap(), aa.Band())
	}
	if !slow.Rejected() {
		t.Errorf("canary ×1.5 not rejected: gap %.4f ≤ band %.4f", slow.Gap(), slow.Band())
	}
	if _, err := NewDKWTest(0); !errors.Is(err, ErrInput) {
		t.Errorf("alpha 0: err = %v, want ErrInput", err)
	}
}

// Intervals where one side recorded no latencies must not lose the other
// side's later data.
func TestLatencyEProcessesSurviveEmptySides(t *testing.T) {
	full := testHistogram(append(repeat(1000, 300), repeat(2000, 300)...))
	l, _ := NewLatencyEProcess(100)
	s, _ := NewSlowdownEProcess([]float64{0.5}, 1, 100)
	// First interval: no canary latencies, and HdrHistogram exports nothing for it.
	if err := l.update(geometryOf(full), nil, full.Export().Counts, 0.5); err != nil {
		t.Fatal(err)
	}
	if err := s.update(geometryOf(full), nil, nil, 0.5); err != nil {
		t.Fatal(err)
	}
	if err := s.update(geometryOf(full), nil, full.Export().Counts, 0.5); err != nil {
		t.Fatal(err)
	}
	if !s.Frozen() {
		t.Fatal("warm-up lost the baseline samples that followed an empty interval")
	}
	slow := testHistogram(repeat(5000, 600))
	for range 3 {
		_ = l.Update(slow, full, 0.5)
		_ = s.Update(slow, full, 0.5)
	}
	if !l.Rejected(0.01) || !s.Slower().Rejected(0.01) {
		t.Errorf("a canary at 5 ms against 1–2 ms was not rejected: bins ln E %.1f, slowdown ln E %.1f", l.LogE(), s.Slower().LogE())
	}
}

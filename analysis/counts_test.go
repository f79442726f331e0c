package analysis

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Rank queries and tail sums go through block totals; check them against
// plain walks over the exported counts, at every block boundary.
func TestCountsRanksAndTails(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for run := range 20 {
		h := latencies(rng, 1+rng.Int64N(50_000), 0.01+rng.Float64()*200, 0.1+rng.Float64(), 0)
		c, err := NewCounts(h)
		if err != nil {
			t.Fatal(err)
		}
		counts := h.Export().Counts
		if c.TotalCount() != h.TotalCount() {
			t.Fatalf("run %d: TotalCount %d, histogram %d", run, c.TotalCount(), h.TotalCount())
		}
		n := h.TotalCount()
		for _, k := range []int64{1, 2, n / 3, n / 2, n - 1, n, n + 5, rng.Int64N(n) + 1} {
			want, acc := 0, int64(0)
			for i, v := range counts {
				if acc += v; v != 0 && acc >= max(k, 1) {
					want = i
					break
				}
				if v != 0 {
					want = i
				}
			}
			if got := c.rankIndex(k); got != want {
				t.Fatalf("run %d: rank %d at index %d, a walk says %d", run, k, got, want)
			}
		}
		for idx := c.lo - 3; idx <= c.hi+3; idx += 1 + rng.IntN(40) {
			var want int64
			for i := max(idx, 0); i < len(counts); i++ {
				want += counts[i]
			}
			if got := c.sumFrom(idx); got != want {
				t.Fatalf("run %d: %d values from index %d, a walk says %d", run, got, idx, want)
			}
		}
		// Where q·n is a whole rank, ⌈q·n⌉ is HdrHistogram's own rank.
		for _, q := range []float64{0.5, 0.9, 0.99} {
			if k := q * float64(n); k == math.Trunc(k) && k >= 1 {
				if got, want := c.ValueAtQuantile(q), h.ValueAtQuantile(100*q); got != want {
					t.Errorf("run %d: quantile %v = %d, ValueAtQuantile says %d", run, q, got, want)
				}
			}
		}
	}
}

// MannWhitneyCounts is MannWhitneyHist; MannWhitneyTest is its test part.
func TestMannWhitneyCountsMatchHist(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	for run := range 40 {
		hx := latencies(rng, 1+rng.Int64N(20_000), 5, 0.5, rng.Float64())
		hy := latencies(rng, 1+rng.Int64N(20_000), 5, 0.5, 0)
		alt := Alternative(run % 3)
		want, err := MannWhitneyHist(hx, hy, alt, 0.95)
		if err != nil {
			t.Fatal(err)
		}
		cx, _ := NewCounts(hx)
		cy, _ := NewCounts(hy)
		got, err := MannWhitneyCounts(cx, cy, alt, 0.95)
		if err != nil || got != want {
			t.Fatalf("run %d: MannWhitneyCounts %+v (%v)\nMannWhitneyHist   %+v", run, got, err, want)
		}
		test, err := MannWhitneyTest(cx, cy, alt)
		if err != nil {
			t.Fatal(err)
		}
		want.HodgesLehmann, want.CI, want.Confidence = 0, [2]float64{}, 0
		if test != want {
			t.Fatalf("run %d: MannWhitneyTest %+v\nwant             %+v", run, test, want)
		}
	}
}

func TestCountsInputErrors(t *testing.T) {
	if _, err := NewCounts(nil); !errors.Is(err, ErrInput) {
		t.Errorf("nil: err = %v, want ErrInput", err)
	}
	// hdrhistogram.Import drops negative counts; arrays handed over as
	// counts are checked all the same.
	if err := (&Counts{}).set([]int64{0, 3, -1, 2}); !errors.Is(err, ErrInput) {
		t.Errorf("negative count: err = %v, want ErrInput", err)
	}
	full, _ := NewCounts(histOf(t, []float64{1, 2, 3}))
	empty, err := NewCounts(latencyHistogram())
	if err != nil || empty.TotalCount() != 0 || empty.ValueAtQuantile(0.5) != 0 {
		t.Fatalf("empty histogram: %v, n %d", err, empty.TotalCount())
	}
	otherH := hdrhistogram.New(1, 1_000_000, 3)
	_ = otherH.RecordValue(5)
	other, _ := NewCounts(otherH)
	for name, pair := range map[string][2]*Counts{"nil": {nil, full}, "empty": {full, empty}, "geometry": {full, other}} {
		if _, err := MannWhitneyTest(pair[0], pair[1], TwoSided); !errors.Is(err, ErrInput) {
			t.Errorf("%s: MannWhitneyTest err = %v, want ErrInput", name, err)
		}
		if _, err := MannWhitneyCounts(pair[0], pair[1], TwoSided, 0.95); !errors.Is(err, ErrInput) {
			t.Errorf("%s: MannWhitneyCounts err = %v, want ErrInput", name, err)
		}
		if _, err := QuantileRatioInterval(pair[0], pair[1], 0.5, 0.95); !errors.Is(err, ErrInput) {
			t.Errorf("%s: QuantileRatioInterval err = %v, want ErrInput", name, err)
		}
	}
	for _, qc := range [][2]float64{{0, 0.95}, {1, 0.95}, {math.NaN(), 0.95}, {0.5, 1}, {0.5, 0}} {
		if _, err := QuantileRatioInterval(full, full, qc[0], qc[1]); !errors.Is(err, ErrInput) {
			t.Errorf("q %v confidence %v: err = %v, want ErrInput", qc[0], qc[1], err)
		}
	}
	// Three values a side cannot bound a median at 99%.
	if _, err := QuantileRatioInterval(full, full, 0.5, 0.99); !errors.Is(err, ErrInput) {
		t.Errorf("too few samples: err = %v, want ErrInput", err)
	}
}

// QuantileRatioInterval is the interval the Monitor's fixed-horizon verdict
// classifies, and its ends are bucket edges of the order statistics.
func TestQuantileRatioIntervalMatchesMonitor(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	hx, hy := latencies(rng, 30_000, 5, 0.5, 1), latencies(rng, 40_000, 5, 0.5, 0)
	cx, _ := NewCounts(hx)
	cy, _ := NewCounts(hy)
	g := geometryOf(hx)
	var lx, ly latencyCounts
	lx.add(hx.Export().Counts)
	ly.add(hy.Export().Counts)
	for _, q := range []float64{0.5, 0.9, 0.99} {
		got, err := QuantileRatioInterval(cx, cy, q, 0.98)
		if err != nil {
			t.Fatal(err)
		}
		want, ok := quantileRatioInterval(g, &lx, &ly, q, 0.98)
		if !ok || got != want {
			t.Errorf("q %v: %v, Monitor %v (%v)", q, got, want, ok)
		}
		// The canary is 1 ms slower on a 5 ms median: the interval holds the
		// ratio of the sample quantiles.
		r := float64(cx.ValueAtQuantile(q)) / float64(cy.ValueAtQuantile(q))
		if !(got[0] <= r && r <= got[1]) {
			t.Errorf("q %v: interval %v misses the sample ratio %v", q, got, r)
		}
	}
}

// The Monitor's accumulated counts keep block totals through adds and
// window resets; rank queries must still agree with a plain walk.
func TestLatencyCountsBlocksThroughResets(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var c latencyCounts
	var all []int64
	for step := range 12 {
		h := latencies(rng, 1+rng.Int64N(3000), 0.05+rng.Float64()*50, 0.7, 0)
		x, _ := NewCounts(h)
		c.addCounts(x)
		counts := h.Export().Counts
		if all == nil {
			all = make([]int64, len(counts))
		}
		for i, v := range counts {
			all[i] += v
		}
		if step%4 == 3 {
			c.reset()
			clear(all)
			continue
		}
		var n int64
		for _, v := range all {
			n += v
		}
		if c.n != n {
			t.Fatalf("step %d: n %d, want %d", step, c.n, n)
		}
		ranks := []int64{1, n / 2, n}
		for _, k := range ranks {
			want, acc := 0, int64(0)
			for i, v := range all {
				if acc += v; acc >= k && v != 0 {
					want = i
					break
				}
			}
			if got := c.rank(k); got != want {
				t.Fatalf("step %d: rank %d at %d, want %d", step, k, got, want)
			}
			if got := c.view(geometryOf(h)).rankIndex(k); got != want {
				t.Fatalf("step %d: view rank %d at %d, want %d", step, k, got, want)
			}
		}
		if !slices.Equal(c.counts, all) {
			t.Fatalf("step %d: counts differ", step)
		}
	}
}

package analysis

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// The order-statistic search must agree with sorting all m·n differences.
func TestKthDifferenceMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for run := 0; run < 400; run++ {
		m, n := 1+rng.IntN(40), 1+rng.IntN(40)
		gen := func(k int) []float64 {
			out := make([]float64, k)
			for i := range out {
				switch run % 3 {
				case 0: // continuous, wide range
					out[i] = rng.NormFloat64() * math.Pow(10, float64(run%7-3))
				case 1: // heavy ties
					out[i] = float64(rng.IntN(4))
				default: // mixed magnitudes
					out[i] = math.Exp(rng.NormFloat64() * 5)
				}
			}
			return out
		}
		x, y := gen(m), gen(n)
		var all []float64
		for _, a := range x {
			for _, b := range y {
				all = append(all, a-b)
			}
		}
		slices.Sort(all)
		sx, sy, err := rawSamples(x, y)
		if err != nil {
			t.Fatal(err)
		}
		d := newDiffs(sx, sy)
		for _, k := range []int64{1, int64(len(all)), 1 + rng.Int64N(int64(len(all)))} {
			got, cnt := d.kth(k)
			if got != all[k-1] {
				t.Fatalf("run %d: D_(%d) = %v, sorted differences say %v", run, k, got, all[k-1])
			}
			want := int64(0)
			for _, v := range all {
				if v <= got {
					want++
				}
			}
			if cnt != want {
				t.Fatalf("run %d: count ≤ D_(%d) = %d, want %d", run, k, cnt, want)
			}
		}
	}
}

func TestHodgesLehmannConfidenceWidens(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	x, y := make([]float64, 500), make([]float64, 700)
	for i := range x {
		x[i] = rng.NormFloat64() + 0.3
	}
	for i := range y {
		y[i] = rng.NormFloat64()
	}
	prev := [2]float64{math.Inf(1), math.Inf(-1)}
	for _, conf := range []float64{0.5, 0.8, 0.95, 0.99, 0.999} {
		est, ci, err := HodgesLehmann(x, y, conf)
		if err != nil {
			t.Fatal(err)
		}
		if !(ci[0] <= est && est <= ci[1]) || ci[0] > prev[0] || ci[1] < prev[1] {
			t.Errorf("confidence %v: est %v CI %v does not contain the estimate or nest the narrower %v", conf, est, ci, prev)
		}
		prev = ci
	}
	// A true shift of 0.3 with n ≈ 600: the 99.9% CI covers it.
	if !(prev[0] < 0.3 && prev[1] > 0.3) {
		t.Errorf("99.9%% CI %v misses the true shift 0.3", prev)
	}
}

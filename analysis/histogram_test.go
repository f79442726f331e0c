package analysis

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// The index → value map is reimplemented here (the library keeps it
// private), so pin it to the library: each representative lies in its
// recorded value's bucket, and the mean of the representatives is the
// library's own Mean, which uses the same middle-of-bucket values.
func TestBucketRepresentative(t *testing.T) {
	for _, geom := range []struct{ lo, hi, sig int64 }{{1, 60_000_000, 3}, {1, 3_600_000_000, 2}, {1000, 1 << 30, 4}, {1, 1000, 1}} {
		rng := rand.New(rand.NewPCG(uint64(geom.sig), 7))
		h := hdrhistogram.New(geom.lo, geom.hi, int(geom.sig))
		one := hdrhistogram.New(geom.lo, geom.hi, int(geom.sig))
		for i := 0; i < 5000; i++ {
			v := int64(math.Exp(rng.Float64() * math.Log(float64(geom.hi))))
			if err := h.RecordValue(v); err != nil {
				t.Fatal(err)
			}
			if i%50 != 0 { // Export copies every count: check a subset one by one
				continue
			}
			one.Reset()
			_ = one.RecordValue(v)
			rep := HistogramValues(one)
			if len(rep) != 1 || !one.ValuesAreEquivalent(v, int64(rep[0])) {
				t.Fatalf("geometry %+v: value %d has representative %v outside its bucket", geom, v, rep)
			}
		}
		vals := HistogramValues(h)
		var sum float64
		for _, v := range vals {
			sum += v
		}
		if mean := sum / float64(len(vals)); math.Abs(mean-h.Mean()) > 1e-9*h.Mean() || int64(len(vals)) != h.TotalCount() {
			t.Errorf("geometry %+v: %d representatives with mean %v; histogram %d values, Mean %v", geom, len(vals), mean, h.TotalCount(), h.Mean())
		}
	}
	// Below 2048 at 3 significant figures every bucket holds one value.
	h := latencyHistogram()
	for v := int64(1); v < 2048; v++ {
		_ = h.RecordValue(v)
	}
	for i, v := range HistogramValues(h) {
		if v != float64(i+1) {
			t.Fatalf("value %d represented by %v", i+1, v)
		}
	}
}

func TestHistogramInputErrors(t *testing.T) {
	full := histOf(t, []float64{1, 2, 3})
	other := hdrhistogram.New(1, 1_000_000, 3)
	_ = other.RecordValue(5)
	cases := []struct {
		name string
		x, y *hdrhistogram.Histogram
	}{
		{"nil", nil, full},
		{"empty canary", latencyHistogram(), full},
		{"empty baseline", full, latencyHistogram()},
		{"geometry", full, other},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := MannWhitneyHist(c.x, c.y, TwoSided, 0.95); !errors.Is(err, ErrInput) {
				t.Errorf("MannWhitneyHist: err = %v, want ErrInput", err)
			}
			if _, err := WelchHist(c.x, c.y, TwoSided); !errors.Is(err, ErrInput) {
				t.Errorf("WelchHist: err = %v, want ErrInput", err)
			}
		})
	}
	if _, err := MannWhitneyHist(full, full, TwoSided, 1); !errors.Is(err, ErrInput) {
		t.Errorf("confidence 1: err = %v, want ErrInput", err)
	}
}

// checkHistEqualsRaw records xs and ys into histograms and requires the
// histogram test to equal the raw test on the expanded representatives.
func checkHistEqualsRaw(t *testing.T, xs, ys []int64, alt Alternative) {
	t.Helper()
	hx, hy := latencyHistogram(), latencyHistogram()
	for _, v := range xs {
		if err := hx.RecordValue(v); err != nil {
			t.Skip(v)
		}
	}
	for _, v := range ys {
		if err := hy.RecordValue(v); err != nil {
			t.Skip(v)
		}
	}
	got, err := MannWhitneyHist(hx, hy, alt, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	want, err := MannWhitney(HistogramValues(hx), HistogramValues(hy), alt)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("histogram %+v\nexpanded  %+v", got, want)
	}
}

func TestMannWhitneyHistEqualsExpanded(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for run := 0; run < 300; run++ {
		m, n := 1+rng.IntN(300), 1+rng.IntN(300)
		scale := math.Exp(rng.Float64() * 14) // 1 µs .. 1.2 s
		draw := func(k int, shift float64) []int64 {
			out := make([]int64, k)
			for i := range out {
				out[i] = 1 + int64(scale*shift*math.Exp(rng.NormFloat64()))
			}
			return out
		}
		xs, ys := draw(m, 1+0.2*rng.Float64()), draw(n, 1)
		checkHistEqualsRaw(t, xs, ys, Alternative(run%3))
	}
}

func FuzzMannWhitneyHist(f *testing.F) {
	f.Add([]byte{1, 2, 2, 3, 3, 3, 4}, []byte{2, 3, 3, 4, 4, 5}, uint16(1), uint8(0))
	f.Add([]byte{7}, []byte{7, 7}, uint16(1000), uint8(1))
	f.Fuzz(func(t *testing.T, xb, yb []byte, scale uint16, alt uint8) {
		if len(xb) == 0 || len(yb) == 0 {
			return
		}
		conv := func(b []byte) []int64 {
			out := make([]int64, len(b))
			for i, v := range b {
				out[i] = 1 + int64(v)*int64(scale)
			}
			return out
		}
		checkHistEqualsRaw(t, conv(xb), conv(yb), Alternative(alt%3))
	})
}

func TestMannWhitneyHistStatisticsMdCheck(t *testing.T) {
	// statistics.md section 1: U_x = 11, T = 168, σ = 6.72538, p = 0.157785410518.
	hx := histOf(t, []float64{1, 2, 2, 3, 3, 3, 4})
	hy := histOf(t, []float64{2, 3, 3, 4, 4, 5})
	r, err := MannWhitneyHist(hx, hy, TwoSided, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	sx, sy, _ := histSamples(hx, hy)
	_, ties, _ := rankStats(sx, sy)
	// Two-sided z uses max(U_x, U_y) = 31 against μ = 21.
	wantZ := (31 - 21 - 0.5) / 6.72538
	if r.U != 11 || ties != 168 || !closeTo(r.PValue, 0.157785410518, 1e-12) || !closeTo(r.Z, wantZ, 1e-5) {
		t.Errorf("U %v T %v z %v p %v; want 11, 168, %v, 0.157785410518", r.U, ties, r.Z, r.PValue, wantZ)
	}
}

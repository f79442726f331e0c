package analysis

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// benchSamples is a realistic request-latency sample in microseconds: a
// lognormal body (median 20 ms) with a 1% slow tail around 300 ms. The canary
// is 3% slower.
const benchN = 1_000_000

func latencyValue(rng *rand.Rand, slow float64) int64 {
	v := 20_000 * math.Exp(0.45*rng.NormFloat64())
	if rng.Float64() < 0.01 {
		v = 300_000 * math.Exp(0.3*rng.NormFloat64())
	}
	return max(1, int64(v*slow))
}

var benchData = sync.OnceValue(func() (d struct {
	canary, baseline       *hdrhistogram.Histogram
	canaryRaw, baselineRaw []float64
}) {
	rng := rand.New(rand.NewPCG(11, 12))
	d.canary, d.baseline = latencyHistogram(), latencyHistogram()
	d.canaryRaw, d.baselineRaw = make([]float64, benchN), make([]float64, benchN)
	for i := range benchN {
		c, b := latencyValue(rng, 1.03), latencyValue(rng, 1)
		_ = d.canary.RecordValue(c)
		_ = d.baseline.RecordValue(b)
		d.canaryRaw[i], d.baselineRaw[i] = float64(c), float64(b)
	}
	return d
})

var sink any

// BenchmarkMannWhitneyHist is the operation a rollout step runs: the test,
// effect sizes and Hodges–Lehmann CI from two 1M-sample histograms.
func BenchmarkMannWhitneyHist(b *testing.B) {
	d := benchData()
	b.ResetTimer()
	for b.Loop() {
		r, err := MannWhitneyHist(d.canary, d.baseline, Greater, 0.98)
		if err != nil {
			b.Fatal(err)
		}
		sink = r
	}
}

// BenchmarkMannWhitneyRaw is the baseline for the histogram version: the
// same 1M + 1M values as plain slices.
func BenchmarkMannWhitneyRaw(b *testing.B) {
	d := benchData()
	b.ResetTimer()
	for b.Loop() {
		r, err := MannWhitney(d.canaryRaw, d.baselineRaw, Greater)
		if err != nil {
			b.Fatal(err)
		}
		sink = r
	}
}

func BenchmarkTwoProportionZ(b *testing.B) {
	for b.Loop() {
		r, err := TwoProportionZ(1300, 1_000_000, 1000, 1_000_000, Greater)
		if err != nil {
			b.Fatal(err)
		}
		sink = r
	}
}

func BenchmarkFisher(b *testing.B) {
	for b.Loop() {
		r, err := Fisher(1300, 1_000_000, 1000, 1_000_000, TwoSided)
		if err != nil {
			b.Fatal(err)
		}
		sink = r
	}
}

func BenchmarkWelch(b *testing.B) {
	d := benchData()
	x, y := d.canaryRaw[:10_000], d.baselineRaw[:10_000]
	b.ResetTimer()
	for b.Loop() {
		r, err := Welch(x, y, Greater)
		if err != nil {
			b.Fatal(err)
		}
		sink = r
	}
}

func BenchmarkWelchHist(b *testing.B) {
	d := benchData()
	b.ResetTimer()
	for b.Loop() {
		r, err := WelchHist(d.canary, d.baseline, Greater)
		if err != nil {
			b.Fatal(err)
		}
		sink = r
	}
}

// BenchmarkFullAnalysis is one evaluation of a canary against its baseline
// with 1M requests each: the error rate by z-test, and latency by p50, p99
// and the Mann–Whitney test with its Hodges–Lehmann 98% CI from histograms.
func BenchmarkFullAnalysis(b *testing.B) {
	d := benchData()
	b.ResetTimer()
	for b.Loop() {
		z, err := TwoProportionZ(1300, benchN, 1000, benchN, Greater)
		if err != nil {
			b.Fatal(err)
		}
		q := [4]int64{d.canary.ValueAtQuantile(50), d.baseline.ValueAtQuantile(50),
			d.canary.ValueAtQuantile(99), d.baseline.ValueAtQuantile(99)}
		m, err := MannWhitneyHist(d.canary, d.baseline, Greater, 0.98)
		if err != nil {
			b.Fatal(err)
		}
		sink = [3]any{z, q, m}
	}
}

// BenchmarkHistogramReduce is the floor under every histogram test: exporting
// both histograms and collecting their non-empty buckets.
func BenchmarkHistogramReduce(b *testing.B) {
	d := benchData()
	b.ResetTimer()
	for b.Loop() {
		x, y, err := histSamples(d.canary, d.baseline)
		if err != nil {
			b.Fatal(err)
		}
		sink = [2]sample{x, y}
	}
}

// BenchmarkDifferenceCount is one counting pass of the Hodges–Lehmann search
// over the benchmark histograms' non-empty buckets; a search takes a handful.
func BenchmarkDifferenceCount(b *testing.B) {
	d := benchData()
	x, y, err := histSamples(d.canary, d.baseline)
	if err != nil {
		b.Fatal(err)
	}
	diff := newDiffs(x, y)
	b.ReportMetric(float64(len(x.v)+len(y.v)), "buckets")
	b.ResetTimer()
	for b.Loop() {
		diff.probes = diff.probes[:0]
		c, _, _ := diff.count(560)
		sink = c
	}
}

// TestFullAnalysisPasses pins how many counting passes the benchmark's
// Hodges–Lehmann estimate and CI need, so a regression in the search shows
// up as a test failure rather than a slower benchmark.
func TestFullAnalysisPasses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two 1M-sample histograms")
	}
	d := benchData()
	x, y, err := histSamples(d.canary, d.baseline)
	if err != nil {
		t.Fatal(err)
	}
	_, _, distinct := rankStats(x, y)
	r, err := hodgesLehmann(x, y, 0.98, int64(distinct) == x.n+y.n)
	if err != nil {
		t.Fatal(err)
	}
	if n := r.passes; n > 20 {
		t.Errorf("%d counting passes for the median and a 98%% CI, want at most 20", n)
	}
}

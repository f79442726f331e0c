package analysis

import (
	"math/rand/v2"
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Per-batch costs of the e-processes and of Monitor.Observe. The baselines
// in the same run are what a fixed-horizon re-test would cost per interval:
// TwoProportionZ on the cumulative counts, MannWhitneyHist on the
// cumulative histograms.

func BenchmarkErrorRateEProcessUpdate(b *testing.B) {
	for _, alt := range []Alternative{TwoSided, Greater} {
		b.Run(alt.String(), func(b *testing.B) {
			p, _ := NewErrorRateEProcess(0.05, 100, alt)
			for b.Loop() {
				_ = p.Update(1, 19)
			}
		})
	}
}

func BenchmarkRatioEProcessUpdate(b *testing.B) {
	b.Run("same-share", func(b *testing.B) {
		p, _ := NewRatioEProcess(Greater, 1)
		for b.Loop() {
			_ = p.Update(1, 19, 0.05)
		}
	})
	b.Run("new-share-every-batch", func(b *testing.B) {
		p, _ := NewRatioEProcess(Greater, 1)
		shares := []float64{0.05, 0.1}
		i := 0
		for b.Loop() {
			_ = p.Update(1, 19, shares[i&1])
			i++
		}
	})
}

func BenchmarkRateDifferenceEProcessUpdate(b *testing.B) {
	p, _ := NewRateDifferenceEProcess(0.02, Greater)
	for b.Loop() {
		_ = p.Update(100, 1, 1900, 10, 0.05)
	}
}

func BenchmarkMSPRTUpdate(b *testing.B) {
	p, _ := NewMSPRT(0.01)
	for b.Loop() {
		_ = p.Update(1, 100, 19, 1900)
	}
}

// BenchmarkTwoProportionZBaseline is the fixed-horizon z-test on counts.
func BenchmarkTwoProportionZBaseline(b *testing.B) {
	for b.Loop() {
		_, _ = TwoProportionZ(120, 10000, 2000, 190000, Greater)
	}
}

// millionSamples is a histogram of n log-normal latencies around 5 ms,
// with the shared geometry (1 µs..60 s, 3 digits).
func millionSamples(seed uint64, n int64, shiftMS float64) *hdrhistogram.Histogram {
	return latencies(rand.New(rand.NewPCG(seed, 99)), n, 5, 0.5, shiftMS)
}

func BenchmarkLatencyEProcessUpdate(b *testing.B) {
	hx, hy := millionSamples(1, 1_000_000, 0), millionSamples(2, 1_000_000, 0)
	p, _ := NewLatencyEProcess(100)
	for b.Loop() {
		_ = p.Update(hx, hy, 0.5)
	}
}

func BenchmarkSlowdownEProcessUpdate(b *testing.B) {
	hx, hy := millionSamples(1, 1_000_000, 0), millionSamples(2, 1_000_000, 0)
	p, _ := NewSlowdownEProcess([]float64{0.5, 0.9, 0.99}, 1.2, 100)
	for b.Loop() {
		_ = p.Update(hx, hy, 0.5)
	}
}

// BenchmarkMonitorObserve feeds error_rate, latency_p50 and latency_p99 a
// batch of 1M requests per side with their latency histograms.
func BenchmarkMonitorObserve(b *testing.B) {
	hx, hy := millionSamples(1, 1_000_000, 0), millionSamples(2, 1_000_000, 0)
	m, _ := NewMonitor(threeMetrics(), 0.95, MonitorOptions{})
	batch := Batch{CanaryRequests: 1_000_000, CanaryErrors: 5000, BaselineRequests: 1_000_000, BaselineErrors: 5000,
		CanaryLatency: hx, BaselineLatency: hy, CanaryShare: 0.5}
	cpu := startCPU(b)
	for b.Loop() {
		if _, err := m.Observe(batch); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report()
}

// BenchmarkMannWhitneyHistBaseline is one fixed-horizon MWU (with HL and
// its CI) on the same two 1M-sample histograms.
func BenchmarkMannWhitneyHistBaseline(b *testing.B) {
	hx, hy := millionSamples(1, 1_000_000, 0), millionSamples(2, 1_000_000, 0)
	cpu := startCPU(b)
	for b.Loop() {
		if _, err := MannWhitneyHist(hx, hy, Greater, 0.95); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report()
}

// BenchmarkJudge: ten metrics of 60 per-minute points each, as Kayenta sees
// an hour-long canary.
func BenchmarkJudge(b *testing.B) {
	rng := rand.New(rand.NewPCG(4, 5))
	var ms []JudgeMetric
	for i := range 10 {
		x, y := make([]float64, 60), make([]float64, 60)
		for j := range x {
			x[j], y[j] = 100+10*rng.NormFloat64()+float64(i), 100+10*rng.NormFloat64()
		}
		ms = append(ms, JudgeMetric{Name: string(rune('a' + i)), Group: []string{"latency", "errors"}[i%2], Canary: x, Baseline: y})
	}
	for b.Loop() {
		if _, err := Judge(ms, JudgeConfig{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMonitorEvaluate is the fixed-horizon verdict of an explicit
// analysis step on a window of 1M requests per side: error_rate by
// two-proportion-z with its Newcombe interval, latency_p50 and latency_p99
// by Mann–Whitney with their quantile-ratio intervals. The window's counts
// are already accumulated (Observe exported the histograms), so this is the
// cost on top of BenchmarkMonitorObserve.
func BenchmarkMonitorEvaluate(b *testing.B) {
	hx, hy := millionSamples(1, 1_000_000, 0), millionSamples(2, 1_000_000, 0)
	m, _ := NewMonitor([]MetricSpec{
		{Name: "error_rate", Test: TestTwoProportionZ, MaxIncrease: 0.02},
		{Name: "latency_p50", Test: TestMannWhitneyU, MaxRatio: 1.2},
		{Name: "latency_p99", Test: TestMannWhitneyU, MaxRatio: 1.5},
	}, 0.95, MonitorOptions{})
	if _, err := m.Observe(Batch{CanaryRequests: 1_000_000, CanaryErrors: 5000, BaselineRequests: 1_000_000, BaselineErrors: 5000,
		CanaryLatency: hx, BaselineLatency: hy, CanaryShare: 0.5}); err != nil {
		b.Fatal(err)
	}
	cpu := startCPU(b)
	for b.Loop() {
		sink = m.Evaluate()
	}
	cpu.report()
}

package driver

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
)

// scorer computes the performance score adaptive progression reads
// (Observation.Score): Kayenta's judge (analysis.Judge) over one sample per
// analysis interval and metric, canary against stable, for the traffic of
// the current step only, over its latest maxScoreSamples intervals.
//
// The score is the judge's score / 100, with two rules on top, so that a
// rollout never accelerates on weak evidence:
//   - any continuous verdict Fail (the metrics are unhealthy) scores 0;
//   - a judge verdict of Inconclusive (an interval still reaches beyond a
//     metric's allowed effect, or too few samples) caps the score at 0.90,
//     which adds one point instead of doubling.
//
// Samples: error_rate is the interval's error fraction, latency_pNN the
// interval's NNth percentile in ms, latency_mean the interval's mean. A side
// without requests in an interval contributes no sample. Every metric is
// judged with direction "increase" (only a higher canary counts against
// it) and its spec bound as the allowed effect: maxRatio as is, maxIncrease
// as 1 + maxIncrease / mean(stable).
//
// Not safe for concurrent use; the driver's loop owns it.
type scorer struct {
	metrics []rollout.MetricSpec
	key     string
	canary  map[string][]float64
	stable  map[string][]float64
	// last is the latest judge result, for logs and tests.
	last analysis.JudgeResult
}

// maxScoreSamples bounds the intervals the judge looks at (2 minutes at
// the default 1s interval): the Hodges–Lehmann estimate costs O(n·m), and
// the score should describe the canary's recent behaviour at its weight.
const maxScoreSamples = 120

func newScorer(spec rollout.Spec) *scorer {
	c := spec.Strategy.Canary
	if c == nil || c.Adaptive == nil || !c.Adaptive.Enabled {
		return nil
	}
	return &scorer{metrics: spec.Analysis.Metrics}
}

// observe adds one interval and returns the score. key identifies the
// traffic the interval ran under (step and canary weight): when it changes
// the samples start over, since evidence at 5% says little about 25%.
func (s *scorer) observe(key string, c, b rollout.VersionStats, verdicts []analysis.Verdict) (float64, error) {
	if key != s.key {
		s.key = key
		s.canary, s.stable = map[string][]float64{}, map[string][]float64{}
	}
	for _, m := range s.metrics {
		if v, ok := sample(m.Name, c); ok {
			s.canary[m.Name] = appendBounded(s.canary[m.Name], v)
		}
		if v, ok := sample(m.Name, b); ok {
			s.stable[m.Name] = appendBounded(s.stable[m.Name], v)
		}
	}
	for _, v := range verdicts {
		if v.Outcome == analysis.Fail {
			s.last = analysis.JudgeResult{Verdict: analysis.JudgeFail, Reason: v.Metric + " failed: " + v.Reason}
			return 0, nil
		}
	}
	if len(s.metrics) == 0 {
		return 0, fmt.Errorf("adaptive progression needs analysis metrics to score")
	}
	jm := make([]analysis.JudgeMetric, 0, len(s.metrics))
	for _, m := range s.metrics {
		x, y := s.canary[m.Name], s.stable[m.Name]
		j := analysis.JudgeMetric{Name: m.Name, Canary: x, Baseline: y, Direction: analysis.Increase, Critical: m.Critical}
		switch {
		case m.MaxRatio > 0:
			j.EffectSize.AllowedIncrease = m.MaxRatio
		case m.MaxIncrease > 0 && len(y) > 0:
			if mean := meanOf(y); mean > 0 {
				j.EffectSize.AllowedIncrease = 1 + m.MaxIncrease/mean
			}
		}
		jm = append(jm, j)
	}
	res, err := analysis.Judge(jm, analysis.JudgeConfig{})
	if err != nil {
		return 0, err
	}
	s.last = res
	score := res.Score / 100
	if res.Verdict == analysis.JudgeInconclusive {
		score = min(score, 0.90)
	}
	return score, nil
}

func appendBounded(xs []float64, v float64) []float64 {
	if len(xs) == maxScoreSamples {
		copy(xs, xs[1:])
		xs = xs[:len(xs)-1]
	}
	return append(xs, v)
}

// sample is one interval's value of metric for one version.
func sample(metric string, v rollout.VersionStats) (float64, bool) {
	if v.Requests == 0 {
		return 0, false
	}
	if metric == "error_rate" {
		return float64(v.Errors) / float64(v.Requests), true
	}
	if v.Latency == nil || v.Latency.TotalCount() == 0 {
		return 0, false
	}
	if metric == "latency_mean" {
		return v.Latency.Mean() / 1000, true
	}
	p, ok := strings.CutPrefix(metric, "latency_p")
	if !ok {
		return 0, false
	}
	q, err := percentile(p)
	if err != nil {
		return 0, false
	}
	return float64(v.Latency.ValueAtQuantile(q)) / 1000, true
}

// percentile reads the NN of latency_pNN: p50 → 50, p999 → 99.9.
func percentile(p string) (float64, error) {
	if strings.Contains(p, ".") || len(p) <= 2 {
		return strconv.ParseFloat(p, 64)
	}
	return strconv.ParseFloat(p[:2]+"."+p[2:], 64)
}

func meanOf(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	if len(xs) == 0 {
		return math.NaN()
	}
	return s / float64(len(xs))
}

package analysis

import (
	"fmt"
	"math"
	"slices"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// sample is a multiset: values with their multiplicities. Raw samples and
// histograms both reduce to it, so every statistic has a single
// implementation whose cost is linear in the number of distinct values rather
// than in the number of observations. Rank statistics need v distinct and
// ascending (newSample, histSample); moments take any order.
type sample struct {
	v []float64
	w []int64
	n int64
}

// newSample validates raw observations and groups equal values.
func newSample(name string, xs []float64) (sample, error) {
	if len(xs) == 0 {
		return sample{}, fmt.Errorf("%w: %s sample is empty", ErrInput, name)
	}
	for i, v := range xs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return sample{}, fmt.Errorf("%w: %s sample: value %d is %v", ErrInput, name, i+1, v)
		}
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	s := sample{v: sorted[:0], n: int64(len(xs))}
	s.w = make([]int64, 0, len(xs))
	for _, v := range sorted {
		// -0 and +0 compare equal and are one tie group, as in scipy.
		if k := len(s.w); k > 0 && s.v[k-1] == v {
			s.w[k-1]++
			continue
		}
		s.v = append(s.v, v)
		s.w = append(s.w, 1)
	}
	return s, nil
}

// expand writes every observation out, in order; used by tests and by
// callers that need plain slices from a histogram.
func (s sample) expand() []float64 {
	out := make([]float64, 0, s.n)
	for i, v := range s.v {
		for range s.w[i] {
			out = append(out, v)
		}
	}
	return out
}

// selfTies is Σ(t³ − t) over the sample's own tie groups.
func (s sample) selfTies() float64 {
	var t float64
	for _, w := range s.w {
		if w > 1 {
			f := float64(w)
			t += f*f*f - f
		}
	}
	return t
}

// histGeometry reproduces hdrhistogram-go's index → value map (hdr.go:
// geometryMagnitudes, valueFromFlatIndex, medianEquivalentValue), which the
// library does not export. TestBucketRepresentative pins it to the library's
// own ValuesAreEquivalent and Mean.
type histGeometry struct {
	unitMagnitude      uint
	halfCountMagnitude uint
	halfCount          int
}

func newHistGeometry(lowest, sigfigs int64) histGeometry {
	if lowest < 1 {
		lowest = 1
	}
	subBucketCountMagnitude := int(math.Ceil(math.Log2(2 * math.Pow10(int(sigfigs)))))
	half := max(subBucketCountMagnitude, 1) - 1
	unit := max(int(math.Floor(math.Log2(float64(lowest)))), 0)
	return histGeometry{unitMagnitude: uint(unit), halfCountMagnitude: uint(half), halfCount: 1 << half}
}

// representative is the value a bucket stands for: the middle of its
// equivalent range, as HdrHistogram's Mean and StdDev use. Buckets of width 1
// (values below 2048 at 3 significant figures) represent their exact value.
func (g histGeometry) representative(idx int) float64 {
	bucket := (idx >> g.halfCountMagnitude) - 1
	sub := (idx & (g.halfCount - 1)) + g.halfCount
	if bucket < 0 {
		sub -= g.halfCount
		bucket = 0
	}
	shift := uint(bucket) + g.unitMagnitude
	lowest := int64(sub) << shift
	return float64(lowest + (int64(1)<<shift)>>1)
}

// histSamples checks that two histograms share one geometry, so that equal
// count indices mean equal values, and reduces each to its non-empty buckets.
func histSamples(x, y *hdrhistogram.Histogram) (sample, sample, error) {
	if x == nil || y == nil {
		return sample{}, sample{}, fmt.Errorf("%w: histogram is nil", ErrInput)
	}
	if x.LowestTrackableValue() != y.LowestTrackableValue() ||
		x.HighestTrackableValue() != y.HighestTrackableValue() ||
		x.SignificantFigures() != y.SignificantFigures() {
		return sample{}, sample{}, fmt.Errorf("%w: histograms differ in geometry: canary (lowest %d, highest %d, %d significant figures), baseline (lowest %d, highest %d, %d significant figures)",
			ErrInput, x.LowestTrackableValue(), x.HighestTrackableValue(), x.SignificantFigures(),
			y.LowestTrackableValue(), y.HighestTrackableValue(), y.SignificantFigures())
	}
	g := newHistGeometry(x.LowestTrackableValue(), x.SignificantFigures())
	sx, err := histSample("canary", x, g)
	if err != nil {
		return sample{}, sample{}, err
	}
	sy, err := histSample("baseline", y, g)
	if err != nil {
		return sample{}, sample{}, err
	}
	return sx, sy, nil
}

func histSample(name string, h *hdrhistogram.Histogram, g histGeometry) (sample, error) {
	if h.TotalCount() <= 0 {
		return sample{}, fmt.Errorf("%w: %s histogram is empty", ErrInput, name)
	}
	counts := h.Export().Counts
	nonEmpty := 0
	for _, c := range counts {
		if c > 0 {
			nonEmpty++
		}
	}
	s := sample{v: make([]float64, 0, nonEmpty), w: make([]int64, 0, nonEmpty)}
	for i, c := range counts {
		if c <= 0 {
			continue
		}
		s.v = append(s.v, g.representative(i))
		s.w = append(s.w, c)
		s.n += c
	}
	return s, nil
}

// HistogramValues expands a histogram into one bucket representative per
// recorded value, in ascending order: the sample that every histogram-based
// test in this package is exact for.
func HistogramValues(h *hdrhistogram.Histogram) []float64 {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	s, _ := histSample("histogram", h, newHistGeometry(h.LowestTrackableValue(), h.SignificantFigures()))
	return s.expand()
}

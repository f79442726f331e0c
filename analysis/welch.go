package analysis

import (
	"encoding/json"
	"fmt"
	"math"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"gonum.org/v1/gonum/stat/distuv"
)

// WelchResult is Welch's unequal-variance t-test of the canary's mean against
// the baseline's.
type WelchResult struct {
	NCanary      int64   `json:"n_canary"`
	NBaseline    int64   `json:"n_baseline"`
	T            float64 `json:"statistic"`
	DF           float64 `json:"df"`
	PValue       float64 `json:"p_value"`
	MeanCanary   float64 `json:"mean_canary"`
	MeanBaseline float64 `json:"mean_baseline"`
	// CI is the two-sided 95% Welch interval for mean(canary) − mean(baseline),
	// whatever the alternative.
	CI [2]float64 `json:"ci"`
}

// MarshalJSON adds the test's name, so the JSON stands on its own.
func (r WelchResult) MarshalJSON() ([]byte, error) {
	type plain WelchResult
	return json.Marshal(struct {
		Test string `json:"test"`
		plain
	}{"welch-t", plain(r)})
}

// Welch is scipy.stats.ttest_ind(x, y, equal_var=False): Welch's t with
// Satterthwaite's degrees of freedom. Each sample needs at least two values,
// and at least one of them must vary.
func Welch(x, y []float64, alt Alternative) (WelchResult, error) {
	// Unit weights in input order: no sort, and numpy's summation order.
	sx, err := unsortedSample("canary", x)
	if err != nil {
		return WelchResult{}, err
	}
	sy, err := unsortedSample("baseline", y)
	if err != nil {
		return WelchResult{}, err
	}
	return welch(sx, sy, alt)
}

func unsortedSample(name string, xs []float64) (sample, error) {
	if len(xs) == 0 {
		return sample{}, fmt.Errorf("%w: %s sample is empty", ErrInput, name)
	}
	w := make([]int64, len(xs))
	for i, v := range xs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return sample{}, fmt.Errorf("%w: %s sample: value %d is %v", ErrInput, name, i+1, v)
		}
		w[i] = 1
	}
	return sample{v: xs, w: w, n: int64(len(xs))}, nil
}

// WelchHist is Welch on two HdrHistograms, each value standing for its
// bucket's representative (the middle of its range): the moments are those
// of HistogramValues, biased by at most one bucket width.
func WelchHist(x, y *hdrhistogram.Histogram, alt Alternative) (WelchResult, error) {
	sx, sy, err := histSamples(x, y)
	if err != nil {
		return WelchResult{}, err
	}
	return welch(sx, sy, alt)
}

// welchCounts is WelchHist on exported histograms.
func welchCounts(x, y *Counts, alt Alternative) (WelchResult, error) {
	if err := checkCountsPair(x, y); err != nil {
		return WelchResult{}, err
	}
	buf := samplePool.Get().(*pairBuf)
	defer samplePool.Put(buf)
	r := rankPair(x, y, buf)
	return welch(r.x, r.y, alt)
}

// moments is the mean and the ddof=1 variance, in two passes as numpy.
func (s sample) moments() (mean, variance float64) {
	var sum float64
	for i, v := range s.v {
		sum += float64(s.w[i]) * v
	}
	mean = sum / float64(s.n)
	var ss float64
	for i, v := range s.v {
		d := v - mean
		ss += float64(s.w[i]) * d * d
	}
	return mean, ss / float64(s.n-1)
}

func welch(x, y sample, alt Alternative) (WelchResult, error) {
	if x.n < 2 || y.n < 2 {
		return WelchResult{}, fmt.Errorf("%w: Welch's t needs at least 2 values a side, got canary %d, baseline %d", ErrInput, x.n, y.n)
	}
	mx, varx := x.moments()
	my, vary := y.moments()
	for _, v := range []float64{mx, my, varx, vary} {
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return WelchResult{}, fmt.Errorf("%w: values too large: their moments overflow float64", ErrInput)
		}
	}
	vnx, vny := varx/float64(x.n), vary/float64(y.n)
	se2 := vnx + vny
	if !(se2 > 0) {
		return WelchResult{}, fmt.Errorf("%w: both samples are constant (canary %v, baseline %v): the t statistic is undefined", ErrInput, mx, my)
	}
	df := se2 * se2 / (vnx*vnx/float64(x.n-1) + vny*vny/float64(y.n-1))
	se := math.Sqrt(se2)
	t := (mx - my) / se
	dist := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}
	var p float64
	switch alt {
	case Greater:
		p = dist.Survival(t)
	case Less:
		p = dist.Survival(-t)
	default:
		p = math.Min(1, 2*dist.Survival(math.Abs(t)))
	}
	half := dist.Quantile(0.975) * se
	return WelchResult{
		NCanary: x.n, NBaseline: y.n,
		T: t, DF: df, PValue: p,
		MeanCanary: mx, MeanBaseline: my,
		CI: [2]float64{mx - my - half, mx - my + half},
	}, nil
}

package analysis

import (
	"encoding/json"
	"fmt"
	"math"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// MaxExactPairs caps m·n for the exact Mann–Whitney null distribution. Its
// cost grows as (m·n)²/4, about 25 million additions at the cap.
const MaxExactPairs = 10000

// MWUResult is a Mann–Whitney U test of canary (x) against baseline (y),
// with its effect sizes and the Hodges–Lehmann shift.
type MWUResult struct {
	NCanary   int64 `json:"n_canary"`
	NBaseline int64 `json:"n_baseline"`
	// U is U_x, the canary's statistic, for every alternative (as scipy).
	U      float64 `json:"statistic"`
	Z      float64 `json:"z"`
	PValue float64 `json:"p_value"`
	Method string  `json:"method"` // "asymptotic" or "exact"
	// CLES is the common-language effect size U_x/(m·n): P(canary > baseline)
	// plus half P(tie). JSON calls it effect_size.
	CLES         float64 `json:"effect_size"`
	RankBiserial float64 `json:"rank_biserial"`
	// HodgesLehmann is the median of all canary − baseline differences; CI
	// bounds it at Confidence.
	HodgesLehmann float64    `json:"hodges_lehmann"`
	CI            [2]float64 `json:"ci"`
	Confidence    float64    `json:"confidence"`
	// Note explains a degenerate result, such as p = 1 when every value ties.
	Note string `json:"note,omitempty"`
}

// MarshalJSON adds the test's name, so the JSON stands on its own.
func (r MWUResult) MarshalJSON() ([]byte, error) {
	type plain MWUResult
	return json.Marshal(struct {
		Test string `json:"test"`
		plain
	}{"mann-whitney-u", plain(r)})
}

// MannWhitney is the Mann–Whitney U test with the tie-corrected normal
// approximation and continuity correction: scipy.stats.mannwhitneyu(x, y,
// alternative, method="asymptotic", use_continuity=True). It also estimates
// the Hodges–Lehmann shift with a 95% confidence interval.
func MannWhitney(x, y []float64, alt Alternative) (MWUResult, error) {
	sx, sy, err := rawSamples(x, y)
	if err != nil {
		return MWUResult{}, err
	}
	return mannWhitney(sx, sy, alt, 0.95, false)
}

// MannWhitneyExact is MannWhitney with the exact null distribution of U
// (scipy method="exact"). It needs samples without ties and at most
// MaxExactPairs pairs, and returns an ErrInput error otherwise.
func MannWhitneyExact(x, y []float64, alt Alternative) (MWUResult, error) {
	sx, sy, err := rawSamples(x, y)
	if err != nil {
		return MWUResult{}, err
	}
	return mannWhitney(sx, sy, alt, 0.95, true)
}

// MannWhitneyHist runs MannWhitney on two HdrHistograms in time linear in
// their non-empty buckets. Values in one bucket are ties, each standing for
// the bucket's representative (the middle of its range), so the result equals
// MannWhitney on HistogramValues of both histograms. The Hodges–Lehmann
// estimate and CI are therefore exact for the representatives and within one
// bucket width of the recorded values. Both histograms must share lowest,
// highest and significant figures.
func MannWhitneyHist(x, y *hdrhistogram.Histogram, alt Alternative, confidence float64) (MWUResult, error) {
	if err := checkConfidence(confidence); err != nil {
		return MWUResult{}, err
	}
	cx, cy, err := countsPair(x, y)
	if err != nil {
		return MWUResult{}, err
	}
	return mannWhitneyCounts(cx, cy, alt, confidence)
}

// MannWhitneyCounts is MannWhitneyHist on histograms already exported with
// NewCounts, so that several tests of one batch share one copy of the counts.
func MannWhitneyCounts(x, y *Counts, alt Alternative, confidence float64) (MWUResult, error) {
	if err := checkConfidence(confidence); err != nil {
		return MWUResult{}, err
	}
	if err := checkCountsPair(x, y); err != nil {
		return MWUResult{}, err
	}
	return mannWhitneyCounts(x, y, alt, confidence)
}

func mannWhitneyCounts(x, y *Counts, alt Alternative, confidence float64) (MWUResult, error) {
	buf := samplePool.Get().(*pairBuf)
	defer samplePool.Put(buf)
	r := rankPair(x, y, buf)
	return mannWhitneyRanked(r.x, r.y, r.u2, r.ties, r.distinct, r.xTies+r.yTies, alt, confidence, false)
}

// MannWhitneyTest is the Mann–Whitney U test alone on two exported
// histograms: U, z, p and the effect sizes, exactly as MannWhitneyCounts
// computes them, without the Hodges–Lehmann search (HodgesLehmann, CI and
// Confidence are left zero). It is one walk over the non-empty buckets and
// allocates nothing; a verdict that needs only the test (Monitor.Evaluate)
// uses it.
func MannWhitneyTest(x, y *Counts, alt Alternative) (MWUResult, error) {
	if err := checkCountsPair(x, y); err != nil {
		return MWUResult{}, err
	}
	u2, ties, distinct := countsRankStats(x, y)
	return mwuTest(x.n, y.n, u2, ties, distinct, alt), nil
}

func checkCountsPair(x, y *Counts) error {
	if x == nil || y == nil {
		return fmt.Errorf("%w: histogram counts are nil", ErrInput)
	}
	if err := sameCountsGeometry(x, y); err != nil {
		return err
	}
	return checkNonEmpty(x, y)
}

// countsRankStats is rankStats over two exported histograms, straight from
// their counts: index order is value order and equal indices are ties.
func countsRankStats(x, y *Counts) (u2 int64, ties float64, distinct int) {
	lo, hi := min(x.lo, y.lo), max(x.hi, y.hi)
	hi = min(hi, len(x.counts)-1, len(y.counts)-1) // equal geometry: equal lengths
	if hi < lo {
		return 0, 0, 0
	}
	xs := x.counts[lo : hi+1]
	ys := y.counts[lo : hi+1]
	ys = ys[:len(xs)]
	var below int64
	for i, a := range xs {
		b := ys[i]
		if a|b == 0 {
			continue
		}
		u2 += a * (2*below + b)
		below += b
		if t := a + b; t > 1 {
			f := float64(t)
			ties += f*f*f - f
		}
		distinct++
	}
	return u2, ties, distinct
}

func rawSamples(x, y []float64) (sample, sample, error) {
	sx, err := newSample("canary", x)
	if err != nil {
		return sample{}, sample{}, err
	}
	sy, err := newSample("baseline", y)
	if err != nil {
		return sample{}, sample{}, err
	}
	return sx, sy, nil
}

func checkConfidence(c float64) error {
	if !(c > 0 && c < 1) {
		return fmt.Errorf("%w: confidence %v must be in (0, 1)", ErrInput, c)
	}
	return nil
}

// rankStats walks both samples in value order. It returns 2·U_x (an integer,
// exact up to about 10⁹ observations a side), the tie term Σ(t³ − t) over the
// pooled sample, and the number of distinct pooled values.
func rankStats(x, y sample) (u2 int64, ties float64, distinct int) {
	var below int64 // baseline observations smaller than the current value
	i, j := 0, 0
	group := func(a, b int64) {
		u2 += a * (2*below + b)
		below += b
		if t := a + b; t > 1 {
			f := float64(t)
			ties += f*f*f - f
		}
		distinct++
	}
	for i < len(x.v) || j < len(y.v) {
		switch {
		case j == len(y.v) || (i < len(x.v) && x.v[i] < y.v[j]):
			group(x.w[i], 0)
			i++
		case i == len(x.v) || y.v[j] < x.v[i]:
			group(0, y.w[j])
			j++
		default:
			group(x.w[i], y.w[j])
			i++
			j++
		}
	}
	return u2, ties, distinct
}

func mannWhitney(x, y sample, alt Alternative, confidence float64, exact bool) (MWUResult, error) {
	u2, ties, distinct := rankStats(x, y)
	return mannWhitneyRanked(x, y, u2, ties, distinct, x.selfTies()+y.selfTies(), alt, confidence, exact)
}

// mwuTest is the asymptotic test and effect sizes from the rank statistics.
func mwuTest(m, n, u2 int64, ties float64, distinct int, alt Alternative) MWUResult {
	mn := float64(m) * float64(n)
	ux := float64(u2) / 2
	r := MWUResult{
		NCanary:      m,
		NBaseline:    n,
		U:            ux,
		Method:       "asymptotic",
		CLES:         ux / mn,
		RankBiserial: (ux - (mn - ux)) / mn,
	}
	allTied := distinct == 1
	r.Z, r.PValue = mwuNormal(ux, m, n, ties, alt, allTied)
	if allTied {
		r.Note = "every observation has the same value: no evidence either way"
	}
	return r
}

// mannWhitneyRanked finishes the test from rank statistics already walked;
// selfTies is x.selfTies() + y.selfTies().
func mannWhitneyRanked(x, y sample, u2 int64, ties float64, distinct int, selfTies float64, alt Alternative, confidence float64, exact bool) (MWUResult, error) {
	m, n := x.n, y.n
	r := mwuTest(m, n, u2, ties, distinct, alt)
	r.Confidence = confidence
	mn := float64(m) * float64(n)
	ux := r.U
	if exact {
		if int64(distinct) != m+n {
			return MWUResult{}, fmt.Errorf("%w: exact Mann–Whitney needs samples without ties; use the asymptotic test", ErrInput)
		}
		if mn > MaxExactPairs {
			return MWUResult{}, fmt.Errorf("%w: exact Mann–Whitney limited to m·n ≤ %d pairs, got %d·%d; use the asymptotic test", ErrInput, MaxExactPairs, m, n)
		}
		r.Method = "exact"
		r.PValue = mwuExactP(int64(ux), m, n, alt)
	}
	hl, err := hodgesLehmannTies(x, y, confidence, int64(distinct) == m+n, selfTies)
	if err != nil {
		return MWUResult{}, err
	}
	r.HodgesLehmann, r.CI = hl.est, hl.ci
	return r, nil
}

// mwuNormal follows scipy 1.10's _get_mwu_z: the continuity correction always
// subtracts 0.5 from the U of the tested direction.
func mwuNormal(ux float64, m, n int64, ties float64, alt Alternative, allTied bool) (z, p float64) {
	mn := float64(m) * float64(n)
	N := float64(m + n)
	u, f := ux, 1.0
	switch alt {
	case Less:
		u = mn - ux
	case TwoSided:
		u, f = math.Max(ux, mn-ux), 2
	}
	if allTied {
		// σ = 0: scipy 1.10 clips the resulting p to 1.
		return 0, 1
	}
	sigma := math.Sqrt(mn / 12 * ((N + 1) - ties/(N*(N-1))))
	z = (u - mn/2 - 0.5) / sigma
	return z, math.Min(1, f*normalSF(z))
}

// normalSF is Φ̄(z), accurate in the far tail (1 − Φ is not).
func normalSF(z float64) float64 { return 0.5 * math.Erfc(z/math.Sqrt2) }

// mwuExactP is scipy's exact p: P(U ≥ U_x) for greater, P(U ≥ U_y) for less,
// and twice the upper tail of max(U_x, U_y) for two-sided.
func mwuExactP(ux, m, n int64, alt Alternative) float64 {
	pmf := mwuNullPMF(m, n)
	mn := m * n
	upper := func(u int64) float64 { // P(U ≥ u), summed from the small end
		var s float64
		for k := mn; k >= u && k >= 0; k-- {
			s += pmf[k]
		}
		return s
	}
	switch alt {
	case Greater:
		return math.Min(1, upper(ux))
	case Less:
		return math.Min(1, upper(mn-ux))
	}
	return math.Min(1, 2*upper(max(ux, mn-ux)))
}

// mwuNullPMF is the null distribution of U for sizes m and n, by the
// Mann–Whitney recursion kept in probabilities (it never overflows):
// P_{i,j}(u) = i/(i+j)·P_{i−1,j}(u−j) + j/(i+j)·P_{i,j−1}(u).
// Row i holds P_{i,0..n} back to back in one buffer; two buffers alternate.
func mwuNullPMF(m, n int64) []float64 {
	// off is where P_{i,j} (length i·j+1) starts within row i.
	off := func(i, j int64) int64 { return i*(j-1)*j/2 + j }
	size := off(m, n+1)
	prev, cur := make([]float64, size), make([]float64, size)
	for j := int64(0); j <= n; j++ {
		prev[off(0, j)] = 1 // P_{0,j}(0) = 1
	}
	for i := int64(1); i <= m; i++ {
		clear(cur[:off(i, n+1)])
		cur[0] = 1 // P_{i,0}(0) = 1
		for j := int64(1); j <= n; j++ {
			d := cur[off(i, j) : off(i, j)+i*j+1]
			up := prev[off(i-1, j) : off(i-1, j)+(i-1)*j+1]
			left := cur[off(i, j-1) : off(i, j-1)+i*(j-1)+1]
			a := float64(i) / float64(i+j)
			b := float64(j) / float64(i+j)
			for u, p := range up {
				d[u+int(j)] += a * p
			}
			for u, p := range left {
				d[u] += b * p
			}
		}
		prev, cur = cur, prev
	}
	return prev[off(m, n) : off(m, n)+m*n+1]
}

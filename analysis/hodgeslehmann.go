package analysis

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// exactCIMaxSize follows R's wilcox.test: the exact interval is used when
// both samples have fewer than 50 observations and no value ties.
const exactCIMaxSize = 50

// HodgesLehmann estimates the shift of canary x over baseline y as the median
// of all m·n differences x_i − y_j (numpy's median: the mean of the two middle
// differences when m·n is even), with a confidence interval of order
// statistics of those differences, [D_(k), D_(mn+1−k)]:
//   - without ties and both samples under 50, k is R's exact
//     qwilcox((1−confidence)/2, m, n) (raised to 1 if it is 0), as
//     wilcox.test(conf.int=TRUE);
//   - otherwise the ends are the differences where R's tie- and
//     continuity-corrected normal z of (x − d) against y crosses ±z_{1−α/2}:
//     k = ⌊mn/2 ∓ (0.5 + z·σ)⌋ + 1, with σ the standard deviation of U under
//     the ties within each sample.
//
// Nothing enumerates the m·n differences: order statistics are found by a
// search over d with O(m + n) counting passes.
func HodgesLehmann(x, y []float64, confidence float64) (est float64, ci [2]float64, err error) {
	if err := checkConfidence(confidence); err != nil {
		return 0, ci, err
	}
	sx, sy, err := rawSamples(x, y)
	if err != nil {
		return 0, ci, err
	}
	_, _, distinct := rankStats(sx, sy)
	r, err := hodgesLehmann(sx, sy, confidence, int64(distinct) == sx.n+sy.n)
	return r.est, r.ci, err
}

type hlResult struct {
	est    float64
	ci     [2]float64
	passes int // counting passes over the samples, for tests
}

func hodgesLehmann(x, y sample, confidence float64, noTies bool) (hlResult, error) {
	return hodgesLehmannTies(x, y, confidence, noTies, x.selfTies()+y.selfTies())
}

// hodgesLehmannTies takes selfTies = x.selfTies() + y.selfTies() from a walk
// the caller has already made.
func hodgesLehmannTies(x, y sample, confidence float64, noTies bool, selfTies float64) (hlResult, error) {
	mn := x.n * y.n
	if lo, hi := x.v[0]-y.v[len(y.v)-1], x.v[len(x.v)-1]-y.v[0]; math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		return hlResult{}, fmt.Errorf("%w: canary − baseline differences overflow float64 (range [%v, %v])", ErrInput, lo, hi)
	}
	d := newDiffs(x, y)
	var r hlResult
	k := (mn + 1) / 2
	lo, cnt := d.kth(k)
	r.est = lo
	if mn%2 == 0 {
		hi := lo
		if cnt < k+1 {
			hi, _ = d.kth(k + 1)
		}
		// (lo + hi)/2 rounds as numpy's median does.
		if r.est = (lo + hi) / 2; math.IsInf(r.est, 0) {
			r.est = lo + (hi-lo)/2
		}
	}

	alpha := 1 - confidence
	var kLo, kHi int64
	if noTies && x.n < exactCIMaxSize && y.n < exactCIMaxSize {
		kLo = qwilcox(alpha/2, x.n, y.n)
		if kLo == 0 {
			kLo = 1
		}
		kHi = mn + 1 - kLo
	} else {
		fm, fN := float64(mn), float64(x.n+y.n)
		ties := selfTies
		sigma := math.Sqrt(math.Max(0, fm/12*((fN+1)-ties/(fN*(fN-1)))))
		z := distuv.UnitNormal.Quantile(1 - alpha/2)
		kLo = int64(math.Floor(fm/2-0.5-z*sigma)) + 1
		kHi = int64(math.Floor(fm/2+0.5+z*sigma)) + 1
	}
	kLo = min(max(kLo, 1), mn)
	kHi = min(max(kHi, 1), mn)
	r.ci[0], _ = d.kth(kLo)
	r.ci[1], _ = d.kth(kHi)
	r.passes = len(d.probes)
	return r, nil
}

// qwilcox is R's qwilcox(p, m, n) for p ≤ 0.5: the smallest q with
// P(U ≤ q) ≥ p, with R's fuzz of 10 ε against rounding.
func qwilcox(p float64, m, n int64) int64 {
	pmf := mwuNullPMF(m, n)
	target := p - 10*2.220446049250313e-16
	var c float64
	for q, pr := range pmf {
		c += pr
		if c >= target {
			return int64(q)
		}
	}
	return m * n
}

// diffs is the implicit sorted multiset of pairwise differences x_i − y_j.
// It remembers every counting pass, so that later order statistics (the CI
// ends lie near the median) start from a tight bracket, and are often read
// off a pass already made.
type diffs struct {
	x, y   sample
	probes []probe
	dens   float64 // cached slope
	// exact: every value is an integer below 2⁵², so every difference is
	// exact and distinct y give distinct x − y (always so for histograms).
	exact bool
}

// probe is one counting pass at d: c differences are ≤ d; le is the largest
// of them and wle how many pairs equal it; gt is the smallest difference
// above d and wgt how many pairs equal it. So the pass knows the count at
// three points: c(le⁻) = c − wle, c(le) = c(d) = c, c(gt) = c + wgt, and
// it settles every order statistic whose rank lies in (c − wle, c + wgt].
type probe struct {
	d, le, gt float64
	c         int64
	wle, wgt  int64
}

func newDiffs(x, y sample) *diffs {
	exact := (x.integer || integral(x.v)) && (y.integer || integral(y.v))
	return &diffs{x: x, y: y, exact: exact}
}

// integral reports whether sorted values are integers of magnitude below 2⁵².
func integral(v []float64) bool {
	const limit = 1 << 52
	if len(v) == 0 || v[0] <= -limit || v[len(v)-1] >= limit {
		return false
	}
	for _, f := range v {
		if f != math.Trunc(f) {
			return false
		}
	}
	return true
}

// count returns the number of pairs with x − y ≤ d, the largest difference
// ≤ d and the smallest difference > d (±Inf when there is none). Because
// x − y is monotone in each argument even after rounding, a single two-pointer
// pass over both samples suffices; for each x only the y at the pointer can
// give the largest difference ≤ d, and the one before it the smallest above
// (or, when rounding makes neighbours equal, a run of them).
func (s *diffs) count(d float64) (cnt int64, le, gt float64) {
	p := s.pass(d)
	return p.c, p.le, p.gt
}

func (s *diffs) pass(d float64) probe {
	if s.exact && math.Abs(d) < 1<<52 {
		return s.passExact(d)
	}
	le, gt := math.Inf(-1), math.Inf(1)
	var wle, wgt, cnt int64
	xv, xw, yv, yw := s.x.v, s.x.w, s.y.v, s.y.w
	ny := len(yv)
	j, suffix := 0, s.y.n // suffix: observations in y[j:]
	for i, x := range xv {
		for j < ny && x-yv[j] > d {
			suffix -= yw[j]
			j++
		}
		a := xw[i]
		cnt += a * suffix
		if j < ny {
			if v := x - yv[j]; v >= le {
				w := yw[j]
				for t := j + 1; t < ny && x-yv[t] == v; t++ {
					w += yw[t]
				}
				if v > le {
					le, wle = v, 0
				}
				wle += a * w
			}
		}
		if j > 0 {
			if v := x - yv[j-1]; v <= gt {
				w := yw[j-1]
				for t := j - 2; t >= 0 && x-yv[t] == v; t-- {
					w += yw[t]
				}
				if v < gt {
					gt, wgt = v, 0
				}
				wgt += a * w
			}
		}
	}
	p := probe{d: d, le: le, gt: gt, c: cnt, wle: wle, wgt: wgt}
	s.probes = append(s.probes, p)
	return p
}

// passExact is pass when differences are exact: a row's largest difference
// ≤ d comes from the y at the pointer alone and its smallest above d from the
// y before it.
func (s *diffs) passExact(d float64) probe {
	le, gt := math.Inf(-1), math.Inf(1)
	var wle, wgt, cnt int64
	xv, yv := s.x.v, s.y.v
	xw, yw := s.x.w[:len(xv)], s.y.w[:len(yv)]
	ny := len(yv)
	// Differences are integers, so counting at ⌊d⌋ is counting at d, and
	// x − ⌊d⌋ is exact: y < x − ⌊d⌋ is x − y > d without a subtraction per step.
	fd := math.Floor(d)
	j, suffix := 0, s.y.n
	for i, x := range xv {
		for t := x - fd; j < ny && yv[j] < t; j++ {
			suffix -= yw[j]
		}
		a := xw[i]
		cnt += a * suffix
		if j < ny {
			if v := x - yv[j]; v > le {
				le, wle = v, a*yw[j]
			} else if v == le {
				wle += a * yw[j]
			}
		}
		if j > 0 {
			if v := x - yv[j-1]; v < gt {
				gt, wgt = v, a*yw[j-1]
			} else if v == gt {
				wgt += a * yw[j-1]
			}
		}
	}
	p := probe{d: d, le: le, gt: gt, c: cnt, wle: wle, wgt: wgt}
	s.probes = append(s.probes, p)
	return p
}

// settled reports whether a pass already pins D_(k), and returns it with
// the number of differences ≤ it.
func (p probe) settled(k int64) (float64, int64, bool) {
	switch {
	case p.c-p.wle < k && k <= p.c && p.wle > 0:
		return p.le, p.c, true
	case p.c < k && k <= p.c+p.wgt:
		return p.gt, p.c + p.wgt, true
	}
	return 0, 0, false
}

// kth returns D_(k), the k-th smallest difference (1-based), and the number of
// differences ≤ D_(k). The bracket [lo, hi] always holds D_(k) and both ends
// are actual differences, so every pass shrinks it and the answer is exact.
// A pass also settles D_(k) outright when k falls among the pairs tied at
// the differences next to its pivot (probe.settled), which on histogram data
// (ties everywhere) ends most searches one pass after the pivot comes within
// one distinct difference of the answer. Pivots come from regula falsi on
// the counts with the Illinois correction (few passes, as the counts grow
// smoothly with d), with a bisection every fourth pass to bound the worst case.
func (s *diffs) kth(k int64) (float64, int64) {
	lo := s.x.v[0] - s.y.v[len(s.y.v)-1]
	hi := s.x.v[len(s.x.v)-1] - s.y.v[0]
	cLo, cHi := int64(0), s.x.n*s.y.n // differences below lo, differences ≤ hi
	for _, p := range s.probes {
		if v, c, ok := p.settled(k); ok {
			return v, c
		}
		if p.c >= k && p.le < hi {
			hi, cHi = p.le, p.c
		} else if p.c < k && p.gt > lo {
			lo, cLo = p.gt, p.c
		}
	}
	target := float64(k) - 0.5
	mn := s.x.n * s.y.n
	wLo, wHi, side := 1.0, 1.0, 0
	for step := 1; lo < hi; step++ {
		var d float64
		bracketed := cLo > 0 && cHi < mn
		snap := true
		switch {
		case step%4 == 0 && bracketed:
			d = lo + (hi-lo)/2
			snap = false
		case cLo == 0 && cHi == mn:
			// Nothing known yet: start at the difference of the medians.
			d = s.x.quantile(0.5) - s.y.quantile(0.5)
		case cLo == 0 || cHi == mn:
			// One end is still the extreme difference, where regula falsi
			// would crawl: take a Newton step from the known end with the
			// slope of a normal model of x − y.
			if cLo == 0 {
				d = hi - (float64(cHi)-target)/s.slope()
			} else {
				d = lo + (target-float64(cLo))/s.slope()
			}
		default:
			fLo := (float64(cLo) - target) * wLo
			fHi := (float64(cHi) - target) * wHi
			d = lo + (hi-lo)*(-fLo/(fHi-fLo))
		}
		if snap && s.x.grain > 0 && d >= lo && d < hi {
			// Histogram differences pile up on multiples of the bucket width
			// (pairs from one band of equal-width buckets), and on multiples
			// of its halves (pairs across neighbouring bands), with little
			// mass in between: a pivot on the coarsest such multiple inside
			// the bracket settles the search at once when the answer is that
			// multiple, as it usually is.
			for g := s.x.grain; g >= s.x.grain/64; g /= 2 {
				if ds := g * math.Round(d/g); ds >= lo && ds < hi {
					d = ds
					break
				}
			}
		}
		if !(d >= lo && d < hi) {
			d = lo + (hi-lo)/2
		}
		if !(d >= lo && d < hi) {
			d = lo
		}
		p := s.pass(d)
		if v, c, ok := p.settled(k); ok {
			return v, c
		}
		if p.c >= k {
			hi, cHi = p.le, p.c
			if side == 1 {
				wLo /= 2
			}
			side, wHi = 1, 1
		} else {
			lo, cLo = p.gt, p.c
			if side == -1 {
				wHi /= 2
			}
			side, wLo = -1, 1
		}
	}
	return hi, cHi
}

// slope estimates d(count)/dd near the centre of the differences: m·n times
// the density at the mean of a normal with x − y's spread, from the
// interquartile ranges.
func (s *diffs) slope() float64 {
	if s.dens == 0 {
		iqr := func(v sample) float64 { return v.quantile(0.75) - v.quantile(0.25) }
		sd := math.Hypot(iqr(s.x), iqr(s.y)) / 1.349
		if !(sd > 0) {
			sd = 1
		}
		s.dens = float64(s.x.n) * float64(s.y.n) / (sd * math.Sqrt(2*math.Pi))
	}
	return s.dens
}

// quantile is the smallest value with at least q of the observations at or
// below it.
func (s sample) quantile(q float64) float64 {
	need := int64(math.Ceil(q * float64(s.n)))
	var c int64
	for i, w := range s.w {
		if c += w; c >= need {
			return s.v[i]
		}
	}
	return s.v[len(s.v)-1]
}

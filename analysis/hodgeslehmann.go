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
			_, _, hi = d.count(lo)
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
		ties := x.selfTies() + y.selfTies()
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
// ends lie near the median) start from a tight bracket.
type diffs struct {
	x, y   sample
	probes []probe
	dens   float64 // cached slope
}

// probe is one counting pass at d: c differences are ≤ d, le is the largest
// of them and gt the smallest difference above d.
type probe struct {
	d, le, gt float64
	c         int64
}

func newDiffs(x, y sample) *diffs { return &diffs{x: x, y: y} }

// count returns the number of pairs with x − y ≤ d, the largest difference
// ≤ d and the smallest difference > d (±Inf when there is none). Because
// x − y is monotone in each argument even after rounding, a single two-pointer
// pass over both samples suffices.
func (s *diffs) count(d float64) (cnt int64, le, gt float64) {
	le, gt = math.Inf(-1), math.Inf(1)
	xv, xw, yv, yw := s.x.v, s.x.w, s.y.v, s.y.w
	j, suffix := 0, s.y.n // suffix: observations in y[j:]
	for i, x := range xv {
		for j < len(yv) && x-yv[j] > d {
			suffix -= yw[j]
			j++
		}
		cnt += xw[i] * suffix
		if j < len(yv) {
			if v := x - yv[j]; v > le {
				le = v
			}
		}
		if j > 0 {
			if v := x - yv[j-1]; v < gt {
				gt = v
			}
		}
	}
	s.probes = append(s.probes, probe{d: d, le: le, gt: gt, c: cnt})
	return cnt, le, gt
}

// kth returns D_(k), the k-th smallest difference (1-based), and the number of
// differences ≤ D_(k). The bracket [lo, hi] always holds D_(k) and both ends
// are actual differences, so every pass shrinks it and the answer is exact.
// Pivots come from regula falsi on the counts with the Illinois correction
// (few passes, as the counts grow smoothly with d), with a bisection every
// fourth pass to bound the worst case.
func (s *diffs) kth(k int64) (float64, int64) {
	lo := s.x.v[0] - s.y.v[len(s.y.v)-1]
	hi := s.x.v[len(s.x.v)-1] - s.y.v[0]
	cLo, cHi := int64(0), s.x.n*s.y.n // differences below lo, differences ≤ hi
	for _, p := range s.probes {
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
		switch {
		case step%4 == 0:
			d = lo + (hi-lo)/2
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
		if !(d >= lo && d < hi) {
			d = lo + (hi-lo)/2
		}
		if !(d >= lo && d < hi) {
			d = lo
		}
		if s.step(d, k, &lo, &hi, &cLo, &cHi) {
			if side == 1 {
				wLo /= 2
			}
			side, wHi = 1, 1
		} else {
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

// step counts at d and narrows the bracket; it reports whether hi moved.
func (s *diffs) step(d float64, k int64, lo, hi *float64, cLo, cHi *int64) bool {
	c, le, gt := s.count(d)
	if c >= k {
		*hi, *cHi = le, c
		return true
	}
	*lo, *cLo = gt, c
	return false
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

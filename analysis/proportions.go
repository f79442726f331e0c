package analysis

import (
	"encoding/json"
	"fmt"
	"math"
)

// TestResult is a test's statistic and p-value.
//
// JSON cannot carry NaN or ±Inf, so a non-finite statistic (Fisher's odds
// ratio) is written without "statistic" and with "odds_ratio": "inf" or
// "nan" instead.
type TestResult struct {
	Test      string  `json:"test"`
	Statistic float64 `json:"statistic"`
	PValue    float64 `json:"p_value"`
}

// MarshalJSON keeps non-finite statistics representable (see TestResult).
func (r TestResult) MarshalJSON() ([]byte, error) {
	if math.IsNaN(r.Statistic) || math.IsInf(r.Statistic, 0) {
		s := "nan"
		switch {
		case math.IsInf(r.Statistic, 1):
			s = "inf"
		case math.IsInf(r.Statistic, -1):
			s = "-inf"
		}
		return json.Marshal(struct {
			Test      string  `json:"test"`
			OddsRatio string  `json:"odds_ratio"`
			PValue    float64 `json:"p_value"`
		}{r.Test, s, r.PValue})
	}
	type plain TestResult
	return json.Marshal(plain(r))
}

func checkCounts(kx, nx, ky, ny int64) error {
	for _, c := range []struct {
		side string
		k, n int64
	}{{"canary", kx, nx}, {"baseline", ky, ny}} {
		switch {
		case c.n <= 0:
			return fmt.Errorf("%w: %s total %d must be positive", ErrInput, c.side, c.n)
		case c.k < 0:
			return fmt.Errorf("%w: %s errors %d must not be negative", ErrInput, c.side, c.k)
		case c.k > c.n:
			return fmt.Errorf("%w: %s errors %d exceed its total %d", ErrInput, c.side, c.k, c.n)
		}
	}
	return nil
}

// TwoProportionZ is the pooled two-proportion z-test of the canary's error
// rate kx/nx against the baseline's ky/ny, as statsmodels
// proportions_ztest([kx, ky], [nx, ny]): no continuity correction. Greater
// ("larger") means the canary's rate is higher. When the pooled rate is 0 or
// 1 the statistic is undefined (statsmodels returns NaN) and TwoProportionZ
// returns an ErrInput error.
func TwoProportionZ(kx, nx, ky, ny int64, alt Alternative) (TestResult, error) {
	if err := checkCounts(kx, nx, ky, ny); err != nil {
		return TestResult{}, err
	}
	if kx+ky == 0 || kx+ky == nx+ny {
		return TestResult{}, fmt.Errorf("%w: pooled proportion is %d/%d: with no variation the z statistic is undefined", ErrInput, kx+ky, nx+ny)
	}
	fnx, fny := float64(nx), float64(ny)
	diff := float64(kx)/fnx - float64(ky)/fny
	pooled := float64(kx+ky) / (fnx + fny)
	se := math.Sqrt(pooled * (1 - pooled) * (1/fnx + 1/fny))
	z := diff / se
	var p float64
	switch alt {
	case Greater:
		p = normalSF(z)
	case Less:
		p = normalSF(-z)
	default:
		p = 2 * normalSF(math.Abs(z))
	}
	return TestResult{Test: "two-proportion-z", Statistic: z, PValue: p}, nil
}

// Fisher is Fisher's exact test on the table [[kx, nx−kx], [ky, ny−ky]]
// (canary errors and successes, then the baseline's), as scipy fisher_exact.
// The statistic is the sample odds ratio: +Inf when a successes or baseline
// errors cell is zero, NaN (with p = 1) when the table has an empty row or
// column. Greater means the canary's error odds are higher. The two-sided p
// sums every table no more likely than the observed one, with scipy's
// relative tolerance of 1e-14.
func Fisher(kx, nx, ky, ny int64, alt Alternative) (TestResult, error) {
	if err := checkCounts(kx, nx, ky, ny); err != nil {
		return TestResult{}, err
	}
	res := TestResult{Test: "fisher-exact"}
	a, b, c, d := kx, nx-kx, ky, ny-ky
	if a+c == 0 || b+d == 0 { // rows are positive by checkCounts
		res.Statistic, res.PValue = math.NaN(), 1
		return res, nil
	}
	if c > 0 && b > 0 {
		res.Statistic = float64(a) * float64(d) / (float64(c) * float64(b))
	} else {
		res.Statistic = math.Inf(1)
	}
	h := hypergeom{pop: a + b + c + d, succ: a + b, draws: a + c}
	switch alt {
	case Less:
		res.PValue = h.cdf(a)
	case Greater:
		res.PValue = h.sf(a)
	default:
		res.PValue = h.twoSided(a)
	}
	res.PValue = math.Min(res.PValue, 1)
	return res, nil
}

// hypergeom is the distribution of successes in draws taken without
// replacement from pop items of which succ are successes.
type hypergeom struct{ pop, succ, draws int64 }

func (h hypergeom) support() (lo, hi int64) {
	return max(0, h.draws-(h.pop-h.succ)), min(h.draws, h.succ)
}

// logPMF uses Loader's saddle-point form (R's dhyper via dbinom_raw): each
// factor is a binomial density in terms of stirlerr and bd0, so no two large
// log-gamma values are subtracted. Plain log-gamma differences lose about
// log10(N) digits, too many for 10⁹-request tables.
func (h hypergeom) logPMF(x int64) float64 {
	n, N := float64(h.draws), float64(h.pop)
	p, q := n/N, (N-n)/N
	return logBinomRaw(float64(x), float64(h.succ), p, q) +
		logBinomRaw(float64(h.draws-x), float64(h.pop-h.succ), p, q) -
		logBinomRaw(n, N, p, q)
}

// logBinomRaw is log C(n,x) pᶜ qⁿ⁻ˣ (R's dbinom_raw, log scale).
func logBinomRaw(x, n, p, q float64) float64 {
	switch {
	case p == 0:
		if x == 0 {
			return 0
		}
		return math.Inf(-1)
	case q == 0:
		if x == n {
			return 0
		}
		return math.Inf(-1)
	case x == 0:
		if n == 0 {
			return 0
		}
		if p < 0.1 {
			return -bd0(n, n*q) - n*p
		}
		return n * math.Log(q)
	case x == n:
		if q < 0.1 {
			return -bd0(n, n*p) - n*q
		}
		return n * math.Log(p)
	case x < 0 || x > n:
		return math.Inf(-1)
	}
	lc := stirlerr(n) - stirlerr(x) - stirlerr(n-x) - bd0(x, n*p) - bd0(n-x, n*q)
	lf := math.Log(2*math.Pi) + math.Log(x) + math.Log1p(-x/n)
	return lc - 0.5*lf
}

// stirlerr is log(n!) − log(√(2π n)(n/e)ⁿ), the error of Stirling's formula.
func stirlerr(n float64) float64 {
	const (
		s0 = 1.0 / 12
		s1 = 1.0 / 360
		s2 = 1.0 / 1260
		s3 = 1.0 / 1680
		s4 = 1.0 / 1188
	)
	if n <= 15 {
		if n == 0 {
			return 0
		}
		lg, _ := math.Lgamma(n + 1)
		return lg - (n+0.5)*math.Log(n) + n - 0.5*math.Log(2*math.Pi)
	}
	nn := n * n
	switch {
	case n > 500:
		return (s0 - s1/n) / n
	case n > 80:
		return (s0 - (s1-s2/nn)/nn) / n
	case n > 35:
		return (s0 - (s1-(s2-s3/nn)/nn)/nn) / n
	}
	return (s0 - (s1-(s2-(s3-s4/nn)/nn)/nn)/nn) / n
}

// bd0 is x·log(x/np) + np − x, summed as a series when x ≈ np, where the
// closed form cancels.
func bd0(x, np float64) float64 {
	if math.Abs(x-np) < 0.1*(x+np) {
		v := (x - np) / (x + np)
		s := (x - np) * v
		if math.Abs(s) < math.SmallestNonzeroFloat64 {
			return s
		}
		ej := 2 * x * v
		v *= v
		for j := 1; j < 1000; j++ {
			ej *= v
			s1 := s + ej/float64(2*j+1)
			if s1 == s {
				return s1
			}
			s = s1
		}
	}
	return x*math.Log(x/np) + np - x
}

func (h hypergeom) pmf(x int64) float64 {
	if lo, hi := h.support(); x < lo || x > hi {
		return 0
	}
	return math.Exp(h.logPMF(x))
}

// mode is scipy's ⌊(draws+1)(succ+1)/(pop+2)⌋.
func (h hypergeom) mode() int64 {
	return int64(math.Floor(float64(h.draws+1) * float64(h.succ+1) / float64(h.pop+2)))
}

// ratio is pmf(x+1)/pmf(x).
func (h hypergeom) ratio(x int64) float64 {
	return float64(h.succ-x) * float64(h.draws-x) /
		(float64(x+1) * float64(h.pop-h.succ-h.draws+x+1))
}

// tail sums pmf from x away from the mode (step −1 or +1), where terms
// shrink monotonically, stopping once they no longer change the sum.
func (h hypergeom) tail(x, step int64) float64 {
	lo, hi := h.support()
	if x < lo {
		if step < 0 {
			return 0
		}
		x = lo
	}
	if x > hi {
		if step > 0 {
			return 0
		}
		x = hi
	}
	term := h.pmf(x)
	sum := 0.0
	for {
		sum += term
		if term <= sum*1e-18 {
			return sum
		}
		if step > 0 {
			if x == hi {
				return sum
			}
			term *= h.ratio(x)
		} else {
			if x == lo {
				return sum
			}
			term /= h.ratio(x - 1)
		}
		x += step
	}
}

// cdf is P(X ≤ x); sf is P(X ≥ x). Each sums the short side directly and
// takes the long side as a complement.
func (h hypergeom) cdf(x int64) float64 {
	if x < h.mode() {
		return h.tail(x, -1)
	}
	return 1 - h.tail(x+1, +1)
}

func (h hypergeom) sf(x int64) float64 {
	if x > h.mode() {
		return h.tail(x, +1)
	}
	return 1 - h.tail(x-1, -1)
}

// twoSided follows scipy 1.10's fisher_exact: the observed tail plus the
// opposite tail of tables whose pmf is at most pmf(x)·(1 + 1e-14).
func (h hypergeom) twoSided(x int64) float64 {
	const eps = 1e-14
	mode := h.mode()
	pExact, pMode := h.pmf(x), h.pmf(mode)
	if math.Abs(pExact-pMode)/math.Max(pExact, pMode) <= eps {
		return 1
	}
	limit := pExact * (1 + eps)
	lo, hi := h.support()
	if x < mode {
		// First index above the mode whose pmf is within the limit.
		a, b := mode, hi+1 // pmf(a) > limit; answer in (a, b]
		for b-a > 1 {
			mid := a + (b-a)/2
			if h.pmf(mid) <= limit {
				b = mid
			} else {
				a = mid
			}
		}
		return h.tail(x, -1) + h.tail(b, +1)
	}
	a, b := lo-1, mode // pmf(b) > limit; answer in [a, b)
	for b-a > 1 {
		mid := a + (b-a)/2
		if h.pmf(mid) <= limit {
			a = mid
		} else {
			b = mid
		}
	}
	return h.tail(x, +1) + h.tail(a, -1)
}

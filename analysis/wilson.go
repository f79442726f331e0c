package analysis

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// WilsonInterval is the two-sided Wilson score interval for a binomial
// proportion k/n at the given confidence (for example 0.99). Unlike the Wald
// interval it stays inside [0, 1] and is honest for small n and k near 0 or n,
// which is what an in-path guard sees in its first requests.
func WilsonInterval(k, n int64, confidence float64) (lo, hi float64, err error) {
	switch {
	case n <= 0:
		return 0, 0, fmt.Errorf("%w: total %d must be positive", ErrInput, n)
	case k < 0 || k > n:
		return 0, 0, fmt.Errorf("%w: count %d must be between 0 and total %d", ErrInput, k, n)
	case !(confidence > 0 && confidence < 1):
		return 0, 0, fmt.Errorf("%w: confidence %v must be in (0, 1)", ErrInput, confidence)
	}
	z := distuv.UnitNormal.Quantile(1 - (1-confidence)/2)
	nf, p := float64(n), float64(k)/float64(n)
	z2n := z * z / nf
	centre := (p + z2n/2) / (1 + z2n)
	half := z / (1 + z2n) * math.Sqrt(p*(1-p)/nf+z2n/(4*nf))
	lo, hi = math.Max(0, centre-half), math.Min(1, centre+half)
	// At the edges the closed form can miss 0 or 1 by rounding.
	if k == 0 {
		lo = 0
	}
	if k == n {
		hi = 1
	}
	return lo, hi, nil
}

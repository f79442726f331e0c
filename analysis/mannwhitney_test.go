package analysis

import (
	"errors"
	"math"
	"testing"
)

// Tolerances from statistics.md section 5.
func closeStat(got, want float64) bool {
	if got == want {
		return true
	}
	return math.Abs(got-want) <= 1e-9*math.Max(math.Abs(want), 1e-300)
}

func closeP(got, want float64) bool {
	if got == want {
		return true
	}
	if math.Abs(want) < 1e-6 && math.Abs(got-want) <= 1e-12 {
		return true
	}
	return math.Abs(got-want) <= 1e-6*math.Abs(want)
}

// closeTo compares with an absolute tolerance, for the rounded textbook values.
func closeTo(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

var (
	shierMales   = []float64{19, 22, 16, 29, 24}
	shierFemales = []float64{20, 11, 17, 12}
	wilcoxX      = []float64{1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30}
	wilcoxY      = []float64{0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29}
)

func TestMannWhitneyClassic(t *testing.T) {
	// statistics.md section 5: Shier (2004) and R's ?wilcox.test data.
	cases := []struct {
		name        string
		x, y        []float64
		alt         Alternative
		exact       bool
		u, p        float64
		pTol        float64
		cles        float64
		hl          float64
		ciLo, ciHi  float64
		hlTol, ciTo float64
	}{
		{"shier asymptotic", shierMales, shierFemales, TwoSided, false, 17, 0.1113469, 5e-8, 0.85, 7, -1, 17, 0, 0},
		{"shier exact", shierMales, shierFemales, TwoSided, true, 17, 0.111111, 5e-7, 0.85, 7, -1, 17, 0, 0},
		{"shier greater asymptotic", shierMales, shierFemales, Greater, false, 17, 0.0556734, 5e-8, 0.85, 7, -1, 17, 0, 0},
		{"shier greater exact", shierMales, shierFemales, Greater, true, 17, 0.0555556, 5e-8, 0.85, 7, -1, 17, 0, 0},
		// R: estimate 0.5600562 and CI (−0.36998, 1.18297) are uniroot roots
		// with absolute tolerance 1e-4; the exact median is 0.56.
		{"wilcox data", wilcoxX, wilcoxY, TwoSided, false, 58, 0.1329195, 5e-8, 0.71605, 0.56, -0.36998, 1.18297, 1e-12, 2e-4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := MannWhitney
			if c.exact {
				f = MannWhitneyExact
			}
			r, err := f(c.x, c.y, c.alt)
			if err != nil {
				t.Fatal(err)
			}
			if r.U != c.u || !closeTo(r.PValue, c.p, c.pTol) || !closeTo(r.CLES, c.cles, 5e-6) {
				t.Errorf("U, p, CLES = %v, %v, %v; want %v, %v, %v", r.U, r.PValue, r.CLES, c.u, c.p, c.cles)
			}
			if !closeTo(r.HodgesLehmann, c.hl, c.hlTol) || !closeTo(r.CI[0], c.ciLo, c.ciTo) || !closeTo(r.CI[1], c.ciHi, c.ciTo) {
				t.Errorf("HL %v CI %v; want %v [%v, %v]", r.HodgesLehmann, r.CI, c.hl, c.ciLo, c.ciHi)
			}
			if !closeStat(r.RankBiserial, 2*r.CLES-1) {
				t.Errorf("rank-biserial %v, want 2·CLES−1 = %v", r.RankBiserial, 2*r.CLES-1)
			}
		})
	}
}

func TestMannWhitneyAllTied(t *testing.T) {
	r, err := MannWhitney([]float64{3, 3, 3}, []float64{3, 3}, TwoSided)
	if err != nil {
		t.Fatal(err)
	}
	if r.PValue != 1 || r.Z != 0 || r.U != 3 || r.Note == "" || r.HodgesLehmann != 0 || r.CI != [2]float64{0, 0} {
		t.Errorf("all tied: %+v; want U 3, z 0, p 1 with a note, HL 0, CI [0 0]", r)
	}
}

func TestMannWhitneyRejectsBadInput(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	cases := []struct {
		name string
		x, y []float64
	}{
		{"empty canary", nil, []float64{1}},
		{"empty baseline", []float64{1}, []float64{}},
		{"NaN", []float64{1, nan}, []float64{1}},
		{"Inf", []float64{1}, []float64{inf}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := MannWhitney(c.x, c.y, TwoSided); !errors.Is(err, ErrInput) {
				t.Errorf("MannWhitney: err = %v, want ErrInput", err)
			}
			if _, err := MannWhitneyExact(c.x, c.y, TwoSided); !errors.Is(err, ErrInput) {
				t.Errorf("MannWhitneyExact: err = %v, want ErrInput", err)
			}
			if _, _, err := HodgesLehmann(c.x, c.y, 0.95); !errors.Is(err, ErrInput) {
				t.Errorf("HodgesLehmann: err = %v, want ErrInput", err)
			}
		})
	}
	huge := []float64{math.MaxFloat64, -math.MaxFloat64}
	if _, err := MannWhitney(huge, huge, TwoSided); !errors.Is(err, ErrInput) {
		t.Errorf("differences overflowing float64: err = %v, want ErrInput", err)
	}
	if _, err := Welch(huge, huge, TwoSided); !errors.Is(err, ErrInput) {
		t.Errorf("Welch with overflowing moments: err = %v, want ErrInput", err)
	}
	if _, err := MannWhitneyExact([]float64{1, 2}, []float64{2, 3}, TwoSided); !errors.Is(err, ErrInput) {
		t.Errorf("exact with ties: err = %v, want ErrInput", err)
	}
	// 101·100 pairs, no ties: one past MaxExactPairs.
	big, halves := make([]float64, 101), make([]float64, 100)
	for i := range big {
		big[i] = float64(i)
	}
	for i := range halves {
		halves[i] = float64(i) + 0.5
	}
	if _, err := MannWhitneyExact(big, halves, TwoSided); !errors.Is(err, ErrInput) {
		t.Errorf("exact beyond %d pairs: err = %v, want ErrInput", MaxExactPairs, err)
	}
	for _, conf := range []float64{0, 1, math.NaN(), -0.5} {
		if _, _, err := HodgesLehmann([]float64{1}, []float64{2}, conf); !errors.Is(err, ErrInput) {
			t.Errorf("HodgesLehmann confidence %v: err = %v, want ErrInput", conf, err)
		}
	}
}

package analysis

import (
	"errors"
	"math"
	"testing"
)

func TestWelchClassic(t *testing.T) {
	// statistics.md section 5: x = Shier's females, y = males.
	r, err := Welch(shierFemales, shierMales, TwoSided)
	if err != nil {
		t.Fatal(err)
	}
	if !closeTo(r.T, -2.2831482557, 1e-10) || !closeTo(r.DF, 6.928837, 1e-6) || !closeTo(r.PValue, 0.0567509259, 1e-10) {
		t.Errorf("t %v df %v p %v; want -2.2831482557, 6.928837, 0.0567509259", r.T, r.DF, r.PValue)
	}
	if r.MeanCanary != 15 || r.MeanBaseline != 22 {
		t.Errorf("means %v, %v; want 15, 22", r.MeanCanary, r.MeanBaseline)
	}
	// The 95% CI of a two-sided test at p > 0.05 covers zero, barely.
	if !(r.CI[0] < 0 && r.CI[1] > 0 && r.CI[1] < 0.5) || !closeTo((r.CI[0]+r.CI[1])/2, -7, 1e-12) {
		t.Errorf("CI %v: want centred on -7 and just covering 0", r.CI)
	}
}

func TestWelchRejectsBadInput(t *testing.T) {
	cases := []struct {
		name string
		x, y []float64
	}{
		{"single canary value", []float64{1}, []float64{1, 2}},
		{"empty baseline", []float64{1, 2}, nil},
		{"both constant", []float64{2, 2}, []float64{3, 3, 3}},
		{"NaN", []float64{1, math.NaN()}, []float64{1, 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Welch(c.x, c.y, TwoSided); !errors.Is(err, ErrInput) {
				t.Errorf("err = %v, want ErrInput", err)
			}
		})
	}
}

package analysis

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
)

func TestTwoProportionZClassic(t *testing.T) {
	// statistics.md section 5: statsmodels proportions_ztest([5, 12], [83, 99]).
	for _, c := range []struct {
		alt  Alternative
		z, p float64
	}{
		{TwoSided, -1.4078304151, 0.1591812918},
		{Greater, -1.4078304151, 0.9204093541},
		{Less, -1.4078304151, 1 - 0.9204093541},
	} {
		t.Run(c.alt.String(), func(t *testing.T) {
			r, err := TwoProportionZ(5, 83, 12, 99, c.alt)
			if err != nil {
				t.Fatal(err)
			}
			if r.Test != "two-proportion-z" || !closeTo(r.Statistic, c.z, 1e-10) || !closeTo(r.PValue, c.p, 1e-10) {
				t.Errorf("got %+v, want z %v p %v", r, c.z, c.p)
			}
		})
	}
}

func TestFisherClassic(t *testing.T) {
	cases := []struct {
		name           string
		kx, nx, ky, ny int64
		alt            Alternative
		odds, p        float64
	}{
		// Fisher's tea tasting [[3,1],[1,3]]: p = 34/70 two-sided, 17/70 greater.
		{"tea two-sided", 3, 4, 1, 4, TwoSided, 9, 34.0 / 70},
		{"tea greater", 3, 4, 1, 4, Greater, 9, 17.0 / 70},
		{"tea less", 3, 4, 1, 4, Less, 9, 69.0 / 70},
		// scipy docstring [[8,2],[1,5]].
		{"scipy docstring", 8, 10, 1, 6, TwoSided, 20, 0.0349650350},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Fisher(c.kx, c.nx, c.ky, c.ny, c.alt)
			if err != nil {
				t.Fatal(err)
			}
			if r.Test != "fisher-exact" || r.Statistic != c.odds || !closeTo(r.PValue, c.p, 1e-10) {
				t.Errorf("got %+v, want odds %v p %v", r, c.odds, c.p)
			}
		})
	}
}

func TestFisherNonFiniteOddsJSON(t *testing.T) {
	cases := []struct {
		name           string
		kx, nx, ky, ny int64
		want           string
	}{
		// [[3,0],[0,2]]: b·c = 0.
		{"infinite", 3, 3, 0, 2, `{"test":"fisher-exact","odds_ratio":"inf","p_value":0.1}`},
		// No errors anywhere: an empty column.
		{"undefined", 0, 10, 0, 10, `{"test":"fisher-exact","odds_ratio":"nan","p_value":1}`},
		{"finite", 3, 4, 1, 4, `{"test":"fisher-exact","statistic":9,"p_value":0.48571428571428565}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Fisher(c.kx, c.nx, c.ky, c.ny, TwoSided)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var got, want any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal([]byte(c.want), &want)
			gm, wm := got.(map[string]any), want.(map[string]any)
			if len(gm) != len(wm) || gm["odds_ratio"] != wm["odds_ratio"] || gm["statistic"] != wm["statistic"] ||
				!closeTo(gm["p_value"].(float64), wm["p_value"].(float64), 1e-12) {
				t.Errorf("JSON %s, want %s", b, c.want)
			}
		})
	}
}

func TestFisherLargeCounts(t *testing.T) {
	// A production-sized table stays fast and finite: a million requests a
	// side. The p-value must agree with the z-test's order of magnitude.
	r, err := Fisher(1300, 1_000_000, 1000, 1_000_000, Greater)
	if err != nil {
		t.Fatal(err)
	}
	z, _ := TwoProportionZ(1300, 1_000_000, 1000, 1_000_000, Greater)
	if !(r.PValue > 0 && r.PValue < 1e-5) || math.Abs(math.Log10(r.PValue)-math.Log10(z.PValue)) > 0.5 {
		t.Errorf("Fisher p %v, z-test p %v: want both around 1e-9", r.PValue, z.PValue)
	}
}

func TestProportionsRejectBadInput(t *testing.T) {
	cases := []struct {
		name           string
		kx, nx, ky, ny int64
	}{
		{"zero canary total", 0, 0, 1, 10},
		{"zero baseline total", 1, 10, 0, 0},
		{"negative errors", -1, 10, 1, 10},
		{"errors above total", 11, 10, 1, 10},
		{"negative total", 0, -5, 1, 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := TwoProportionZ(c.kx, c.nx, c.ky, c.ny, TwoSided); !errors.Is(err, ErrInput) {
				t.Errorf("TwoProportionZ: err = %v, want ErrInput", err)
			}
			if _, err := Fisher(c.kx, c.nx, c.ky, c.ny, TwoSided); !errors.Is(err, ErrInput) {
				t.Errorf("Fisher: err = %v, want ErrInput", err)
			}
		})
	}
	for _, c := range [][4]int64{{0, 10, 0, 20}, {10, 10, 20, 20}} {
		if _, err := TwoProportionZ(c[0], c[1], c[2], c[3], TwoSided); !errors.Is(err, ErrInput) {
			t.Errorf("TwoProportionZ%v with pooled rate 0 or 1: err = %v, want ErrInput", c, err)
		}
	}
}

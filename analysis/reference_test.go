package analysis

import (
	"encoding/json"
	"math"
	"os"
	"strconv"
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// reference.json is written by testdata/gen_reference.py (make fixtures) with
// Debian's scipy and statsmodels; see statistics.md section 5.
type reference struct {
	Versions map[string]string `json:"versions"`
	MWU      []sampleCase      `json:"mwu"`
	Exact    []sampleCase      `json:"mwu_exact"`
	Hist     []sampleCase      `json:"mwu_hist"`
	ZTest    []countCase       `json:"ztest"`
	Fisher   []countCase       `json:"fisher"`
	Welch    []sampleCase      `json:"welch"`
}

type refResult struct {
	Statistic float64 `json:"statistic"`
	PValue    float64 `json:"p_value"`
}

type sampleCase struct {
	Name         string               `json:"name"`
	X            []float64            `json:"x"`
	Y            []float64            `json:"y"`
	Alternatives map[string]refResult `json:"alternatives"`
	HL           *float64             `json:"hodges_lehmann"`
	CI95         *[2]float64          `json:"ci95"`
	DF           float64              `json:"df"`
	WelchT       float64              `json:"welch_t"`
	WelchP       float64              `json:"welch_p"`
}

// jsonNumber reads a float that the generator may spell "inf" or "nan".
type jsonNumber float64

func (n *jsonNumber) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		f, err := strconv.ParseFloat(s, 64)
		*n = jsonNumber(f)
		return err
	}
	var f float64
	err := json.Unmarshal(b, &f)
	*n = jsonNumber(f)
	return err
}

type countCase struct {
	KX, NX, KY, NY int64
	Alternative    string     `json:"alternative"`
	Statistic      jsonNumber `json:"statistic"`
	PValue         float64    `json:"p_value"`
	Error          bool       `json:"error"`
}

func loadReference(t testing.TB) reference {
	t.Helper()
	b, err := os.ReadFile("testdata/reference.json")
	if err != nil {
		t.Fatalf("fixtures missing (run make fixtures): %v", err)
	}
	var r reference
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Versions["scipy"] == "" || len(r.MWU) == 0 || len(r.Hist) == 0 || len(r.ZTest) == 0 || len(r.Fisher) == 0 || len(r.Welch) == 0 {
		t.Fatalf("reference.json incomplete: versions %v", r.Versions)
	}
	return r
}

func mustAlt(t testing.TB, s string) Alternative {
	a, err := ParseAlternative(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func checkStatP(t *testing.T, what string, gotS, gotP, wantS, wantP float64) {
	t.Helper()
	if !closeStat(gotS, wantS) || !closeP(gotP, wantP) {
		t.Errorf("%s: statistic %v p %v; scipy %v p %v", what, gotS, gotP, wantS, wantP)
	}
}

func TestMannWhitneyMatchesScipy(t *testing.T) {
	ref := loadReference(t)
	for _, c := range ref.MWU {
		t.Run(c.Name, func(t *testing.T) {
			for alt, want := range c.Alternatives {
				r, err := MannWhitney(c.X, c.Y, mustAlt(t, alt))
				if err != nil {
					t.Fatal(err)
				}
				checkStatP(t, alt, r.U, r.PValue, want.Statistic, want.PValue)
				if r.Method != "asymptotic" {
					t.Errorf("method %q", r.Method)
				}
			}
			if c.HL == nil {
				return
			}
			est, ci, err := HodgesLehmann(c.X, c.Y, 0.95)
			if err != nil {
				t.Fatal(err)
			}
			if est != *c.HL {
				t.Errorf("Hodges–Lehmann %v, numpy median of differences %v", est, *c.HL)
			}
			if c.CI95 != nil && ci != *c.CI95 {
				t.Errorf("CI %v, brute-force order statistics %v", ci, *c.CI95)
			}
		})
	}
}

func TestMannWhitneyExactMatchesScipy(t *testing.T) {
	ref := loadReference(t)
	for _, c := range ref.Exact {
		t.Run(c.Name, func(t *testing.T) {
			for alt, want := range c.Alternatives {
				r, err := MannWhitneyExact(c.X, c.Y, mustAlt(t, alt))
				if err != nil {
					t.Fatal(err)
				}
				checkStatP(t, alt, r.U, r.PValue, want.Statistic, want.PValue)
			}
		})
	}
}

// latencyHistogram has NewLatencyHistogram's geometry (rollout package):
// 1 µs to 60 s, 3 significant figures.
func latencyHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

func histOf(t testing.TB, xs []float64) *hdrhistogram.Histogram {
	t.Helper()
	h := latencyHistogram()
	for _, v := range xs {
		if err := h.RecordValue(int64(v)); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// The generator quantizes values to bucket representatives; here the raw
// values go through real histograms.
func TestMannWhitneyHistMatchesScipy(t *testing.T) {
	ref := loadReference(t)
	for _, c := range ref.Hist {
		t.Run(c.Name, func(t *testing.T) {
			hx, hy := histOf(t, c.X), histOf(t, c.Y)
			for alt, want := range c.Alternatives {
				r, err := MannWhitneyHist(hx, hy, mustAlt(t, alt), 0.95)
				if err != nil {
					t.Fatal(err)
				}
				checkStatP(t, alt, r.U, r.PValue, want.Statistic, want.PValue)
				if r.HodgesLehmann != *c.HL || r.CI != *c.CI95 {
					t.Errorf("HL %v CI %v; numpy on representatives %v %v", r.HodgesLehmann, r.CI, *c.HL, *c.CI95)
				}
			}
			w, err := WelchHist(hx, hy, TwoSided)
			if err != nil {
				t.Fatal(err)
			}
			checkStatP(t, "welch", w.T, w.PValue, c.WelchT, c.WelchP)
		})
	}
}

func TestTwoProportionZMatchesStatsmodels(t *testing.T) {
	ref := loadReference(t)
	for _, c := range ref.ZTest {
		r, err := TwoProportionZ(c.KX, c.NX, c.KY, c.NY, mustAlt(t, c.Alternative))
		what := func() string {
			return strconv.Quote(c.Alternative) + " " + strconv.FormatInt(c.KX, 10) + "/" + strconv.FormatInt(c.NX, 10) +
				" vs " + strconv.FormatInt(c.KY, 10) + "/" + strconv.FormatInt(c.NY, 10)
		}
		if c.Error {
			if err == nil {
				t.Errorf("%s: got %+v, want an error (statsmodels gives NaN)", what(), r)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", what(), err)
			continue
		}
		if !closeStat(r.Statistic, float64(c.Statistic)) || !closeP(r.PValue, c.PValue) {
			t.Errorf("%s: z %v p %v; statsmodels %v p %v", what(), r.Statistic, r.PValue, float64(c.Statistic), c.PValue)
		}
	}
}

func TestFisherMatchesScipy(t *testing.T) {
	ref := loadReference(t)
	for _, c := range ref.Fisher {
		r, err := Fisher(c.KX, c.NX, c.KY, c.NY, mustAlt(t, c.Alternative))
		if err != nil {
			t.Errorf("%+v: %v", c, err)
			continue
		}
		want := float64(c.Statistic)
		statOK := closeStat(r.Statistic, want) || (math.IsNaN(want) && math.IsNaN(r.Statistic))
		if !statOK || !closeP(r.PValue, c.PValue) {
			t.Errorf("[[%d %d] [%d %d]] %s: odds %v p %v; scipy %v p %v", c.KX, c.NX-c.KX, c.KY, c.NY-c.KY, c.Alternative,
				r.Statistic, r.PValue, want, c.PValue)
		}
	}
}

func TestWelchMatchesScipy(t *testing.T) {
	ref := loadReference(t)
	for _, c := range ref.Welch {
		t.Run(c.Name, func(t *testing.T) {
			for alt, want := range c.Alternatives {
				r, err := Welch(c.X, c.Y, mustAlt(t, alt))
				if err != nil {
					t.Fatal(err)
				}
				checkStatP(t, alt, r.T, r.PValue, want.Statistic, want.PValue)
				if !closeStat(r.DF, c.DF) {
					t.Errorf("df %v, want %v", r.DF, c.DF)
				}
			}
		})
	}
}

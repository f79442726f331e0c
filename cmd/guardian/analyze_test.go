package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// runCLI executes the real command tree in-process.
func runCLI(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func writeLines(t *testing.T, name string, vals []float64, extra string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# written by analyze_test\n\n")
	for _, v := range vals {
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64) + "\n")
	}
	b.WriteString(extra)
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The fixture file is the one analysis' tests read: values from scipy and
// statsmodels (make fixtures).
type cliFixture struct {
	MWU []struct {
		Name         string
		X, Y         []float64
		Alternatives map[string]struct {
			Statistic float64 `json:"statistic"`
			PValue    float64 `json:"p_value"`
		}
	} `json:"mwu"`
	Welch []struct {
		X, Y         []float64
		DF           float64 `json:"df"`
		Alternatives map[string]struct {
			Statistic float64 `json:"statistic"`
			PValue    float64 `json:"p_value"`
		}
	} `json:"welch"`
	ZTest []struct {
		KX, NX, KY, NY int64
		Alternative    string
		Statistic      any     `json:"statistic"`
		PValue         float64 `json:"p_value"`
		Error          bool    `json:"error"`
	} `json:"ztest"`
	Fisher []struct {
		KX, NX, KY, NY int64
		Alternative    string
		Statistic      any     `json:"statistic"`
		PValue         float64 `json:"p_value"`
	} `json:"fisher"`
}

func loadCLIFixture(t *testing.T) cliFixture {
	b, err := os.ReadFile("../../analysis/testdata/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var f cliFixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func near(got, want, rel float64) bool {
	return got == want || math.Abs(got-want) <= rel*math.Abs(want) || math.Abs(got-want) < 1e-12
}

func decode(t *testing.T, out string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("output %q is not JSON: %v", out, err)
	}
	return m
}

func TestAnalyzeMWUMatchesScipy(t *testing.T) {
	f := loadCLIFixture(t)
	for _, i := range []int{0, 25, len(f.MWU) / 2, len(f.MWU) - 1} {
		c := f.MWU[i]
		base := writeLines(t, "baseline.txt", c.Y, "")
		can := writeLines(t, "canary.txt", c.X, "   # trailing comment\n")
		for alt, want := range c.Alternatives {
			out, err := runCLI(t, "", "analyze", "mwu", "--baseline", base, "--canary", can, "--alternative", alt)
			if err != nil {
				t.Fatalf("%s %s: %v", c.Name, alt, err)
			}
			m := decode(t, out)
			keys := []string{"test", "n_baseline", "n_canary", "statistic", "p_value", "effect_size", "hodges_lehmann", "ci"}
			if len(m) != len(keys) {
				t.Errorf("keys %v, want exactly %v", m, keys)
			}
			if m["test"] != "mann-whitney-u" || m["n_canary"] != float64(len(c.X)) || m["n_baseline"] != float64(len(c.Y)) ||
				!near(m["statistic"].(float64), want.Statistic, 1e-9) || !near(m["p_value"].(float64), want.PValue, 1e-6) {
				t.Errorf("%s %s: %s; scipy U %v p %v", c.Name, alt, out, want.Statistic, want.PValue)
			}
			if ci := m["ci"].([]any); len(ci) != 2 || ci[0].(float64) > m["hodges_lehmann"].(float64) || ci[1].(float64) < m["hodges_lehmann"].(float64) {
				t.Errorf("%s: CI %v does not bracket the estimate %v", c.Name, ci, m["hodges_lehmann"])
			}
		}
	}
}

func TestAnalyzeMWUStdinAndText(t *testing.T) {
	// Shier (2004): U = 17, asymptotic p = 0.1113469.
	base := writeLines(t, "females.txt", []float64{20, 11, 17, 12}, "")
	out, err := runCLI(t, "19\n22\n16 # comment\n\n29\n24\n", "analyze", "mwu", "--baseline", base, "--canary", "-", "-o", "text")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"U (canary)", "17", "0.111347", "[-1, 17]", "5 / 4"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
}

func TestAnalyzeWelchMatchesScipy(t *testing.T) {
	f := loadCLIFixture(t)
	c := f.Welch[0]
	base := writeLines(t, "b.txt", c.Y, "")
	can := writeLines(t, "c.txt", c.X, "")
	for _, alt := range []string{"two-sided", "larger", "smaller"} {
		out, err := runCLI(t, "", "analyze", "welch", "--baseline", base, "--canary", can, "--alternative", alt)
		if err != nil {
			t.Fatal(err)
		}
		want := c.Alternatives[map[string]string{"two-sided": "two-sided", "larger": "greater", "smaller": "less"}[alt]]
		m := decode(t, out)
		if len(m) != 4 || m["test"] != "welch-t" || !near(m["statistic"].(float64), want.Statistic, 1e-9) ||
			!near(m["df"].(float64), c.DF, 1e-9) || !near(m["p_value"].(float64), want.PValue, 1e-6) {
			t.Errorf("%s: %s; scipy t %v df %v p %v", alt, out, want.Statistic, c.DF, want.PValue)
		}
	}
}

func countArgs(cmd string, kx, nx, ky, ny int64, alt string) []string {
	f := func(v int64) string { return strconv.FormatInt(v, 10) }
	return []string{"analyze", cmd, "--baseline-errors", f(ky), "--baseline-total", f(ny),
		"--canary-errors", f(kx), "--canary-total", f(nx), "--alternative", alt}
}

func TestAnalyzeCountsMatchStatsmodelsAndScipy(t *testing.T) {
	f := loadCLIFixture(t)
	for _, c := range f.ZTest[:30] {
		out, err := runCLI(t, "", countArgs("ztest", c.KX, c.NX, c.KY, c.NY, c.Alternative)...)
		if c.Error {
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 {
				t.Errorf("%+v: err %v, want exit code 2", c, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		m := decode(t, out)
		if m["test"] != "two-proportion-z" || !near(m["statistic"].(float64), c.Statistic.(float64), 1e-9) || !near(m["p_value"].(float64), c.PValue, 1e-6) {
			t.Errorf("%+v: %s", c, out)
		}
	}
	sawInf := false
	for _, c := range f.Fisher {
		// Both spellings of the one-sided alternatives reach Fisher.
		alt := map[string]string{"two-sided": "two-sided", "greater": "larger", "less": "smaller"}[c.Alternative]
		out, err := runCLI(t, "", countArgs("fisher", c.KX, c.NX, c.KY, c.NY, alt)...)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		m := decode(t, out)
		if m["test"] != "fisher-exact" || !near(m["p_value"].(float64), c.PValue, 1e-6) {
			t.Errorf("%+v: %s", c, out)
		}
		switch s := c.Statistic.(type) {
		case string:
			sawInf = sawInf || s == "inf"
			if m["odds_ratio"] != s {
				t.Errorf("%+v: %s, want odds_ratio %q", c, out, s)
			}
		case float64:
			if !near(m["statistic"].(float64), s, 1e-9) {
				t.Errorf("%+v: %s, want odds ratio %v", c, out, s)
			}
		}
	}
	if !sawInf {
		t.Error("fixtures hold no infinite odds ratio")
	}
}

func TestAnalyzeBadInput(t *testing.T) {
	good := writeLines(t, "baseline.txt", []float64{1, 2, 3}, "")
	bad := writeLines(t, "canary.txt", []float64{1, 2, 3}, "abc\n") // line 1 comment, 2 blank, 3-5 values, 6 abc
	inf := writeLines(t, "inf.txt", []float64{1}, "+Inf\n")
	empty := writeLines(t, "empty.txt", nil, "# nothing\n")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"not a number", []string{"analyze", "mwu", "--baseline", good, "--canary", bad}, `canary.txt:6: "abc" is not a number`},
		{"infinite", []string{"analyze", "welch", "--baseline", inf, "--canary", good}, `inf.txt:4: "+Inf" is not a finite number`},
		{"no values", []string{"analyze", "mwu", "--baseline", empty, "--canary", good}, "empty.txt: no values"},
		{"missing file", []string{"analyze", "mwu", "--baseline", good, "--canary", good + ".nope"}, "no such file"},
		{"alternative", []string{"analyze", "mwu", "--baseline", good, "--canary", good, "--alternative", "up"}, `--alternative "up"`},
		{"output", []string{"analyze", "mwu", "--baseline", good, "--canary", good, "-o", "yaml"}, `--output "yaml"`},
		{"both stdin", []string{"analyze", "mwu", "--baseline", "-", "--canary", "-"}, "standard input"},
		{"errors above total", countArgs("ztest", 11, 10, 1, 10, "two-sided"), "--canary-errors 11: exceeds --canary-total 10"},
		{"zero total", countArgs("fisher", 0, 10, 0, 0, "two-sided"), "--baseline-total 0: must be positive"},
		{"no variation", countArgs("ztest", 0, 10, 0, 10, "two-sided"), "pooled proportion is 0/20"},
		{"welch one value", []string{"analyze", "welch", "--baseline", good, "--canary", writeLines(t, "one.txt", []float64{4}, "")}, "at least 2 values"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := runCLI(t, "", c.args...)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 {
				t.Fatalf("err = %v, want exit code 2", err)
			}
			if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Errorf("message %q, want one line containing %q", msg, c.want)
			}
		})
	}
}

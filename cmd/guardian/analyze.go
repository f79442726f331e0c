package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/deployment-guardian/guardian/analysis"
)

func init() { register(func(root *cobra.Command) { root.AddCommand(newAnalyzeCmd()) }) }

func newAnalyzeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "analyze",
		Short: "Fixed-horizon tests of a canary against a baseline (scipy/statsmodels-compatible)",
		Long: `Fixed-horizon statistical tests, canary against baseline. Results match
scipy 1.10 / statsmodels 0.13 (see docs/analysis.md). "greater" (or "larger")
means the canary's value is bigger.

Sample files hold one number per line; '#' starts a comment, blank lines are
ignored, and '-' reads standard input.`,
	}
	cmd.AddCommand(newAnalyzeSamplesCmd("mwu", "Mann–Whitney U test with Hodges–Lehmann shift and 95% CI"),
		newAnalyzeSamplesCmd("welch", "Welch's unequal-variance t-test"),
		newAnalyzeCountsCmd("ztest", "Pooled two-proportion z-test of error rates"),
		newAnalyzeCountsCmd("fisher", "Fisher's exact test of error rates"))
	return cmd
}

type analyzeOpts struct {
	alternative string
	output      string
}

func (o *analyzeOpts) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.alternative, "alternative", "two-sided", "two-sided, greater (larger) or less (smaller): the canary's side")
	cmd.Flags().StringVarP(&o.output, "output", "o", "json", "output format: json or text")
}

func (o *analyzeOpts) parse() (analysis.Alternative, error) {
	if o.output != "json" && o.output != "text" {
		return 0, usageErr("--output %q: want json or text", o.output)
	}
	alt, err := analysis.ParseAlternative(o.alternative)
	if err != nil {
		return 0, usageErr("--%v", err)
	}
	return alt, nil
}

func newAnalyzeSamplesCmd(name, short string) *cobra.Command {
	var o analyzeOpts
	var baseline, canary string
	cmd := &cobra.Command{
		Use:   name + " --baseline FILE --canary FILE",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			alt, err := o.parse()
			if err != nil {
				return err
			}
			if baseline == "-" && canary == "-" {
				return usageErr("--baseline and --canary cannot both read standard input")
			}
			y, err := readSamples(baseline, cmd.InOrStdin())
			if err != nil {
				return err
			}
			x, err := readSamples(canary, cmd.InOrStdin())
			if err != nil {
				return err
			}
			var out any
			var rows [][2]string
			switch name {
			case "mwu":
				r, err := analysis.MannWhitney(x, y, alt)
				if err != nil {
					return analysisErr(err)
				}
				out = mwuOutput{Test: "mann-whitney-u", NBaseline: r.NBaseline, NCanary: r.NCanary, Statistic: r.U,
					PValue: r.PValue, EffectSize: r.CLES, HodgesLehmann: r.HodgesLehmann, CI: r.CI, Note: r.Note}
				rows = [][2]string{{"test", "Mann–Whitney U (asymptotic, continuity-corrected), " + alt.String()},
					{"n (canary / baseline)", fmt.Sprintf("%d / %d", r.NCanary, r.NBaseline)},
					{"U (canary)", fmtNum(r.U)}, {"p-value", fmtNum(r.PValue)},
					{"P(canary > baseline)", fmtNum(r.CLES)},
					{"shift (Hodges–Lehmann)", fmtNum(r.HodgesLehmann)},
					{"95% CI", fmt.Sprintf("[%s, %s]", fmtNum(r.CI[0]), fmtNum(r.CI[1]))}}
				if r.Note != "" {
					rows = append(rows, [2]string{"note", r.Note})
				}
			case "welch":
				r, err := analysis.Welch(x, y, alt)
				if err != nil {
					return analysisErr(err)
				}
				out = welchOutput{Test: "welch-t", Statistic: r.T, DF: r.DF, PValue: r.PValue}
				rows = [][2]string{{"test", "Welch's t, " + alt.String()},
					{"n (canary / baseline)", fmt.Sprintf("%d / %d", r.NCanary, r.NBaseline)},
					{"mean (canary / baseline)", fmtNum(r.MeanCanary) + " / " + fmtNum(r.MeanBaseline)},
					{"t", fmtNum(r.T)}, {"df", fmtNum(r.DF)}, {"p-value", fmtNum(r.PValue)},
					{"95% CI of difference", fmt.Sprintf("[%s, %s]", fmtNum(r.CI[0]), fmtNum(r.CI[1]))}}
			}
			return writeResult(cmd.OutOrStdout(), o.output, out, rows)
		},
	}
	cmd.Flags().StringVar(&baseline, "baseline", "", "file of baseline values, one per line ('-' for stdin)")
	cmd.Flags().StringVar(&canary, "canary", "", "file of canary values, one per line ('-' for stdin)")
	_ = cmd.MarkFlagRequired("baseline")
	_ = cmd.MarkFlagRequired("canary")
	o.addFlags(cmd)
	return cmd
}

func newAnalyzeCountsCmd(name, short string) *cobra.Command {
	var o analyzeOpts
	var ky, ny, kx, nx int64
	cmd := &cobra.Command{
		Use:   name + " --baseline-errors K --baseline-total N --canary-errors K --canary-total N",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			alt, err := o.parse()
			if err != nil {
				return err
			}
			for _, c := range []struct {
				side string
				k, n int64
			}{{"canary", kx, nx}, {"baseline", ky, ny}} {
				switch {
				case c.n <= 0:
					return usageErr("--%s-total %d: must be positive", c.side, c.n)
				case c.k < 0:
					return usageErr("--%s-errors %d: must not be negative", c.side, c.k)
				case c.k > c.n:
					return usageErr("--%s-errors %d: exceeds --%s-total %d", c.side, c.k, c.side, c.n)
				}
			}
			test, label := analysis.TwoProportionZ, "two-proportion z (pooled, statsmodels)"
			if name == "fisher" {
				test, label = analysis.Fisher, "Fisher's exact"
			}
			r, err := test(kx, nx, ky, ny, alt)
			if err != nil {
				return analysisErr(err)
			}
			stat := "z"
			if name == "fisher" {
				stat = "odds ratio"
			}
			rows := [][2]string{{"test", label + ", " + alt.String()},
				{"errors (canary)", fmt.Sprintf("%d / %d = %s", kx, nx, fmtNum(float64(kx)/float64(nx)))},
				{"errors (baseline)", fmt.Sprintf("%d / %d = %s", ky, ny, fmtNum(float64(ky)/float64(ny)))},
				{stat, fmtNum(r.Statistic)}, {"p-value", fmtNum(r.PValue)}}
			return writeResult(cmd.OutOrStdout(), o.output, r, rows)
		},
	}
	for _, f := range []struct {
		p    *int64
		name string
	}{{&ky, "baseline-errors"}, {&ny, "baseline-total"}, {&kx, "canary-errors"}, {&nx, "canary-total"}} {
		cmd.Flags().Int64Var(f.p, f.name, 0, strings.ReplaceAll(f.name, "-", " ")+" (requests)")
		_ = cmd.MarkFlagRequired(f.name)
	}
	o.addFlags(cmd)
	return cmd
}

// mwuOutput and welchOutput fix the CLI's JSON to the documented keys.
type mwuOutput struct {
	Test          string     `json:"test"`
	NBaseline     int64      `json:"n_baseline"`
	NCanary       int64      `json:"n_canary"`
	Statistic     float64    `json:"statistic"`
	PValue        float64    `json:"p_value"`
	EffectSize    float64    `json:"effect_size"`
	HodgesLehmann float64    `json:"hodges_lehmann"`
	CI            [2]float64 `json:"ci"`
	Note          string     `json:"note,omitempty"`
}

type welchOutput struct {
	Test      string  `json:"test"`
	Statistic float64 `json:"statistic"`
	DF        float64 `json:"df"`
	PValue    float64 `json:"p_value"`
}

// analysisErr maps input the tests reject (such as no errors on either side
// for the z-test) to exit code 2.
func analysisErr(err error) error {
	if errors.Is(err, analysis.ErrInput) {
		return usageErr("%s", strings.TrimPrefix(err.Error(), analysis.ErrInput.Error()+": "))
	}
	return &exitError{code: 1, err: err}
}

func writeResult(w io.Writer, format string, v any, rows [][2]string) error {
	if format == "json" {
		b, err := json.Marshal(v)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

func fmtNum(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

// readSamples reads one number per line from path ('-' is stdin). Errors name
// the file and line.
func readSamples(path string, stdin io.Reader) ([]float64, error) {
	var r io.Reader = stdin
	name := path
	if path == "-" {
		name = "<stdin>"
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		defer f.Close()
		r = f
	}
	var out []float64
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, usageErr("%s:%d: %q is not a number", name, line, text)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, usageErr("%s:%d: %q is not a finite number", name, line, text)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return nil, usageErr("%s: %v", name, err)
	}
	if len(out) == 0 {
		return nil, usageErr("%s: no values", name)
	}
	return out, nil
}

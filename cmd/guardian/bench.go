package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/deployment-guardian/guardian/bench"
)

func init() { register(func(root *cobra.Command) { root.AddCommand(newBenchCmd()) }) }

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Compare rollout policies on replayed or synthetic traffic",
	}
	cmd.AddCommand(newBenchReplayCmd(), newBenchScenariosCmd())
	return cmd
}

// policyFlags are the knobs shared by both bench commands.
type policyFlags struct {
	policies   string
	output     string
	plots      string
	seed       uint64
	scale      float64
	confidence float64
	window     time.Duration
	thrIvl     time.Duration
	thrErr     float64
	thrP99     time.Duration
	guard      []string
}

func (f *policyFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.policies, "policies", "all", "comma-separated policies: "+strings.Join(bench.PolicyNames(), ","))
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	fl.StringVar(&f.plots, "plots", "", "write PNG and SVG plots into this directory")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of routing, fault and scenario draws")
	fl.Float64Var(&f.scale, "plan-scale", 1, "multiply the pauses of the canary plan (1%/10m, 5%/20m, 25%/30m, 50%/30m, 100%)")
	fl.Float64Var(&f.confidence, "confidence", 0.95, "confidence of the statistical policies")
	fl.DurationVar(&f.window, "window", 5*time.Minute, "fixed-window-mwu: judgement period")
	fl.DurationVar(&f.thrIvl, "threshold-interval", time.Minute, "threshold: measurement interval")
	fl.Float64Var(&f.thrErr, "threshold-error-rate", 0.01, "threshold: maximum canary error rate per interval")
	fl.DurationVar(&f.thrP99, "threshold-p99", 500*time.Millisecond, "threshold: maximum canary p99 latency per interval")
	fl.StringArrayVar(&f.guard, "guard-trigger", nil, `guard: critical trigger (repeatable; default "error_rate > 5%" and "p99_latency > 1000ms")`)
}

func (f *policyFlags) config() (bench.PolicyConfig, []string, error) {
	if f.output != "text" && f.output != "json" {
		return bench.PolicyConfig{}, nil, usageErr("--output %q: want text or json", f.output)
	}
	names, err := bench.ParsePolicies(f.policies)
	if err != nil {
		return bench.PolicyConfig{}, nil, usageErr("--policies: %v", err)
	}
	if !(f.scale > 0) || f.scale > 100 {
		return bench.PolicyConfig{}, nil, usageErr("--plan-scale %v: want a positive factor up to 100", f.scale)
	}
	cfg := bench.PolicyConfig{
		Plan: bench.SeedPlan(f.scale), Confidence: f.confidence, Window: f.window,
		ThresholdInterval: f.thrIvl, ThresholdErrorRate: f.thrErr, ThresholdP99: f.thrP99, GuardTriggers: f.guard,
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return cfg, nil, usageErr("%v", err)
	}
	for _, n := range names {
		if _, err := bench.NewPolicy(n, cfg); err != nil {
			return cfg, nil, usageErr("%v", err)
		}
	}
	return cfg, names, nil
}

func newBenchReplayCmd() *cobra.Command {
	var (
		pf     policyFlags
		log    string
		format string
		inject string
	)
	cmd := &cobra.Command{
		Use:   "replay --log FILE --format envoy|nginx|csv",
		Short: "Replay an access log through the policies at CPU speed",
		Long: `Replay an access log through every policy side by side on a virtual clock.
Requests without a version are split by each policy's own weights, so one
production log stands for both versions; --inject gives the canary's share a
fault from a point in time (for example error-rate=5%@10m, latency=x1.5@5m,
tail=+300ms@0s, degradation=+5ms/min@1m).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, names, err := pf.config()
			if err != nil {
				return err
			}
			if log == "" {
				return usageErr("--log is required")
			}
			fmtName, err := bench.ParseFormat(format)
			if err != nil {
				return usageErr("--format: %v", err)
			}
			opts := bench.ReplayOptions{Format: fmtName, Policies: names, Policy: cfg, Seed: pf.seed}
			if inject != "" {
				f, err := bench.ParseFault(inject)
				if err != nil {
					return usageErr("--%v", err)
				}
				opts.Inject = &f
			}
			file, err := os.Open(log)
			if err != nil {
				return usageErr("--log: %v", err)
			}
			defer file.Close()
			if pf.plots != "" {
				opts.TraceEvery = 10 * time.Second
			}
			bar := newProgressBar(cmd.ErrOrStderr(), file)
			if bar != nil {
				opts.Progress = bar.update
			}
			rep, err := bench.ReplayLog(file, opts)
			if bar != nil {
				bar.finish()
			}
			if err != nil {
				return fmt.Errorf("replay %s: %w", log, err)
			}
			// Malformed lines go to stderr with their numbers in every
			// output format, so JSON on stdout stays machine-readable.
			if pf.output == "json" && rep.Malformed > 0 {
				for _, m := range rep.Examples {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s:%d: %s\n", log, m.Line, m.Reason)
				}
				if rep.Malformed > len(rep.Examples) {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d more malformed lines\n", log, rep.Malformed-len(rep.Examples))
				}
			}
			if pf.plots != "" {
				if _, err := bench.PlotReplay(pf.plots, rep, opts.TraceEvery.Seconds()); err != nil {
					return err
				}
			}
			if pf.output == "json" {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			return bench.WriteReplayTable(cmd.OutOrStdout(), rep)
		},
	}
	pf.add(cmd)
	cmd.Flags().StringVar(&log, "log", "", "access log to replay")
	cmd.Flags().StringVar(&format, "format", "", "log format: envoy, nginx or csv")
	cmd.Flags().StringVar(&inject, "inject", "", "fault for the canary's share, KIND=SIZE@TIME (e.g. error-rate=5%@10m)")
	return cmd
}

func newBenchScenariosCmd() *cobra.Command {
	var (
		pf      policyFlags
		runs    int
		rate    float64
		workers int
		alphas  []float64
	)
	cmd := &cobra.Command{
		Use:   "scenarios --runs N",
		Short: "Run the synthetic scenario matrix with Monte Carlo confidence intervals",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, names, err := pf.config()
			if err != nil {
				return err
			}
			if runs < 1 {
				return usageErr("--runs %d: want at least 1", runs)
			}
			if !(rate > 0) {
				return usageErr("--rate %v: want a positive number of requests per second", rate)
			}
			for _, a := range alphas {
				if !(a > 0 && a < 1) {
					return usageErr("--alphas: %v is not in (0, 1)", a)
				}
			}
			cases := append(bench.DefaultCases(rate), bench.AlphaCases(rate, alphas)...)
			mc := bench.MatrixConfig{Cases: cases, Runs: runs, Seed: pf.seed, Policies: names, Policy: cfg, Workers: workers}
			if pf.plots != "" {
				mc.TraceEvery = max(bench.PlanLength(cfg.Plan)/200, time.Second)
			}
			var progress func(done, total int)
			if isTerminal(cmd.ErrOrStderr()) {
				w := cmd.ErrOrStderr()
				progress = func(done, total int) {
					fmt.Fprintf(w, "\r%s %d/%d runs", bar(float64(done)/float64(total)), done, total)
					if done == total {
						fmt.Fprintln(w)
					}
				}
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			rep, err := bench.RunMatrix(ctx, mc, progress)
			if err != nil {
				return err
			}
			if pf.plots != "" {
				if _, err := bench.PlotMatrix(pf.plots, rep); err != nil {
					return err
				}
			}
			if pf.output == "json" {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			return bench.WriteMatrixTable(cmd.OutOrStdout(), rep)
		},
	}
	pf.add(cmd)
	cmd.Flags().IntVar(&runs, "runs", 20, "Monte Carlo runs per scenario")
	cmd.Flags().Float64Var(&rate, "rate", 100, "mean requests per second of the scenarios (low-traffic uses 1/20 of it)")
	cmd.Flags().IntVar(&workers, "workers", 0, "runs in parallel (default: GOMAXPROCS)")
	cmd.Flags().Float64SliceVar(&alphas, "alphas", []float64{0.01, 0.1, 0.2}, "extra A/A runs at these alphas, for the false-rollback-vs-alpha plot")
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressBar draws the share of the log read, on a terminal only.
type progressBar struct {
	w     io.Writer
	size  int64
	last  time.Time
	start time.Time
}

func newProgressBar(w io.Writer, f *os.File) *progressBar {
	if !isTerminal(w) {
		return nil
	}
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return nil
	}
	return &progressBar{w: w, size: st.Size(), start: time.Now()}
}

func (b *progressBar) update(n int64) {
	if now := time.Now(); now.Sub(b.last) >= 100*time.Millisecond {
		b.last = now
		fmt.Fprintf(b.w, "\r%s %3.0f%% %s", bar(float64(n)/float64(b.size)), 100*float64(n)/float64(b.size), now.Sub(b.start).Round(100*time.Millisecond))
	}
}

func (b *progressBar) finish() {
	fmt.Fprintf(b.w, "\r%s 100%% %s\n", bar(1), time.Since(b.start).Round(100*time.Millisecond))
}

func bar(frac float64) string {
	const width = 30
	n := int(min(max(frac, 0), 1) * width)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

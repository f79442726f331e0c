package bench

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// ReplayOptions configure a replay of one access log.
type ReplayOptions struct {
	Format    Format
	VersionOf VersionOf
	Policies  []string
	Policy    PolicyConfig
	// Inject, when set, gives the canary's share this fault from Inject.At;
	// the delays then count from that onset. Without it they count from the
	// start of the replay.
	Inject *Fault
	Seed   uint64
	// TraceEvery > 0 keeps bad requests over time for the plot.
	TraceEvery time.Duration
	// Progress, if set, sees the bytes read so far.
	Progress func(bytes int64)
}

// ReplayReport is `guardian bench replay -o json`.
type ReplayReport struct {
	Requests  int64          `json:"requests"`
	Malformed int            `json:"malformed"`
	Policies  []ReplayResult `json:"policies"`
	// Examples are the first malformed lines, with their numbers.
	Examples []Malformed `json:"-"`
	Outcomes []Outcome   `json:"-"`
}

// ReplayResult is one policy's line of a replay report.
type ReplayResult struct {
	Name              string   `json:"name"`
	RolledBack        bool     `json:"rolled_back"`
	DetectionDelayS   *float64 `json:"detection_delay_s"`
	DetectionRequests int64    `json:"detection_requests"`
	BadRequests       int64    `json:"bad_requests"`
	DurationS         float64  `json:"duration_s"`
}

// ReplayLog reads an access log once, at CPU speed, and drives every policy
// over it side by side. Requests without a version are split by each
// policy's own weights, so one production log stands for both versions.
func ReplayLog(r io.Reader, opts ReplayOptions) (ReplayReport, error) {
	names := opts.Policies
	if len(names) == 0 {
		names = PolicyNames()
	}
	ps := make([]Policy, 0, len(names))
	for _, n := range names {
		p, err := NewPolicy(n, opts.Policy)
		if err != nil {
			return ReplayReport{}, err
		}
		ps = append(ps, p)
	}
	rp := Replayer{Seed: opts.Seed, TraceEvery: opts.TraceEvery}
	if opts.Inject != nil {
		rp.Fault, rp.FaultKnown = *opts.Inject, true
	}
	var st ReadStats
	var n int64
	stream := func(fn func(Request) error) error {
		var err error
		stopped := false
		st, err = ReadLog(r, opts.Format, opts.VersionOf, func(req Request) error {
			n++
			if stopped {
				return nil
			}
			// Once every policy has finished the rest of the log is still
			// read, so that every malformed line is counted.
			if err := fn(req); errors.Is(err, errAllDone) {
				stopped = true
			} else if err != nil {
				return err
			}
			return nil
		}, opts.Progress)
		return err
	}
	outs, err := rp.Run(stream, ps)
	if err != nil {
		return ReplayReport{}, err
	}
	rep := ReplayReport{Requests: n, Malformed: st.Malformed, Examples: st.Examples, Outcomes: outs}
	for _, o := range outs {
		rep.Policies = append(rep.Policies, ReplayResult{Name: o.Policy, RolledBack: o.RolledBack, DetectionDelayS: o.DetectionDelay,
			DetectionRequests: o.DetectionRequests, BadRequests: o.BadRequests, DurationS: o.Duration})
	}
	return rep, nil
}

// WriteReplayTable prints a replay report for a terminal.
func WriteReplayTable(w io.Writer, rep ReplayReport) error {
	fmt.Fprintf(w, "%d requests replayed, %d malformed lines\n", rep.Requests, rep.Malformed)
	for _, m := range rep.Examples {
		fmt.Fprintf(w, "  line %d: %s\n", m.Line, m.Reason)
	}
	if rep.Malformed > len(rep.Examples) {
		fmt.Fprintf(w, "  ... and %d more\n", rep.Malformed-len(rep.Examples))
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\toutcome\tdetection delay\tdetection requests\tbad requests\tduration\t")
	for i, p := range rep.Policies {
		outcome := "running at end"
		switch {
		case i < len(rep.Outcomes) && rep.Outcomes[i].Aborted:
			outcome = "aborted (progress deadline)"
		case p.RolledBack:
			outcome = "rolled back"
		case i < len(rep.Outcomes) && rep.Outcomes[i].Promoted:
			outcome = "promoted"
		}
		delay := "-"
		if p.DetectionDelayS != nil {
			delay = fmtSeconds(*p.DetectionDelayS)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t\n", p.Name, outcome, delay, p.DetectionRequests, p.BadRequests, fmtSeconds(p.DurationS))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, o := range rep.Outcomes {
		if o.Reason != "" {
			fmt.Fprintf(w, "%s: %s\n", o.Policy, o.Reason)
		}
	}
	return nil
}

func fmtSeconds(s float64) string {
	switch {
	case s < 60:
		return fmt.Sprintf("%.1fs", s)
	case s < 3600:
		return fmt.Sprintf("%.1fm", s/60)
	}
	return fmt.Sprintf("%.2fh", s/3600)
}

// WriteMatrixTable prints the scenario matrix: per case and policy the
// rollback rate (false on A/A) with its Wilson interval, the missed share of
// regressions, detection delay and requests, bad requests, and time to 100%.
func WriteMatrixTable(w io.Writer, rep MatrixReport) error {
	fmt.Fprintf(w, "%d runs per case, seed %d, confidence %g, plan %s; %d requests in %.1fs; intervals are %g%% (Wilson for rates, t for means)\n",
		rep.Runs, rep.Seed, rep.Confidence, fmtSeconds(rep.PlanS), rep.Requests, rep.ElapsedS, MonteCarloConfidence*100)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\teffect\tpolicy\trolled back\tstalled\tmissed\tdelay (mean [CI])\tdetect req\tbad req (mean)\ttime to 100%\t")
	prev := ""
	for _, c := range rep.Cells {
		key := c.Case.Name + "/" + c.Case.Effect
		scen, eff := c.Case.Name, c.Case.Effect
		if key == prev {
			scen, eff = "", ""
		}
		prev = key
		missed := "-"
		if c.Missed != nil {
			missed = fmtProp(*c.Missed)
		}
		delay, dreq := "-", "-"
		if c.DetectionDelayS.N > 0 {
			delay = fmt.Sprintf("%s [%s, %s]", fmtSeconds(c.DetectionDelayS.Mean), fmtSeconds(max(c.DetectionDelayS.Lo, 0)), fmtSeconds(c.DetectionDelayS.Hi))
			dreq = fmt.Sprintf("%.0f", c.DetectionRequests.Mean)
		}
		dur := "-"
		if c.DurationS.N > 0 {
			dur = fmt.Sprintf("%s (%d/%d)", fmtSeconds(c.DurationS.Mean), c.Promoted.K, c.Promoted.N)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t\n", scen, eff, c.Policy, fmtProp(c.RolledBack), pctShort(c.Aborted.P), missed, delay, dreq, c.BadRequests.Mean, dur)
	}
	return tw.Flush()
}

func fmtProp(p Proportion) string {
	return fmt.Sprintf("%s [%s, %s]", pctShort(p.P), pctShort(p.Lo), pctShort(p.Hi))
}

func pctShort(p float64) string {
	s := fmt.Sprintf("%.1f", p*100)
	return strings.TrimSuffix(s, ".0") + "%"
}

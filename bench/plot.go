package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// PlotMatrix writes the scenario matrix's plots into dir as PNG and SVG:
// detection delay against effect size per regression family, the
// false-rollback rate against α, and mean cumulative bad requests over time
// for the traced cases. It returns the files written.
func PlotMatrix(dir string, rep MatrixReport) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	save := func(p *plot.Plot, name string) error {
		for _, ext := range []string{".png", ".svg"} {
			f := filepath.Join(dir, name+ext)
			if err := p.Save(8*vg.Inch, 5*vg.Inch, f); err != nil {
				return fmt.Errorf("plot %s: %w", f, err)
			}
			files = append(files, f)
		}
		return nil
	}
	// Detection delay vs effect size: constant-rate families with sizes.
	var families []string
	for _, c := range rep.Cells {
		if c.Case.Regression() && c.Case.Shape == "" && c.Case.SizeUnit != "" && !slices.Contains(families, c.Case.Name) {
			families = append(families, c.Case.Name)
		}
	}
	for _, fam := range families {
		p := plot.New()
		p.Title.Text = "Detection delay vs effect size: " + fam
		p.Y.Label.Text = "mean detection delay (s), detected runs"
		var lines []any
		for _, pol := range policiesIn(rep) {
			var xys plotter.XYs
			for _, c := range rep.Cells {
				if c.Case.Name == fam && c.Policy == pol && c.Case.Regression() && c.Case.Shape == "" {
					p.X.Label.Text = c.Case.SizeUnit
					if c.DetectionDelayS.N > 0 {
						xys = append(xys, plotter.XY{X: c.Case.Size, Y: c.DetectionDelayS.Mean})
					}
				}
			}
			if len(xys) > 0 {
				lines = append(lines, pol, xys)
			}
		}
		if len(lines) == 0 {
			continue
		}
		if err := plotutil.AddLinePoints(p, lines...); err != nil {
			return files, err
		}
		if err := save(p, "delay-"+fam); err != nil {
			return files, err
		}
	}
	// False-rollback rate vs α: the A/A case at the configured confidence
	// and the α sweep, with y = α for reference.
	{
		p := plot.New()
		p.Title.Text = "False-rollback rate on A/A vs alpha"
		p.X.Label.Text = "alpha (1 - confidence)"
		p.Y.Label.Text = "share of A/A runs rolled back"
		var lines []any
		maxA := 0.0
		for _, pol := range []string{PolicyFixedWindow, PolicySequential, PolicyAdaptive} {
			var xys plotter.XYs
			for _, c := range rep.Cells {
				if c.Policy != pol || c.Case.Regression() || c.Case.Shape != "" || c.Case.Name == "low-traffic" {
					continue
				}
				a := 1 - rep.Confidence
				if c.Case.Confidence > 0 {
					a = 1 - c.Case.Confidence
				}
				maxA = max(maxA, a)
				xys = append(xys, plotter.XY{X: a, Y: c.RolledBack.P})
			}
			slices.SortFunc(xys, func(a, b plotter.XY) int {
				switch {
				case a.X < b.X:
					return -1
				case a.X > b.X:
					return 1
				}
				return 0
			})
			if len(xys) > 1 {
				lines = append(lines, pol, xys)
			}
		}
		if len(lines) > 0 {
			lines = append(lines, "y = alpha", plotter.XYs{{X: 0, Y: 0}, {X: maxA, Y: maxA}})
			if err := plotutil.AddLinePoints(p, lines...); err != nil {
				return files, err
			}
			if err := save(p, "false-rollback-vs-alpha"); err != nil {
				return files, err
			}
		}
	}
	for ci, tr := range rep.Traces {
		c := rep.Cases[ci]
		p, err := badRequestsPlot(fmt.Sprintf("Mean cumulative bad requests: %s %s", c.Name, c.Effect), tr, rep.TraceEvery.Seconds())
		if err != nil {
			return files, err
		}
		if err := save(p, fmt.Sprintf("bad-requests-%s-%d", c.Name, ci)); err != nil {
			return files, err
		}
	}
	return files, nil
}

// PlotReplay writes the replay's cumulative bad requests per policy.
func PlotReplay(dir string, rep ReplayReport, everyS float64) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	tr := map[string][]float64{}
	for _, o := range rep.Outcomes {
		var cum float64
		s := make([]float64, len(o.BadTrace))
		for i, v := range o.BadTrace {
			cum += float64(v)
			s[i] = cum
		}
		tr[o.Policy] = s
	}
	p, err := badRequestsPlot("Cumulative bad requests served by the canary", tr, everyS)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, ext := range []string{".png", ".svg"} {
		f := filepath.Join(dir, "bad-requests"+ext)
		if err := p.Save(8*vg.Inch, 5*vg.Inch, f); err != nil {
			return files, fmt.Errorf("plot %s: %w", f, err)
		}
		files = append(files, f)
	}
	return files, nil
}

func badRequestsPlot(title string, traces map[string][]float64, everyS float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "time since rollout start (s)"
	p.Y.Label.Text = "bad requests"
	var lines []any
	names := make([]string, 0, len(traces))
	for n := range traces {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return slices.Index(PolicyNames(), a) - slices.Index(PolicyNames(), b) })
	for _, n := range names {
		s := traces[n]
		xys := make(plotter.XYs, 0, len(s)+1)
		xys = append(xys, plotter.XY{})
		for i, v := range s {
			xys = append(xys, plotter.XY{X: float64(i+1) * everyS, Y: v})
		}
		lines = append(lines, n, xys)
	}
	if len(lines) > 0 {
		if err := plotutil.AddLines(p, lines...); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func policiesIn(rep MatrixReport) []string {
	var out []string
	for _, c := range rep.Cells {
		if !slices.Contains(out, c.Policy) {
			out = append(out, c.Policy)
		}
	}
	return out
}

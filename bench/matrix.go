package bench

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/deployment-guardian/guardian/analysis"
)

// Case is one cell of the scenario matrix: a traffic shape and a fault of
// one size (Fault.Kind empty for an A/A run).
type Case struct {
	Name   string  `json:"scenario"`
	Effect string  `json:"effect"`
	Shape  Shape   `json:"shape"`
	Rate   float64 `json:"rate"`
	Fault  Fault   `json:"-"`
	// Size is the effect's magnitude on the x axis of the delay plot, in
	// the unit SizeUnit names.
	Size     float64 `json:"size"`
	SizeUnit string  `json:"size_unit,omitempty"`
	// Confidence, when set, overrides the statistical policies' confidence
	// for this case (the false-rollback-vs-alpha sweep).
	Confidence float64 `json:"confidence,omitempty"`
}

// Regression reports whether the case injects a fault.
func (c Case) Regression() bool { return c.Fault.Kind != FaultNone }

// Baseline traffic of the scenario matrix: what every version does without
// a fault.
const (
	MatrixMedianLatency = 50 * time.Millisecond
	MatrixSigma         = 0.5
	MatrixErrorRate     = 0.005
)

// DefaultCases is the scenario matrix at a mean rate of rate requests per
// second: A/A, error-rate step, median latency shift, tail-only, slow
// degradation, each with three effect sizes, and low traffic, bursty and
// diurnal load each as A/A and with two error-rate steps.
func DefaultCases(rate float64) []Case {
	cs := []Case{{Name: "aa", Effect: "none", Rate: rate}}
	for _, p := range []float64{0.02, 0.05, 0.10} {
		cs = append(cs, Case{Name: "error-step", Effect: fmt.Sprintf("+%g%% errors", p*100), Rate: rate,
			Fault: Fault{Kind: FaultErrorRate, Prob: p}, Size: p * 100, SizeUnit: "extra error rate %"})
	}
	for _, m := range []float64{1.3, 1.5, 2} {
		cs = append(cs, Case{Name: "latency-shift", Effect: fmt.Sprintf("x%g latency", m), Rate: rate,
			Fault: Fault{Kind: FaultLatency, Scale: m}, Size: m, SizeUnit: "latency multiplier"})
	}
	for _, d := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second} {
		cs = append(cs, Case{Name: "tail", Effect: fmt.Sprintf("+%s on 2%%", d), Rate: rate,
			Fault: Fault{Kind: FaultTail, Shift: d}, Size: float64(d.Milliseconds()), SizeUnit: "ms added to 2% of requests"})
	}
	for _, d := range []time.Duration{2 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
		cs = append(cs, Case{Name: "degradation", Effect: fmt.Sprintf("+%s/min", d), Rate: rate,
			Fault: Fault{Kind: FaultDegradation, Shift: d}, Size: float64(d.Milliseconds()), SizeUnit: "ms added per minute"})
	}
	for _, v := range []struct {
		name  string
		shape Shape
		rate  float64
	}{{"low-traffic", ShapeConstant, rate / 20}, {"bursty", ShapeBursty, rate}, {"diurnal", ShapeDiurnal, rate}} {
		cs = append(cs, Case{Name: v.name, Effect: "none", Shape: v.shape, Rate: v.rate})
		for _, p := range []float64{0.02, 0.05} {
			cs = append(cs, Case{Name: v.name, Effect: fmt.Sprintf("+%g%% errors", p*100), Shape: v.shape, Rate: v.rate,
				Fault: Fault{Kind: FaultErrorRate, Prob: p}, Size: p * 100, SizeUnit: "extra error rate %"})
		}
	}
	return cs
}

// AlphaCases are A/A cases at other confidences, for the plot of the
// false-rollback rate against α.
func AlphaCases(rate float64, alphas []float64) []Case {
	var cs []Case
	for _, a := range alphas {
		cs = append(cs, Case{Name: "aa-alpha", Effect: fmt.Sprintf("α=%g", a), Rate: rate, Size: a, SizeUnit: "alpha", Confidence: 1 - a})
	}
	return cs
}

// MatrixConfig sets up a Monte Carlo run of the scenario matrix.
type MatrixConfig struct {
	Cases    []Case
	Runs     int
	Seed     uint64
	Policies []string
	Policy   PolicyConfig
	// FaultAt is when the fault begins after the start of the rollout.
	FaultAt time.Duration
	// Workers run cases in parallel (default GOMAXPROCS).
	Workers int
	// TraceEvery > 0 keeps bad requests over time (for the plot).
	TraceEvery time.Duration
}

// RunOutcome is one Monte Carlo run of one case.
type RunOutcome struct {
	Case     int
	Run      int
	Seed     uint64
	Outcomes []Outcome
}

// MatrixReport is the Monte Carlo summary of every case and policy.
type MatrixReport struct {
	Runs       int           `json:"runs"`
	Seed       uint64        `json:"seed"`
	Confidence float64       `json:"confidence"`
	PlanS      float64       `json:"plan_s"`
	Requests   int64         `json:"requests"`
	ElapsedS   float64       `json:"elapsed_s"`
	Cells      []CellSummary `json:"cells"`
	// Traces are the mean cumulative bad requests per policy over time,
	// per case index (only with TraceEvery).
	Traces     map[int]map[string][]float64 `json:"-"`
	TraceEvery time.Duration                `json:"-"`
	Cases      []Case                       `json:"-"`
}

// Proportion is a rate with its Wilson interval.
type Proportion struct {
	K  int     `json:"k"`
	N  int     `json:"n"`
	P  float64 `json:"p"`
	Lo float64 `json:"lo"`
	Hi float64 `json:"hi"`
}

// Summary describes a sample: mean with a t interval, median and 90th
// percentile. N = 0 means no values (nothing detected, nothing promoted).
type Summary struct {
	N      int     `json:"n"`
	Mean   float64 `json:"mean"`
	Lo     float64 `json:"lo"`
	Hi     float64 `json:"hi"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
}

// CellSummary is one policy on one case over all runs.
type CellSummary struct {
	Case   Case   `json:"case"`
	Policy string `json:"policy"`
	// RolledBack is the share of runs rolled back (or aborted): the
	// false-rollback rate on an A/A case.
	RolledBack Proportion `json:"rolled_back"`
	// Aborted is the share of runs the engine gave up on for lack of
	// evidence (progress deadline): not a detection, not a promotion.
	Aborted Proportion `json:"aborted"`
	// Detected: rolled back after the fault began; Missed: promoted (or
	// still running at the end) with a fault present. Regression cases only.
	Detected          *Proportion `json:"detected,omitempty"`
	Missed            *Proportion `json:"missed,omitempty"`
	DetectionDelayS   Summary     `json:"detection_delay_s"`
	DetectionRequests Summary     `json:"detection_requests"`
	BadRequests       Summary     `json:"bad_requests"`
	// DurationS is the time to 100% over the promoted runs.
	DurationS Summary    `json:"duration_s"`
	Promoted  Proportion `json:"promoted"`
}

// MonteCarloConfidence is the level of every interval in a report.
const MonteCarloConfidence = 0.95

// RunMatrix replays every case Runs times through every policy, on the
// same requests for all policies within a run.
func RunMatrix(ctx context.Context, cfg MatrixConfig, progress func(done, total int)) (MatrixReport, error) {
	cfg.Policy.Defaults()
	if err := cfg.Policy.Validate(); err != nil {
		return MatrixReport{}, err
	}
	if cfg.Runs <= 0 {
		return MatrixReport{}, fmt.Errorf("runs %d: want at least 1", cfg.Runs)
	}
	if len(cfg.Policies) == 0 {
		cfg.Policies = PolicyNames()
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	plan := PlanLength(cfg.Policy.Plan)
	// Long enough for a rollout that waits its whole progress deadline,
	// then a margin; runs end early once every policy has finished.
	duration := plan + cfg.Policy.ProgressDeadline + plan/4
	type job struct{ c, r int }
	jobs := make(chan job)
	results := make([][]RunOutcome, len(cfg.Cases))
	for i := range results {
		results[i] = make([]RunOutcome, cfg.Runs)
	}
	var (
		mu       sync.Mutex
		firstErr error
		done     int
		requests int64
	)
	total := len(cfg.Cases) * cfg.Runs
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				ro, n, err := runCase(cfg, j.c, j.r, duration)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				results[j.c][j.r] = ro
				requests += n
				done++
				if progress != nil {
					progress(done, total)
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for c := range cfg.Cases {
		for r := range cfg.Runs {
			select {
			case jobs <- job{c, r}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return MatrixReport{}, firstErr
	}
	if err := ctx.Err(); err != nil {
		return MatrixReport{}, err
	}
	rep := MatrixReport{Runs: cfg.Runs, Seed: cfg.Seed, Confidence: cfg.Policy.Confidence, PlanS: plan.Seconds(),
		Requests: requests, ElapsedS: time.Since(start).Seconds(), Cases: cfg.Cases, TraceEvery: cfg.TraceEvery}
	for c, cs := range cfg.Cases {
		for pi, name := range policiesFor(cfg, cs) {
			outs := make([]Outcome, len(results[c]))
			for r, ro := range results[c] {
				outs[r] = ro.Outcomes[pi]
			}
			rep.Cells = append(rep.Cells, Summarize(cs, name, outs))
		}
		if cfg.TraceEvery > 0 && cs.Regression() {
			if rep.Traces == nil {
				rep.Traces = map[int]map[string][]float64{}
			}
			rep.Traces[c] = meanTraces(cfg, cs, results[c])
		}
	}
	return rep, nil
}

// policiesFor is the policies a case runs: an α sweep concerns only the
// policies whose α it changes.
func policiesFor(cfg MatrixConfig, c Case) []string {
	if c.Confidence == 0 {
		return cfg.Policies
	}
	var out []string
	for _, p := range cfg.Policies {
		if p == PolicyFixedWindow || p == PolicySequential || p == PolicyAdaptive {
			out = append(out, p)
		}
	}
	return out
}

func runCase(cfg MatrixConfig, c, r int, duration time.Duration) (RunOutcome, int64, error) {
	cs := cfg.Cases[c]
	seed := splitmix(cfg.Seed ^ splitmix(uint64(c)<<32|uint64(r)))
	pc := cfg.Policy
	if cs.Confidence > 0 {
		pc.Confidence = cs.Confidence
	}
	var ps []Policy
	for _, n := range policiesFor(cfg, cs) {
		p, err := NewPolicy(n, pc)
		if err != nil {
			return RunOutcome{}, 0, err
		}
		ps = append(ps, p)
	}
	sc := Scenario{Name: cs.Name, Duration: duration, Rate: cs.Rate, Shape: cs.Shape,
		MedianLatency: MatrixMedianLatency, Sigma: MatrixSigma, ErrorRate: MatrixErrorRate, Seed: seed}
	fault := cs.Fault
	fault.At = cfg.FaultAt
	var n int64
	stream := func(fn func(Request) error) error {
		return sc.Generate(time.Unix(0, 0).UTC(), func(r Request) error { n++; return fn(r) })
	}
	rp := Replayer{Fault: fault, FaultKnown: true, Seed: splitmix(seed), TraceEvery: cfg.TraceEvery}
	outs, err := rp.Run(stream, ps)
	if err != nil {
		return RunOutcome{}, n, fmt.Errorf("case %s %s run %d: %w", cs.Name, cs.Effect, r, err)
	}
	return RunOutcome{Case: c, Run: r, Seed: seed, Outcomes: outs}, n, nil
}

// meanTraces averages each policy's cumulative bad requests over the runs.
func meanTraces(cfg MatrixConfig, cs Case, runs []RunOutcome) map[string][]float64 {
	out := map[string][]float64{}
	for pi, name := range policiesFor(cfg, cs) {
		n := 0
		for _, ro := range runs {
			n = max(n, len(ro.Outcomes[pi].BadTrace))
		}
		acc := make([]float64, n)
		for _, ro := range runs {
			var cum int64
			tr := ro.Outcomes[pi].BadTrace
			for i := range acc {
				if i < len(tr) {
					cum += tr[i]
				}
				acc[i] += float64(cum)
			}
		}
		for i := range acc {
			acc[i] /= float64(len(runs))
		}
		out[name] = acc
	}
	return out
}

// Summarize turns one policy's outcomes on one case into rates with Wilson
// intervals and summaries with t intervals.
func Summarize(c Case, policy string, outs []Outcome) CellSummary {
	s := CellSummary{Case: c, Policy: policy}
	var rolled, promoted, detected, aborted int
	var delays, dreq, bad, dur []float64
	for _, o := range outs {
		bad = append(bad, float64(o.BadRequests))
		if o.RolledBack {
			rolled++
		}
		if o.Aborted {
			aborted++
		}
		if o.Promoted {
			promoted++
			dur = append(dur, o.Duration)
		}
		if o.DetectionDelay != nil {
			detected++
			delays = append(delays, *o.DetectionDelay)
			dreq = append(dreq, float64(o.DetectionRequests))
		}
	}
	n := len(outs)
	s.RolledBack = proportion(rolled, n)
	s.Promoted = proportion(promoted, n)
	s.Aborted = proportion(aborted, n)
	if c.Regression() {
		d, m := proportion(detected, n), proportion(n-detected-aborted, n)
		s.Detected, s.Missed = &d, &m
	}
	s.DetectionDelayS = summarize(delays)
	s.DetectionRequests = summarize(dreq)
	s.BadRequests = summarize(bad)
	s.DurationS = summarize(dur)
	return s
}

func proportion(k, n int) Proportion {
	p := Proportion{K: k, N: n}
	if n == 0 {
		return p
	}
	p.P = float64(k) / float64(n)
	lo, hi, err := analysis.WilsonInterval(int64(k), int64(n), MonteCarloConfidence)
	if err == nil {
		p.Lo, p.Hi = lo, hi
	}
	return p
}

func summarize(xs []float64) Summary {
	s := Summary{N: len(xs)}
	if len(xs) == 0 {
		return s
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	var sum float64
	for _, x := range xs {
		sum += x
	}
	s.Mean = sum / float64(len(xs))
	s.Median = quantile(sorted, 0.5)
	s.P90 = quantile(sorted, 0.9)
	s.Lo, s.Hi = s.Mean, s.Mean
	if len(xs) > 1 {
		var ss float64
		for _, x := range xs {
			ss += (x - s.Mean) * (x - s.Mean)
		}
		se := math.Sqrt(ss / float64(len(xs)-1) / float64(len(xs)))
		t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(len(xs) - 1)}.Quantile(1 - (1-MonteCarloConfidence)/2)
		s.Lo, s.Hi = s.Mean-t*se, s.Mean+t*se
	}
	return s
}

// quantile interpolates linearly between order statistics (numpy's default).
func quantile(sorted []float64, q float64) float64 {
	h := q * float64(len(sorted)-1)
	i := int(h)
	if i+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (h-float64(i))*(sorted[i+1]-sorted[i])
}

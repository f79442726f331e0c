package bench

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/proxy/guard"
	"github.com/deployment-guardian/guardian/rollout"
)

// Policy names accepted by NewPolicy and the command line.
const (
	PolicyThreshold   = "threshold"
	PolicyFixedWindow = "fixed-window-mwu"
	PolicySequential  = "sequential"
	PolicyGuard       = "guard"
	PolicyAdaptive    = "adaptive"
)

// PolicyNames lists every policy in the order reports show them.
func PolicyNames() []string {
	return []string{PolicyThreshold, PolicyFixedWindow, PolicySequential, PolicyGuard, PolicyAdaptive}
}

// ParsePolicies reads a comma-separated list of policy names ("" or "all":
// every policy).
func ParsePolicies(s string) ([]string, error) {
	if s == "" || s == "all" {
		return PolicyNames(), nil
	}
	var out []string
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if !slices.Contains(PolicyNames(), n) {
			return nil, fmt.Errorf("policy %q: want one of %s", n, strings.Join(PolicyNames(), ", "))
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// PlanStep is one canary weight and how long the rollout holds it.
type PlanStep struct {
	Weight int
	Pause  time.Duration
}

// SeedPlan is the seed's canary plan, 1% for 10 min → 5% for 20 min → 25%
// for 30 min → 50% for 30 min → 100%, with the pauses multiplied by scale.
// Every policy runs it, so their rollout durations compare.
func SeedPlan(scale float64) []PlanStep {
	d := func(m float64) time.Duration {
		return time.Duration(m * scale * float64(time.Minute)).Round(time.Second)
	}
	return []PlanStep{{1, d(10)}, {5, d(20)}, {25, d(30)}, {50, d(30)}}
}

// PlanLength is the time the plan takes when nothing waits.
func PlanLength(plan []PlanStep) time.Duration {
	var t time.Duration
	for _, s := range plan {
		t += s.Pause
	}
	return t
}

// PolicyConfig holds every policy's knobs. Zero values take the defaults
// that Defaults documents.
type PolicyConfig struct {
	// Plan is the canary plan shared by all policies (default SeedPlan(1)).
	Plan []PlanStep
	// ProgressDeadline bounds how long a rollout may wait beyond its plan
	// for evidence before the engine aborts it (default: the plan's length).
	ProgressDeadline time.Duration

	// Confidence of the statistical policies (default 0.95): sequential,
	// adaptive and fixed-window split α = 1 − Confidence across metrics.
	Confidence float64
	// Interval is how often sequential and adaptive look (default 1s,
	// Guardian's analysis interval).
	Interval time.Duration
	// MaxErrorIncrease, MaxP50Ratio and MaxP99Ratio are the allowed effects
	// of the statistical policies (defaults 1 point, ×1.2, ×1.5).
	MaxErrorIncrease float64
	MaxP50Ratio      float64
	MaxP99Ratio      float64

	// Window is the fixed-window policy's judgement period (default 5m).
	Window time.Duration

	// ThresholdInterval is how often the threshold policy measures (default
	// 1m, the peers' metric template interval); ThresholdErrorRate and
	// ThresholdP99 are its fixed limits (defaults 1%, Flagger's
	// request-success-rate 99%, and 500ms, its request-duration);
	// FailureLimit is how many failed measurements it tolerates before the
	// next one rolls back (Argo Rollouts' failureLimit; default 3, as in
	// Argo's AnalysisTemplate examples; negative: none tolerated).
	ThresholdInterval  time.Duration
	ThresholdErrorRate float64
	ThresholdP99       time.Duration
	FailureLimit       int

	// GuardTriggers are the in-path critical triggers (default
	// "error_rate > 5%" and "p99_latency > 1000ms"); GuardConfidence is the
	// guard's (default 0.99).
	GuardTriggers   []string
	GuardConfidence float64

	// ScoreBucket is how much traffic one judge sample covers for the
	// adaptive policy's score (default 10s).
	ScoreBucket time.Duration
}

// Defaults fills in unset fields.
func (c *PolicyConfig) Defaults() {
	if len(c.Plan) == 0 {
		c.Plan = SeedPlan(1)
	}
	if c.ProgressDeadline <= 0 {
		c.ProgressDeadline = max(PlanLength(c.Plan), time.Minute)
	}
	if c.Confidence == 0 {
		c.Confidence = 0.95
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.MaxErrorIncrease == 0 {
		c.MaxErrorIncrease = 0.01
	}
	if c.MaxP50Ratio == 0 {
		c.MaxP50Ratio = 1.2
	}
	if c.MaxP99Ratio == 0 {
		c.MaxP99Ratio = 1.5
	}
	if c.Window <= 0 {
		c.Window = 5 * time.Minute
	}
	if c.ThresholdInterval <= 0 {
		c.ThresholdInterval = time.Minute
	}
	if c.ThresholdErrorRate == 0 {
		c.ThresholdErrorRate = 0.01
	}
	if c.ThresholdP99 <= 0 {
		c.ThresholdP99 = 500 * time.Millisecond
	}
	switch {
	case c.FailureLimit == 0:
		c.FailureLimit = 3
	case c.FailureLimit < 0:
		c.FailureLimit = 0 // asked for explicitly: the first failure rolls back
	}
	if len(c.GuardTriggers) == 0 {
		c.GuardTriggers = []string{"error_rate > 5%", "p99_latency > 1000ms"}
	}
	if c.GuardConfidence == 0 {
		c.GuardConfidence = guard.DefaultConfidence
	}
	if c.ScoreBucket <= 0 {
		c.ScoreBucket = 10 * time.Second
	}
}

// Validate names the first knob that is out of range.
func (c PolicyConfig) Validate() error {
	switch {
	case !(c.Confidence > 0 && c.Confidence < 1):
		return fmt.Errorf("confidence %v is not in (0, 1)", c.Confidence)
	case c.MaxErrorIncrease < 0 || c.MaxErrorIncrease >= 1:
		return fmt.Errorf("max error increase %v is not in [0, 1)", c.MaxErrorIncrease)
	case c.MaxP50Ratio < 1 || c.MaxP99Ratio < 1:
		return fmt.Errorf("latency ratios (%v, %v) must be at least 1", c.MaxP50Ratio, c.MaxP99Ratio)
	case c.ThresholdErrorRate <= 0 || c.ThresholdErrorRate >= 1:
		return fmt.Errorf("threshold error rate %v is not in (0, 1)", c.ThresholdErrorRate)
	case !(c.GuardConfidence > 0 && c.GuardConfidence < 1):
		return fmt.Errorf("guard confidence %v is not in (0, 1)", c.GuardConfidence)
	}
	for i, s := range c.Plan {
		if s.Weight <= 0 || s.Weight >= 100 {
			return fmt.Errorf("plan step %d: weight %d is not in 1..99", i+1, s.Weight)
		}
		if s.Pause < time.Second {
			return fmt.Errorf("plan step %d: pause %s is shorter than 1s", i+1, s.Pause)
		}
		if i > 0 && s.Weight <= c.Plan[i-1].Weight {
			return fmt.Errorf("plan step %d: weight %d does not grow", i+1, s.Weight)
		}
	}
	return nil
}

// NewPolicy builds the named policy. Every policy drives its own
// rollout.Engine over the same plan; they differ only in what they observe
// and judge.
func NewPolicy(name string, cfg PolicyConfig) (Policy, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &enginePolicy{name: name, cfg: cfg, interval: cfg.Interval}
	var metrics []string
	adaptive := false
	switch name {
	case PolicyThreshold:
		p.interval = cfg.ThresholdInterval
		p.judge = &thresholdJudge{cfg: cfg}
		metrics = []string{"{name: error_rate}", "{name: latency_p99}"}
	case PolicyFixedWindow:
		p.interval = cfg.Window
		m, err := newMonitor(cfg, analysis.TestTwoProportionZ, analysis.TestMannWhitneyU)
		if err != nil {
			return nil, err
		}
		p.judge = &fixedJudge{mon: m}
		metrics = specMetrics(cfg, "two-proportion-z", "mann-whitney-u")
	case PolicySequential, PolicyAdaptive:
		m, err := newMonitor(cfg, analysis.TestSequential, analysis.TestSequential)
		if err != nil {
			return nil, err
		}
		sj := &sequentialJudge{mon: m}
		p.judge = sj
		if name == PolicyAdaptive {
			adaptive = true
			p.judge = &adaptiveJudge{seq: sj, bucket: cfg.ScoreBucket}
		}
		metrics = specMetrics(cfg, "sequential", "sequential")
	case PolicyGuard:
		var trig []guard.Trigger
		for _, s := range cfg.GuardTriggers {
			t, err := guard.ParseTrigger(s)
			if err != nil {
				return nil, fmt.Errorf("guard trigger %q: %w", s, err)
			}
			trig = append(trig, t)
		}
		g, err := guard.New(guard.Config{Triggers: trig, Watch: canaryIndex, Confidence: cfg.GuardConfidence}, nil)
		if err != nil {
			return nil, err
		}
		p.guard = g
		p.judge = noJudge{}
	default:
		return nil, fmt.Errorf("policy %q: want one of %s", name, strings.Join(PolicyNames(), ", "))
	}
	spec, err := benchSpec(name, cfg, metrics, adaptive)
	if err != nil {
		return nil, err
	}
	eng, err := rollout.NewEngine(spec)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", name, err)
	}
	p.eng = eng
	return p, nil
}

// Version indexes for the guard, which watches versions by number.
const (
	stableIndex = 0
	canaryIndex = 1
)

func newMonitor(cfg PolicyConfig, errTest, latTest string) (*analysis.Monitor, error) {
	return analysis.NewMonitor([]analysis.MetricSpec{
		{Name: "error_rate", Test: errTest, MaxIncrease: cfg.MaxErrorIncrease},
		{Name: "latency_p50", Test: latTest, MaxRatio: cfg.MaxP50Ratio},
		{Name: "latency_p99", Test: latTest, MaxRatio: cfg.MaxP99Ratio},
	}, cfg.Confidence, analysis.MonitorOptions{})
}

func specMetrics(cfg PolicyConfig, errTest, latTest string) []string {
	return []string{
		fmt.Sprintf("{name: error_rate, test: %s, maxIncrease: %g%%}", errTest, cfg.MaxErrorIncrease*100),
		fmt.Sprintf("{name: latency_p50, test: %s, maxRatio: %g}", latTest, cfg.MaxP50Ratio),
		fmt.Sprintf("{name: latency_p99, test: %s, maxRatio: %g}", latTest, cfg.MaxP99Ratio),
	}
}

// benchSpec writes the policy's rollout as a user would, and parses it, so
// the bench runs a spec that Guardian's own validation accepted.
func benchSpec(name string, cfg PolicyConfig, metrics []string, adaptive bool) (rollout.Spec, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: %s\nkind: %s\nmetadata: {name: bench-%s}\nspec:\n", rollout.APIVersion, rollout.Kind, name)
	b.WriteString("  listen: 127.0.0.1:1\n  stable: {url: http://127.0.0.1:2}\n  canary: {url: http://127.0.0.1:3}\n")
	fmt.Fprintf(&b, "  progressDeadline: %s\n", cfg.ProgressDeadline)
	b.WriteString("  strategy:\n    canary:\n")
	if adaptive {
		b.WriteString("      adaptive: {enabled: true, maxWeight: 50, maxStepWeight: 25}\n")
	}
	b.WriteString("      steps:\n")
	for _, s := range cfg.Plan {
		fmt.Fprintf(&b, "        - setWeight: %d\n        - pause: {duration: %s}\n", s.Weight, s.Pause)
	}
	b.WriteString("        - setWeight: 100\n")
	fmt.Fprintf(&b, "  analysis:\n    interval: %s\n    confidence: %g\n", max(cfg.Interval, rollout.MinInterval), cfg.Confidence)
	if len(metrics) == 0 {
		// Explicitly none: the guard policy has no analysis to wait for.
		b.WriteString("    metrics: []\n")
	} else {
		b.WriteString("    metrics:\n")
		for _, m := range metrics {
			fmt.Fprintf(&b, "      - %s\n", m)
		}
	}
	if name == PolicyGuard {
		b.WriteString("  rollbackTriggers:\n    critical:\n")
		for _, t := range cfg.GuardTriggers {
			fmt.Fprintf(&b, "      - %q\n", t)
		}
	}
	specs, err := rollout.Parse("bench-"+name, []byte(b.String()))
	if err != nil {
		return rollout.Spec{}, fmt.Errorf("policy %s: %w", name, err)
	}
	return specs[0], nil
}

// judge turns one interval's traffic into what the engine observes.
type judge interface {
	observe(b analysis.Batch, window rollout.Snapshot, st rollout.State, now time.Time) (rollout.Observation, error)
	// gate answers an analysis gate over the window since the last reset.
	resetWindow()
}

// enginePolicy is the bench's driver of one rollout.Engine: the same
// engine that runs in production, fed on the replay's virtual clock.
type enginePolicy struct {
	name     string
	cfg      PolicyConfig
	eng      *rollout.Engine
	st       rollout.State
	judge    judge
	guard    *guard.Guard
	interval time.Duration
	weights  rollout.Weights
}

func (p *enginePolicy) Name() string            { return p.name }
func (p *enginePolicy) Interval() time.Duration { return p.interval }

func (p *enginePolicy) Start(now time.Time) (rollout.Weights, error) {
	st, acts := p.eng.Init(now)
	p.st = st
	p.weights = rollout.Weights{"stable": 100, "canary": 0}
	p.apply(acts)
	return p.weights, nil
}

// apply carries out the engine's actions that matter to traffic; Persist,
// Notify and hooks have nothing to act on in a replay.
func (p *enginePolicy) apply(acts []rollout.Action) {
	for _, a := range acts {
		switch a.Kind {
		case rollout.ActSetWeights:
			p.weights = a.Weights
		case rollout.ActResetAnalysis:
			p.judge.resetWindow()
		}
	}
}

func (p *enginePolicy) Observe(version string, r Request, now time.Time) (rollout.Weights, bool) {
	if p.guard == nil || version != "canary" || p.st.Phase.Done() {
		return nil, false
	}
	p.guard.Observe(canaryIndex, r.Latency, r.Failed())
	trip, ok := p.guard.Tripped()
	if !ok {
		return nil, false
	}
	st, acts := p.eng.Step(p.st, rollout.Observation{Trips: []rollout.Trip{{Trigger: trip.Trigger.String(), Reason: trip.Reason}}}, now)
	p.st = st
	p.apply(acts)
	return p.weights, true
}

func (p *enginePolicy) Tick(total, window rollout.Snapshot, now time.Time) (rollout.Weights, Phase, error) {
	if p.st.Phase.Done() {
		return nil, phaseOf(p.st.Phase), nil
	}
	c, s := window.Versions["canary"], window.Versions["stable"]
	b := analysis.Batch{
		CanaryRequests: c.Requests, CanaryErrors: c.Errors, CanaryLatency: c.Latency,
		BaselineRequests: s.Requests, BaselineErrors: s.Errors, BaselineLatency: s.Latency,
	}
	// The weights in force during the window are those set at the previous
	// tick: the share is known before the batch, as the tests require.
	if w := p.weights["canary"]; w > 0 && w < 100 {
		b.CanaryShare = float64(w) / 100
	}
	obs, err := p.judge.observe(b, window, p.st, now)
	if err != nil {
		return nil, Running, err
	}
	st, acts := p.eng.Step(p.st, obs, now)
	p.st = st
	p.apply(acts)
	for _, a := range acts {
		if a.Kind == rollout.ActRunGate {
			// The plans here have no gates; a gate the bench cannot run must
			// not pass silently.
			return nil, Running, fmt.Errorf("the plan asks for a %s gate, which the bench cannot run", a.Gate.Kind)
		}
	}
	return p.weights, phaseOf(p.st.Phase), nil
}

func phaseOf(p rollout.Phase) Phase {
	switch p {
	case rollout.Promoted:
		return Promoted
	case rollout.RolledBack:
		return RolledBack
	case rollout.Aborted:
		return Aborted
	}
	return Running
}

// Message is the engine's reason for the rollout's current phase.
func (p *enginePolicy) Message() string { return p.st.Message }

type noJudge struct{}

func (noJudge) observe(analysis.Batch, rollout.Snapshot, rollout.State, time.Time) (rollout.Observation, error) {
	return rollout.Observation{}, nil
}
func (noJudge) resetWindow() {}

// thresholdJudge is the peers' default metric templates: the canary's error
// rate and p99 over the last interval against fixed limits, no statistics.
type thresholdJudge struct {
	cfg      PolicyConfig
	failures int
}

func (j *thresholdJudge) observe(b analysis.Batch, _ rollout.Snapshot, _ rollout.State, _ time.Time) (rollout.Observation, error) {
	if b.CanaryRequests == 0 {
		return rollout.Observation{Verdicts: []analysis.Verdict{
			{Metric: "error_rate", Test: "threshold", Outcome: analysis.NoData, Reason: "no canary requests this interval"},
			{Metric: "latency_p99", Test: "threshold", Outcome: analysis.NoData, Reason: "no canary requests this interval"},
		}}, nil
	}
	rate := float64(b.CanaryErrors) / float64(b.CanaryRequests)
	var p99 float64
	if b.CanaryLatency != nil {
		p99 = float64(b.CanaryLatency.ValueAtQuantile(99)) / 1000
	}
	limitMS := float64(j.cfg.ThresholdP99) / float64(time.Millisecond)
	ev := analysis.Verdict{Metric: "error_rate", Test: "threshold", Outcome: analysis.Pass, NCanary: b.CanaryRequests,
		Canary: rate, Threshold: fmt.Sprintf("%g%%", j.cfg.ThresholdErrorRate*100)}
	lv := analysis.Verdict{Metric: "latency_p99", Test: "threshold", Outcome: analysis.Pass, NCanary: b.CanaryRequests,
		Canary: p99, Threshold: fmt.Sprintf("%gms", limitMS)}
	failed := false
	if rate > j.cfg.ThresholdErrorRate {
		ev.Outcome, failed = analysis.Fail, true
		ev.Reason = fmt.Sprintf("canary error rate %.3g%% > %s", rate*100, ev.Threshold)
	}
	if p99 > limitMS {
		lv.Outcome, failed = analysis.Fail, true
		lv.Reason = fmt.Sprintf("canary p99 %.4gms > %s", p99, lv.Threshold)
	}
	if failed {
		j.failures++
		if j.failures <= j.cfg.FailureLimit {
			// Within the failure limit a failed measurement only withholds
			// evidence, as Argo Rollouts' failureLimit does.
			for _, v := range []*analysis.Verdict{&ev, &lv} {
				if v.Outcome == analysis.Fail {
					v.Outcome = analysis.Inconclusive
				}
			}
		}
	}
	return rollout.Observation{Verdicts: []analysis.Verdict{ev, lv}}, nil
}

func (j *thresholdJudge) resetWindow() {}

// fixedJudge is the Kayenta-like policy: the tests of a fixed horizon, run
// once per window, on the window's traffic only.
type fixedJudge struct{ mon *analysis.Monitor }

func (j *fixedJudge) observe(b analysis.Batch, _ rollout.Snapshot, _ rollout.State, _ time.Time) (rollout.Observation, error) {
	if _, err := j.mon.Observe(b); err != nil {
		return rollout.Observation{}, err
	}
	vs := j.mon.Evaluate()
	j.mon.ResetWindow()
	return rollout.Observation{Verdicts: vs}, nil
}

func (j *fixedJudge) resetWindow() { j.mon.ResetWindow() }

// sequentialJudge is Guardian's default: anytime-valid e-processes over
// every interval's batch, one per metric for the whole rollout.
type sequentialJudge struct{ mon *analysis.Monitor }

func (j *sequentialJudge) observe(b analysis.Batch, _ rollout.Snapshot, _ rollout.State, _ time.Time) (rollout.Observation, error) {
	if b.CanaryShare == 0 {
		// One version takes all traffic: nothing to compare this interval.
		return rollout.Observation{}, nil
	}
	vs, err := j.mon.Observe(b)
	if err != nil {
		return rollout.Observation{}, err
	}
	return rollout.Observation{Verdicts: vs}, nil
}

func (j *sequentialJudge) resetWindow() { j.mon.ResetWindow() }

// adaptiveJudge is the seed's adaptive progression: the sequential tests
// decide rollback, and a Kayenta-style judge score over the current step's
// samples (one per ScoreBucket per metric) decides how far to step up.
type adaptiveJudge struct {
	seq    *sequentialJudge
	bucket time.Duration

	cur        bucketAcc
	bucketEnd  time.Time
	step       int
	samples    [3][2][]float64 // metric × (canary, baseline)
	score      *float64
	scoreTaken time.Time
}

type bucketAcc struct {
	n, k   [2]int64
	p50sum [2]float64
	p99sum [2]float64
	ticks  [2]int
}

func (j *adaptiveJudge) observe(b analysis.Batch, w rollout.Snapshot, st rollout.State, now time.Time) (rollout.Observation, error) {
	obs, err := j.seq.observe(b, w, st, now)
	if err != nil {
		return obs, err
	}
	if st.Step != j.step {
		j.step = st.Step
		j.samples = [3][2][]float64{}
		j.cur = bucketAcc{}
		j.bucketEnd = time.Time{}
		j.score = nil
	}
	if j.bucketEnd.IsZero() {
		j.bucketEnd = now.Add(j.bucket)
	}
	for i, h := range [2]struct {
		n, k int64
		v    rollout.VersionStats
	}{{b.CanaryRequests, b.CanaryErrors, w.Versions["canary"]}, {b.BaselineRequests, b.BaselineErrors, w.Versions["stable"]}} {
		j.cur.n[i] += h.n
		j.cur.k[i] += h.k
		if h.v.Latency != nil && h.v.Latency.TotalCount() > 0 {
			j.cur.p50sum[i] += float64(h.v.Latency.ValueAtQuantile(50))
			j.cur.p99sum[i] += float64(h.v.Latency.ValueAtQuantile(99))
			j.cur.ticks[i]++
		}
	}
	if !now.Before(j.bucketEnd) {
		for i := range 2 {
			if j.cur.n[i] == 0 || j.cur.ticks[i] == 0 {
				continue
			}
			j.samples[0][i] = append(j.samples[0][i], float64(j.cur.k[i])/float64(j.cur.n[i]))
			j.samples[1][i] = append(j.samples[1][i], j.cur.p50sum[i]/float64(j.cur.ticks[i]))
			j.samples[2][i] = append(j.samples[2][i], j.cur.p99sum[i]/float64(j.cur.ticks[i]))
		}
		j.cur = bucketAcc{}
		j.bucketEnd = now.Add(j.bucket)
		j.score = nil
	}
	if j.score == nil && len(j.samples[0][0]) >= 3 && len(j.samples[0][1]) >= 3 {
		res, err := analysis.Judge([]analysis.JudgeMetric{
			{Name: "error_rate", Canary: j.samples[0][0], Baseline: j.samples[0][1], Direction: analysis.Increase},
			{Name: "latency_p50", Canary: j.samples[1][0], Baseline: j.samples[1][1], Direction: analysis.Increase},
			{Name: "latency_p99", Canary: j.samples[2][0], Baseline: j.samples[2][1], Direction: analysis.Increase},
		}, analysis.JudgeConfig{})
		if err != nil && !errors.Is(err, analysis.ErrInput) {
			return obs, err
		}
		if err == nil && !math.IsNaN(res.Score) {
			s := res.Score / 100
			j.score = &s
		}
	}
	obs.Score = j.score
	return obs, nil
}

func (j *adaptiveJudge) resetWindow() { j.seq.resetWindow() }

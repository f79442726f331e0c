package analysis

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Kayenta's NetflixACAJudge (statistics.md §3): classify each metric from the
// Hodges–Lehmann shift and its 98% interval plus an effect size, score groups
// of metrics, and turn the score into a verdict. Guardian adds Inconclusive:
// with a tolerance configured, a metric whose interval still reaches beyond
// it is not called a Pass.

// Direction is which change of a metric counts against the canary.
type Direction string

const (
	Increase Direction = "increase"
	Decrease Direction = "decrease"
	Either   Direction = "either"
)

// EffectMeasure is how a metric's effect size is measured.
type EffectMeasure string

const (
	// MeanRatio is mean(canary)/mean(baseline).
	MeanRatio EffectMeasure = "meanRatio"
	// CLES is P(canary > baseline) + ½P(tie).
	CLES EffectMeasure = "cles"
)

// Classification is a metric's class in the judge.
type Classification string

const (
	ClassPass             Classification = "Pass"
	ClassHigh             Classification = "High"
	ClassLow              Classification = "Low"
	ClassNoData           Classification = "NoData"
	ClassNodataFailMetric Classification = "NodataFailMetric"
	// ClassInconclusive: not significantly High or Low, but the interval
	// still reaches beyond the allowed effect (Guardian's addition).
	ClassInconclusive Classification = "Inconclusive"
)

// EffectSize bounds how large a significant change must be to count. Zero
// values take Kayenta's defaults: 1.0 for meanRatio, 0.5 for cles (any
// significant change counts).
type EffectSize struct {
	Measure          EffectMeasure `json:"measure,omitempty"`
	AllowedIncrease  float64       `json:"allowedIncrease,omitempty"`
	AllowedDecrease  float64       `json:"allowedDecrease,omitempty"`
	CriticalIncrease float64       `json:"criticalIncrease,omitempty"`
	CriticalDecrease float64       `json:"criticalDecrease,omitempty"`
}

// JudgeMetric is one metric's samples (for example one value per minute
// per version) and its configuration.
type JudgeMetric struct {
	Name     string    `json:"name"`
	Group    string    `json:"group,omitempty"`
	Canary   []float64 `json:"canary"`
	Baseline []float64 `json:"baseline"`
	// Direction defaults to either.
	Direction    Direction  `json:"direction,omitempty"`
	Critical     bool       `json:"critical,omitempty"`
	MustHaveData bool       `json:"mustHaveData,omitempty"`
	Muted        bool       `json:"muted,omitempty"`
	EffectSize   EffectSize `json:"effectSize,omitempty"`
	// NaNStrategy is "remove" (the default: drop NaN samples) or "replace"
	// (count them as 0).
	NaNStrategy string `json:"nanStrategy,omitempty"`
}

// JudgeConfig holds the scoring parameters.
type JudgeConfig struct {
	// GroupWeights gives some groups a share of 100; groups not listed
	// share what is left equally.
	GroupWeights map[string]float64 `json:"groupWeights,omitempty"`
	// PassScore and MarginalScore are the ThresholdScoreClassifier limits
	// (defaults 95 and 75).
	PassScore     float64 `json:"pass,omitempty"`
	MarginalScore float64 `json:"marginal,omitempty"`
	// Confidence of the Hodges–Lehmann interval (default 0.98) and
	// Tolerance, the fraction of |HL| the interval must clear (default 0.25).
	Confidence float64 `json:"confidence,omitempty"`
	Tolerance  float64 `json:"tolerance,omitempty"`
}

// Judge verdicts: ThresholdScoreClassifier's three plus Guardian's Inconclusive.
const (
	JudgePass         = "Pass"
	JudgeMarginal     = "Marginal"
	JudgeFail         = "Fail"
	JudgeInconclusive = "Inconclusive"
)

// MetricResult is one metric's classification with its evidence.
type MetricResult struct {
	Name           string         `json:"name"`
	Group          string         `json:"group"`
	Classification Classification `json:"classification"`
	Critical       bool           `json:"critical,omitempty"`
	Muted          bool           `json:"muted,omitempty"`
	// CriticalFailure: a critical metric beyond its critical effect, or
	// without the data it must have.
	CriticalFailure bool        `json:"criticalFailure,omitempty"`
	NCanary         int         `json:"n_canary"`
	NBaseline       int         `json:"n_baseline"`
	MeanCanary      float64     `json:"mean_canary"`
	MeanBaseline    float64     `json:"mean_baseline"`
	HodgesLehmann   *float64    `json:"hodges_lehmann,omitempty"`
	CI              *[2]float64 `json:"ci,omitempty"`
	Effect          *float64    `json:"effect,omitempty"`
	Reason          string      `json:"reason"`
}

// GroupScore is one group's share of Pass among its judged metrics.
type GroupScore struct {
	Name   string  `json:"name"`
	Weight float64 `json:"weight"`
	Score  float64 `json:"score"`
	// Counts per classification (muted metrics excluded).
	Counts map[Classification]int `json:"counts"`
}

// JudgeResult is the judge's verdict, score and the evidence behind them.
type JudgeResult struct {
	Verdict         string         `json:"verdict"`
	Score           float64        `json:"score"`
	CriticalFailure bool           `json:"criticalFailure,omitempty"`
	Reason          string         `json:"reason"`
	Groups          []GroupScore   `json:"groups"`
	Metrics         []MetricResult `json:"metrics"`
}

func (c *JudgeConfig) validate() error {
	if c.PassScore == 0 && c.MarginalScore == 0 {
		c.PassScore, c.MarginalScore = 95, 75
	}
	if c.Confidence == 0 {
		c.Confidence = 0.98
	}
	if c.Tolerance == 0 {
		c.Tolerance = 0.25
	}
	switch {
	case !(c.PassScore >= 0 && c.PassScore <= 100 && c.MarginalScore >= 0 && c.MarginalScore <= c.PassScore):
		return fmt.Errorf("%w: thresholds pass %v, marginal %v: want 0 <= marginal <= pass <= 100", ErrInput, c.PassScore, c.MarginalScore)
	case !(c.Confidence > 0 && c.Confidence < 1):
		return fmt.Errorf("%w: confidence %v must be in (0, 1)", ErrInput, c.Confidence)
	case !(c.Tolerance >= 0) || math.IsInf(c.Tolerance, 1):
		return fmt.Errorf("%w: tolerance %v must be a finite number >= 0", ErrInput, c.Tolerance)
	}
	total := 0.0
	for g, w := range c.GroupWeights {
		if !(w >= 0) || math.IsInf(w, 1) {
			return fmt.Errorf("%w: group %q weight %v must be a finite number >= 0", ErrInput, g, w)
		}
		total += w
	}
	if total > 100+1e-9 {
		return fmt.Errorf("%w: group weights sum to %v, more than 100", ErrInput, total)
	}
	return nil
}

func (m *JudgeMetric) validate(i int) error {
	where := fmt.Sprintf("metrics[%d] (%s)", i, m.Name)
	if m.Name == "" {
		return fmt.Errorf("%w: %s: name is empty", ErrInput, where)
	}
	switch m.Direction {
	case "":
		m.Direction = Either
	case Increase, Decrease, Either:
	default:
		return fmt.Errorf("%w: %s: direction %q: want increase, decrease or either", ErrInput, where, m.Direction)
	}
	switch m.NaNStrategy {
	case "", "remove", "replace":
	default:
		return fmt.Errorf("%w: %s: nanStrategy %q: want remove or replace", ErrInput, where, m.NaNStrategy)
	}
	e := &m.EffectSize
	def := 1.0
	switch e.Measure {
	case "", MeanRatio:
		e.Measure = MeanRatio
	case CLES:
		def = 0.5
	default:
		return fmt.Errorf("%w: %s: effectSize.measure %q: want meanRatio or cles", ErrInput, where, e.Measure)
	}
	for _, f := range []*float64{&e.AllowedIncrease, &e.AllowedDecrease, &e.CriticalIncrease, &e.CriticalDecrease} {
		if *f == 0 {
			*f = def
		}
		if !(*f > 0) || math.IsInf(*f, 1) || (e.Measure == CLES && *f > 1) {
			return fmt.Errorf("%w: %s: effect sizes must be positive and finite (at most 1 for cles)", ErrInput, where)
		}
	}
	for j, v := range append(append([]float64(nil), m.Canary...), m.Baseline...) {
		if math.IsInf(v, 0) {
			return fmt.Errorf("%w: %s: sample value %d is infinite", ErrInput, where, j+1)
		}
	}
	return nil
}

// Judge classifies every metric, scores the groups with Kayenta's
// WeightedSumScorer and classifies the score. Metrics are judged canary
// (experiment) against baseline (control). Bad configuration is an
// ErrInput error naming the metric.
func Judge(metrics []JudgeMetric, cfg JudgeConfig) (JudgeResult, error) {
	if err := cfg.validate(); err != nil {
		return JudgeResult{}, err
	}
	if len(metrics) == 0 {
		return JudgeResult{}, fmt.Errorf("%w: no metrics to judge", ErrInput)
	}
	seen := map[string]bool{}
	res := JudgeResult{Metrics: make([]MetricResult, len(metrics))}
	for i := range metrics {
		m := metrics[i] // a copy: defaults must not leak to the caller
		if err := m.validate(i); err != nil {
			return JudgeResult{}, err
		}
		if seen[m.Name] {
			return JudgeResult{}, fmt.Errorf("%w: metrics[%d]: metric %s is listed twice", ErrInput, i, m.Name)
		}
		seen[m.Name] = true
		res.Metrics[i] = classifyMetric(m, cfg)
	}
	score(&res, cfg)
	return res, nil
}

func cleanSamples(xs []float64, strategy string) []float64 {
	out := make([]float64, 0, len(xs))
	for _, v := range xs {
		if math.IsNaN(v) {
			if strategy != "replace" {
				continue
			}
			v = 0
		}
		out = append(out, v)
	}
	return out
}

func meanOf(xs []float64) float64 {
	s := 0.0
	for _, v := range xs {
		s += v
	}
	return s / float64(len(xs))
}

func classifyMetric(m JudgeMetric, cfg JudgeConfig) MetricResult {
	x, y := cleanSamples(m.Canary, m.NaNStrategy), cleanSamples(m.Baseline, m.NaNStrategy)
	r := MetricResult{Name: m.Name, Group: m.Group, Critical: m.Critical, Muted: m.Muted, NCanary: len(x), NBaseline: len(y)}
	if len(x) == 0 || len(y) == 0 {
		side := sideName(len(x) == 0)
		r.Classification = ClassNoData
		r.Reason = fmt.Sprintf("no %s data", side)
		if m.MustHaveData || m.Critical {
			r.Classification = ClassNodataFailMetric
			r.CriticalFailure = m.Critical
			r.Reason = fmt.Sprintf("no %s data, and the metric must have data", side)
		}
		return r
	}
	r.MeanCanary, r.MeanBaseline = meanOf(x), meanOf(y)
	if allEqual(x, y) {
		r.Classification = ClassPass
		r.Reason = "canary and baseline are the same constant"
		return r
	}
	hl, ci, err := HodgesLehmann(x, y, cfg.Confidence)
	if err != nil {
		// Only invalid input reaches here, and it was validated above.
		r.Classification = ClassNoData
		r.Reason = "no usable data: " + err.Error()
		return r
	}
	r.HodgesLehmann, r.CI = &hl, &ci

	e := m.EffectSize
	var effect float64
	switch e.Measure {
	case CLES:
		mw, err := MannWhitney(x, y, TwoSided)
		effect = mw.CLES
		if err != nil {
			effect = math.NaN()
		}
	default:
		effect = r.MeanCanary / r.MeanBaseline
		if r.MeanBaseline == 0 {
			effect = math.NaN()
		}
	}
	if !math.IsNaN(effect) && !math.IsInf(effect, 0) {
		r.Effect = &effect
	}
	// A NaN effect skips the effect check, as in Kayenta.
	atLeast := func(limit float64) bool { return r.Effect == nil || effect >= limit }
	atMost := func(limit float64) bool { return r.Effect == nil || effect <= limit }
	tol := cfg.Tolerance * math.Abs(hl)
	up := m.Direction == Increase || m.Direction == Either
	down := m.Direction == Decrease || m.Direction == Either
	ciText := fmt.Sprintf("HL shift %.4g, %g%% CI [%.4g, %.4g]", hl, 100*cfg.Confidence, ci[0], ci[1])
	effText := "effect n/a"
	if r.Effect != nil {
		effText = fmt.Sprintf("%s %.4g", e.Measure, effect)
	}
	switch {
	case up && ci[0] > tol && atLeast(e.AllowedIncrease):
		r.Classification = ClassHigh
		r.CriticalFailure = m.Critical && atLeast(e.CriticalIncrease)
		r.Reason = fmt.Sprintf("canary higher: %s above 0; %s ≥ allowed %g", ciText, effText, e.AllowedIncrease)
	case down && ci[1] < -tol && atMost(e.AllowedDecrease):
		r.Classification = ClassLow
		r.CriticalFailure = m.Critical && atMost(e.CriticalDecrease)
		r.Reason = fmt.Sprintf("canary lower: %s below 0; %s ≤ allowed %g", ciText, effText, e.AllowedDecrease)
	case beyondTolerance(m, r, ci):
		r.Classification = ClassInconclusive
		r.Reason = fmt.Sprintf("%s reaches beyond the allowed effect (%s); more data needed", ciText, effText)
	default:
		r.Classification = ClassPass
		r.Reason = fmt.Sprintf("%s; %s: within allowed", ciText, effText)
	}
	if r.CriticalFailure {
		r.Reason += "; critical limit reached"
	}
	return r
}

func allEqual(x, y []float64) bool {
	v := x[0]
	for _, s := range [][]float64{x, y} {
		for _, w := range s {
			if w != v {
				return false
			}
		}
	}
	return true
}

// beyondTolerance reports whether a metric with a configured meanRatio
// tolerance (allowed ≠ 1) has a CI that still reaches past it, translated to
// the HL scale as (allowed − 1)·mean(baseline). With Kayenta's default of 1
// there is no tolerance to separate from, and Kayenta's Pass stands.
func beyondTolerance(m JudgeMetric, r MetricResult, ci [2]float64) bool {
	e := m.EffectSize
	if e.Measure != MeanRatio || r.MeanBaseline <= 0 {
		return false
	}
	up := m.Direction == Increase || m.Direction == Either
	down := m.Direction == Decrease || m.Direction == Either
	if up && e.AllowedIncrease > 1 && ci[1] > (e.AllowedIncrease-1)*r.MeanBaseline {
		return true
	}
	if down && e.AllowedDecrease < 1 && ci[0] < (e.AllowedDecrease-1)*r.MeanBaseline {
		return true
	}
	return false
}

func score(res *JudgeResult, cfg JudgeConfig) {
	groups := map[string]*GroupScore{}
	var order []string
	judged, noData, inconclusive := 0, 0, 0
	for _, m := range res.Metrics {
		if m.Muted {
			continue
		}
		judged++
		g := groups[m.Group]
		if g == nil {
			g = &GroupScore{Name: m.Group, Counts: map[Classification]int{}}
			groups[m.Group] = g
			order = append(order, m.Group)
		}
		g.Counts[m.Classification]++
		switch m.Classification {
		case ClassNoData:
			noData++
		case ClassInconclusive:
			inconclusive++
		}
		res.CriticalFailure = res.CriticalFailure || m.CriticalFailure
	}
	sort.Strings(order)
	weighted, unweighted := 0.0, 0
	for _, name := range order {
		if w, ok := cfg.GroupWeights[name]; ok {
			weighted += w
		} else {
			unweighted++
		}
	}
	summary := 0.0
	for _, name := range order {
		g := groups[name]
		c := g.Counts
		// NoData and Inconclusive stay out of the denominator; a group with
		// nothing judged counts as 100 (ScoringHelper).
		den := c[ClassPass] + c[ClassHigh] + c[ClassLow] + c[ClassNodataFailMetric]
		g.Score = 100
		if den > 0 {
			g.Score = 100 * float64(c[ClassPass]) / float64(den)
		}
		if w, ok := cfg.GroupWeights[name]; ok {
			g.Weight = w
		} else {
			g.Weight = (100 - weighted) / float64(unweighted)
		}
		summary += g.Score * g.Weight / 100
		res.Groups = append(res.Groups, *g)
	}
	res.Score = math.Round(summary*100) / 100
	switch {
	case judged == 0:
		res.Score = 0
		res.Verdict = JudgeInconclusive
		res.Reason = "every metric is muted: nothing was judged"
		return
	case res.CriticalFailure:
		res.Score = 0
		res.Reason = "a critical metric failed: " + strings.Join(failedNames(res.Metrics, true), ", ")
	case 2*noData >= judged:
		res.Score = 0
		res.Reason = fmt.Sprintf("%d of %d metrics have no data", noData, judged)
	}
	switch {
	case res.Score < cfg.MarginalScore || res.CriticalFailure:
		res.Verdict = JudgeFail
	case inconclusive > 0:
		res.Verdict = JudgeInconclusive
	case res.Score < cfg.PassScore:
		res.Verdict = JudgeMarginal
	default:
		res.Verdict = JudgePass
	}
	if res.Reason == "" {
		res.Reason = fmt.Sprintf("score %.2f (pass %g, marginal %g)", res.Score, cfg.PassScore, cfg.MarginalScore)
		if f := failedNames(res.Metrics, false); len(f) > 0 {
			res.Reason += "; failing: " + strings.Join(f, ", ")
		}
		if inconclusive > 0 {
			res.Reason += fmt.Sprintf("; %d metric(s) inconclusive", inconclusive)
		}
	}
}

func failedNames(ms []MetricResult, criticalOnly bool) []string {
	var out []string
	for _, m := range ms {
		if m.Muted {
			continue
		}
		bad := m.Classification == ClassHigh || m.Classification == ClassLow || m.Classification == ClassNodataFailMetric
		if criticalOnly {
			bad = m.CriticalFailure
		}
		if bad {
			out = append(out, fmt.Sprintf("%s (%s)", m.Name, m.Classification))
		}
	}
	return out
}

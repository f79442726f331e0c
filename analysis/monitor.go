package analysis

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"gonum.org/v1/gonum/stat/distuv"
)

// Test names a MetricSpec may carry.
const (
	TestSequential     = "sequential"
	TestTwoProportionZ = "two-proportion-z"
	TestFisher         = "fisher"
	TestMannWhitneyU   = "mann-whitney-u"
	TestWelch          = "welch"
)

// MetricSpec is one metric a rollout's analysis judges.
type MetricSpec struct {
	// Name is error_rate, latency_mean or latency_pNN (latency_p50,
	// latency_p99, latency_p999 or latency_p99.9 …).
	Name string `json:"name"`
	// Test is what Evaluate runs: sequential (the default), two-proportion-z
	// or fisher for error_rate, mann-whitney-u or welch for latency.
	// Observe always runs the anytime-valid sequential tests.
	Test string `json:"test,omitempty"`
	// MaxIncrease is error_rate's allowed absolute increase of the canary's
	// rate over the baseline's, in [0, 1): 0.02 allows 2 points.
	MaxIncrease float64 `json:"maxIncrease,omitempty"`
	// MaxRatio is a latency metric's allowed canary/baseline ratio, >= 1.
	MaxRatio float64 `json:"maxRatio,omitempty"`
	// Critical is carried into the metric's verdicts.
	Critical bool `json:"critical,omitempty"`
}

// MonitorOptions tunes a Monitor. Zero values mean the stated defaults.
type MonitorOptions struct {
	// MinSamples is how many requests each side needs before a metric can
	// Pass, on top of the evidence rule (default 100).
	MinSamples int64 `json:"minSamples,omitempty"`
	// WarmupSamples is how many baseline latencies set the first
	// thresholds of the latency tests before they start (default 500);
	// later epochs of 2, 4, … 64 times as many re-measure them.
	WarmupSamples int64 `json:"warmupSamples,omitempty"`
}

// Defaults of MonitorOptions.
const (
	DefaultMinSamples    = 100
	DefaultWarmupSamples = 500
)

// Batch is one analysis interval's new traffic (differences between two
// cumulative snapshots), both sides.
type Batch struct {
	CanaryRequests, CanaryErrors     int64
	BaselineRequests, BaselineErrors int64
	// Latencies of this interval only, in microseconds, made with the
	// shared geometry (rollout.NewLatencyHistogram). Either may be nil.
	CanaryLatency, BaselineLatency *hdrhistogram.Histogram
	// CanaryShare is ρ, the probability that an analysed request was routed
	// to the canary during this batch: the routing weight, canary/(canary +
	// baseline), set before the batch. 0 means unknown: the batch's observed
	// share is used instead, which is only approximately valid.
	CanaryShare float64
}

// Monitor judges a rollout's metrics continuously. The rollout driver calls
// Observe with every interval's batch; Fail comes from anytime-valid
// e-processes, so looking every 50 ms costs no false alarms. Evaluate gives a
// fixed-horizon verdict for an explicit analysis step over the current window.
//
// Monitor is pure (no clock, no goroutines) and not safe for concurrent use.
type Monitor struct {
	confidence float64
	alpha      float64 // per metric, Bonferroni
	opts       MonitorOptions
	metrics    []*monitorMetric
	total, win sideCounts
	geom       hdrGeometry
	haveGeom   bool
	// Latency counts in HdrHistogram index order: whole rollout and window.
	cumX, cumY latencyCounts
	winX, winY latencyCounts
	// mwu is the window's Mann–Whitney test during one Evaluate.
	mwu *mwuOnce
	// srm tests the routed share against the requests each side received.
	srm         *RatioEProcess
	routedShare float64 // request-weighted mean of the stated shares
}

type sideCounts struct{ nx, kx, ny, ky int64 }

type mwuOnce struct {
	r   MWUResult
	err error
}

type monitorMetric struct {
	spec     MetricSpec
	quantile float64 // latency_pNN; 0 for latency_mean
	isError  bool
	// error_rate: worse tests H₀ p_x − p_y ≤ MaxIncrease, within H₀ p_x − p_y ≥ MaxIncrease.
	worse, within *RateDifferenceEProcess
	// latency
	slow *SlowdownEProcess
	// failed is sticky: an e-process that crossed 1/α stays rejected.
	failed       bool
	failedReason string
}

// NewMonitor validates the specs and confidence (in (0, 1)). Sequential
// tests split α = 1 − confidence equally across the metrics (Bonferroni), so
// the chance that any metric ever falsely fails is at most α.
func NewMonitor(specs []MetricSpec, confidence float64, opts MonitorOptions) (*Monitor, error) {
	if !(confidence > 0 && confidence < 1) {
		return nil, fmt.Errorf("%w: confidence %v must be in (0, 1)", ErrInput, confidence)
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("%w: no metrics to monitor", ErrInput)
	}
	if opts.MinSamples < 0 || opts.WarmupSamples < 0 {
		return nil, fmt.Errorf("%w: minSamples %d and warmupSamples %d must not be negative", ErrInput, opts.MinSamples, opts.WarmupSamples)
	}
	if opts.MinSamples == 0 {
		opts.MinSamples = DefaultMinSamples
	}
	if opts.WarmupSamples == 0 {
		opts.WarmupSamples = DefaultWarmupSamples
	}
	m := &Monitor{confidence: confidence, alpha: (1 - confidence) / float64(len(specs)), opts: opts}
	m.srm, _ = NewRatioEProcess(TwoSided, 1)
	seen := map[string]bool{}
	for i, s := range specs {
		mm, err := newMonitorMetric(s, opts)
		if err != nil {
			return nil, fmt.Errorf("metrics[%d] (%s): %w", i, s.Name, err)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("metrics[%d]: %w: metric %s is listed twice", i, ErrInput, s.Name)
		}
		seen[s.Name] = true
		m.metrics = append(m.metrics, mm)
	}
	return m, nil
}

func newMonitorMetric(s MetricSpec, opts MonitorOptions) (*monitorMetric, error) {
	mm := &monitorMetric{spec: s}
	if mm.spec.Test == "" {
		mm.spec.Test = TestSequential
	}
	switch {
	case s.Name == "error_rate":
		mm.isError = true
		switch mm.spec.Test {
		case TestSequential, TestTwoProportionZ, TestFisher:
		default:
			return nil, fmt.Errorf("%w: test %q: error_rate takes sequential, two-proportion-z or fisher", ErrInput, s.Test)
		}
		if !(s.MaxIncrease >= 0 && s.MaxIncrease < 1) {
			return nil, fmt.Errorf("%w: maxIncrease %v must be in [0, 1) (0.02 allows 2 points)", ErrInput, s.MaxIncrease)
		}
		if s.MaxRatio != 0 {
			return nil, fmt.Errorf("%w: maxRatio applies to latency metrics; error_rate takes maxIncrease", ErrInput)
		}
		mm.worse, _ = NewRateDifferenceEProcess(s.MaxIncrease, Greater)
		mm.within, _ = NewRateDifferenceEProcess(s.MaxIncrease, Less)
		return mm, nil
	case strings.HasPrefix(s.Name, "latency_"):
		switch mm.spec.Test {
		case TestSequential, TestMannWhitneyU, TestWelch:
		default:
			return nil, fmt.Errorf("%w: test %q: latency metrics take sequential, mann-whitney-u or welch", ErrInput, s.Test)
		}
		if !(s.MaxRatio >= 1) || math.IsInf(s.MaxRatio, 1) {
			return nil, fmt.Errorf("%w: maxRatio %v must be a finite number >= 1 (1.2 allows 20%% slower)", ErrInput, s.MaxRatio)
		}
		if s.MaxIncrease != 0 {
			return nil, fmt.Errorf("%w: maxIncrease applies to error_rate; latency metrics take maxRatio", ErrInput)
		}
		quantiles := []float64{0.5, 0.9, 0.99}
		switch rest := strings.TrimPrefix(s.Name, "latency_"); {
		case rest == "mean":
		case strings.HasPrefix(rest, "p"):
			pct, ok := parsePercentile(rest[1:])
			if !ok {
				return nil, fmt.Errorf("%w: metric %s: want latency_pNN with 0 < NN < 100, for example latency_p99, latency_p999 (99.9) or latency_p99.9", ErrInput, s.Name)
			}
			mm.quantile = pct / 100
			quantiles = []float64{mm.quantile}
		default:
			return nil, fmt.Errorf("%w: metric %s: want latency_mean or latency_pNN", ErrInput, s.Name)
		}
		var err error
		if mm.slow, err = NewSlowdownEProcess(quantiles, s.MaxRatio, opts.WarmupSamples); err != nil {
			return nil, err
		}
		return mm, nil
	}
	return nil, fmt.Errorf("%w: unknown metric %q: want error_rate, latency_mean or latency_pNN", ErrInput, s.Name)
}

// parsePercentile reads the NN of latency_pNN: "50", "99.9", or after 99
// further digits as decimals, as dashboards name them ("999" is 99.9,
// "9999" is 99.99).
func parsePercentile(s string) (float64, bool) {
	if s == "" || strings.Trim(s, "0123456789.") != "" || strings.Count(s, ".") > 1 {
		return 0, false
	}
	if !strings.Contains(s, ".") && len(s) > 2 {
		// Only the high tail is written this way; "100" or "250" are mistakes.
		if !strings.HasPrefix(s, "99") {
			return 0, false
		}
		s = s[:2] + "." + s[2:]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v > 0 && v < 100) {
		return 0, false
	}
	return v, true
}

// Alpha is the per-metric error rate the sequential tests use: (1 − confidence)/len(metrics).
func (m *Monitor) Alpha() float64 { return m.alpha }

// Observe adds one interval's batch to every metric's e-processes and
// returns each metric's verdict in spec order:
//   - Fail once the e-value for "canary beyond the allowed effect" has reached
//     1/α (it never un-fails: the e-process was rejected);
//   - Pass while the e-value for "canary within the allowed effect" is at or
//     above 1/α and each side has MinSamples;
//   - NoData while a side has had no samples;
//   - Inconclusive otherwise: a test that has not rejected is no evidence of
//     safety.
//
// A batch with invalid counts, share or histograms is refused with an
// ErrInput error and changes nothing.
func (m *Monitor) Observe(b Batch) ([]Verdict, error) {
	rho, g, cx, cy, err := m.validate(b)
	if err != nil {
		return nil, err
	}
	d := sideCounts{b.CanaryRequests, b.CanaryErrors, b.BaselineRequests, b.BaselineErrors}
	m.total.add(d)
	m.win.add(d)
	if cx != nil || cy != nil {
		m.addLatency(g, cx, cy)
	}
	if b.CanaryShare > 0 && d.nx+d.ny > 0 {
		sx, sy := m.srm.Counts()
		n, prev := float64(d.nx+d.ny), float64(sx+sy)
		m.routedShare = (m.routedShare*prev + b.CanaryShare*n) / (prev + n)
		_ = m.srm.Update(d.nx, d.ny, b.CanaryShare)
	}
	for _, mm := range m.metrics {
		if rho <= 0 {
			continue // no share to test with this batch (one side got nothing)
		}
		if mm.isError {
			// Both updates were validated above; errors cannot occur.
			_ = mm.worse.Update(d.nx, d.kx, d.ny, d.ky, rho)
			_ = mm.within.Update(d.nx, d.kx, d.ny, d.ky, rho)
		} else if cx != nil || cy != nil {
			_ = mm.slow.updateCounts(g, cx, cy, rho)
		}
	}
	out := make([]Verdict, len(m.metrics))
	for i, mm := range m.metrics {
		out[i] = m.sequentialVerdict(mm)
	}
	return out, nil
}

func (c *sideCounts) add(d sideCounts) {
	c.nx += d.nx
	c.kx += d.kx
	c.ny += d.ny
	c.ky += d.ky
}

// validate checks a batch and returns the share to test with (0: skip the
// e-processes this batch) and the histograms' counts.
func (m *Monitor) validate(b Batch) (rho float64, g hdrGeometry, cx, cy *Counts, err error) {
	switch {
	case b.CanaryRequests < 0 || b.CanaryErrors < 0 || b.BaselineRequests < 0 || b.BaselineErrors < 0:
		return 0, g, nil, nil, fmt.Errorf("%w: batch counts must not be negative (canary %d/%d, baseline %d/%d)",
			ErrInput, b.CanaryErrors, b.CanaryRequests, b.BaselineErrors, b.BaselineRequests)
	case b.CanaryErrors > b.CanaryRequests:
		return 0, g, nil, nil, fmt.Errorf("%w: batch canary errors %d exceed canary requests %d", ErrInput, b.CanaryErrors, b.CanaryRequests)
	case b.BaselineErrors > b.BaselineRequests:
		return 0, g, nil, nil, fmt.Errorf("%w: batch baseline errors %d exceed baseline requests %d", ErrInput, b.BaselineErrors, b.BaselineRequests)
	case math.IsNaN(b.CanaryShare) || b.CanaryShare < 0 || b.CanaryShare >= 1:
		return 0, g, nil, nil, fmt.Errorf("%w: batch canary share %v must be in (0, 1), or 0 when unknown", ErrInput, b.CanaryShare)
	}
	rho = b.CanaryShare
	if rho == 0 {
		nx, ny := b.CanaryRequests, b.BaselineRequests
		if b.CanaryLatency != nil && b.BaselineLatency != nil && nx == 0 && ny == 0 {
			nx, ny = b.CanaryLatency.TotalCount(), b.BaselineLatency.TotalCount()
		}
		if nx > 0 && ny > 0 {
			rho = float64(nx) / float64(nx+ny)
		}
	}
	var ref *hdrhistogram.Histogram
	for _, h := range []*hdrhistogram.Histogram{b.CanaryLatency, b.BaselineLatency} {
		if h == nil {
			continue
		}
		if ref != nil {
			if err := sameGeometry(ref, h); err != nil {
				return 0, g, nil, nil, err
			}
		}
		ref = h
	}
	if ref == nil {
		return rho, g, nil, nil, nil
	}
	g = geometryOf(ref)
	if m.haveGeom && g != m.geom {
		return 0, g, nil, nil, fmt.Errorf("%w: batch latency histograms changed range or precision since the first batch", ErrInput)
	}
	// Each histogram is exported once per batch; the window, the totals and
	// every metric's test read that one copy, over its non-empty range.
	if b.CanaryLatency != nil && b.CanaryLatency.TotalCount() > 0 {
		if cx, err = NewCounts(b.CanaryLatency); err != nil {
			return 0, g, nil, nil, fmt.Errorf("batch canary latency: %w", err)
		}
	}
	if b.BaselineLatency != nil && b.BaselineLatency.TotalCount() > 0 {
		if cy, err = NewCounts(b.BaselineLatency); err != nil {
			return 0, g, nil, nil, fmt.Errorf("batch baseline latency: %w", err)
		}
	}
	return rho, g, cx, cy, nil
}

// latencyCounts accumulates exported HdrHistogram counts: adding arrays is
// far cheaper than Histogram.Merge, and the tests read counts anyway. lo and
// hi bound the non-empty slots, so that walks skip the empty ends, and
// blocks[b] totals slots 64b..64b+63, so that rank queries skip whole blocks.
type latencyCounts struct {
	counts []int64
	blocks []int64
	n      int64
	lo, hi int // hi < lo while empty
}

// add adds a dense counts array (restored state).
func (c *latencyCounts) add(counts []int64) {
	lo, hi := -1, -1
	for i, v := range counts {
		if v != 0 {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	if lo >= 0 {
		c.addRange(counts, lo, hi)
	}
}

// addCounts adds one batch's exported histogram.
func (c *latencyCounts) addCounts(x *Counts) {
	if x != nil && x.n > 0 {
		c.addRange(x.counts, x.lo, x.hi)
	}
}

// addRange adds counts[lo..hi], whose ends are non-zero.
func (c *latencyCounts) addRange(counts []int64, lo, hi int) {
	if c.counts == nil {
		c.counts = make([]int64, len(counts))
		c.blocks = make([]int64, len(counts)>>blockShift+1)
		c.lo, c.hi = 0, -1
	}
	hi = min(hi, len(c.counts)-1)
	if hi < lo {
		return
	}
	if c.hi < c.lo {
		c.lo, c.hi = lo, hi
	} else {
		c.lo, c.hi = min(c.lo, lo), max(c.hi, hi)
	}
	dst := c.counts
	for b := lo >> blockShift; b <= hi>>blockShift; b++ {
		start, end := max(b<<blockShift, lo), min((b+1)<<blockShift, hi+1)
		var s int64
		for i, v := range counts[start:end] {
			dst[start+i] += v
			s += v
		}
		c.blocks[b] += s
		c.n += s
	}
}

func (c *latencyCounts) reset() {
	if c.counts != nil && c.hi >= c.lo { // a new Monitor has no counts yet
		clear(c.counts[c.lo : c.hi+1])
		clear(c.blocks[c.lo>>blockShift : c.hi>>blockShift+1])
	}
	c.n, c.lo, c.hi = 0, 0, -1
}

// view is the accumulated counts as a Counts, without copying.
func (c *latencyCounts) view(g hdrGeometry) *Counts {
	v := &Counts{geom: g, counts: c.counts, lo: c.lo, hi: c.hi, n: c.n, lowest: g.lowest, highest: g.highest, sig: g.sig}
	if c.n == 0 {
		v.lo, v.hi = 0, -1
	}
	v.blockOnce.Do(func() {
		if c.n > 0 {
			v.blocks = c.blocks[c.lo>>blockShift : c.hi>>blockShift+1]
		}
	})
	return v
}

// rank is the count index holding the k-th smallest value (1-based).
func (c *latencyCounts) rank(k int64) int {
	k = max(k, 1)
	var acc int64
	for b := c.lo >> blockShift; b <= c.hi>>blockShift; b++ {
		if s := c.blocks[b]; acc+s < k {
			acc += s
			continue
		}
		for i := max(b<<blockShift, c.lo); i <= c.hi; i++ {
			if acc += c.counts[i]; acc >= k {
				return i
			}
		}
	}
	return max(c.hi, 0)
}

// histogram rebuilds a Histogram for the fixed-horizon tests.
func (c *latencyCounts) histogram(g hdrGeometry) *hdrhistogram.Histogram {
	counts := make([]int64, len(c.counts))
	copy(counts, c.counts)
	return hdrhistogram.Import(&hdrhistogram.Snapshot{LowestTrackableValue: g.lowest, HighestTrackableValue: g.highest,
		SignificantFigures: g.sig, Counts: counts})
}

// moments are the mean and population standard deviation of the buckets'
// middle values, as Histogram.Mean and StdDev compute them.
func (c *latencyCounts) moments(g hdrGeometry) (mean, sd float64) {
	if c.n == 0 {
		return 0, 0
	}
	n := float64(c.n)
	for i := c.lo; i <= c.hi; i++ {
		if k := c.counts[i]; k != 0 {
			lo, hi := g.bucket(i)
			mean += float64(k) * float64(lo+(hi-lo+1)/2) / n
		}
	}
	for i := c.lo; i <= c.hi; i++ {
		if k := c.counts[i]; k != 0 {
			lo, hi := g.bucket(i)
			d := float64(lo+(hi-lo+1)/2) - mean
			sd += d * d * float64(k) / n
		}
	}
	return mean, math.Sqrt(sd)
}

// quantile is the highest value of the bucket holding rank ⌈q·n⌉, as
// Histogram.ValueAtQuantile reports it.
func (c *latencyCounts) quantile(g hdrGeometry, q float64) float64 {
	if c.n == 0 {
		return 0
	}
	_, hi := g.bucket(c.rank(int64(math.Ceil(q * float64(c.n)))))
	return float64(hi)
}

func (m *Monitor) addLatency(g hdrGeometry, cx, cy *Counts) {
	m.geom, m.haveGeom = g, true
	m.cumX.addCounts(cx)
	m.winX.addCounts(cx)
	m.cumY.addCounts(cy)
	m.winY.addCounts(cy)
}

// SampleRatio checks the tests' central assumption: that each request went
// to the canary with the stated Batch.CanaryShare. It runs the two-sided
// conditional test on request counts (statistics.md §4 A, "companion
// test") at α = 1 − confidence over the batches that stated a share. Fail
// means the versions received traffic in other proportions than routed
// (sticky sessions, a routing bug, a canary that drops requests before they
// are counted), and the other verdicts' guarantees do not hold; it is a
// diagnostic, not one of the metrics. Otherwise Outcome is Pass (no mismatch
// found so far) or NoData.
func (m *Monitor) SampleRatio() Verdict {
	cx, cy := m.srm.Counts()
	v := Verdict{Metric: "sample_ratio", Test: TestSequential, NCanary: cx, NBaseline: cy,
		Canary: m.routedShare, Threshold: "routed share"}
	if cx+cy == 0 {
		v.Outcome = NoData
		v.Reason = "no requests with a stated canary share yet"
		return v
	}
	v.Canary = float64(cx) / float64(cx+cy)
	v.Baseline = m.routedShare
	v.EValue = finiteE(m.srm.MaxLogE())
	v.PValue = ptr(m.srm.PValue())
	alpha := 1 - m.confidence
	if m.srm.Rejected(alpha) {
		v.Outcome = Fail
		v.Reason = fmt.Sprintf("canary received %s of %d requests, routed %s; e-value %s ≥ 1/α = %.0f: traffic is not split as routed, so the sequential tests' assumptions fail",
			pct3(v.Canary), cx+cy, pct3(v.Baseline), fmtE(m.srm.MaxLogE()), 1/alpha)
		return v
	}
	v.Outcome = Pass
	v.Reason = fmt.Sprintf("canary received %s of %d requests, routed %s; no mismatch found (e-value %s < 1/α = %.0f)",
		pct3(v.Canary), cx+cy, pct3(v.Baseline), fmtE(m.srm.MaxLogE()), 1/alpha)
	return v
}

// ResetWindow starts a new fixed-horizon window for Evaluate. The
// e-processes are not reset: one e-process per metric per rollout
// (statistics.md §4 rule 1), so the sequential guarantee covers the whole
// rollout however many steps it has.
func (m *Monitor) ResetWindow() {
	m.win = sideCounts{}
	m.winX.reset()
	m.winY.reset()
}

func (m *Monitor) sequentialVerdict(mm *monitorMetric) Verdict {
	if mm.isError {
		return m.errorSequential(mm)
	}
	return m.latencySequential(mm)
}

func ptr(v float64) *float64 { return &v }

// fmtE prints an e-value compactly; huge values keep their magnitude.
func fmtE(logE float64) string {
	if logE > 700 {
		return fmt.Sprintf("e^%.0f", logE)
	}
	e := math.Exp(logE)
	switch {
	case e >= 1e6:
		return fmt.Sprintf("%.3g", e)
	case e >= 100:
		return fmt.Sprintf("%.0f", e)
	}
	return fmt.Sprintf("%.3g", e)
}

// finiteE keeps JSON encodable: e-values beyond float64 are capped.
func finiteE(logE float64) *float64 {
	return ptr(math.Exp(math.Min(logE, 709)))
}

func pct(v float64) string {
	s := strconv.FormatFloat(100*v, 'f', -1, 64)
	if len(s) > 6 {
		s = strconv.FormatFloat(100*v, 'f', 2, 64)
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s + "%"
}

func errorThreshold(s MetricSpec) string { return "+" + pct(s.MaxIncrease) }

func latencyThreshold(s MetricSpec) string {
	return "x" + strconv.FormatFloat(s.MaxRatio, 'f', -1, 64)
}

func (m *Monitor) errorSequential(mm *monitorMetric) Verdict {
	c := m.total
	v := Verdict{
		Metric: mm.spec.Name, Test: TestSequential, Critical: mm.spec.Critical,
		NCanary: c.nx, NBaseline: c.ny, Threshold: errorThreshold(mm.spec),
	}
	if c.nx > 0 {
		v.Canary = float64(c.kx) / float64(c.nx)
	}
	if c.ny > 0 {
		v.Baseline = float64(c.ky) / float64(c.ny)
	}
	inv := 1 / m.alpha
	lw, lin := mm.worse.MaxLogE(), mm.within.LogE()
	v.EValue = finiteE(lw)
	v.PValue = ptr(mm.worse.PValue())
	rates := fmt.Sprintf("canary error rate %s vs %s", pct3(v.Canary), pct3(v.Baseline))
	// EValue and PValue are those of the test behind the outcome: "worse"
	// for Fail and Inconclusive, "within" for Pass.
	switch {
	case mm.worse.Rejected(m.alpha):
		v.Outcome = Fail
		if !mm.failed {
			mm.failed = true
			mm.failedReason = fmt.Sprintf("%s (%d/%d vs %d/%d requests); e-value %s ≥ 1/α = %.0f: canary worse beyond allowed %s",
				rates, c.kx, c.nx, c.ky, c.ny, fmtE(lw), inv, v.Threshold)
		}
		v.Reason = mm.failedReason
	case c.nx == 0 || c.ny == 0:
		v.Outcome = NoData
		v.Reason = fmt.Sprintf("no %s requests yet", sideName(c.nx == 0))
	case lin >= -math.Log(m.alpha) && c.nx >= m.opts.MinSamples && c.ny >= m.opts.MinSamples:
		v.Outcome = Pass
		v.EValue = finiteE(lin)
		v.PValue = ptr(math.Min(1, math.Exp(-lin)))
		v.Reason = fmt.Sprintf("%s over %d/%d requests; e-value %s ≥ 1/α = %.0f that the increase is below %s",
			rates, c.nx, c.ny, fmtE(lin), inv, v.Threshold)
	default:
		v.Outcome = Inconclusive
		why := fmt.Sprintf("neither worse (e-value %s) nor within (e-value %s) has reached 1/α = %.0f yet", fmtE(lw), fmtE(lin), inv)
		if lin >= -math.Log(m.alpha) {
			why = fmt.Sprintf("within allowed %s by the evidence, but fewer than %d requests on a side", v.Threshold, m.opts.MinSamples)
		}
		v.Reason = fmt.Sprintf("%s over %d/%d requests; %s", rates, c.nx, c.ny, why)
	}
	return v
}

func sideName(canary bool) string {
	if canary {
		return "canary"
	}
	return "baseline"
}

// pct3 prints a rate with up to three significant decimals, as people read them.
func pct3(r float64) string {
	return strconv.FormatFloat(100*r, 'g', 3, 64) + "%"
}

// latencyPoint is the metric's value in milliseconds.
func (mm *monitorMetric) latencyPoint(g hdrGeometry, c *latencyCounts) float64 {
	if mm.quantile == 0 {
		mean, _ := c.moments(g)
		return mean / 1000
	}
	return c.quantile(g, mm.quantile) / 1000
}

func (m *Monitor) latencySequential(mm *monitorMetric) Verdict {
	nx, ny := m.cumX.n, m.cumY.n
	v := Verdict{
		Metric: mm.spec.Name, Test: TestSequential, Critical: mm.spec.Critical,
		NCanary: nx, NBaseline: ny, Threshold: latencyThreshold(mm.spec),
		Canary: mm.latencyPoint(m.geom, &m.cumX), Baseline: mm.latencyPoint(m.geom, &m.cumY),
	}
	inv := 1 / m.alpha
	slower, within := mm.slow.Slower(), mm.slow.Within()
	ls, lw := slower.MaxLogE(), within.LogE()
	what := strings.TrimPrefix(mm.spec.Name, "latency_")
	vals := fmt.Sprintf("canary %s %.3g ms vs %.3g ms", what, v.Canary, v.Baseline)
	if mm.slow.Frozen() {
		v.EValue = finiteE(ls)
		v.PValue = ptr(slower.PValue())
	}
	// EValue and PValue are those of the test behind the outcome: "slower"
	// for Fail and Inconclusive, "within" for Pass.
	switch {
	case slower.Rejected(m.alpha):
		v.Outcome = Fail
		if !mm.failed {
			mm.failed = true
			mm.failedReason = fmt.Sprintf("%s (%d/%d samples); e-value %s ≥ 1/α = %.0f: canary slower than %s the baseline (%s)",
				vals, nx, ny, fmtE(ls), inv, v.Threshold, mm.slow.describeThresholds())
		}
		v.Reason = mm.failedReason
	case nx == 0 || ny == 0:
		v.Outcome = NoData
		v.Reason = fmt.Sprintf("no %s latency samples yet", sideName(nx == 0))
	case !mm.slow.Frozen():
		v.Outcome = Inconclusive
		v.Reason = fmt.Sprintf("%s; measuring baseline thresholds: %d of %d baseline samples", vals, ny, m.opts.WarmupSamples)
	case lw >= -math.Log(m.alpha) && nx >= m.opts.MinSamples && ny >= m.opts.MinSamples:
		v.Outcome = Pass
		v.EValue = finiteE(lw)
		v.PValue = ptr(math.Min(1, math.Exp(-lw)))
		v.Reason = fmt.Sprintf("%s over %d/%d samples; e-value %s ≥ 1/α = %.0f that the canary is within %s the baseline (%s)",
			vals, nx, ny, fmtE(lw), inv, v.Threshold, mm.slow.describeThresholds())
	default:
		v.Outcome = Inconclusive
		why := fmt.Sprintf("neither slower (e-value %s) nor within (e-value %s) has reached 1/α = %.0f yet", fmtE(ls), fmtE(lw), inv)
		if lw >= -math.Log(m.alpha) {
			why = fmt.Sprintf("within %s by the evidence, but fewer than %d samples on a side", v.Threshold, m.opts.MinSamples)
		}
		v.Reason = fmt.Sprintf("%s over %d/%d samples; %s", vals, nx, ny, why)
	}
	return v
}

// describeThresholds names the baseline quantiles in force, "baseline p50 4.82 ms".
func (p *SlowdownEProcess) describeThresholds() string {
	parts := make([]string, len(p.thresholds))
	for i, t := range p.thresholds {
		parts[i] = fmt.Sprintf("p%s %s ms", strconv.FormatFloat(100*p.quantiles[i], 'g', 4, 64), strconv.FormatFloat(float64(t)/1000, 'g', 3, 64))
	}
	return "baseline " + strings.Join(parts, ", ")
}

// Evaluate returns a fixed-horizon verdict per metric over the window (all
// traffic observed since the last ResetWindow), for an explicit analysis
// step: the confidence interval of the effect at level 1 − α (α split across
// metrics as for the sequential tests) against the allowed effect. Pass when
// the interval lies entirely within it, Fail when entirely beyond, otherwise
// Inconclusive. The statistic and p-value come from the metric's named test
// (one-sided, canary worse). Metrics whose test is sequential report their
// current sequential verdict, which already covers the whole rollout.
//
// Re-running Evaluate after every batch would inflate false alarms
// (statistics.md §4); call it once per pre-declared analysis step.
func (m *Monitor) Evaluate() []Verdict {
	out := make([]Verdict, len(m.metrics))
	// Mann–Whitney compares whole distributions, so every latency metric
	// that names it shares one test over the window.
	m.mwu = nil
	for i, mm := range m.metrics {
		switch {
		case mm.spec.Test == TestSequential:
			out[i] = m.sequentialVerdict(mm)
		case mm.isError:
			out[i] = m.errorFixed(mm)
		default:
			out[i] = m.latencyFixed(mm)
		}
	}
	return out
}

func classify(ci [2]float64, limit float64) Outcome {
	switch {
	case ci[1] <= limit:
		return Pass
	case ci[0] > limit:
		return Fail
	}
	return Inconclusive
}

func (m *Monitor) errorFixed(mm *monitorMetric) Verdict {
	c := m.win
	v := Verdict{
		Metric: mm.spec.Name, Test: mm.spec.Test, Critical: mm.spec.Critical,
		NCanary: c.nx, NBaseline: c.ny, Threshold: errorThreshold(mm.spec),
	}
	if c.nx == 0 || c.ny == 0 {
		v.Outcome = NoData
		v.Reason = fmt.Sprintf("no %s requests in this window", sideName(c.nx == 0))
		return v
	}
	v.Canary, v.Baseline = float64(c.kx)/float64(c.nx), float64(c.ky)/float64(c.ny)
	var res TestResult
	var err error
	if mm.spec.Test == TestFisher {
		res, err = Fisher(c.kx, c.nx, c.ky, c.ny, Greater)
	} else {
		res, err = TwoProportionZ(c.kx, c.nx, c.ky, c.ny, Greater)
	}
	testText := ""
	if err == nil {
		if !math.IsNaN(res.Statistic) && !math.IsInf(res.Statistic, 0) {
			v.Statistic = ptr(res.Statistic)
		}
		v.PValue = ptr(res.PValue)
		testText = fmt.Sprintf("; %s p = %.3g", mm.spec.Test, res.PValue)
	} else {
		testText = fmt.Sprintf("; %s not defined here (no variation in the pooled errors)", mm.spec.Test)
	}
	ci, err := newcombeInterval(c.kx, c.nx, c.ky, c.ny, 1-m.alpha)
	if err != nil {
		v.Outcome = Inconclusive
		v.Reason = err.Error()
		return v
	}
	v.CI = &ci
	v.Outcome = classify(ci, mm.spec.MaxIncrease)
	conf := strconv.FormatFloat(100*(1-m.alpha), 'g', 4, 64)
	verdictText := map[Outcome]string{
		Pass:         "within allowed " + v.Threshold,
		Fail:         "canary worse beyond allowed " + v.Threshold,
		Inconclusive: "cannot yet separate from allowed " + v.Threshold,
	}[v.Outcome]
	v.Reason = fmt.Sprintf("canary error rate %s vs %s (%d/%d vs %d/%d); %s%% CI of the increase [%s, %s]%s: %s",
		pct3(v.Canary), pct3(v.Baseline), c.kx, c.nx, c.ky, c.ny, conf, signedPct(ci[0]), signedPct(ci[1]), testText, verdictText)
	return v
}

func signedPct(v float64) string {
	s := strconv.FormatFloat(100*v, 'f', 2, 64) + "%"
	if v >= 0 {
		return "+" + s
	}
	return s
}

// newcombeInterval is Newcombe's hybrid score interval (his method 10) for
// p_x − p_y, built from the two Wilson intervals: it stays honest for rare
// errors where the Wald interval collapses to zero width.
func newcombeInterval(kx, nx, ky, ny int64, confidence float64) ([2]float64, error) {
	lx, ux, err := WilsonInterval(kx, nx, confidence)
	if err != nil {
		return [2]float64{}, err
	}
	ly, uy, err := WilsonInterval(ky, ny, confidence)
	if err != nil {
		return [2]float64{}, err
	}
	px, py := float64(kx)/float64(nx), float64(ky)/float64(ny)
	d := px - py
	return [2]float64{
		d - math.Sqrt((px-lx)*(px-lx)+(uy-py)*(uy-py)),
		d + math.Sqrt((ux-px)*(ux-px)+(py-ly)*(py-ly)),
	}, nil
}

func (m *Monitor) latencyFixed(mm *monitorMetric) Verdict {
	nx, ny := m.winX.n, m.winY.n
	v := Verdict{
		Metric: mm.spec.Name, Test: mm.spec.Test, Critical: mm.spec.Critical,
		NCanary: nx, NBaseline: ny, Threshold: latencyThreshold(mm.spec),
	}
	if nx == 0 || ny == 0 {
		v.Outcome = NoData
		v.Reason = fmt.Sprintf("no %s latency samples in this window", sideName(nx == 0))
		return v
	}
	v.Canary, v.Baseline = mm.latencyPoint(m.geom, &m.winX), mm.latencyPoint(m.geom, &m.winY)
	what := strings.TrimPrefix(mm.spec.Name, "latency_")
	testText := ""
	cx, cy := m.winX.view(m.geom), m.winY.view(m.geom)
	if mm.spec.Test == TestWelch {
		if r, err := welchCounts(cx, cy, Greater); err == nil {
			v.Statistic, v.PValue = ptr(r.T), ptr(r.PValue)
			testText = fmt.Sprintf("; welch t = %.3g, p = %.3g", r.T, r.PValue)
		} else {
			testText = "; welch not defined here: " + err.Error()
		}
	} else {
		if m.mwu == nil {
			r, err := MannWhitneyTest(cx, cy, Greater)
			m.mwu = &mwuOnce{r, err}
		}
		if r, err := m.mwu.r, m.mwu.err; err == nil {
			v.Statistic, v.PValue = ptr(r.U), ptr(r.PValue)
			testText = fmt.Sprintf("; mann-whitney-u p = %.3g, CLES %.3f", r.PValue, r.CLES)
		} else {
			testText = "; mann-whitney-u not defined here: " + err.Error()
		}
	}
	var ci [2]float64
	var ok bool
	if mm.quantile == 0 {
		ci, ok = meanRatioInterval(m.geom, &m.winX, &m.winY, 1-m.alpha)
	} else {
		ci, ok = quantileRatioInterval(m.geom, &m.winX, &m.winY, mm.quantile, 1-m.alpha)
	}
	vals := fmt.Sprintf("canary %s %.3g ms vs %.3g ms (%d/%d samples)", what, v.Canary, v.Baseline, nx, ny)
	if !ok {
		v.Outcome = Inconclusive
		v.Reason = fmt.Sprintf("%s%s: too few samples to bound the %s ratio", vals, testText, what)
		return v
	}
	v.CI = &ci
	v.Outcome = classify(ci, mm.spec.MaxRatio)
	verdictText := map[Outcome]string{
		Pass:         "within allowed " + v.Threshold,
		Fail:         "canary slower beyond allowed " + v.Threshold,
		Inconclusive: "cannot yet separate from allowed " + v.Threshold,
	}[v.Outcome]
	conf := strconv.FormatFloat(100*(1-m.alpha), 'g', 4, 64)
	v.Reason = fmt.Sprintf("%s; %s%% CI of the ratio [%.3f, %.3f]%s: %s", vals, conf, ci[0], ci[1], testText, verdictText)
	return v
}

// quantileRatioInterval bounds canary q-quantile / baseline q-quantile from
// distribution-free order-statistic intervals for each side, each at
// confidence 1 − α/2 (so the ratio's holds at 1 − α). Bucket edges are
// taken outward. It reports false when a side has too few samples for a
// finite bound.
func quantileRatioInterval(g hdrGeometry, x, y *latencyCounts, q, confidence float64) ([2]float64, bool) {
	return quantileRatio(x.view(g), y.view(g), q, confidence)
}

// QuantileRatioInterval is the interval Monitor.Evaluate judges a
// latency_pNN metric by: canary q-quantile / baseline q-quantile at the
// given confidence, from distribution-free order-statistic intervals for
// each side at 1 − α/2, bucket edges taken outward. q and confidence must
// be in (0, 1); too few samples for a finite bound is an ErrInput error.
func QuantileRatioInterval(x, y *Counts, q, confidence float64) ([2]float64, error) {
	if err := checkConfidence(confidence); err != nil {
		return [2]float64{}, err
	}
	if !(q > 0 && q < 1) {
		return [2]float64{}, fmt.Errorf("%w: quantile %v must be in (0, 1)", ErrInput, q)
	}
	if err := checkCountsPair(x, y); err != nil {
		return [2]float64{}, err
	}
	ci, ok := quantileRatio(x, y, q, confidence)
	if !ok {
		return ci, fmt.Errorf("%w: too few samples (canary %d, baseline %d) to bound the %v-quantile ratio at confidence %v", ErrInput, x.n, y.n, q, confidence)
	}
	return ci, nil
}

func quantileRatio(x, y *Counts, q, confidence float64) ([2]float64, bool) {
	side := 1 - (1-confidence)/2
	lx, ux, okx := quantileInterval(x, q, side)
	ly, uy, oky := quantileInterval(y, q, side)
	if !okx || !oky || ly <= 0 {
		return [2]float64{}, false
	}
	return [2]float64{lx / uy, ux / ly}, true
}

func quantileInterval(c *Counts, q, confidence float64) (lo, hi float64, ok bool) {
	n := c.n
	z := distuv.UnitNormal.Quantile(1 - (1-confidence)/2)
	nf := float64(n)
	sd := math.Sqrt(nf * q * (1 - q))
	l := int64(math.Floor(nf*q - z*sd))
	u := int64(math.Ceil(nf*q+z*sd)) + 1
	if l < 1 || u > n {
		return 0, 0, false
	}
	loV, _ := c.geom.bucket(c.rankIndex(l))
	_, hiV := c.geom.bucket(c.rankIndex(u))
	return float64(loV), float64(hiV), true
}

// meanRatioInterval is the delta-method interval for mean(canary)/mean(baseline)
// on the log scale, from the histograms' moments.
func meanRatioInterval(g hdrGeometry, x, y *latencyCounts, confidence float64) ([2]float64, bool) {
	nx, ny := float64(x.n), float64(y.n)
	mx, sx := x.moments(g)
	my, sy := y.moments(g)
	if nx < 2 || ny < 2 || mx <= 0 || my <= 0 {
		return [2]float64{}, false
	}
	se := math.Sqrt(sx*sx/(nx*mx*mx) + sy*sy/(ny*my*my))
	z := distuv.UnitNormal.Quantile(1 - (1-confidence)/2)
	r := math.Log(mx / my)
	return [2]float64{math.Exp(r - z*se), math.Exp(r + z*se)}, true
}

// MonitorState is a Monitor's complete state as JSON-encodable values, so a
// restarted driver resumes the e-processes where they were instead of
// spending α again (statistics.md §4 rule 1).
type MonitorState struct {
	Version    int            `json:"version"`
	Specs      []MetricSpec   `json:"specs"`
	Confidence float64        `json:"confidence"`
	Options    MonitorOptions `json:"options"`
	// Total and Window are canary requests, canary errors, baseline
	// requests and baseline errors.
	Total       [4]int64                `json:"total"`
	Window      [4]int64                `json:"window"`
	Latency     *latencyState           `json:"latency,omitempty"`
	SampleRatio *ratioState             `json:"sample_ratio,omitempty"`
	RoutedShare float64                 `json:"routed_share,omitempty"`
	Metrics     []metricSequentialState `json:"metrics"`
}

const monitorStateVersion = 1

// Histograms as (lowest, highest, significant figures) and sparse
// [count index, count] pairs.
type latencyState struct {
	Geometry       [3]int64   `json:"geometry"`
	CanaryTotal    [][2]int64 `json:"canary_total"`
	BaselineTotal  [][2]int64 `json:"baseline_total"`
	CanaryWindow   [][2]int64 `json:"canary_window"`
	BaselineWindow [][2]int64 `json:"baseline_window"`
}

type metricSequentialState struct {
	Name         string         `json:"name"`
	Failed       bool           `json:"failed,omitempty"`
	FailedReason string         `json:"failed_reason,omitempty"`
	Worse        *betState      `json:"worse,omitempty"`
	Within       *betState      `json:"within,omitempty"`
	Slowdown     *slowdownState `json:"slowdown,omitempty"`
}

type runningState struct {
	LogE    float64 `json:"log_e"`
	MaxLogE float64 `json:"max_log_e"`
}

type betState struct {
	runningState
	LogWealth []float64 `json:"log_wealth"`
	Counts    [4]int64  `json:"counts"`
}

type ratioState struct {
	runningState
	LogLik []float64 `json:"log_lik"`
	Counts [2]int64  `json:"counts"`
}

type slowdownState struct {
	Thresholds []int64 `json:"thresholds,omitempty"`
	// Warm holds the baseline counts of the current threshold epoch (the
	// warm-up while Thresholds is empty) and Target the samples that end it.
	Warm      [][2]int64   `json:"warm,omitempty"`
	WarmN     int64        `json:"warm_n"`
	Target    int64        `json:"target,omitempty"`
	Slower    []ratioState `json:"slower"`
	Within    []ratioState `json:"within"`
	SlowerRun runningState `json:"slower_run"`
	WithinRun runningState `json:"within_run"`
}

func sparse(counts []int64) [][2]int64 {
	var out [][2]int64
	for i, c := range counts {
		if c != 0 {
			out = append(out, [2]int64{int64(i), c})
		}
	}
	return out
}

func dense(pairs [][2]int64, n int) ([]int64, error) {
	out := make([]int64, n)
	for _, p := range pairs {
		if p[0] < 0 || p[0] >= int64(n) || p[1] < 0 {
			return nil, fmt.Errorf("%w: histogram entry %v out of range", ErrInput, p)
		}
		out[p[0]] += p[1]
	}
	return out, nil
}

func (r *running) state() runningState { return runningState{r.logE, r.maxLogE} }

func (r *running) restore(s runningState) error {
	if math.IsNaN(s.LogE) || math.IsNaN(s.MaxLogE) || math.IsInf(s.LogE, 0) || math.IsInf(s.MaxLogE, 0) || s.MaxLogE < s.LogE || s.MaxLogE < 0 {
		return fmt.Errorf("%w: e-value state %+v is not a valid running maximum", ErrInput, s)
	}
	r.logE, r.maxLogE = s.LogE, s.MaxLogE
	return nil
}

// State returns a copy of the monitor's state.
func (m *Monitor) State() MonitorState {
	s := MonitorState{
		Version: monitorStateVersion, Confidence: m.confidence, Options: m.opts,
		Total:  [4]int64{m.total.nx, m.total.kx, m.total.ny, m.total.ky},
		Window: [4]int64{m.win.nx, m.win.kx, m.win.ny, m.win.ky},
	}
	s.SampleRatio = &ratioState{runningState: m.srm.state(), LogLik: append([]float64(nil), m.srm.logLik...), Counts: [2]int64{m.srm.cx, m.srm.cy}}
	s.RoutedShare = m.routedShare
	if m.haveGeom {
		s.Latency = &latencyState{
			Geometry:       [3]int64{m.geom.lowest, m.geom.highest, m.geom.sig},
			CanaryTotal:    sparse(m.cumX.counts),
			BaselineTotal:  sparse(m.cumY.counts),
			CanaryWindow:   sparse(m.winX.counts),
			BaselineWindow: sparse(m.winY.counts),
		}
	}
	for _, mm := range m.metrics {
		s.Specs = append(s.Specs, mm.spec)
		ms := metricSequentialState{Name: mm.spec.Name, Failed: mm.failed, FailedReason: mm.failedReason}
		if mm.isError {
			for dst, p := range map[**betState]*RateDifferenceEProcess{&ms.Worse: mm.worse, &ms.Within: mm.within} {
				*dst = &betState{runningState: p.state(), LogWealth: append([]float64(nil), p.logWealth...),
					Counts: [4]int64{p.nx, p.kx, p.ny, p.ky}}
			}
		} else {
			p := mm.slow
			ss := &slowdownState{Thresholds: p.Thresholds(), Warm: sparse(p.next.counts), WarmN: p.next.n, Target: p.target,
				SlowerRun: p.slowerRun.state(), WithinRun: p.withinRun.state()}
			for j := range p.slower {
				for dst, r := range map[*[]ratioState]*RatioEProcess{&ss.Slower: p.slower[j], &ss.Within: p.within[j]} {
					*dst = append(*dst, ratioState{runningState: r.state(), LogLik: append([]float64(nil), r.logLik...), Counts: [2]int64{r.cx, r.cy}})
				}
			}
			ms.Slowdown = ss
		}
		s.Metrics = append(s.Metrics, ms)
	}
	return s
}

// RestoreMonitor rebuilds a Monitor from State, validating it as input.
func RestoreMonitor(s MonitorState) (*Monitor, error) {
	if s.Version != monitorStateVersion {
		return nil, fmt.Errorf("%w: monitor state version %d, want %d", ErrInput, s.Version, monitorStateVersion)
	}
	m, err := NewMonitor(s.Specs, s.Confidence, s.Options)
	if err != nil {
		return nil, err
	}
	if len(s.Metrics) != len(m.metrics) {
		return nil, fmt.Errorf("%w: monitor state has %d metric states for %d specs", ErrInput, len(s.Metrics), len(m.metrics))
	}
	for _, c := range [][4]int64{s.Total, s.Window} {
		if c[0] < 0 || c[2] < 0 || c[1] < 0 || c[3] < 0 || c[1] > c[0] || c[3] > c[2] {
			return nil, fmt.Errorf("%w: monitor state counts %v are inconsistent", ErrInput, c)
		}
	}
	if r := s.SampleRatio; r != nil {
		if err := restoreRatio(m.srm, *r); err != nil {
			return nil, fmt.Errorf("sample ratio: %w", err)
		}
	}
	if !(s.RoutedShare >= 0 && s.RoutedShare < 1) {
		return nil, fmt.Errorf("%w: monitor state routed share %v must be in [0, 1)", ErrInput, s.RoutedShare)
	}
	m.routedShare = s.RoutedShare
	m.total = sideCounts{s.Total[0], s.Total[1], s.Total[2], s.Total[3]}
	m.win = sideCounts{s.Window[0], s.Window[1], s.Window[2], s.Window[3]}
	countsLen := 0
	if l := s.Latency; l != nil {
		g := l.Geometry
		if g[0] < 1 || g[0] > 1<<40 || g[1] < 2*g[0] || g[2] < 1 || g[2] > 5 {
			return nil, fmt.Errorf("%w: monitor state histogram geometry %v is invalid", ErrInput, g)
		}
		ref := hdrhistogram.New(g[0], g[1], int(g[2]))
		m.geom, m.haveGeom = geometryOf(ref), true
		countsLen = len(ref.Export().Counts)
		for dst, pairs := range map[*latencyCounts][][2]int64{&m.cumX: l.CanaryTotal, &m.cumY: l.BaselineTotal, &m.winX: l.CanaryWindow, &m.winY: l.BaselineWindow} {
			counts, err := dense(pairs, countsLen)
			if err != nil {
				return nil, err
			}
			dst.add(counts)
		}
	}
	for i, mm := range m.metrics {
		ms := s.Metrics[i]
		if ms.Name != mm.spec.Name {
			return nil, fmt.Errorf("%w: monitor state metric %d is %q, spec says %q", ErrInput, i, ms.Name, mm.spec.Name)
		}
		mm.failed, mm.failedReason = ms.Failed, ms.FailedReason
		if err := restoreMetric(mm, ms, m.geom, countsLen); err != nil {
			return nil, fmt.Errorf("metric %s: %w", mm.spec.Name, err)
		}
	}
	return m, nil
}

func restoreMetric(mm *monitorMetric, ms metricSequentialState, g hdrGeometry, countsLen int) error {
	if mm.isError {
		if ms.Worse == nil || ms.Within == nil {
			return fmt.Errorf("%w: error-rate e-process state missing", ErrInput)
		}
		for _, pair := range []struct {
			p *RateDifferenceEProcess
			s *betState
		}{{mm.worse, ms.Worse}, {mm.within, ms.Within}} {
			if len(pair.s.LogWealth) != len(pair.p.logWealth) {
				return fmt.Errorf("%w: %d bets in state, want %d", ErrInput, len(pair.s.LogWealth), len(pair.p.logWealth))
			}
			if err := pair.p.restore(pair.s.runningState); err != nil {
				return err
			}
			copy(pair.p.logWealth, pair.s.LogWealth)
			pair.p.nx, pair.p.kx, pair.p.ny, pair.p.ky = pair.s.Counts[0], pair.s.Counts[1], pair.s.Counts[2], pair.s.Counts[3]
		}
		return nil
	}
	ss, p := ms.Slowdown, mm.slow
	if ss == nil || len(ss.Slower) != len(p.slower) || len(ss.Within) != len(p.within) {
		return fmt.Errorf("%w: latency e-process state missing or of the wrong size", ErrInput)
	}
	if len(ss.Thresholds) != 0 && len(ss.Thresholds) != len(p.quantiles) {
		return fmt.Errorf("%w: %d thresholds in state, want %d", ErrInput, len(ss.Thresholds), len(p.quantiles))
	}
	p.geom = g
	if len(ss.Thresholds) > 0 {
		p.thresholds = append([]int64(nil), ss.Thresholds...)
	}
	if ss.Target != 0 {
		// States written before thresholds were re-measured have no target:
		// their next epoch starts now, at twice the warm-up.
		if ss.Target < p.warmup || ss.Target > maxEpochs*p.warmup {
			return fmt.Errorf("%w: threshold epoch of %d samples in state, want %d..%d", ErrInput, ss.Target, p.warmup, maxEpochs*p.warmup)
		}
		p.target = ss.Target
	} else if len(ss.Thresholds) > 0 {
		p.target = min(2*p.warmup, maxEpochs*p.warmup)
	}
	if ss.WarmN > 0 {
		warm, err := dense(ss.Warm, countsLen)
		if err != nil {
			return err
		}
		p.next.add(warm)
		if p.next.n != ss.WarmN {
			return fmt.Errorf("%w: %d warm-up samples in state, counts hold %d", ErrInput, ss.WarmN, p.next.n)
		}
	}
	for j := range p.slower {
		for _, pair := range []struct {
			r *RatioEProcess
			s ratioState
		}{{p.slower[j], ss.Slower[j]}, {p.within[j], ss.Within[j]}} {
			if err := restoreRatio(pair.r, pair.s); err != nil {
				return err
			}
		}
	}
	if err := p.slowerRun.restore(ss.SlowerRun); err != nil {
		return err
	}
	return p.withinRun.restore(ss.WithinRun)
}

func restoreRatio(r *RatioEProcess, s ratioState) error {
	if len(s.LogLik) != len(r.logLik) {
		return fmt.Errorf("%w: %d grid points in state, want %d", ErrInput, len(s.LogLik), len(r.logLik))
	}
	if s.Counts[0] < 0 || s.Counts[1] < 0 {
		return fmt.Errorf("%w: negative counts %v in state", ErrInput, s.Counts)
	}
	for _, l := range s.LogLik {
		if math.IsNaN(l) || math.IsInf(l, 0) {
			return fmt.Errorf("%w: log-likelihood %v in state", ErrInput, l)
		}
	}
	if err := r.restore(s.runningState); err != nil {
		return err
	}
	copy(r.logLik, s.LogLik)
	r.cx, r.cy = s.Counts[0], s.Counts[1]
	return nil
}

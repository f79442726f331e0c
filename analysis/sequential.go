package analysis

import (
	"fmt"
	"math"
	"sort"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"gonum.org/v1/gonum/mathext"
)

// Anytime-valid sequential tests (statistics.md §4). Each type below is an
// e-process: a nonnegative running statistic with E_0 = 1 whose expectation
// never grows under its null hypothesis. Ville's inequality bounds the chance
// that it ever reaches 1/α by α, so it may be looked at after every batch, at
// any cadence, without inflating false alarms. All arithmetic is in logs.

// DefaultKappa is the concentration of the Beta mixtures when no tuning rule
// applies: savvi's default, right for error-rate ratios of about 1.5 at a 5%
// canary share (statistics.md §4 A).
const DefaultKappa = 100

// logFloor stands in for ln 0 so that states stay finite (and JSON-encodable)
// when a tail probability underflows: it only ever arises when the evidence
// points overwhelmingly the other way.
const logFloor = -745.0

// EProcess is what every sequential test here exposes.
type EProcess interface {
	// LogE is ln of the current e-value.
	LogE() float64
	// E is the current e-value (may be +Inf when LogE exceeds float64's range).
	E() float64
	// MaxLogE is the largest LogE so far (at least 0, the start).
	MaxLogE() float64
	// PValue is the anytime-valid p-value min(1, 1/max_s E_s).
	PValue() float64
	// Rejected reports whether the e-value has ever reached 1/alpha.
	Rejected(alpha float64) bool
}

// running tracks the current and the largest ln E of an e-process.
type running struct {
	logE, maxLogE float64
}

func (r *running) set(logE float64) {
	if math.IsNaN(logE) {
		// Never reachable with validated input; refuse to record it rather
		// than let a NaN disable the rejection rule.
		return
	}
	r.logE = math.Max(logE, logFloor)
	if r.logE > r.maxLogE {
		r.maxLogE = r.logE
	}
}

func (r *running) LogE() float64    { return r.logE }
func (r *running) E() float64       { return math.Exp(r.logE) }
func (r *running) MaxLogE() float64 { return r.maxLogE }
func (r *running) PValue() float64  { return math.Min(1, math.Exp(-r.maxLogE)) }
func (r *running) Rejected(alpha float64) bool {
	return alpha > 0 && r.maxLogE >= -math.Log(alpha)
}

func logBeta(a, b float64) float64 {
	la, _ := math.Lgamma(a)
	lb, _ := math.Lgamma(b)
	lab, _ := math.Lgamma(a + b)
	return la + lb - lab
}

func safeLog(x float64) float64 {
	if x <= 0 {
		return logFloor
	}
	return math.Log(x)
}

// KappaFor is the tuning rule of statistics.md §4 A: the concentration whose
// prior spread on the canary's share of errors matches the shift caused by a
// canary error rate ratio worth catching, at canary share rho.
// KappaFor(0.05, 1.5) ≈ 90.
func KappaFor(rho, ratio float64) (float64, error) {
	if !(rho > 0 && rho < 1) {
		return 0, fmt.Errorf("%w: canary share %v must be in (0, 1)", ErrInput, rho)
	}
	if !(ratio > 1) || math.IsInf(ratio, 1) {
		return 0, fmt.Errorf("%w: ratio %v must be a finite number above 1", ErrInput, ratio)
	}
	dt := rho*ratio/(rho*ratio+1-rho) - rho
	return rho * (1 - rho) / (dt * dt), nil
}

// ErrorRateEProcess is Lindon & Malek's conditional test on error counts with
// a fixed canary share ρ: given that a request failed, it came from the canary
// with probability θ, and θ = ρ under H₀ (equal error rates) however the
// shared error rate drifts. A Beta(κρ, κ(1−ρ)) mixture over θ gives a closed
// form in the cumulative counts, so an update is O(1).
//
// With alternative Greater it keeps only θ > ρ (canary worse) and is the
// more powerful gate; TwoSided detects any difference. The same test on
// request counts detects sample-ratio mismatch (a routing bug).
// When the share changes between batches use RatioEProcess.
type ErrorRateEProcess struct {
	running
	rho, kappa float64
	alt        Alternative
	cx, cy     int64
	logTail0   float64 // ln of the prior's mass on θ > ρ (one-sided only)
}

// NewErrorRateEProcess validates its arguments; kappa <= 0 means DefaultKappa.
// Alternative Less is refused: a gate wants evidence of a worse canary.
func NewErrorRateEProcess(rho, kappa float64, alt Alternative) (*ErrorRateEProcess, error) {
	if !(rho > 0 && rho < 1) {
		return nil, fmt.Errorf("%w: canary share %v must be in (0, 1)", ErrInput, rho)
	}
	if kappa <= 0 {
		kappa = DefaultKappa
	}
	if math.IsInf(kappa, 0) || math.IsNaN(kappa) {
		return nil, fmt.Errorf("%w: kappa %v must be finite", ErrInput, kappa)
	}
	if alt != TwoSided && alt != Greater {
		return nil, fmt.Errorf("%w: alternative %v: the error-rate e-process tests two-sided or greater (canary worse)", ErrInput, alt)
	}
	p := &ErrorRateEProcess{rho: rho, kappa: kappa, alt: alt}
	if alt == Greater {
		// 1 − I_ρ(a, b) = I_{1−ρ}(b, a), which keeps precision in the upper tail.
		p.logTail0 = safeLog(mathext.RegIncBeta(kappa*(1-rho), kappa*rho, 1-rho))
	}
	return p, nil
}

// Update adds one batch's new canary and baseline counts.
func (p *ErrorRateEProcess) Update(canary, baseline int64) error {
	if canary < 0 || baseline < 0 {
		return fmt.Errorf("%w: counts %d, %d must not be negative", ErrInput, canary, baseline)
	}
	p.cx += canary
	p.cy += baseline
	p.set(p.compute())
	return nil
}

// Counts returns the cumulative canary and baseline counts.
func (p *ErrorRateEProcess) Counts() (canary, baseline int64) { return p.cx, p.cy }

func (p *ErrorRateEProcess) compute() float64 {
	a, b := p.kappa*p.rho, p.kappa*(1-p.rho)
	cx, cy := float64(p.cx), float64(p.cy)
	l := logBeta(a+cx, b+cy) - logBeta(a, b) - cx*math.Log(p.rho) - cy*math.Log1p(-p.rho)
	if p.alt == Greater {
		l += safeLog(mathext.RegIncBeta(b+cy, a+cx, 1-p.rho)) - p.logTail0
	}
	return l
}

// Grid of the δ mixture in RatioEProcess: 64 points over a log rate ratio
// span of 3 (a factor of 20) with N(0, 1) weights, as in statistics.md §4 A.
const (
	ratioGridPoints = 64
	ratioGridSpan   = 3.0
)

// RatioEProcess tests the ratio of the canary's to the baseline's event
// rate when the canary share ρ_s may change from batch to batch (weight
// steps). For a log rate ratio δ, an event in batch s came from the canary
// with probability θ_s(δ) = ρ_s e^δ / (ρ_s e^δ + 1 − ρ_s); the e-value mixes
// the likelihood ratio against the null δ₀ = ln(nullRatio) over a fixed grid
// of δ, keeping each point's running log-likelihood: O(grid) per batch.
//
//   - Greater: H₀ canary rate ≤ nullRatio × baseline rate (grid above δ₀).
//   - Less: H₀ canary rate ≥ nullRatio × baseline rate (grid below δ₀).
//   - TwoSided: H₀ equal rates (nullRatio must be 1).
//
// The one-sided forms stay valid under a composite null because the
// likelihood ratio's expectation is monotone in the true θ.
type RatioEProcess struct {
	running
	alt      Alternative
	logNull  float64
	deltas   []float64
	logPrior []float64
	logLik   []float64
	cx, cy   int64
	// Per-event log-likelihood ratios for the last share seen: shares only
	// change at weight steps, so most updates skip the logarithms.
	cacheRho     float64
	stepX, stepY []float64
}

// NewRatioEProcess validates alt and nullRatio (> 0, finite).
func NewRatioEProcess(alt Alternative, nullRatio float64) (*RatioEProcess, error) {
	if !(nullRatio > 0) || math.IsInf(nullRatio, 1) {
		return nil, fmt.Errorf("%w: null ratio %v must be a positive finite number", ErrInput, nullRatio)
	}
	if alt == TwoSided && nullRatio != 1 {
		return nil, fmt.Errorf("%w: a two-sided ratio test has null ratio 1, not %v", ErrInput, nullRatio)
	}
	p := &RatioEProcess{alt: alt, logNull: math.Log(nullRatio)}
	p.deltas = make([]float64, 0, ratioGridPoints)
	switch alt {
	case Greater, Less:
		sign := 1.0
		if alt == Less {
			sign = -1
		}
		for j := 1; j <= ratioGridPoints; j++ {
			p.deltas = append(p.deltas, sign*ratioGridSpan*float64(j)/ratioGridPoints)
		}
	default:
		for j := 1; j <= ratioGridPoints/2; j++ {
			d := ratioGridSpan * float64(j) / (ratioGridPoints / 2)
			p.deltas = append(p.deltas, -d, d)
		}
	}
	// N(0, 1) weights on the offset from the null, normalised in logs.
	p.logPrior = make([]float64, len(p.deltas))
	for j, d := range p.deltas {
		p.logPrior[j] = -d * d / 2
	}
	norm := logSumExp(p.logPrior)
	for j := range p.logPrior {
		p.logPrior[j] -= norm
		p.deltas[j] += p.logNull
	}
	p.logLik = make([]float64, len(p.deltas))
	return p, nil
}

// Update adds one batch: the canary's and the baseline's new events and the
// canary share rho of the traffic that could produce them, fixed before the
// batch (the routing weight), not measured from it.
func (p *RatioEProcess) Update(canary, baseline int64, rho float64) error {
	if canary < 0 || baseline < 0 {
		return fmt.Errorf("%w: counts %d, %d must not be negative", ErrInput, canary, baseline)
	}
	if !(rho > 0 && rho < 1) {
		return fmt.Errorf("%w: canary share %v must be in (0, 1)", ErrInput, rho)
	}
	if canary == 0 && baseline == 0 {
		return nil
	}
	p.cx += canary
	p.cy += baseline
	if rho != p.cacheRho {
		p.cacheRho = rho
		p.stepX = make([]float64, len(p.deltas))
		p.stepY = make([]float64, len(p.deltas))
		// ln θ and ln(1−θ) via the log-odds: logit θ = logit ρ + δ.
		lo := math.Log(rho) - math.Log1p(-rho)
		l0x, l0y := logSigmoid(lo+p.logNull), logSigmoid(-lo-p.logNull)
		for j, d := range p.deltas {
			p.stepX[j] = logSigmoid(lo+d) - l0x
			p.stepY[j] = logSigmoid(-lo-d) - l0y
		}
	}
	ex, ey := float64(canary), float64(baseline)
	for j := range p.logLik {
		p.logLik[j] += ex*p.stepX[j] + ey*p.stepY[j]
	}
	p.set(p.mix())
	return nil
}

// Counts returns the cumulative canary and baseline events.
func (p *RatioEProcess) Counts() (canary, baseline int64) { return p.cx, p.cy }

func (p *RatioEProcess) mix() float64 {
	m := math.Inf(-1)
	for j := range p.logLik {
		m = math.Max(m, p.logPrior[j]+p.logLik[j])
	}
	s := 0.0
	for j := range p.logLik {
		s += math.Exp(p.logPrior[j] + p.logLik[j] - m)
	}
	return m + math.Log(s)
}

// logSigmoid is ln(1/(1+e^−x)) without overflow.
func logSigmoid(x float64) float64 {
	if x >= 0 {
		return -math.Log1p(math.Exp(-x))
	}
	return x - math.Log1p(math.Exp(x))
}

func logSumExp(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	if math.IsInf(m, -1) {
		return m
	}
	s := 0.0
	for _, x := range v {
		s += math.Exp(x - m)
	}
	return m + math.Log(s)
}

// betFractions are the fractions of the largest safe bet mixed by
// RateDifferenceEProcess: geometric from 0.9 down to about 0.001, so both
// a catastrophe (a few requests) and a small shift (thousands) grow some
// component quickly. Uniform weights.
var betFractions = func() []float64 {
	f := make([]float64, 20)
	for j := range f {
		f[j] = 0.9 * math.Pow(math.Sqrt2, -float64(j))
	}
	return f
}()

// RateDifferenceEProcess tests the absolute difference of error rates
// p_x − p_y against a margin, request by request, by betting (Waudby-Smith &
// Ramdas 2023). Each request goes to the canary with known probability ρ_s;
// Z = 1/ρ_s for a canary error, −1/(1−ρ_s) for a baseline error and 0
// otherwise has mean p_x − p_y (inverse-probability weighting), whatever the
// shared error rate does over time. Wealth Π(1 + λ(Z − margin)) is a test
// supermartingale under H₀: p_x − p_y ≤ margin (Greater); with Less the
// sign flips and H₀ is p_x − p_y ≥ margin, so rejecting it is evidence the
// canary is within the margin. The e-value mixes a fixed set of bet sizes;
// requests in a batch share one of three Z values, so an update is O(bets).
//
// Unlike ErrorRateEProcess, whose null fixes the ratio of the rates, this
// null is the absolute increase users write in a rollout (maxIncrease: 2%).
type RateDifferenceEProcess struct {
	running
	margin     float64
	alt        Alternative
	logWealth  []float64
	nx, ny     int64
	kx, ky     int64
	logWeight0 float64
}

// NewRateDifferenceEProcess validates margin (in (−1, 1)) and alt (Greater or Less).
func NewRateDifferenceEProcess(margin float64, alt Alternative) (*RateDifferenceEProcess, error) {
	if !(margin > -1 && margin < 1) {
		return nil, fmt.Errorf("%w: margin %v must be in (-1, 1)", ErrInput, margin)
	}
	if alt != Greater && alt != Less {
		return nil, fmt.Errorf("%w: alternative %v: the rate-difference e-process is one-sided (greater or less)", ErrInput, alt)
	}
	return &RateDifferenceEProcess{
		margin: margin, alt: alt,
		logWealth:  make([]float64, len(betFractions)),
		logWeight0: -math.Log(float64(len(betFractions))),
	}, nil
}

// Update adds one batch of new requests and errors per side with the canary
// share rho fixed before the batch (the routing weight).
func (p *RateDifferenceEProcess) Update(canaryRequests, canaryErrors, baselineRequests, baselineErrors int64, rho float64) error {
	switch {
	case canaryRequests < 0 || baselineRequests < 0 || canaryErrors < 0 || baselineErrors < 0:
		return fmt.Errorf("%w: counts must not be negative", ErrInput)
	case canaryErrors > canaryRequests:
		return fmt.Errorf("%w: canary errors %d exceed canary requests %d", ErrInput, canaryErrors, canaryRequests)
	case baselineErrors > baselineRequests:
		return fmt.Errorf("%w: baseline errors %d exceed baseline requests %d", ErrInput, baselineErrors, baselineRequests)
	case !(rho > 0 && rho < 1):
		return fmt.Errorf("%w: canary share %v must be in (0, 1)", ErrInput, rho)
	}
	n := canaryRequests + baselineRequests
	if n == 0 {
		return nil
	}
	p.nx += canaryRequests
	p.ny += baselineRequests
	p.kx += canaryErrors
	p.ky += baselineErrors
	// Outcomes X of one request, oriented so that H₀ means E[X] ≤ 0.
	xc, xb, xo := 1/rho-p.margin, -1/(1-rho)-p.margin, -p.margin
	if p.alt == Less {
		xc, xb, xo = -xc, -xb, -xo
	}
	// The largest λ keeping 1 + λX > 0 for the worst outcome.
	// xb < 0 for Greater and xc < 0 for Less, since |margin| < 1 < 1/ρ, 1/(1−ρ).
	lmax := -1 / math.Min(xc, math.Min(xb, xo))
	kc, kb, ko := float64(canaryErrors), float64(baselineErrors), float64(n-canaryErrors-baselineErrors)
	for j, f := range betFractions {
		l := f * lmax
		p.logWealth[j] += kc*math.Log1p(l*xc) + kb*math.Log1p(l*xb) + ko*math.Log1p(l*xo)
	}
	m := math.Inf(-1)
	for _, w := range p.logWealth {
		m = math.Max(m, w)
	}
	s := 0.0
	for _, w := range p.logWealth {
		s += math.Exp(w - m)
	}
	p.set(p.logWeight0 + m + math.Log(s))
	return nil
}

// Counts returns cumulative requests and errors per side.
func (p *RateDifferenceEProcess) Counts() (canaryRequests, canaryErrors, baselineRequests, baselineErrors int64) {
	return p.nx, p.kx, p.ny, p.ky
}

// MSPRT is the mixture sequential probability ratio test of Johari et al.
// for the difference of two proportions, with a N(0, τ²) mixture on the
// difference and the plug-in variance. Its validity is asymptotic (i.i.d.
// traffic, enough events); it is kept for parity with Optimizely-style tools
// and is not what Monitor uses.
type MSPRT struct {
	running
	tau2           float64
	kx, nx, ky, ny int64
}

// NewMSPRT takes τ, the smallest difference in proportions worth detecting.
func NewMSPRT(tau float64) (*MSPRT, error) {
	if !(tau > 0) || math.IsInf(tau, 1) {
		return nil, fmt.Errorf("%w: tau %v must be a positive finite number", ErrInput, tau)
	}
	return &MSPRT{tau2: tau * tau}, nil
}

// Update adds new successes k out of n trials per side (canary first).
func (p *MSPRT) Update(kx, nx, ky, ny int64) error {
	if kx < 0 || ky < 0 || kx > nx || ky > ny {
		return fmt.Errorf("%w: counts %d/%d, %d/%d must satisfy 0 <= k <= n", ErrInput, kx, nx, ky, ny)
	}
	p.kx += kx
	p.nx += nx
	p.ky += ky
	p.ny += ny
	if p.nx == 0 || p.ny == 0 {
		return nil
	}
	px, py := float64(p.kx)/float64(p.nx), float64(p.ky)/float64(p.ny)
	v := px*(1-px)/float64(p.nx) + py*(1-py)/float64(p.ny)
	if v == 0 {
		// Both rates at 0 or 1: the plug-in variance says nothing yet.
		p.set(0)
		return nil
	}
	d := px - py
	p.set(0.5*math.Log(v/(v+p.tau2)) + p.tau2*d*d/(2*v*(v+p.tau2)))
	return nil
}

var (
	_ EProcess = (*ErrorRateEProcess)(nil)
	_ EProcess = (*RatioEProcess)(nil)
	_ EProcess = (*RateDifferenceEProcess)(nil)
	_ EProcess = (*MSPRT)(nil)
)

// hdrGeometry reproduces HdrHistogram's count-index layout (hdrhistogram-go
// hdr.go: valueFromFlatIndex), so an exported counts array can be read in
// value order without the allocation of Distribution(). Two histograms with
// equal (lowest, highest, significant figures) share one layout.
type hdrGeometry struct {
	lowest, highest, sig int64
	unitMag, halfMag     int32
}

func geometryOf(h *hdrhistogram.Histogram) hdrGeometry {
	low, sig := h.LowestTrackableValue(), h.SignificantFigures()
	if low < 1 {
		low = 1
	}
	sig = min(max(sig, 1), 5)
	g := hdrGeometry{lowest: low, highest: h.HighestTrackableValue(), sig: sig}
	countMag := int32(math.Ceil(math.Log2(2 * math.Pow10(int(sig)))))
	g.halfMag = max(countMag, 1) - 1
	g.unitMag = max(int32(math.Floor(math.Log2(float64(low)))), 0)
	return g
}

// bucket returns the lowest and highest value counted at index idx.
func (g hdrGeometry) bucket(idx int) (lo, hi int64) {
	half := int32(1) << g.halfMag
	b := int32(idx)>>g.halfMag - 1
	sub := int32(idx)&(half-1) + half
	if b < 0 {
		sub -= half
		b = 0
	}
	shift := uint(int64(b) + int64(g.unitMag))
	lo = int64(sub) << shift
	return lo, lo + int64(1)<<shift - 1
}

func sameGeometry(x, y *hdrhistogram.Histogram) error {
	if x.LowestTrackableValue() != y.LowestTrackableValue() ||
		x.HighestTrackableValue() != y.HighestTrackableValue() ||
		x.SignificantFigures() != y.SignificantFigures() {
		return fmt.Errorf("%w: canary and baseline histograms differ in range or precision ([%d, %d] %d digits vs [%d, %d] %d digits)",
			ErrInput, x.LowestTrackableValue(), x.HighestTrackableValue(), x.SignificantFigures(),
			y.LowestTrackableValue(), y.HighestTrackableValue(), y.SignificantFigures())
	}
	return nil
}

// LatencyBins is the number of fixed log-width bins LatencyEProcess
// coarsens HdrHistogram buckets into: √2 wide from 1 µs, covering up to 67 s.
const LatencyBins = 52

// latencyBin maps a latency in microseconds to its bin, floor(2·log₂ v).
func latencyBin(v int64) int {
	if v <= 1 {
		return 0
	}
	return min(int(2*math.Log2(float64(v))), LatencyBins-1)
}

// LatencyEProcess is the histogram-bin test of statistics.md §4 C1. Under
// H₀ (same latency distribution) and random routing, a request's version
// given its latency bin is Bernoulli(ρ), so conditioning on bins removes
// the unknown distribution and any load drift both versions share. Per-bin
// Beta(κρ₀, κ(1−ρ₀)) mixtures multiply; ρ₀ is the share of the first batch
// (fixed before its data) and each batch's likelihood under H₀ uses its own
// ρ_s. It detects any change, improvements included: for a "canary slower"
// gate use SlowdownEProcess. Histograms are in microseconds.
type LatencyEProcess struct {
	running
	kappa, rho0 float64
	nx, ny      [LatencyBins]int64
	binTerm     [LatencyBins]float64 // ln B(a+n_x, b+n_y) − ln B(a, b) per bin
	sumBins     float64
	logNull     float64 // Σ_s Σ_k n_x ln ρ_s + n_y ln(1−ρ_s)
	geom        hdrGeometry
	binOf       []uint8
}

// NewLatencyEProcess takes the mixture concentration; kappa <= 0 means DefaultKappa.
func NewLatencyEProcess(kappa float64) (*LatencyEProcess, error) {
	if kappa <= 0 {
		kappa = DefaultKappa
	}
	if math.IsInf(kappa, 0) || math.IsNaN(kappa) {
		return nil, fmt.Errorf("%w: kappa %v must be finite", ErrInput, kappa)
	}
	return &LatencyEProcess{kappa: kappa}, nil
}

// Update adds one batch: histograms of this interval's new latencies only
// (microseconds, equal geometry) and the canary share rho fixed before it.
func (p *LatencyEProcess) Update(canary, baseline *hdrhistogram.Histogram, rho float64) error {
	if canary == nil || baseline == nil {
		return fmt.Errorf("%w: latency histograms must not be nil", ErrInput)
	}
	if err := sameGeometry(canary, baseline); err != nil {
		return err
	}
	return p.update(geometryOf(canary), canary.Export().Counts, baseline.Export().Counts, rho)
}

func (p *LatencyEProcess) update(g hdrGeometry, cx, cy []int64, rho float64) error {
	if !(rho > 0 && rho < 1) {
		return fmt.Errorf("%w: canary share %v must be in (0, 1)", ErrInput, rho)
	}
	size := max(len(cx), len(cy))
	if size == 0 {
		return nil // an interval without latencies
	}
	if len(p.binOf) < size || p.geom != g {
		p.geom = g
		p.binOf = make([]uint8, size)
		for i := range p.binOf {
			lo, _ := g.bucket(i)
			p.binOf[i] = uint8(latencyBin(lo))
		}
	}
	var bx, by [LatencyBins]int64
	for i, c := range cx {
		if c != 0 && i < len(p.binOf) {
			bx[p.binOf[i]] += c
		}
	}
	for i, c := range cy {
		if c != 0 && i < len(p.binOf) {
			by[p.binOf[i]] += c
		}
	}
	if p.rho0 == 0 {
		p.rho0 = rho
	}
	a, b := p.kappa*p.rho0, p.kappa*(1-p.rho0)
	lr, l1r := math.Log(rho), math.Log1p(-rho)
	for k := range bx {
		if bx[k] == 0 && by[k] == 0 {
			continue
		}
		p.nx[k] += bx[k]
		p.ny[k] += by[k]
		p.logNull += float64(bx[k])*lr + float64(by[k])*l1r
		t := logBeta(a+float64(p.nx[k]), b+float64(p.ny[k])) - logBeta(a, b)
		p.sumBins += t - p.binTerm[k]
		p.binTerm[k] = t
	}
	p.set(p.sumBins - p.logNull)
	return nil
}

// SlowdownEProcess is the directional latency gate of statistics.md §4 C1:
// one-sided conditional tests (RatioEProcess) on exceedance events over
// thresholds fixed before the data they judge, averaged (an average of
// e-values is an e-value). The thresholds L_j are the baseline's quantiles
// q_j measured over a warm-up; tests start with the batch after it.
//
// The thresholds are then re-measured on epochs of the baseline's later
// samples, each twice as long as the one before (warm-up w, then 2w, 4w, …,
// at most maxEpochs·w), and each epoch's thresholds apply from the batch
// after it ends. A start-up transient (first connections, cold caches)
// thus only sets the thresholds of the first epoch: a warm-up tail inflated
// by it would otherwise leave both sides' exceedances so rare that neither
// test gathers evidence. The event probabilities change with the
// thresholds, but the conditional likelihood ratio of each batch only needs
// its thresholds fixed before it, so the running products stay
// supermartingales and nothing restarts.
//
// With maxRatio r, a canary event is a latency above r·L_j and a baseline
// event one above L_j. If the canary is at most r times slower than the
// baseline (its latencies are the baseline's scaled by at most r), then
// P(canary > r·L) ≤ P(baseline > L) for every L: that is the null of
// Slower(), so an A/A or within-tolerance canary is not failed. Within()
// tests the reverse null, P(canary > r·L) ≥ P(baseline > L) at the
// thresholds used; rejecting it is evidence that the canary's quantiles are
// within r times the baseline's.
type SlowdownEProcess struct {
	quantiles  []float64
	maxRatio   float64
	warmup     int64
	next       latencyCounts // baseline counts since the thresholds were last set
	target     int64         // samples in next that set the next thresholds
	geom       hdrGeometry
	thresholds []int64
	slower     []*RatioEProcess
	within     []*RatioEProcess
	slowerRun  running
	withinRun  running
}

// maxEpochs caps the re-measuring epochs at maxEpochs·warm-up baseline
// samples (32 000 with Monitor's default warm-up), so that the thresholds
// keep following the baseline over a long rollout.
const maxEpochs = 64

// NewSlowdownEProcess takes the baseline quantiles in (0, 1) (for example
// 0.5, 0.9, 0.99), the allowed canary/baseline ratio (>= 1) and the number of
// baseline samples to measure the thresholds on (at least 1).
func NewSlowdownEProcess(quantiles []float64, maxRatio float64, warmup int64) (*SlowdownEProcess, error) {
	if len(quantiles) == 0 {
		return nil, fmt.Errorf("%w: at least one quantile is needed", ErrInput)
	}
	for _, q := range quantiles {
		if !(q > 0 && q < 1) {
			return nil, fmt.Errorf("%w: quantile %v must be in (0, 1)", ErrInput, q)
		}
	}
	if !(maxRatio >= 1) || math.IsInf(maxRatio, 1) {
		return nil, fmt.Errorf("%w: max ratio %v must be a finite number >= 1", ErrInput, maxRatio)
	}
	if warmup < 1 {
		return nil, fmt.Errorf("%w: warm-up %d must be at least 1 sample", ErrInput, warmup)
	}
	p := &SlowdownEProcess{quantiles: append([]float64(nil), quantiles...), maxRatio: maxRatio, warmup: warmup, target: warmup}
	p.next.lo, p.next.hi = 0, -1
	for range quantiles {
		s, _ := NewRatioEProcess(Greater, 1)
		w, _ := NewRatioEProcess(Less, 1)
		p.slower = append(p.slower, s)
		p.within = append(p.within, w)
	}
	return p, nil
}

// Update adds one batch: histograms of this interval's new latencies only
// (microseconds, equal geometry) and the canary share rho fixed before it.
func (p *SlowdownEProcess) Update(canary, baseline *hdrhistogram.Histogram, rho float64) error {
	if canary == nil || baseline == nil {
		return fmt.Errorf("%w: latency histograms must not be nil", ErrInput)
	}
	if err := sameGeometry(canary, baseline); err != nil {
		return err
	}
	cx, err := NewCounts(canary)
	if err != nil {
		return err
	}
	cy, err := NewCounts(baseline)
	if err != nil {
		return err
	}
	return p.updateCounts(geometryOf(canary), cx, cy, rho)
}

// Frozen reports whether the thresholds are set and the tests running.
func (p *SlowdownEProcess) Frozen() bool { return p.thresholds != nil }

// Thresholds returns the baseline quantiles L_j (µs) that judge the next
// batch, nil during warm-up.
func (p *SlowdownEProcess) Thresholds() []int64 { return append([]int64(nil), p.thresholds...) }

// Slower is the e-process for "canary slower than maxRatio × baseline".
func (p *SlowdownEProcess) Slower() EProcess { return &p.slowerRun }

// Within is the e-process for "canary within maxRatio × baseline".
func (p *SlowdownEProcess) Within() EProcess { return &p.withinRun }

// update takes dense counts arrays; either may be nil.
func (p *SlowdownEProcess) update(g hdrGeometry, cx, cy []int64, rho float64) error {
	return p.updateCounts(g, denseCounts(g, cx), denseCounts(g, cy), rho)
}

// denseCounts views an exported counts array as a Counts (nil stays nil).
func denseCounts(g hdrGeometry, counts []int64) *Counts {
	if counts == nil {
		return nil
	}
	c := &Counts{geom: g, lowest: g.lowest, highest: g.highest, sig: g.sig}
	_ = c.set(counts) // only tests hand arrays in; a negative count stays in the total
	return c
}

// updateCounts is one batch on exported histograms (either may be nil or
// empty). Bucket bounds grow with the index, so each event count is the sum
// of a histogram's counts from one cut index up: three binary searches per
// threshold and walks over the non-empty tail only.
func (p *SlowdownEProcess) updateCounts(g hdrGeometry, cx, cy *Counts, rho float64) error {
	if !(rho > 0 && rho < 1) {
		return fmt.Errorf("%w: canary share %v must be in (0, 1)", ErrInput, rho)
	}
	if p.thresholds == nil {
		p.collect(g, cy)
		return nil
	}
	if g != p.geom {
		return fmt.Errorf("%w: latency histograms changed range or precision after the thresholds were set", ErrInput)
	}
	J := len(p.thresholds)
	var lsBuf, lwBuf [8]float64
	ls, lw := lsBuf[:0], lwBuf[:0]
	size := 0
	for _, c := range []*Counts{cx, cy} {
		if c != nil {
			size = max(size, len(c.counts))
		}
	}
	for j, L := range p.thresholds {
		cut := p.maxRatio * float64(L)
		var slowerX, withinX, eventsY int64
		if size > 0 {
			// Canary buckets entirely above r·L, canary buckets reaching above
			// r·L, baseline buckets above L.
			slowerX = cx.sumFrom(sort.Search(size, func(i int) bool { lo, _ := g.bucket(i); return float64(lo) > cut }))
			withinX = cx.sumFrom(sort.Search(size, func(i int) bool { _, hi := g.bucket(i); return float64(hi) > cut }))
			eventsY = cy.sumFrom(sort.Search(size, func(i int) bool { lo, _ := g.bucket(i); return lo > L }))
		}
		if err := p.slower[j].Update(slowerX, eventsY, rho); err != nil {
			return err
		}
		if err := p.within[j].Update(withinX, eventsY, rho); err != nil {
			return err
		}
		ls, lw = append(ls, p.slower[j].LogE()), append(lw, p.within[j].LogE())
	}
	lj := math.Log(float64(J))
	p.slowerRun.set(logSumExp(ls) - lj)
	p.withinRun.set(logSumExp(lw) - lj)
	// This batch has been judged; now it may help set later thresholds.
	p.collect(g, cy)
	return nil
}

// collect adds the baseline's counts to the current epoch and, once it
// holds target samples, sets the thresholds from it and starts the next,
// twice as long (up to maxEpochs·warm-up).
func (p *SlowdownEProcess) collect(g hdrGeometry, cy *Counts) {
	if cy == nil || cy.n == 0 {
		return
	}
	if p.next.counts != nil && (len(p.next.counts) != len(cy.counts) || g != p.geom) {
		// Only reachable during warm-up: afterwards Update refuses a new geometry.
		p.next = latencyCounts{lo: 0, hi: -1}
	}
	p.geom = g
	if p.next.n == 0 && cy.n >= p.target {
		// A batch that fills an epoch on its own (heavy traffic) sets the
		// thresholds from its exported counts, sparing the copy.
		p.setThresholds(g, cy.n, cy.rankIndex)
		return
	}
	p.next.addCounts(cy)
	if p.next.n < p.target {
		return
	}
	p.setThresholds(g, p.next.n, p.next.rank)
	p.next.reset()
}

// setThresholds ends an epoch of n baseline samples and starts the next.
func (p *SlowdownEProcess) setThresholds(g hdrGeometry, n int64, rank func(k int64) int) {
	if p.thresholds == nil {
		p.thresholds = make([]int64, len(p.quantiles))
	}
	for j, q := range p.quantiles {
		p.thresholds[j] = threshold(g, n, q, rank)
	}
	p.target = min(2*p.target, maxEpochs*p.warmup)
}

// threshold is the q-quantile interpolated between the order statistics
// around rank (n−1)q + 1 (numpy's default, Hyndman & Fan's type 7), each
// read as its bucket's highest value, then raised to the highest value of
// the bucket holding it, so that "baseline > L" is exactly "in a higher
// bucket". Interpolating keeps a quantile that falls in a gap of the
// baseline's values between its neighbours instead of on one of them.
// rank gives the count index of the k-th smallest of n values.
func threshold(g hdrGeometry, n int64, q float64, rank func(k int64) int) int64 {
	h := float64(n-1) * q
	k := int64(math.Floor(h)) + 1
	i1 := rank(k)
	i2 := i1
	if k < n {
		i2 = rank(k + 1)
	}
	_, v1 := g.bucket(i1)
	_, v2 := g.bucket(i2)
	v := float64(v1) + (h-math.Floor(h))*float64(v2-v1)
	i := i1 + sort.Search(i2-i1, func(i int) bool { _, hi := g.bucket(i1 + i); return float64(hi) >= v })
	_, top := g.bucket(i)
	return top
}

// DKWBand is the time-uniform Dvoretzky–Kiefer–Wolfowitz half-width of
// Howard & Ramdas (2022): with probability 1 − a, ‖F̂_n − F‖∞ ≤ DKWBand(n, a)
// for every n at once.
func DKWBand(n int64, a float64) float64 {
	if n <= 0 || !(a > 0 && a < 1) {
		return math.Inf(1)
	}
	nf := float64(n)
	return 0.85 * math.Sqrt((math.Log(math.Log(math.E*nf))+0.8*math.Log(1612/a))/nf)
}

// DKWTest is statistics.md §4 C2, the approach of Netflix's KDD paper: a
// time-uniform confidence band around each version's empirical latency
// distribution; the canary is declared slower once, at some latency,
// F̂_baseline − F̂_canary exceeds the two bands' sum. It needs i.i.d. latencies
// per version (no shared load drift) and is slower to detect than
// SlowdownEProcess; it is kept as the paper's reference. O(buckets) per batch.
type DKWTest struct {
	alpha    float64
	geom     hdrGeometry
	cx, cy   []int64
	nx, ny   int64
	gap      float64
	rejected bool
}

// NewDKWTest fixes α (the band depends on it).
func NewDKWTest(alpha float64) (*DKWTest, error) {
	if !(alpha > 0 && alpha < 1) {
		return nil, fmt.Errorf("%w: alpha %v must be in (0, 1)", ErrInput, alpha)
	}
	return &DKWTest{alpha: alpha}, nil
}

// Update adds one batch of latency histograms (equal geometry).
func (p *DKWTest) Update(canary, baseline *hdrhistogram.Histogram) error {
	if canary == nil || baseline == nil {
		return fmt.Errorf("%w: latency histograms must not be nil", ErrInput)
	}
	if err := sameGeometry(canary, baseline); err != nil {
		return err
	}
	g := geometryOf(canary)
	if p.cx == nil {
		p.geom = g
	} else if g != p.geom {
		return fmt.Errorf("%w: latency histograms changed range or precision", ErrInput)
	}
	x, y := canary.Export().Counts, baseline.Export().Counts
	if p.cx == nil {
		p.cx, p.cy = make([]int64, len(x)), make([]int64, len(y))
	}
	for i := range x {
		p.cx[i] += x[i]
		p.cy[i] += y[i]
	}
	p.nx += canary.TotalCount()
	p.ny += baseline.TotalCount()
	if p.nx == 0 || p.ny == 0 {
		return nil
	}
	var ax, ay int64
	p.gap = 0
	for i := range p.cx {
		ax += p.cx[i]
		ay += p.cy[i]
		p.gap = math.Max(p.gap, float64(ay)/float64(p.ny)-float64(ax)/float64(p.nx))
	}
	if p.gap > p.Band() {
		p.rejected = true
	}
	return nil
}

// Gap is the largest F̂_baseline − F̂_canary over bucket edges.
func (p *DKWTest) Gap() float64 { return p.gap }

// Band is the current threshold ε(n_y, α/2) + ε(n_x, α/2).
func (p *DKWTest) Band() float64 {
	return DKWBand(p.nx, p.alpha/2) + DKWBand(p.ny, p.alpha/2)
}

// Rejected reports whether the canary has been declared slower.
func (p *DKWTest) Rejected() bool { return p.rejected }

// Package guard evaluates a route's critical rollback triggers as responses
// complete, so that a broken canary is cut off after a handful of requests
// instead of after a scrape and an analysis interval.
//
// # How a rate trigger decides
//
// error_rate and the latency quantile triggers watch a Bernoulli stream: a
// request failed or not, a request was slower than the threshold or not
// ("p99 > 5s" is "more than 1% of requests slower than 5s"). Against the
// trigger's rate p0 (0.05 for error_rate > 5%, 1−q for a quantile) the guard
// runs a one-sided CUSUM (Page 1954) of the log-likelihood ratio of
// p1 = min(2·p0, (1+p0)/2) to p0:
//
//	S = max(0, S + (event ? ln(p1/p0) : ln((1−p1)/(1−p0))))
//
// and fires when S reaches ln(1/α), α = 1 − Confidence — Wald's SPRT
// boundary — AND the Wilson lower bound (at Confidence) of the event share in
// the current excursion (the requests since S last left 0) is above p0 AND at
// least MinRequests watched requests were seen since arming.
//
// Why CUSUM and not a Wilson bound over a sliding window: a window long
// enough to stay quiet under 1% random errors (about 1,000 requests) needs
// ~58 consecutive failures before its bound clears 5% once it is full of
// healthy history; a short one is noisy. Why not a plain SPRT since arming:
// its statistic drifts far below zero over a long healthy run, and a canary
// that breaks later has to climb all of it back. CUSUM is the SPRT restarted
// whenever the evidence favours health, which is the optimal detector of a
// change (Lorden 1971, Moustakides 1986): at 5% with Confidence 0.99 a
// canary failing every request is cut off at its 7th failure whatever came
// before; under 1% random errors a false trip needs a run of failures with
// probability ~1e-9 per excursion. The Wilson condition is the guard's
// evidence in plain terms (reported in Trip.Bound) and keeps a long
// excursion at a rate near p0 from firing on the CUSUM alone.
//
// consecutive_errors and health_check_failures are plain counts: they fire
// when the count exceeds the threshold.
//
// # Concurrency
//
// Observe is called from every request goroutine: it uses only atomics (one
// CAS word per rate trigger, packing S, n and k), allocates nothing on the
// healthy path, and does no work at all for versions other than Watch. The
// trip itself is claimed by a CAS, so onTrip runs exactly once per arming.
package guard

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultConfidence  = 0.99
	DefaultMinRequests = 10
	DefaultWindow      = 1000
	// MaxWindow bounds Window: the excursion counts are packed into 16 bits.
	MaxWindow = 1<<16 - 1
)

// Config configures a Guard.
type Config struct {
	// Triggers are the critical rollback conditions; at least one.
	Triggers []Trigger
	// Watch is the index of the version the guard protects (the canary).
	// Observations of other versions are ignored.
	Watch int
	// Confidence of the evidence a rate trigger needs (default 0.99).
	Confidence float64
	// MinRequests is the number of watched requests since arming before a
	// rate trigger may fire (default 10; negative means 0).
	MinRequests int
	// Window caps the requests a rate trigger's evidence covers (default
	// 1000, at most MaxWindow): an excursion longer than that has its counts
	// halved, which only widens the Wilson interval.
	Window int
}

// Trip describes why the guard fired: what, when, and the evidence.
type Trip struct {
	Time    time.Time `json:"time"`
	Trigger Trigger   `json:"trigger"`
	Reason  string    `json:"reason"`
	// Requests and Errors are what the decision rests on: for a rate
	// trigger the watched requests of the current excursion and how many of
	// them were events (failures, or requests slower than the threshold);
	// for a count trigger the run of failures. Totals since arming are the
	// recorder's business, not the hot path's.
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// Observed is the measured value: Errors/Requests for a rate trigger,
	// the count for a count trigger.
	Observed float64 `json:"observed"`
	// Bound is the evidence: the Wilson lower bound of Observed at the
	// configured confidence for a rate trigger, the threshold for a count.
	Bound float64 `json:"bound"`
}

// Guard evaluates one route's critical triggers. It is safe for concurrent
// use.
type Guard struct {
	watch       int
	confidence  float64
	minRequests int64
	window      uint32
	bound       float32 // CUSUM boundary ln(1/α)
	onTrip      func(Trip)
	now         func() time.Time

	rates       []rate
	consecutive *count
	health      *count

	armed atomic.Bool
	trip  atomic.Pointer[Trip]
	// seen counts watched requests only until MinRequests is reached; after
	// that warm is set and the hot path never writes a shared counter.
	seen atomic.Int64
	warm atomic.Bool
}

// rate is one CUSUM trigger.
type rate struct {
	trigger  Trigger
	latency  bool
	limit    time.Duration // latency triggers: slower than this is an event
	p0       float64
	up, down float32 // log-likelihood ratio of an event / a non-event
	state    atomic.Uint64
	_        [64]byte // keep triggers' CAS words on separate cache lines
}

// count is a count trigger.
type count struct {
	trigger Trigger
	limit   int64
	n       atomic.Int64
}

// New validates cfg, fills in its defaults and returns an armed guard.
// onTrip (may be nil) is called once per arming, from the goroutine whose
// observation fired the trigger: it must be quick (setting the canary weight
// to 0 and queueing a notification is the intended use).
func New(cfg Config, onTrip func(Trip)) (*Guard, error) {
	if len(cfg.Triggers) == 0 {
		return nil, errors.New("guard: Triggers is empty: a guard needs at least one trigger")
	}
	if cfg.Watch < 0 {
		return nil, fmt.Errorf("guard: Watch %d is not a version index", cfg.Watch)
	}
	if cfg.Confidence == 0 {
		cfg.Confidence = DefaultConfidence
	}
	if !(cfg.Confidence > 0 && cfg.Confidence < 1) {
		return nil, fmt.Errorf("guard: Confidence %v is not between 0 and 1 (exclusive)", cfg.Confidence)
	}
	if cfg.MinRequests == 0 {
		cfg.MinRequests = DefaultMinRequests
	} else if cfg.MinRequests < 0 {
		cfg.MinRequests = 0
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Window < 1 || cfg.Window > MaxWindow {
		return nil, fmt.Errorf("guard: Window %d is not between 1 and %d requests", cfg.Window, MaxWindow)
	}
	g := &Guard{
		watch:       cfg.Watch,
		confidence:  cfg.Confidence,
		minRequests: int64(cfg.MinRequests),
		window:      uint32(cfg.Window),
		bound:       float32(math.Log(1 / (1 - cfg.Confidence))),
		onTrip:      onTrip,
		now:         time.Now,
	}
	g.rates = make([]rate, 0, len(cfg.Triggers))
	seen := map[string]bool{}
	for i, t := range cfg.Triggers {
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("guard: Triggers[%d]: %w", i, err)
		}
		if seen[t.Metric] {
			return nil, fmt.Errorf("guard: Triggers[%d]: %s appears twice", i, t.Metric)
		}
		seen[t.Metric] = true
		switch {
		case t.Metric == ConsecutiveErrors:
			g.consecutive = &count{trigger: t, limit: int64(t.Threshold)}
		case t.Metric == HealthCheckFailures:
			g.health = &count{trigger: t, limit: int64(t.Threshold)}
		default:
			p0 := t.Threshold
			g.rates = append(g.rates, rate{})
			r := &g.rates[len(g.rates)-1]
			r.trigger = t
			if q, ok := latencyQuantiles[t.Metric]; ok {
				p0 = 1 - q
				r.latency = true
				r.limit = time.Duration(t.Threshold * float64(time.Second))
			}
			p1 := math.Min(2*p0, (1+p0)/2)
			r.p0 = p0
			r.up = float32(math.Log(p1 / p0))
			r.down = float32(math.Log((1 - p1) / (1 - p0)))
		}
	}
	g.warm.Store(g.minRequests == 0)
	g.armed.Store(true)
	return g, nil
}

// Observe feeds one completed request. failed means the request counts as an
// error (5xx, transport failure, gRPC server fault); latency is what the
// client waited. Only the watched version is evaluated.
func (g *Guard) Observe(version int, latency time.Duration, failed bool) {
	if version != g.watch || !g.armed.Load() {
		return
	}
	warm := g.warm.Load()
	if !warm && g.seen.Add(1) >= g.minRequests {
		g.warm.Store(true)
		warm = true
	}
	for i := range g.rates {
		r := &g.rates[i]
		event := failed
		if r.latency {
			event = latency > r.limit
		}
		r.observe(g, event, warm)
	}
	if c := g.consecutive; c != nil {
		if failed {
			if v := c.n.Add(1); v > c.limit {
				g.fireCount(c, v)
			}
		} else if c.n.Load() != 0 {
			c.n.Store(0)
		}
	}
}

// packed rate state: S (float32 bits) << 32 | n << 16 | k.
func unpack(s uint64) (S float32, n, k uint32) {
	return math.Float32frombits(uint32(s >> 32)), uint32(s>>16) & 0xffff, uint32(s) & 0xffff
}

func pack(S float32, n, k uint32) uint64 {
	return uint64(math.Float32bits(S))<<32 | uint64(n)<<16 | uint64(k)
}

func (r *rate) observe(g *Guard, event, warm bool) {
	for {
		old := r.state.Load()
		if old == 0 && !event {
			return // at rest and the evidence favours health: nothing to write
		}
		S, n, k := unpack(old)
		if event {
			S += r.up
		} else {
			S += r.down
		}
		var next uint64
		if S > 0 {
			n++
			if event {
				k++
			}
			if n > g.window {
				n, k = (n+1)/2, (k+1)/2
			}
			next = pack(S, n, k)
		}
		if !r.state.CompareAndSwap(old, next) {
			continue
		}
		if event && S >= g.bound && warm {
			g.evaluate(r, int64(k), int64(n))
		}
		return
	}
}

// evaluate checks the Wilson evidence of a rate trigger whose CUSUM crossed
// its boundary, and fires if it holds. It runs only on a crossing, so the
// quantile computation inside WilsonInterval stays off the healthy path.
func (g *Guard) evaluate(r *rate, k, n int64) {
	lo, _, err := analysis.WilsonInterval(k, n, g.confidence)
	if err != nil || !(lo > r.p0) {
		return
	}
	if !g.armed.CompareAndSwap(true, false) {
		return
	}
	observed := float64(k) / float64(n)
	what := "failed"
	if r.latency {
		what = "were slower than " + r.limit.String()
	}
	t := Trip{
		Time:     g.now(),
		Trigger:  r.trigger,
		Requests: n,
		Errors:   k,
		Observed: observed,
		Bound:    lo,
		Reason: fmt.Sprintf("%s: %d of the last %d requests %s (%.1f%%); the %g%% Wilson lower bound %.2f%% is above %.2f%%",
			r.trigger, k, n, what, 100*observed, 100*g.confidence, 100*lo, 100*r.p0),
	}
	g.publish(t)
}

func (g *Guard) fireCount(c *count, v int64) {
	if !g.armed.CompareAndSwap(true, false) {
		return
	}
	what := "consecutive requests failed"
	if c == g.health {
		what = "consecutive health checks failed"
	}
	g.publish(Trip{
		Time:     g.now(),
		Trigger:  c.trigger,
		Requests: v,
		Errors:   v,
		Observed: float64(v),
		Bound:    c.trigger.Threshold,
		Reason:   fmt.Sprintf("%s: %d %s", c.trigger, v, what),
	})
}

func (g *Guard) publish(t Trip) {
	g.trip.Store(&t)
	if g.onTrip != nil {
		g.onTrip(t)
	}
}

// HealthCheckFailed records a failed active health check round of version.
func (g *Guard) HealthCheckFailed(version int) {
	c := g.health
	if c == nil || version != g.watch || !g.armed.Load() {
		return
	}
	if v := c.n.Add(1); v > c.limit {
		g.fireCount(c, v)
	}
}

// HealthCheckOK records a passing health check round of version, which ends
// a run of failures.
func (g *Guard) HealthCheckOK(version int) {
	if c := g.health; c != nil && version == g.watch {
		c.n.Store(0)
	}
}

// Reset clears all evidence and re-arms the guard, for a new canary version
// or when the canary is given traffic again after a trip.
func (g *Guard) Reset() {
	g.armed.Store(false)
	for i := range g.rates {
		g.rates[i].state.Store(0)
	}
	if g.consecutive != nil {
		g.consecutive.n.Store(0)
	}
	if g.health != nil {
		g.health.n.Store(0)
	}
	g.seen.Store(0)
	g.warm.Store(g.minRequests == 0)
	g.trip.Store(nil)
	g.armed.Store(true)
}

// Tripped returns the trip of the current arming, if the guard fired.
func (g *Guard) Tripped() (Trip, bool) {
	if t := g.trip.Load(); t != nil {
		return *t, true
	}
	return Trip{}, false
}

// Armed reports whether the guard is watching (not tripped since the last
// Reset).
func (g *Guard) Armed() bool { return g.armed.Load() }

// Watch returns the index of the watched version.
func (g *Guard) Watch() int { return g.watch }

// Triggers returns the guard's triggers in configuration order of kind: rate
// triggers, then consecutive_errors, then health_check_failures.
func (g *Guard) Triggers() []Trigger {
	var out []Trigger
	for i := range g.rates {
		out = append(out, g.rates[i].trigger)
	}
	if g.consecutive != nil {
		out = append(out, g.consecutive.trigger)
	}
	if g.health != nil {
		out = append(out, g.health.trigger)
	}
	return out
}

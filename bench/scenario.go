package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Shape is how a scenario's request rate moves over time.
type Shape string

const (
	ShapeConstant Shape = "constant" // Poisson arrivals at Rate
	ShapeBursty   Shape = "bursty"   // 10 s bursts at 4×Rate between quiet spells at Rate/4
	ShapeDiurnal  Shape = "diurnal"  // one sinusoidal day over the scenario, 0.2×..1.8×Rate
)

// Scenario is synthetic traffic for what real logs rarely contain: a fault of
// known size at a known time. The stream has no versions; the replay routes
// each request by the policy's weights and the Fault applies to the canary's
// share only.
type Scenario struct {
	Name     string
	Duration time.Duration
	Rate     float64 // mean requests per second
	Shape    Shape
	// Baseline behaviour of every version: lognormal latency with this
	// median and log-space sigma, and Bernoulli errors.
	MedianLatency time.Duration
	Sigma         float64
	ErrorRate     float64
	Fault         Fault
	Seed          uint64
}

// Validate names the first field that is out of range.
func (s Scenario) Validate() error {
	switch {
	case s.Duration <= 0:
		return fmt.Errorf("scenario %s: duration must be positive", s.Name)
	case !(s.Rate > 0) || math.IsInf(s.Rate, 0):
		return fmt.Errorf("scenario %s: rate must be a positive number of requests per second", s.Name)
	case s.MedianLatency <= 0:
		return fmt.Errorf("scenario %s: median latency must be positive", s.Name)
	case s.Sigma < 0 || s.Sigma > 3:
		return fmt.Errorf("scenario %s: sigma %v is not between 0 and 3", s.Name, s.Sigma)
	case s.ErrorRate < 0 || s.ErrorRate >= 1:
		return fmt.Errorf("scenario %s: error rate %v is not in [0, 1)", s.Name, s.ErrorRate)
	}
	switch s.Shape {
	case "", ShapeConstant, ShapeBursty, ShapeDiurnal:
	default:
		return fmt.Errorf("scenario %s: shape %q: want constant, bursty or diurnal", s.Name, s.Shape)
	}
	return s.Fault.Validate()
}

// Generate emits the scenario's requests in time order from start. It is
// deterministic for a given Seed.
func (s Scenario) Generate(start time.Time, fn func(Request) error) error {
	if err := s.Validate(); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x9e3779b97f4a7c15))
	mu := math.Log(float64(s.MedianLatency))
	peak := s.Rate * 4 // an upper bound of the rate, for thinning
	if s.Shape == ShapeDiurnal {
		peak = s.Rate * 1.8
	}
	if s.Shape == "" || s.Shape == ShapeConstant {
		peak = s.Rate
	}
	var t float64 // seconds since start
	end := s.Duration.Seconds()
	for {
		// Lewis–Shedler thinning: candidates at the peak rate, each kept with
		// probability rate(t)/peak, give an inhomogeneous Poisson process.
		t += rng.ExpFloat64() / peak
		if t >= end {
			return nil
		}
		if rng.Float64()*peak > s.rateAt(t) {
			continue
		}
		lat := time.Duration(math.Exp(mu + s.Sigma*rng.NormFloat64()))
		status := 200
		if rng.Float64() < s.ErrorRate {
			status = 500
		}
		req := Request{Time: start.Add(time.Duration(t * float64(time.Second))), Latency: lat, Status: status}
		if err := fn(req); err != nil {
			return err
		}
	}
}

func (s Scenario) rateAt(t float64) float64 {
	switch s.Shape {
	case ShapeBursty:
		if int(t/10)%4 == 0 {
			return s.Rate * 4
		}
		return s.Rate / 4
	case ShapeDiurnal:
		return s.Rate * (1 - 0.8*math.Cos(2*math.Pi*t/s.Duration.Seconds()))
	}
	return s.Rate
}

// FaultKind names a regression injected into the canary's traffic.
type FaultKind string

const (
	FaultNone        FaultKind = ""
	FaultErrorRate   FaultKind = "error-rate"  // extra errors with probability Size
	FaultLatency     FaultKind = "latency"     // every request Size slower (Scale multiplies)
	FaultTail        FaultKind = "tail"        // 2% of requests Size slower: p99 moves, p50 doesn't
	FaultDegradation FaultKind = "degradation" // latency grows by Size per minute since At (a leak)
)

// Fault is a regression the canary shows from At (measured from the start
// of the replay).
type Fault struct {
	Kind  FaultKind
	At    time.Duration
	Prob  float64       // error-rate: probability of an extra error
	Shift time.Duration // latency, tail: added latency; degradation: added per minute
	Scale float64       // latency: multiplier, 0 = none
}

// TailShare is the share of requests a tail fault slows down.
const TailShare = 0.02

// ParseFault reads the command line's injection form KIND=SIZE@AT, for
// example "error-rate=5%@10m", "latency=+30ms@1m", "latency=x1.3@0s",
// "tail=+200ms@2m", "degradation=+5ms/min@1m". "@AT" defaults to 0.
func ParseFault(s string) (Fault, error) {
	kind, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Fault{}, fmt.Errorf("inject %q: want KIND=SIZE@TIME, e.g. error-rate=5%%@10m", s)
	}
	size, at, hasAt := strings.Cut(rest, "@")
	f := Fault{Kind: FaultKind(kind)}
	if hasAt {
		d, err := time.ParseDuration(at)
		if err != nil || d < 0 {
			return Fault{}, fmt.Errorf("inject %q: time %q is not a duration like 10m", s, at)
		}
		f.At = d
	}
	switch f.Kind {
	case FaultErrorRate:
		p, err := parsePercent(size)
		if err != nil {
			return Fault{}, fmt.Errorf("inject %q: %v", s, err)
		}
		f.Prob = p
	case FaultLatency, FaultTail, FaultDegradation:
		v := size
		if f.Kind == FaultDegradation {
			var ok bool
			if v, ok = strings.CutSuffix(v, "/min"); !ok {
				return Fault{}, fmt.Errorf("inject %q: degradation is a rate like +5ms/min", s)
			}
		}
		if x, ok := strings.CutPrefix(v, "x"); ok && f.Kind == FaultLatency {
			m, err := strconv.ParseFloat(x, 64)
			if err != nil || !(m > 0) {
				return Fault{}, fmt.Errorf("inject %q: scale %q is not a positive number", s, x)
			}
			f.Scale = m
			break
		}
		d, err := time.ParseDuration(strings.TrimPrefix(v, "+"))
		if err != nil || d <= 0 {
			return Fault{}, fmt.Errorf("inject %q: %q is not a positive duration like +30ms", s, v)
		}
		f.Shift = d
	default:
		return Fault{}, fmt.Errorf("inject %q: kind %q: want error-rate, latency, tail or degradation", s, kind)
	}
	return f, f.Validate()
}

func parsePercent(s string) (float64, error) {
	v, pct := strings.CutSuffix(s, "%")
	p, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if pct {
		p /= 100
	}
	if p < 0 || p > 1 {
		return 0, fmt.Errorf("%q is not a probability between 0%% and 100%%", s)
	}
	return p, nil
}

// Validate reports an impossible fault.
func (f Fault) Validate() error {
	switch f.Kind {
	case FaultNone:
		return nil
	case FaultErrorRate:
		if f.Prob < 0 || f.Prob > 1 {
			return fmt.Errorf("fault error-rate %v is not a probability", f.Prob)
		}
	case FaultLatency, FaultTail, FaultDegradation:
		if f.Shift < 0 || f.Scale < 0 || (f.Shift == 0 && f.Scale == 0) {
			return fmt.Errorf("fault %s needs a positive shift or scale", f.Kind)
		}
	default:
		return fmt.Errorf("fault kind %q: want error-rate, latency, tail or degradation", f.Kind)
	}
	return nil
}

// Apply changes a canary request that arrives elapsed after the start of the
// replay. u is a uniform draw in [0, 1) owned by this request, so every
// policy sees the same fault on the same request.
func (f Fault) Apply(r *Request, elapsed time.Duration, u float64) (changed bool) {
	if f.Kind == FaultNone || elapsed < f.At {
		return false
	}
	switch f.Kind {
	case FaultErrorRate:
		if u < f.Prob && !r.Failed() {
			r.Status = 500
			return true
		}
	case FaultLatency:
		if f.Scale > 0 {
			r.Latency = time.Duration(float64(r.Latency) * f.Scale)
		}
		r.Latency += f.Shift
		return true
	case FaultTail:
		if u < TailShare {
			r.Latency += f.Shift
			return true
		}
	case FaultDegradation:
		r.Latency += time.Duration(float64(f.Shift) * (elapsed - f.At).Minutes())
		return true
	}
	return false
}

// String prints the fault in ParseFault's form.
func (f Fault) String() string {
	switch f.Kind {
	case FaultNone:
		return "none"
	case FaultErrorRate:
		return fmt.Sprintf("error-rate=%g%%@%s", f.Prob*100, f.At)
	case FaultDegradation:
		return fmt.Sprintf("degradation=+%s/min@%s", f.Shift, f.At)
	}
	if f.Scale > 0 {
		return fmt.Sprintf("%s=x%g@%s", f.Kind, f.Scale, f.At)
	}
	return fmt.Sprintf("%s=+%s@%s", f.Kind, f.Shift, f.At)
}

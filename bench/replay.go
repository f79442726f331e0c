package bench

import (
	"errors"
	"fmt"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
)

// Policy is a rollout policy under test. The replay is its driver: it routes
// each request by the policy's weights, lets the policy see each completed
// request (for in-path guards) and hands it a snapshot every interval, all on
// the replay's virtual clock.
type Policy interface {
	Name() string
	// Start is called once at the first request's time.
	Start(now time.Time) (rollout.Weights, error)
	// Observe sees one completed request on version; it returns new weights
	// when the policy reacts in the request path.
	Observe(version string, r Request, now time.Time) (rollout.Weights, bool)
	// Tick is called every Interval with cumulative per-version numbers and
	// those of the interval just ended. Both share the replay's histograms:
	// they are valid only until Tick returns.
	Tick(total, window rollout.Snapshot, now time.Time) (rollout.Weights, Phase, error)
	// Interval is how often Tick runs.
	Interval() time.Duration
}

// Phase is where a policy's rollout stands.
type Phase string

const (
	Running    Phase = "Running"
	Promoted   Phase = "Promoted"
	RolledBack Phase = "RolledBack"
	// Aborted: the rollout gave up waiting for evidence (progress
	// deadline). Traffic goes back to stable, but nothing was detected.
	Aborted Phase = "Aborted"
)

// Outcome is what one replay of one policy measured.
type Outcome struct {
	Policy     string `json:"name"`
	RolledBack bool   `json:"rolled_back"`
	Promoted   bool   `json:"promoted"`
	Aborted    bool   `json:"aborted,omitempty"`
	// DetectionDelay counts from the fault's onset (or from the start when
	// no fault time is known) to the rollback; nil when nothing was detected.
	DetectionDelay    *float64 `json:"detection_delay_s"`
	DetectionRequests int64    `json:"detection_requests"`
	// BadRequests are canary requests made worse by the fault (or failed,
	// for a replay with no injected fault) that users got before rollback.
	BadRequests    int64   `json:"bad_requests"`
	CanaryRequests int64   `json:"canary_requests"`
	Duration       float64 `json:"duration_s"` // until promotion or rollback, else the replay's length
	Reason         string  `json:"reason,omitempty"`
	// BadTrace counts bad requests per Replayer.TraceEvery period since the
	// start of the replay.
	BadTrace []int64 `json:"-"`
}

// Replayer drives policies over one traffic stream.
type Replayer struct {
	Fault Fault
	// FaultKnown is false for a plain log replay: the delay then counts from
	// the start of the replay.
	FaultKnown bool
	// Seed fixes routing and fault draws so every policy sees the same
	// request get the same fate.
	Seed uint64
	// TraceEvery, when positive, keeps each policy's bad requests per
	// period of this length in Outcome.BadTrace, for plots over time.
	TraceEvery time.Duration
}

// errAllDone stops reading the stream once every policy has finished.
var errAllDone = errors.New("every policy finished")

// Stream yields the replayed requests in time order.
type Stream func(fn func(Request) error) error

// Run replays the stream once through each policy (policies run side by
// side, each with its own routing, so the stream is read once).
func (rp Replayer) Run(stream Stream, policies []Policy) ([]Outcome, error) {
	runs := make([]*policyRun, len(policies))
	for i, p := range policies {
		runs[i] = &policyRun{policy: p, out: Outcome{Policy: p.Name()}, rec: newVirtualRecorder()}
	}
	var start time.Time
	var index uint64
	err := stream(func(r Request) error {
		if index == 0 {
			start = r.Time
			for _, run := range runs {
				w, err := run.policy.Start(start)
				if err != nil {
					return fmt.Errorf("policy %s: %w", run.policy.Name(), err)
				}
				run.weights = w
				run.nextTick = start.Add(run.policy.Interval())
			}
		}
		index++
		uRoute, uFault := draws(rp.Seed, index)
		elapsed := r.Time.Sub(start)
		alive := false
		for _, run := range runs {
			if err := run.request(rp, r, elapsed, uRoute, uFault); err != nil {
				return err
			}
			alive = alive || !run.done
		}
		if !alive {
			return errAllDone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errAllDone) {
		return nil, err
	}
	outs := make([]Outcome, len(runs))
	for i, run := range runs {
		if !run.done {
			run.out.Duration = run.last.Sub(start).Seconds()
		}
		outs[i] = run.out
	}
	return outs, nil
}

type policyRun struct {
	policy   Policy
	weights  rollout.Weights
	rec      *virtualRecorder
	nextTick time.Time
	last     time.Time
	done     bool
	out      Outcome
	faultAt  time.Time
	started  time.Time
	// healthy: a synthetic run known to have no fault, so any rollback is
	// a false one.
	healthy bool
}

func (run *policyRun) request(rp Replayer, r Request, elapsed time.Duration, uRoute, uFault float64) error {
	if run.started.IsZero() {
		run.started = r.Time.Add(-elapsed)
		run.faultAt = run.started
		run.healthy = rp.FaultKnown && rp.Fault.Kind == FaultNone
		if rp.FaultKnown {
			run.faultAt = run.started.Add(rp.Fault.At)
		}
	}
	if r.Time.After(run.last) {
		run.last = r.Time
	}
	if run.done {
		return nil
	}
	for !r.Time.Before(run.nextTick) {
		if err := run.tick(run.nextTick); err != nil {
			return err
		}
		if run.done {
			return nil
		}
		run.nextTick = run.nextTick.Add(run.policy.Interval())
	}
	version := r.Version
	if version == "" {
		version = pick(run.weights, uRoute)
	}
	bad := false
	if version == "canary" {
		if rp.Fault.Apply(&r, elapsed, uFault) {
			bad = true
		} else if !rp.FaultKnown && r.Failed() {
			bad = true
		}
		run.out.CanaryRequests++
		if !r.Time.Before(run.faultAt) {
			run.out.DetectionRequests++
		}
		if bad {
			run.out.BadRequests++
			if rp.TraceEvery > 0 {
				i := int(elapsed / rp.TraceEvery)
				for len(run.out.BadTrace) <= i {
					run.out.BadTrace = append(run.out.BadTrace, 0)
				}
				run.out.BadTrace[i]++
			}
		}
	}
	run.rec.record(version, r)
	if w, changed := run.policy.Observe(version, r, r.Time); changed {
		run.weights = w
		if w["canary"] == 0 {
			reason := "in-path guard"
			if m, ok := run.policy.(interface{ Message() string }); ok && m.Message() != "" {
				reason = m.Message()
			}
			run.finish(RolledBack, r.Time, reason)
		}
	}
	return nil
}

func (run *policyRun) tick(now time.Time) error {
	total, window := run.rec.snapshots(now)
	w, phase, err := run.policy.Tick(total, window, now)
	run.rec.resetWindow()
	if err != nil {
		return fmt.Errorf("policy %s at %s: %w", run.policy.Name(), now.Sub(run.started), err)
	}
	if w != nil {
		run.weights = w
	}
	switch phase {
	case RolledBack:
		reason := "analysis"
		if m, ok := run.policy.(interface{ Message() string }); ok && m.Message() != "" {
			reason = m.Message()
		}
		run.finish(RolledBack, now, reason)
	case Aborted:
		reason := "progress deadline"
		if m, ok := run.policy.(interface{ Message() string }); ok && m.Message() != "" {
			reason = m.Message()
		}
		run.finish(Aborted, now, reason)
	case Promoted:
		run.finish(Promoted, now, "")
	}
	return nil
}

func (run *policyRun) finish(p Phase, now time.Time, reason string) {
	run.done = true
	run.out.Duration = now.Sub(run.started).Seconds()
	switch p {
	case RolledBack:
		run.out.RolledBack = true
		run.out.Reason = reason
		d := now.Sub(run.faultAt).Seconds()
		if run.healthy {
			run.out.Reason = reason + " (no fault: a false rollback)"
			return
		}
		if d < 0 {
			// Rolled back before the fault began: a false rollback, not a detection.
			run.out.Reason = reason + " (before the fault began)"
			return
		}
		run.out.DetectionDelay = &d
	case Aborted:
		run.out.Aborted = true
		run.out.Reason = reason
	case Promoted:
		run.out.Promoted = true
	}
}

// pick routes a keyless request: u in [0, 1) falls into the versions'
// cumulative weights in a fixed order, stable first.
func pick(w rollout.Weights, u float64) string {
	c := float64(w["canary"]) / 100
	if u < c {
		return "canary"
	}
	return "stable"
}

// draws gives request i two independent uniforms from the seed (splitmix64),
// the same for every policy.
func draws(seed, i uint64) (float64, float64) {
	a := splitmix(seed ^ (i * 0x9e3779b97f4a7c15))
	b := splitmix(a)
	return float64(a>>11) / (1 << 53), float64(b>>11) / (1 << 53)
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// virtualRecorder is the replay's single-threaded stand-in for the proxy's
// sharded recorder: the same numbers, in the same shapes.
type virtualRecorder struct {
	total, window map[string]*rollout.VersionStats
}

func newVirtualRecorder() *virtualRecorder {
	return &virtualRecorder{total: map[string]*rollout.VersionStats{}, window: map[string]*rollout.VersionStats{}}
}

func (v *virtualRecorder) record(version string, r Request) {
	for _, m := range []map[string]*rollout.VersionStats{v.total, v.window} {
		s := m[version]
		if s == nil {
			s = &rollout.VersionStats{Latency: rollout.NewLatencyHistogram()}
			m[version] = s
		}
		s.Requests++
		if r.Failed() {
			s.Errors++
		}
		class := r.Status / 100
		if class < 1 || class > 5 {
			class = 0
		}
		s.Status[class]++
		us := r.Latency.Microseconds()
		if us < rollout.LatencyLowestUS {
			us = rollout.LatencyLowestUS
		}
		if us > rollout.LatencyHighestUS {
			us = rollout.LatencyHighestUS
		}
		_ = s.Latency.RecordValue(us)
	}
}

func (v *virtualRecorder) snapshots(now time.Time) (total, window rollout.Snapshot) {
	conv := func(m map[string]*rollout.VersionStats) rollout.Snapshot {
		out := rollout.Snapshot{Time: now, Versions: make(map[string]rollout.VersionStats, len(m))}
		for k, s := range m {
			out.Versions[k] = *s
		}
		return out
	}
	return conv(v.total), conv(v.window)
}

func (v *virtualRecorder) resetWindow() {
	for _, s := range v.window {
		s.Requests, s.Errors, s.Status = 0, 0, [6]int64{}
		s.Latency.Reset()
	}
}

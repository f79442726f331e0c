package rollout

import (
	"encoding/json"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Weights maps a version name ("stable", "canary", "green", a cohort…) to its
// share of keyless traffic in percent. The values of a valid Weights sum to 100.
type Weights map[string]int

// TrafficRouter carries out the engine's weight decisions. Two drivers
// implement it: Guardian's in-process proxy and the xDS fleet control plane.
type TrafficRouter interface {
	// SetWeights applies w to the named rollout's traffic split. It must be
	// cheap and must not block on the data plane's requests.
	SetWeights(rollout string, w Weights) error
}

// MetricSource yields the per-version numbers the analysis judges. The
// in-path recorder, Prometheus queries and Envoy's metrics stream implement it.
type MetricSource interface {
	// Snapshot returns cumulative numbers for the named rollout since the
	// source started; consumers take differences between snapshots for
	// interval batches.
	Snapshot(rollout string) (Snapshot, error)
}

// LatencyHistogram settings shared by every producer, so histograms from the
// proxy, Envoy intake and the bench can be compared bucket by bucket:
// microseconds from 1 µs to 60 s with 3 significant figures.
const (
	LatencyLowestUS  = 1
	LatencyHighestUS = 60_000_000
	LatencySigFigs   = 3
)

// NewLatencyHistogram returns an empty histogram with the shared settings.
func NewLatencyHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(LatencyLowestUS, LatencyHighestUS, LatencySigFigs)
}

// Snapshot is a point-in-time copy of per-version traffic numbers.
type Snapshot struct {
	Time     time.Time
	Versions map[string]VersionStats
}

// VersionStats are one version's cumulative numbers. Latency is in
// microseconds (see NewLatencyHistogram) and is owned by the snapshot.
type VersionStats struct {
	Requests int64
	// Errors counts failed requests: 5xx answers, transport failures
	// (refused, reset, timeout) and non-OK gRPC statuses that signal a
	// server fault.
	Errors int64
	// Status counts answers by class: index 1..5 for 1xx..5xx, 0 for
	// requests that got no HTTP answer from the upstream.
	Status  [6]int64
	Latency *hdrhistogram.Histogram
}

// Event is one entry of a rollout's append-only history. It is persisted
// before the action it records takes effect.
type Event struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Message string    `json:"message"`
	// Data holds the evidence behind a decision (verdicts, values, thresholds)
	// as JSON, so the history stays readable without the code that wrote it.
	Data json.RawMessage `json:"data,omitempty"`
}

// Sub returns s minus prev, version by version: the traffic between two
// cumulative snapshots of one source. A version absent from prev, or one
// whose counts went down (the source restarted), is taken whole. The result
// owns its histograms.
func (s Snapshot) Sub(prev Snapshot) Snapshot {
	out := Snapshot{Time: s.Time, Versions: make(map[string]VersionStats, len(s.Versions))}
	for name, c := range s.Versions {
		p, ok := prev.Versions[name]
		if !ok || p.Requests > c.Requests {
			if c.Latency != nil {
				c.Latency = c.Latency.Clone()
			} else {
				c.Latency = NewLatencyHistogram()
			}
			out.Versions[name] = c
			continue
		}
		d := VersionStats{Requests: c.Requests - p.Requests, Errors: max(0, c.Errors-p.Errors)}
		for i := range d.Status {
			d.Status[i] = max(0, c.Status[i]-p.Status[i])
		}
		d.Latency = subHistogram(c.Latency, p.Latency)
		out.Versions[name] = d
	}
	return out
}

func subHistogram(cur, prev *hdrhistogram.Histogram) *hdrhistogram.Histogram {
	if cur == nil {
		return NewLatencyHistogram()
	}
	if prev == nil {
		return cur.Clone()
	}
	c, p := cur.Export(), prev.Export()
	if len(c.Counts) != len(p.Counts) {
		// Different geometry cannot be subtracted bucket by bucket; the
		// interval is reported as the later histogram.
		return cur.Clone()
	}
	for i := range c.Counts {
		c.Counts[i] = max(0, c.Counts[i]-p.Counts[i])
	}
	return hdrhistogram.Import(c)
}

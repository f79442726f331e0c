// Package record is the proxy's in-path recorder: per route, per version, an
// HdrHistogram of latency plus counts by status class and by error kind,
// written on every completed request and read by the analysis, the admin API
// and the Prometheus collector.
//
// The hot path (Record) takes no lock and allocates nothing. Counts live in
// shards of atomic counters laid out exactly like an HdrHistogram's counts
// array (rollout.NewLatencyHistogram settings), so a request costs a few
// uncontended atomic adds and a snapshot is a plain sum over the shards,
// imported into a real *hdrhistogram.Histogram for the readers.
//
// Windows: the recorder is cumulative only. Readers that want interval
// batches keep their own Window (NewWindow), which diffs successive
// snapshots. A reset-on-read Window() on the recorder was rejected because the
// analysis, the admin API and Prometheus read the same recorder: whichever
// read first would steal the others' counts.
package record

import (
	"math"
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/deployment-guardian/guardian/rollout"
)

// ErrorKind classifies why a request failed, as seen by the proxy.
type ErrorKind uint8

const (
	// None: the upstream answered and the answer is not a failure.
	None ErrorKind = iota
	// Refused: the connection to the endpoint was refused.
	Refused
	// Timeout: connect, header or request timeout.
	Timeout
	// Reset: the connection was reset or closed mid-exchange.
	Reset
	// Upstream5xx: the upstream answered with a 5xx status.
	Upstream5xx
	// GRPC: the upstream answered with a gRPC status that signals a server
	// fault (for example UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED).
	GRPC
	// Other: any other failure to get an answer.
	Other

	numKinds = int(Other) + 1
)

var kindNames = [numKinds]string{"none", "refused", "timeout", "reset", "upstream_5xx", "grpc", "other"}

// String returns the kind's label value as used in metrics and JSON.
func (k ErrorKind) String() string {
	if int(k) < numKinds {
		return kindNames[k]
	}
	return "other"
}

// MirrorVersion is the snapshot key under which shadow (mirrored) traffic is
// reported, kept apart from the versions that serve users.
const MirrorVersion = "mirror"

// HdrHistogram geometry for rollout.LatencyLowestUS=1, LatencySigFigs=3: unit
// resolution up to 2048 µs, then each power-of-two bucket holds 1024
// sub-buckets. init checks these against the library so a change to the shared
// settings cannot silently shift every count.
const (
	subBucketHalfCountMagnitude = 10
	subBucketHalfCount          = 1 << subBucketHalfCountMagnitude
	subBucketMask               = 2*subBucketHalfCount - 1
	highestUS                   = rollout.LatencyHighestUS
)

var countsLen = len(rollout.NewLatencyHistogram().Export().Counts)

func init() {
	if rollout.LatencyLowestUS != 1 || rollout.LatencySigFigs != 3 {
		panic("record: the index arithmetic assumes rollout.LatencyLowestUS=1 and LatencySigFigs=3")
	}
	if countsIndex(highestUS) >= countsLen {
		panic("record: histogram geometry does not match hdrhistogram")
	}
}

// countsIndex is hdrhistogram's countsIndexFor for the shared geometry.
func countsIndex(us int64) int {
	bucket := bits.Len64(uint64(us)|subBucketMask) - (subBucketHalfCountMagnitude + 1)
	sub := int(us >> uint(bucket))
	return (bucket+1)<<subBucketHalfCountMagnitude + sub - subBucketHalfCount
}

// lowestValueAt is the smallest latency (µs) that lands in counts index i.
func lowestValueAt(i int) int64 {
	bucket := i>>subBucketHalfCountMagnitude - 1
	sub := i&(subBucketHalfCount-1) + subBucketHalfCount
	if bucket < 0 {
		sub -= subBucketHalfCount
		bucket = 0
	}
	return int64(sub) << uint(bucket)
}

// medianValueAt is the midpoint of the latencies (µs) counted at index i,
// hdrhistogram's medianEquivalentValue.
func medianValueAt(i int) int64 {
	bucket := max(i>>subBucketHalfCountMagnitude-1, 0)
	return lowestValueAt(i) + (int64(1)<<uint(bucket))>>1
}

// outcomes are one version's request counts in one shard, by status class
// and error kind together, so a request costs one add here and one in the
// histogram. All fields are atomics: concurrent requests landing on the same
// shard need no lock.
type outcomes struct {
	n [6 * numKinds]atomic.Int64 // index class*numKinds + kind
	// Pad to a multiple of the cache line so that neighbouring versions and
	// shards never share one.
	_ [64 - (6*numKinds*8)%64]byte
}

// Recorder records one route's requests. It is safe for concurrent use.
type Recorder struct {
	names   []string
	mirror  string
	nv      int // len(names)+1: the last version slot is the mirror
	dropped atomic.Int64

	// Counts are sharded twice: the outcome counters are small and hot (every
	// request of a healthy version hits the same "2xx, none" slot), so they
	// get many shards; the histograms are large (~140 KB) and spread their
	// writes over many buckets anyway, so they get about one shard per P.
	outcomes []outcomes       // [shard*nv + version]
	hist     [][]atomic.Int64 // [shard*nv + version][countsIndex]
	oMask    uint32
	hMask    uint32
}

// New returns a recorder for a route whose versions are indexed 0..n-1 in the
// order given (Record's version argument indexes this slice).
func New(versions []string) *Recorder {
	p := runtime.GOMAXPROCS(0)
	oShards := pow2(min(16*p, 256))
	hShards := pow2(min(2*p, 32))
	r := &Recorder{
		names:  append([]string(nil), versions...),
		mirror: MirrorVersion,
		nv:     len(versions) + 1,
		oMask:  uint32(oShards - 1),
		hMask:  uint32(hShards - 1),
	}
	for _, v := range versions {
		if v == MirrorVersion {
			r.mirror = "_" + MirrorVersion
		}
	}
	r.outcomes = make([]outcomes, oShards*r.nv)
	r.hist = make([][]atomic.Int64, hShards*r.nv)
	for i := range r.hist {
		r.hist[i] = make([]atomic.Int64, countsLen)
	}
	return r
}

func pow2(n int) int { return 1 << bits.Len(uint(n-1)) }

// Versions returns the version names in index order.
func (r *Recorder) Versions() []string { return append([]string(nil), r.names...) }

// MirrorName is the snapshot key of the mirror entry: MirrorVersion unless a
// real version already has that name.
func (r *Recorder) MirrorName() string { return r.mirror }

// Record counts one completed request of the version with the given index.
// status is the HTTP status the upstream answered (0 when there was no
// answer); kind says why it failed, None when it did not. A 5xx or a missing
// answer passed with kind None is still counted as a failure (Upstream5xx,
// Other), so a caller cannot hide an error by forgetting to classify it.
// An out-of-range version is dropped and counted (see Dropped): the hot path
// must not panic.
func (r *Recorder) Record(version int, latency time.Duration, status int, kind ErrorKind) {
	if uint(version) >= uint(len(r.names)) {
		r.dropped.Add(1)
		return
	}
	r.record(version, latency, status, kind)
}

// RecordMirror counts one mirrored (shadow) request; its numbers appear in
// snapshots under MirrorName and never mix with the versions serving users.
func (r *Recorder) RecordMirror(latency time.Duration, status int, kind ErrorKind) {
	r.record(len(r.names), latency, status, kind)
}

func (r *Recorder) record(version int, latency time.Duration, status int, kind ErrorKind) {
	// The shard comes from a multiplicative hash of the latency: its low
	// nanosecond digits are as good as random, concurrent requests rarely
	// share them, and hashing costs nothing. A shared round-robin counter
	// would itself be a contended cache line, and math/rand/v2 measured
	// ~18 ns a call here, more than the recording.
	x := uint32((uint64(latency) * 0x9E3779B97F4A7C15) >> 32)
	us := int64(latency / time.Microsecond)
	if us < 0 {
		us = 0
	} else if us > highestUS {
		us = highestUS
	}
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	if kind == None {
		if class == 5 {
			kind = Upstream5xx
		} else if class == 0 {
			kind = Other
		}
	} else if int(kind) >= numKinds {
		kind = Other
	}
	r.hist[int((x>>16)&r.hMask)*r.nv+version][countsIndex(us)].Add(1)
	r.outcomes[int(x&r.oMask)*r.nv+version].n[class*numKinds+int(kind)].Add(1)
}

// Dropped counts Record calls with a version index outside Versions().
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// totals is one version summed over the shards.
type totals struct {
	status [6]int64
	kinds  [numKinds]int64
	hist   []int64
}

func (t *totals) requests() int64 {
	var n int64
	for _, s := range t.status {
		n += s
	}
	return n
}

// sum adds version v's counters from every shard into t (t.hist must have
// countsLen entries). Each counter is read atomically; counts may disagree by
// the requests that complete while the sum runs.
func (r *Recorder) sum(v int, t *totals) {
	for s := v; s < len(r.outcomes); s += r.nv {
		o := &r.outcomes[s]
		for i := range o.n {
			if n := o.n[i].Load(); n != 0 {
				t.status[i/numKinds] += n
				t.kinds[i%numKinds] += n
			}
		}
	}
	if t.hist == nil {
		return
	}
	for s := v; s < len(r.hist); s += r.nv {
		h := r.hist[s]
		for i := range h {
			if n := h[i].Load(); n != 0 {
				t.hist[i] += n
			}
		}
	}
}

func (t *totals) stats() rollout.VersionStats {
	n := t.requests()
	return rollout.VersionStats{
		Requests: n,
		Errors:   n - t.kinds[None],
		Status:   t.status,
		Latency:  importCounts(t.hist),
	}
}

func importCounts(counts []int64) *hdrhistogram.Histogram {
	return hdrhistogram.Import(&hdrhistogram.Snapshot{
		LowestTrackableValue:  rollout.LatencyLowestUS,
		HighestTrackableValue: rollout.LatencyHighestUS,
		SignificantFigures:    rollout.LatencySigFigs,
		Counts:                counts,
	})
}

// Snapshot returns the cumulative numbers since the recorder was created, per
// version name, plus a MirrorName entry when any mirrored request was
// recorded. The histograms are fresh copies owned by the caller. It costs a
// pass over every shard's counters (milliseconds), never blocks Record, and
// is meant for analysis intervals and scrapes, not for every request.
func (r *Recorder) Snapshot() rollout.Snapshot {
	s := rollout.Snapshot{Time: time.Now(), Versions: make(map[string]rollout.VersionStats, len(r.names)+1)}
	for v := 0; v <= len(r.names); v++ {
		t := totals{hist: make([]int64, countsLen)}
		r.sum(v, &t)
		if v == len(r.names) {
			if t.requests() == 0 {
				continue
			}
			s.Versions[r.mirror] = t.stats()
			continue
		}
		s.Versions[r.names[v]] = t.stats()
	}
	return s
}

// Kinds returns version v's counts by error kind (index by ErrorKind),
// cumulative. v == len(Versions()) addresses the mirror.
func (r *Recorder) Kinds(v int) [numKinds]int64 {
	var t totals
	if v >= 0 && v < r.nv {
		r.sum(v, &t)
	}
	return t.kinds
}

// NumKinds is the number of ErrorKind values, the length of Kinds' result.
const NumKinds = numKinds

// Delta returns cur minus prev, version by version (rollout.Snapshot.Sub):
// the traffic between two cumulative snapshots of the same source.
func Delta(cur, prev rollout.Snapshot) rollout.Snapshot { return cur.Sub(prev) }

// Window yields interval batches from a recorder: each Next returns the
// traffic since the previous Next (or since the window was made). Every
// reader keeps its own Window, so readers never steal each other's counts.
// A Window is not safe for concurrent use; the recorder is.
type Window struct {
	r    *Recorder
	prev rollout.Snapshot
}

// NewWindow starts a window at the recorder's current totals.
func NewWindow(r *Recorder) *Window { return &Window{r: r, prev: r.Snapshot()} }

// Next returns the traffic recorded since the previous call.
func (w *Window) Next() rollout.Snapshot {
	cur := w.r.Snapshot()
	d := Delta(cur, w.prev)
	w.prev = cur
	return d
}

// quantileSeconds returns the latency at quantile q (0..1) of h in seconds,
// or 0 for an empty histogram.
func quantileSeconds(h *hdrhistogram.Histogram, q float64) float64 {
	if h == nil || h.TotalCount() == 0 {
		return 0
	}
	return float64(h.ValueAtQuantile(q*100)) / 1e6
}

// Quantile is a convenience for readers: the latency at quantile q in (0, 1]
// of a snapshot's histogram, as a Duration (0 when empty or q is not a
// probability).
func Quantile(s rollout.VersionStats, q float64) time.Duration {
	if !(q > 0 && q <= 1) || math.IsNaN(q) {
		return 0
	}
	return time.Duration(quantileSeconds(s.Latency, q) * float64(time.Second))
}

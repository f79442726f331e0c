package record

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/deployment-guardian/guardian/rollout"
)

// The shards' flat counts must be indexed exactly as hdrhistogram indexes
// its own, or every imported histogram would be silently wrong.
func TestCountsIndexMatchesHdrHistogram(t *testing.T) {
	values := []int64{0, 1, 2, 1023, 1024, 2047, 2048, 2049, 4095, 4096, 5000, 1 << 20, highestUS - 1, highestUS}
	for s := int64(1); s < highestUS; s *= 2 {
		values = append(values, s-1, s, s+1)
	}
	for _, v := range values {
		h := rollout.NewLatencyHistogram()
		if err := h.RecordValue(v); err != nil {
			t.Fatalf("RecordValue(%d): %v", v, err)
		}
		counts := h.Export().Counts
		want := -1
		for i, n := range counts {
			if n != 0 {
				want = i
			}
		}
		if got := countsIndex(v); got != want {
			t.Fatalf("countsIndex(%d) = %d, hdrhistogram uses %d", v, got, want)
		}
		if lo := lowestValueAt(want); !h.ValuesAreEquivalent(lo, v) || lo > v || (lo > 0 && h.ValuesAreEquivalent(lo-1, v)) {
			t.Fatalf("lowestValueAt(%d) = %d, not the lowest value equivalent to %d", want, lo, v)
		}
	}
	// Many random values at once: the whole counts arrays must agree.
	rng := rand.New(rand.NewPCG(1, 2))
	h := rollout.NewLatencyHistogram()
	mine := make([]int64, countsLen)
	for range 200000 {
		v := rng.Int64N(highestUS + 1)
		if rng.IntN(2) == 0 {
			v = rng.Int64N(100000)
		}
		if err := h.RecordValue(v); err != nil {
			t.Fatal(err)
		}
		mine[countsIndex(v)]++
	}
	for i, n := range h.Export().Counts {
		if mine[i] != n {
			t.Fatalf("counts[%d]: mine %d, hdrhistogram %d", i, mine[i], n)
		}
	}
}

func TestRecordSnapshot(t *testing.T) {
	r := New([]string{"stable", "canary"})
	ref := rollout.NewLatencyHistogram()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		lat := time.Duration(rng.Int64N(int64(200*time.Millisecond))) + time.Microsecond
		r.Record(1, lat, 200, None)
		if err := ref.RecordValue(int64(lat / time.Microsecond)); err != nil {
			t.Fatal(err)
		}
	}
	r.Record(1, time.Millisecond, 503, Upstream5xx)
	r.Record(1, time.Millisecond, 500, None) // unclassified 5xx still counts as an error
	r.Record(1, 2*time.Second, 0, Timeout)
	r.Record(1, time.Millisecond, 0, Refused)
	r.Record(1, time.Millisecond, 200, GRPC) // gRPC INTERNAL over HTTP 200
	r.Record(1, time.Millisecond, 404, None)
	r.Record(0, 3*time.Millisecond, 200, None)
	r.Record(1, 2*time.Minute, 0, Timeout) // beyond 60 s: clamped, still counted
	r.Record(7, time.Millisecond, 200, None)
	r.Record(-1, time.Millisecond, 200, None)

	s := r.Snapshot()
	c := s.Versions["canary"]
	if c.Requests != 5007 {
		t.Errorf("canary Requests = %d, want 5007", c.Requests)
	}
	if c.Errors != 6 {
		t.Errorf("canary Errors = %d, want 6 (2×5xx, 2×timeout, refused, grpc)", c.Errors)
	}
	if want := [6]int64{3, 0, 5000 + 1, 0, 1, 2}; c.Status != want {
		t.Errorf("canary Status = %v, want %v", c.Status, want)
	}
	if got := c.Latency.TotalCount(); got != c.Requests {
		t.Errorf("histogram total %d != requests %d", got, c.Requests)
	}
	if got := c.Latency.Max(); got < rollout.LatencyHighestUS*999/1000 {
		t.Errorf("max latency %d µs, want the clamped 60 s", got)
	}
	k := r.Kinds(1)
	if k[Upstream5xx] != 2 || k[Timeout] != 2 || k[Refused] != 1 || k[GRPC] != 1 || k[None] != 5001 {
		t.Errorf("kinds = %v", k)
	}
	st := s.Versions["stable"]
	if st.Requests != 1 || st.Errors != 0 || !st.Latency.ValuesAreEquivalent(st.Latency.ValueAtQuantile(50), 3000) {
		t.Errorf("stable = %+v p50 %d", st, st.Latency.ValueAtQuantile(50))
	}
	if _, ok := s.Versions[MirrorVersion]; ok {
		t.Error("mirror entry present without mirrored traffic")
	}
	if r.Dropped() != 2 {
		t.Errorf("Dropped = %d, want 2", r.Dropped())
	}

	// The first 5000 samples alone must match a directly recorded histogram.
	r2 := New([]string{"v"})
	rng = rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		r2.Record(0, time.Duration(rng.Int64N(int64(200*time.Millisecond)))+time.Microsecond, 200, None)
	}
	if got := r2.Snapshot().Versions["v"].Latency; !got.Equals(ref) {
		for _, q := range []float64{50, 90, 99, 99.9} {
			t.Logf("q%v got %d want %d", q, got.ValueAtQuantile(q), ref.ValueAtQuantile(q))
		}
		t.Error("sharded histogram differs from hdrhistogram's own")
	}
}

func TestMirrorKeptApart(t *testing.T) {
	r := New([]string{"stable", "canary"})
	r.Record(0, time.Millisecond, 200, None)
	r.RecordMirror(5*time.Millisecond, 500, Upstream5xx)
	r.RecordMirror(5*time.Millisecond, 200, None)
	s := r.Snapshot()
	m, ok := s.Versions[MirrorVersion]
	if !ok || m.Requests != 2 || m.Errors != 1 {
		t.Fatalf("mirror = %+v (present %v), want 2 requests 1 error", m, ok)
	}
	if s.Versions["canary"].Requests != 0 || s.Versions["stable"].Requests != 1 {
		t.Errorf("mirrored traffic leaked into serving versions: %+v", s.Versions)
	}
	if got := New([]string{"mirror", "canary"}).MirrorName(); got == MirrorVersion {
		t.Errorf("MirrorName = %q collides with a version name", got)
	}
}

func TestConcurrentRecordExact(t *testing.T) {
	r := New([]string{"stable", "canary"})
	const workers, per = 16, 5000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				status, kind := 200, None
				if i%100 == 0 {
					status, kind = 502, Upstream5xx
				}
				r.Record(w%2, time.Duration(i+1)*time.Microsecond, status, kind)
			}
		}()
	}
	// Snapshots taken during the load must never panic or go backwards.
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last int64
		for range 5 {
			n := r.Snapshot().Versions["canary"].Requests
			if n < last {
				t.Errorf("snapshot went backwards: %d after %d", n, last)
			}
			last = n
		}
	}()
	wg.Wait()
	<-done
	s := r.Snapshot()
	for _, v := range []string{"stable", "canary"} {
		vs := s.Versions[v]
		if vs.Requests != workers/2*per || vs.Errors != workers/2*per/100 || vs.Latency.TotalCount() != vs.Requests {
			t.Errorf("%s: requests %d errors %d hist %d, want %d, %d", v, vs.Requests, vs.Errors,
				vs.Latency.TotalCount(), workers/2*per, workers/2*per/100)
		}
	}
}

func TestWindowDeltas(t *testing.T) {
	r := New([]string{"stable", "canary"})
	for range 100 {
		r.Record(1, 10*time.Millisecond, 200, None)
	}
	w := NewWindow(r)
	other := NewWindow(r) // a second reader must not steal counts
	for range 40 {
		r.Record(1, 100*time.Millisecond, 200, None)
	}
	for range 10 {
		r.Record(1, 100*time.Millisecond, 500, Upstream5xx)
	}
	b := w.Next().Versions["canary"]
	if b.Requests != 50 || b.Errors != 10 || b.Status[5] != 10 || b.Status[2] != 40 {
		t.Fatalf("window batch = %+v, want 50 requests, 10 errors", b)
	}
	if got := b.Latency.ValueAtQuantile(1); got < 99_000 {
		t.Errorf("window p1 = %d µs: earlier 10 ms samples leaked into the interval", got)
	}
	if b.Latency.TotalCount() != 50 {
		t.Errorf("window histogram holds %d samples, want 50", b.Latency.TotalCount())
	}
	if n := w.Next().Versions["canary"].Requests; n != 0 {
		t.Errorf("empty interval has %d requests", n)
	}
	if n := other.Next().Versions["canary"].Requests; n != 50 {
		t.Errorf("second reader saw %d requests, want 50", n)
	}
}

func TestDeltaRestartedSource(t *testing.T) {
	h := rollout.NewLatencyHistogram()
	_ = h.RecordValue(10)
	prev := rollout.Snapshot{Versions: map[string]rollout.VersionStats{"v": {Requests: 100, Latency: rollout.NewLatencyHistogram()}}}
	cur := rollout.Snapshot{Versions: map[string]rollout.VersionStats{"v": {Requests: 1, Status: [6]int64{0, 0, 1}, Latency: h}}}
	d := Delta(cur, prev).Versions["v"]
	if d.Requests != 1 || d.Latency.TotalCount() != 1 {
		t.Errorf("restarted source: delta %+v, want the current snapshot", d)
	}
	if d.Latency == h {
		t.Error("delta aliases the caller's histogram")
	}
}

func TestQuantile(t *testing.T) {
	h := rollout.NewLatencyHistogram()
	for i := int64(1); i <= 1000; i++ {
		_ = h.RecordValue(i * 1000)
	}
	vs := rollout.VersionStats{Latency: h}
	if got := Quantile(vs, 0.99); got < 989*time.Millisecond || got > 991*time.Millisecond {
		t.Errorf("p99 = %v, want 990ms", got)
	}
	for _, q := range []float64{0, -1, 2} {
		if got := Quantile(vs, q); got != 0 {
			t.Errorf("Quantile(%v) = %v, want 0", q, got)
		}
	}
	if got := Quantile(rollout.VersionStats{}, 0.5); got != 0 {
		t.Errorf("nil histogram quantile = %v", got)
	}
}

var seed atomic.Int64

// Baseline: the obvious implementation, one hdrhistogram behind one mutex.
func BenchmarkRecordBaselineMutexHistogram(b *testing.B) {
	var mu sync.Mutex
	h := [2]*hdrhistogram.Histogram{rollout.NewLatencyHistogram(), rollout.NewLatencyHistogram()}
	var status [2][6]int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		lat := seed.Add(7919) // each goroutine its own latency sequence, as real requests
		for pb.Next() {
			lat = lat*7%50000 + 100
			mu.Lock()
			_ = h[lat&1].RecordValue(lat)
			status[lat&1][2]++
			mu.Unlock()
		}
	})
}

func BenchmarkRecord(b *testing.B) {
	r := New([]string{"stable", "canary"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		lat := seed.Add(7919) // each goroutine its own latency sequence, as real requests
		for pb.Next() {
			lat = lat*7%50000 + 100
			r.Record(int(lat&1), time.Duration(lat)*time.Microsecond, 200, None)
		}
	})
}

func BenchmarkSnapshot(b *testing.B) {
	r := New([]string{"stable", "canary"})
	for i := range 100000 {
		r.Record(i&1, time.Duration(i)*time.Microsecond, 200, None)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Snapshot()
	}
}

// The proxy runs one goroutine per connection (wrk -c64): many more
// goroutines than Ps, so a lock holder can be descheduled mid-section.
func BenchmarkRecordBaselineMutexHistogram64(b *testing.B) {
	var mu sync.Mutex
	h := [2]*hdrhistogram.Histogram{rollout.NewLatencyHistogram(), rollout.NewLatencyHistogram()}
	var status [2][6]int64
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		lat := seed.Add(7919) // each goroutine its own latency sequence, as real requests
		for pb.Next() {
			lat = lat*7%50000 + 100
			mu.Lock()
			_ = h[lat&1].RecordValue(lat)
			status[lat&1][2]++
			mu.Unlock()
		}
	})
}

func BenchmarkRecord64(b *testing.B) {
	r := New([]string{"stable", "canary"})
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		lat := seed.Add(7919) // each goroutine its own latency sequence, as real requests
		for pb.Next() {
			lat = lat*7%50000 + 100
			r.Record(int(lat&1), time.Duration(lat)*time.Microsecond, 200, None)
		}
	})
}

package guard

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/deployment-guardian/guardian/rollout"
)

var seed atomic.Int64

func benchGuard(b *testing.B) *Guard {
	g, err := New(Config{Triggers: []Trigger{
		mustTrigger(b, "error_rate > 5%"), mustTrigger(b, "p99_latency > 5s"), mustTrigger(b, "consecutive_errors > 10"),
	}, Watch: 1}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// BenchmarkObserve: every request is the canary's, 1% of them failing.
func BenchmarkObserve(b *testing.B) {
	g := benchGuard(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919)) // each goroutine its own sequence, as real requests
		for pb.Next() {
			i++
			g.Observe(1, time.Millisecond, i%100 == 0)
		}
	})
}

// BenchmarkRecordAndGuard is the proxy's whole per-request bookkeeping: the
// sharded recorder plus the guard, at a 10% canary share with 1% errors.
func BenchmarkRecordAndGuard(b *testing.B) {
	g := benchGuard(b)
	r := record.New([]string{"stable", "canary"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919)) // each goroutine its own sequence, as real requests
		for pb.Next() {
			i++
			v := 0
			if i%10 == 0 {
				v = 1
			}
			failed := i%100 == 0
			lat := time.Duration(100+i%50000) * time.Microsecond
			status, kind := 200, record.None
			if failed {
				status, kind = 500, record.Upstream5xx
			}
			r.Record(v, lat, status, kind)
			g.Observe(v, lat, failed)
		}
	})
}

// Baseline for BenchmarkRecordAndGuard: one HdrHistogram and the counters
// behind one mutex, as the obvious implementation would do it.
func BenchmarkRecordAndGuardBaselineMutex(b *testing.B) {
	var mu sync.Mutex
	h := [2]*hist{{h: rollout.NewLatencyHistogram()}, {h: rollout.NewLatencyHistogram()}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919)) // each goroutine its own sequence, as real requests
		for pb.Next() {
			i++
			v := 0
			if i%10 == 0 {
				v = 1
			}
			mu.Lock()
			_ = h[v].h.RecordValue(int64(100 + i%50000))
			h[v].n++
			if i%100 == 0 {
				h[v].errs++
			}
			mu.Unlock()
		}
	})
}

type hist struct {
	h       interface{ RecordValue(int64) error }
	n, errs int64
}

package record

import (
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultBuckets are the upper bounds (seconds) of the exposed latency
// histogram: finer than prometheus.DefBuckets below 5 ms, where a proxy's
// upstreams live, and up to the recorder's 60 s ceiling.
var DefaultBuckets = []float64{
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
}

// Metrics exposes recorders to Prometheus. It reads them at scrape time, so
// the request path pays nothing for it. Add a recorder per route.
type Metrics struct {
	buckets []float64 // seconds, ascending
	le      []int64   // the same bounds in µs

	requests, duration, errors *prometheus.Desc

	mu     sync.RWMutex
	routes map[string]*Recorder
}

// MetricsOpts configures NewMetrics. The zero value is valid.
type MetricsOpts struct {
	// Buckets are the histogram's upper bounds in seconds; nil means
	// DefaultBuckets.
	Buckets []float64
}

// NewMetrics returns a collector registered with reg (nil: not registered,
// for callers that register it themselves).
func NewMetrics(reg prometheus.Registerer, opts MetricsOpts) (*Metrics, error) {
	b := opts.Buckets
	if b == nil {
		b = DefaultBuckets
	}
	for i, v := range b {
		if !(v > 0) || (i > 0 && v <= b[i-1]) {
			return nil, fmt.Errorf("record: Buckets[%d]: %v must be positive and greater than the previous bound", i, v)
		}
	}
	m := &Metrics{
		buckets: slices.Clone(b),
		routes:  make(map[string]*Recorder),
		requests: prometheus.NewDesc("guardian_requests_total",
			"Requests completed by the proxy, by route, version and status class (error: no HTTP answer).",
			[]string{"route", "version", "code"}, nil),
		duration: prometheus.NewDesc("guardian_request_duration_seconds",
			"Latency of requests through the proxy, from the in-path HdrHistogram (resolution 0.1%).",
			[]string{"route", "version"}, nil),
		errors: prometheus.NewDesc("guardian_request_errors_total",
			"Failed requests by route, version and kind (refused, timeout, reset, upstream_5xx, grpc, other).",
			[]string{"route", "version", "kind"}, nil),
	}
	m.le = make([]int64, len(m.buckets))
	for i, s := range m.buckets {
		m.le[i] = int64(s * 1e6)
	}
	if reg != nil {
		if err := reg.Register(m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Add exposes r under the route label route, replacing any recorder already
// added for it (as a configuration reload does).
func (m *Metrics) Add(route string, r *Recorder) {
	m.mu.Lock()
	m.routes[route] = r
	m.mu.Unlock()
}

// Remove stops exposing route.
func (m *Metrics) Remove(route string) {
	m.mu.Lock()
	delete(m.routes, route)
	m.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.requests
	ch <- m.duration
	ch <- m.errors
}

var codeLabels = [6]string{"error", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.RLock()
	names := make([]string, 0, len(m.routes))
	for n := range m.routes {
		names = append(names, n)
	}
	recs := make(map[string]*Recorder, len(m.routes))
	for n, r := range m.routes {
		recs[n] = r
	}
	m.mu.RUnlock()
	sort.Strings(names)

	hist := make([]int64, countsLen)
	for _, route := range names {
		r := recs[route]
		for v := 0; v <= len(r.names); v++ {
			clear(hist)
			t := totals{hist: hist}
			r.sum(v, &t)
			version := r.mirror
			if v < len(r.names) {
				version = r.names[v]
			} else if t.requests() == 0 {
				continue
			}
			m.collectVersion(ch, route, version, &t)
		}
	}
}

func (m *Metrics) collectVersion(ch chan<- prometheus.Metric, route, version string, t *totals) {
	for class, n := range t.status {
		if n > 0 {
			ch <- prometheus.MustNewConstMetric(m.requests, prometheus.CounterValue, float64(n), route, version, codeLabels[class])
		}
	}
	for k, n := range t.kinds {
		if k != int(None) && n > 0 {
			ch <- prometheus.MustNewConstMetric(m.errors, prometheus.CounterValue, float64(n), route, version, kindNames[k])
		}
	}
	// A counts slot goes to the first bound at or above its lowest value, and
	// adds its midpoint to the sum: exact below 2 ms, within the
	// HdrHistogram's 0.1% above. Keeping an exact sum would cost every request
	// one more atomic add for a number nobody reads to better than 0.1%.
	cum := make(map[float64]uint64, len(m.buckets))
	perBound := make([]uint64, len(m.buckets))
	var total uint64
	var sumUS float64
	b := 0
	for i, n := range t.hist {
		if n == 0 {
			continue
		}
		total += uint64(n)
		v := lowestValueAt(i)
		sumUS += float64(n) * float64(medianValueAt(i))
		for b < len(m.le) && m.le[b] < v {
			b++
		}
		if b < len(m.le) {
			perBound[b] += uint64(n)
		}
	}
	var run uint64
	for i, s := range m.buckets {
		run += perBound[i]
		cum[s] = run
	}
	ch <- prometheus.MustNewConstHistogram(m.duration, total, sumUS/1e6, cum, route, version)
}

var _ prometheus.Collector = (*Metrics)(nil)

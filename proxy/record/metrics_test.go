package record

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsExposition(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg, MetricsOpts{Buckets: []float64{0.001, 0.01, 0.1}})
	if err != nil {
		t.Fatal(err)
	}
	r := New([]string{"stable", "canary"})
	m.Add("checkout", r)
	r.Record(0, 500*time.Microsecond, 200, None)
	r.Record(0, 1*time.Millisecond, 200, None) // exactly on a bound: inside it
	r.Record(0, 5*time.Millisecond, 404, None)
	r.Record(1, 50*time.Millisecond, 503, Upstream5xx)
	r.Record(1, 2*time.Second, 0, Timeout)
	r.RecordMirror(time.Millisecond, 200, None)

	want := `
# HELP guardian_request_duration_seconds Latency of requests through the proxy, from the in-path HdrHistogram (resolution 0.1%).
# TYPE guardian_request_duration_seconds histogram
guardian_request_duration_seconds_bucket{route="checkout",version="canary",le="0.001"} 0
guardian_request_duration_seconds_bucket{route="checkout",version="canary",le="0.01"} 0
guardian_request_duration_seconds_bucket{route="checkout",version="canary",le="0.1"} 1
guardian_request_duration_seconds_bucket{route="checkout",version="canary",le="+Inf"} 2
guardian_request_duration_seconds_sum{route="checkout",version="canary"} 2.050384
guardian_request_duration_seconds_count{route="checkout",version="canary"} 2
guardian_request_duration_seconds_bucket{route="checkout",version="mirror",le="0.001"} 1
guardian_request_duration_seconds_bucket{route="checkout",version="mirror",le="0.01"} 1
guardian_request_duration_seconds_bucket{route="checkout",version="mirror",le="0.1"} 1
guardian_request_duration_seconds_bucket{route="checkout",version="mirror",le="+Inf"} 1
guardian_request_duration_seconds_sum{route="checkout",version="mirror"} 0.001
guardian_request_duration_seconds_count{route="checkout",version="mirror"} 1
guardian_request_duration_seconds_bucket{route="checkout",version="stable",le="0.001"} 2
guardian_request_duration_seconds_bucket{route="checkout",version="stable",le="0.01"} 3
guardian_request_duration_seconds_bucket{route="checkout",version="stable",le="0.1"} 3
guardian_request_duration_seconds_bucket{route="checkout",version="stable",le="+Inf"} 3
guardian_request_duration_seconds_sum{route="checkout",version="stable"} 0.006502
guardian_request_duration_seconds_count{route="checkout",version="stable"} 3
# HELP guardian_request_errors_total Failed requests by route, version and kind (refused, timeout, reset, upstream_5xx, grpc, other).
# TYPE guardian_request_errors_total counter
guardian_request_errors_total{kind="timeout",route="checkout",version="canary"} 1
guardian_request_errors_total{kind="upstream_5xx",route="checkout",version="canary"} 1
# HELP guardian_requests_total Requests completed by the proxy, by route, version and status class (error: no HTTP answer).
# TYPE guardian_requests_total counter
guardian_requests_total{code="2xx",route="checkout",version="mirror"} 1
guardian_requests_total{code="2xx",route="checkout",version="stable"} 2
guardian_requests_total{code="4xx",route="checkout",version="stable"} 1
guardian_requests_total{code="5xx",route="checkout",version="canary"} 1
guardian_requests_total{code="error",route="checkout",version="canary"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	m.Remove("checkout")
	if n := testutil.CollectAndCount(m); n != 0 {
		t.Errorf("after Remove, %d series remain", n)
	}
}

func TestMetricsBucketsValidated(t *testing.T) {
	for _, b := range [][]float64{{0.1, 0.01}, {0, 1}, {-1}} {
		if _, err := NewMetrics(nil, MetricsOpts{Buckets: b}); err == nil || !strings.Contains(err.Error(), "Buckets[") {
			t.Errorf("Buckets %v: err %v, want one naming the bad bound", b, err)
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg, MetricsOpts{}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg, MetricsOpts{}); err == nil {
		t.Error("registering twice with one registry succeeded")
	}
}

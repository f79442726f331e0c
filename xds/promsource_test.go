package xds

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePrometheus answers /api/v1/query with Prometheus's real JSON shape
// from a table of series per metric name, the way Prometheus returns what
// it scraped from Envoy's /stats/prometheus.
type fakePrometheus struct {
	mu      sync.Mutex
	series  map[string][]promSample // metric name → samples
	queries []string
}

type promSample struct {
	labels map[string]string
	value  float64
}

func (f *fakePrometheus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	q := r.Form.Get("query")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	name := q[:strings.IndexByte(q, '{')]
	type result struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	res := []result{}
	for _, s := range f.series[name] {
		// Only the clusters the query names (a real Prometheus would apply
		// the whole matcher; the test checks the matcher text separately).
		if !strings.Contains(q, s.labels["envoy_cluster_name"]) {
			continue
		}
		m := map[string]string{"__name__": name, "job": "envoy", "namespace": "shop"}
		for k, v := range s.labels {
			m[k] = v
		}
		res = append(res, result{Metric: m, Value: [2]any{1764100000.5, fmt.Sprint(s.value)}})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"status": "success",
		"data":   map[string]any{"resultType": "vector", "result": res},
	})
}

// fleetSeries is the fixture fleet (see checkFixtureSnapshot) scraped from
// two Envoy pods, split 60/40, in Prometheus names: Envoy's tag extraction
// turns cluster.<name>.upstream_rq_5xx into envoy_cluster_upstream_rq_xx
// {envoy_cluster_name, envoy_response_code_class} and upstream_rq_time into
// envoy_cluster_upstream_rq_time_bucket{le} in milliseconds.
func fleetSeries(scale float64) map[string][]promSample {
	classes := map[string]map[int]float64{
		"checkout-stable": {2: 9950, 4: 30, 5: 20},
		"checkout-canary": {2: 930, 4: 5, 5: 65},
	}
	lat := map[string]map[string]float64{
		"checkout-stable": {"5": 500, "10": 3000, "25": 9000, "50": 9900, "100": 9990, "250": 10000},
		"checkout-canary": {"5": 20, "10": 100, "25": 400, "50": 850, "100": 980, "250": 1000},
	}
	bounds := []string{"0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000", "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf"}
	out := map[string][]promSample{}
	for pod, share := range map[string]float64{"10.0.0.1:9901": 0.6, "10.0.0.2:9901": 0.4} {
		for cluster, cls := range classes {
			for k := 1; k <= 5; k++ {
				out["envoy_cluster_upstream_rq_xx"] = append(out["envoy_cluster_upstream_rq_xx"], promSample{
					labels: map[string]string{"instance": pod, "envoy_cluster_name": cluster, "envoy_response_code_class": fmt.Sprint(k)},
					value:  cls[k] * share * scale,
				})
			}
			cum := 0.0
			for _, le := range bounds {
				if v, ok := lat[cluster][le]; ok {
					cum = v
				}
				out["envoy_cluster_upstream_rq_time_bucket"] = append(out["envoy_cluster_upstream_rq_time_bucket"], promSample{
					labels: map[string]string{"instance": pod, "envoy_cluster_name": cluster, "le": le},
					value:  cum * share * scale,
				})
			}
		}
	}
	return out
}

func TestPrometheusSource(t *testing.T) {
	fake := &fakePrometheus{series: fleetSeries(1)}
	ts := httptest.NewServer(fake)
	defer ts.Close()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	src, err := NewPrometheusSource(PrometheusConfig{
		Address:  ts.URL,
		Selector: `namespace="shop"`,
		Now:      func() time.Time { return now },
		Lookup: func(r string) (string, []string, error) {
			if r != "checkout-rollout" {
				return "", nil, fmt.Errorf("unknown rollout %q", r)
			}
			return "checkout", []string{"stable", "canary"}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := src.Snapshot("checkout-rollout")
	if err != nil {
		t.Fatal(err)
	}
	checkFixtureSnapshot(t, snap)
	want := `envoy_cluster_upstream_rq_xx{envoy_cluster_name=~"checkout-canary|checkout-stable",namespace="shop"}`
	if fake.queries[0] != want {
		t.Errorf("query %s\nwant  %s", fake.queries[0], want)
	}

	// Pod 10.0.0.1 restarts: its series start again from zero and have
	// since counted 10 canary 5xx. The totals stay cumulative.
	fake.mu.Lock()
	for i, s := range fake.series["envoy_cluster_upstream_rq_xx"] {
		if s.labels["instance"] == "10.0.0.1:9901" {
			s.value = 0
			if s.labels["envoy_cluster_name"] == "checkout-canary" && s.labels["envoy_response_code_class"] == "5" {
				s.value = 10
			}
			fake.series["envoy_cluster_upstream_rq_xx"][i] = s
		}
	}
	fake.mu.Unlock()
	after, err := src.Snapshot("checkout-rollout")
	if err != nil {
		t.Fatal(err)
	}
	if got := after.Versions["canary"].Errors; got != 75 {
		t.Errorf("canary errors after a pod restart = %d, want 65 + 10", got)
	}
	if got := after.Versions["stable"].Requests; got != 10000 {
		t.Errorf("stable requests after a pod restart = %d, want 10000 kept", got)
	}
	if _, err := src.Snapshot("nope"); err == nil {
		t.Error("unknown rollout accepted")
	}
}

func TestPrometheusSourceErrors(t *testing.T) {
	if _, err := NewPrometheusSource(PrometheusConfig{}); err == nil || !strings.Contains(err.Error(), "Address") {
		t.Errorf("no address: %v", err)
	}
	if _, err := NewPrometheusSource(PrometheusConfig{Address: "http://127.0.0.1:1", Selector: `job=envoy`}); err == nil || !strings.Contains(err.Error(), "Selector") {
		t.Errorf("bad selector: %v", err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"status":"error","errorType":"bad_data","error":"parse error at char 5"}`))
	}))
	defer ts.Close()
	src, err := NewPrometheusSource(PrometheusConfig{Address: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Snapshot("checkout"); err == nil || !strings.Contains(err.Error(), "parse error") {
		t.Errorf("Prometheus error not surfaced: %v", err)
	}
}

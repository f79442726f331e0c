package xds

import (
	"context"
	"encoding/json"
	"math"
	"net"
	"os"
	"testing"
	"time"

	metricsservice "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
)

// loadStream reads a fixture of StreamMetricsMessages in protojson, shaped
// as Envoy's metrics_service sink sends them: cluster.<name>.* stat names,
// cumulative counters, and upstream_rq_time both as SUMMARY and as HISTOGRAM
// (Envoy's default histogram_emit_mode) with its default bucket bounds in ms.
func loadStream(t testing.TB, path string) []*metricsservice.StreamMetricsMessage {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		t.Fatal(err)
	}
	var out []*metricsservice.StreamMetricsMessage
	for i, it := range items {
		var m metricsservice.StreamMetricsMessage
		if err := protojson.Unmarshal(it, &m); err != nil {
			t.Fatalf("%s item %d: %v", path, i, err)
		}
		out = append(out, &m)
	}
	return out
}

// The fixture fleet: stable 10,000 requests, 20 5xx, latency mostly in
// (10, 25] ms; canary 1,000 requests, 65 5xx, latency mostly in (25, 50] ms.
func checkFixtureSnapshot(t *testing.T, snap rollout.Snapshot) {
	t.Helper()
	st, ca := snap.Versions["stable"], snap.Versions["canary"]
	if st.Requests != 10000 || st.Errors != 20 || st.Status != [6]int64{0, 0, 9950, 0, 30, 20} {
		t.Errorf("stable = %d requests, %d errors, status %v; want 10000, 20, [0 0 9950 0 30 20]", st.Requests, st.Errors, st.Status)
	}
	if ca.Requests != 1000 || ca.Errors != 65 || ca.Status != [6]int64{0, 0, 930, 0, 5, 65} {
		t.Errorf("canary = %d requests, %d errors, status %v; want 1000, 65, [0 0 930 0 5 65]", ca.Requests, ca.Errors, ca.Status)
	}
	if st.Latency.TotalCount() != 10000 || ca.Latency.TotalCount() != 1000 {
		t.Fatalf("latency counts %d / %d, want 10000 / 1000", st.Latency.TotalCount(), ca.Latency.TotalCount())
	}
	// Each Envoy bucket's samples sit at its midpoint: the stable median
	// falls in (10, 25] ms → 17.5 ms; the canary's in (25, 50] → 37.5 ms;
	// the stable p99.5 in (50, 100] → 75 ms.
	near := func(name string, gotUS int64, wantMS float64) {
		if math.Abs(float64(gotUS)/1000-wantMS) > wantMS*0.002 {
			t.Errorf("%s = %.3f ms, want %.1f ms", name, float64(gotUS)/1000, wantMS)
		}
	}
	near("stable p50", st.Latency.ValueAtQuantile(50), 17.5)
	near("canary p50", ca.Latency.ValueAtQuantile(50), 37.5)
	near("stable p99.5", st.Latency.ValueAtQuantile(99.5), 75)
	near("canary p99", ca.Latency.ValueAtQuantile(99), 175)

	// And the analysis judges the canary worse on both counts.
	z, err := analysis.TwoProportionZ(ca.Errors, ca.Requests, st.Errors, st.Requests, analysis.Greater)
	if err != nil || z.PValue > 1e-6 {
		t.Errorf("error-rate test: %+v, %v; want the canary's higher error rate detected (p < 1e-6)", z, err)
	}
	mwu, err := analysis.MannWhitneyHist(ca.Latency, st.Latency, analysis.Greater, 0.95)
	if err != nil || mwu.PValue > 1e-6 {
		t.Errorf("latency test: %+v, %v; want the canary's slower latency detected", mwu, err)
	}
	// A/A: stable against itself is not judged different.
	aa, err := analysis.TwoProportionZ(st.Errors, st.Requests, st.Errors, st.Requests, analysis.Greater)
	if err != nil || aa.PValue < 0.4 {
		t.Errorf("A/A error-rate test: %+v, %v; want no difference", aa, err)
	}
}

func TestEnvoyMetricsIntakePlainNames(t *testing.T) {
	e := NewEnvoyMetrics(nil)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	e.Now = func() time.Time { return now }
	for _, m := range loadStream(t, "testdata/envoy_metrics_plain.json") {
		e.Ingest(m.GetIdentifier().GetNode().GetId(), m.GetEnvoyMetrics())
	}
	snap, err := e.ServiceSnapshot("checkout", []string{"stable", "canary"})
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Time.Equal(now) {
		t.Errorf("snapshot time %v, want %v", snap.Time, now)
	}
	checkFixtureSnapshot(t, snap)
}

func TestEnvoyMetricsIntakeTagsAsLabels(t *testing.T) {
	e := NewEnvoyMetrics(nil)
	for _, m := range loadStream(t, "testdata/envoy_metrics_labels.json") {
		e.Ingest(m.GetIdentifier().GetNode().GetId(), m.GetEnvoyMetrics())
	}
	snap, err := e.Snapshot("checkout")
	if err != nil {
		t.Fatal(err)
	}
	checkFixtureSnapshot(t, snap)
}

// A node that restarts reports counters from zero; the fleet totals must
// stay cumulative, and a repeated flush must not double count.
func TestEnvoyMetricsCounterReset(t *testing.T) {
	e := NewEnvoyMetrics(nil)
	msgs := loadStream(t, "testdata/envoy_metrics_plain.json")
	for _, m := range msgs {
		e.Ingest(m.GetIdentifier().GetNode().GetId(), m.GetEnvoyMetrics())
	}
	e.Ingest("envoy-a", msgs[0].GetEnvoyMetrics()) // same flush again
	before, _ := e.Snapshot("checkout")
	if before.Versions["stable"].Requests != 10000 {
		t.Fatalf("after a repeated flush stable requests = %d, want 10000", before.Versions["stable"].Requests)
	}
	// envoy-a restarts and has since served 10 canary 5xx.
	e.Ingest("envoy-a", []*dto.MetricFamily{{
		Name:   strp("cluster.checkout-canary.upstream_rq_5xx"),
		Type:   dto.MetricType_COUNTER.Enum(),
		Metric: []*dto.Metric{{Counter: &dto.Counter{Value: f64p(10)}}},
	}})
	after, _ := e.Snapshot("checkout")
	if got := after.Versions["canary"].Errors; got != 75 {
		t.Errorf("canary errors after envoy-a restart = %d, want 65 + 10", got)
	}
	if got := after.Versions["canary"].Latency.TotalCount(); got != 1000 {
		t.Errorf("canary latency count after restart = %d, want 1000 (kept from before)", got)
	}
}

// The real path: Envoy's metrics sink streams to the Server's port and the
// Server, as the rollout's MetricSource, resolves rollout → service.
func TestServerMetricsServiceStream(t *testing.T) {
	s, _ := newTestServer(t)
	svc := simService("checkout")
	svc.Rollout = "checkout-rollout"
	if err := s.SetService(svc); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range loadStream(t, "testdata/envoy_metrics_plain.json") {
		stream, err := metricsservice.NewMetricsServiceClient(cc).StreamMetrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Envoy names the node only in the first message of a stream.
		families := m.GetEnvoyMetrics()
		first := &metricsservice.StreamMetricsMessage{Identifier: m.GetIdentifier(), EnvoyMetrics: families[:len(families)/2]}
		rest := &metricsservice.StreamMetricsMessage{EnvoyMetrics: families[len(families)/2:]}
		for _, msg := range []*metricsservice.StreamMetricsMessage{first, rest} {
			if err := stream.Send(msg); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := s.Snapshot("checkout-rollout")
	if err != nil {
		t.Fatal(err)
	}
	checkFixtureSnapshot(t, snap)
	if _, err := s.Snapshot("unknown"); err == nil {
		t.Error("Snapshot of an unknown rollout succeeded")
	}
}

func strp(s string) *string   { return &s }
func f64p(f float64) *float64 { return &f }

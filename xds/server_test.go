package xds

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/deployment-guardian/guardian/rollout"
)

func newTestServer(tb testing.TB) (*Server, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	s, err := NewServer(Config{
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		Registerer: reg,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return s, reg
}

func simService(name string) Service {
	return Service{
		Name: name,
		Versions: []Version{
			{Name: "stable", Endpoints: []string{"127.0.0.1:9101", "127.0.0.2:9101"}},
			{Name: "canary", Endpoints: []string{"127.0.0.1:9102"}},
		},
		Weights: rollout.Weights{"stable": 100, "canary": 0},
	}
}

func TestSotwAndDeltaNodesConverge(t *testing.T) {
	s, reg := newTestServer(t)
	if err := s.SetService(simService("pay")); err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, s, "pay", 8, 4, func(i int) bool { return i%2 == 1 })
	f.waitAll(t)
	if got := testutil.ToFloat64(s.metrics.nodes); got != 8 {
		t.Errorf("connected nodes gauge = %v, want 8", got)
	}
	before := s.Version()

	if err := s.SetWeights("pay", rollout.Weights{"stable": 90, "canary": 10}); err != nil {
		t.Fatal(err)
	}
	v := s.Version()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	took, err := s.WaitAcked(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("8 nodes (4 delta) acknowledged %s in %v", v, took)
	for _, n := range f.nodes {
		if got := n.ackedVersion(resource.RouteType); got != v {
			t.Errorf("node %s (delta %v) route version %q, want %q", n.id, n.delta, got, v)
		}
		// A weight change touches only the routes. State-of-the-world nodes
		// get every cluster again with the new version; a delta node may
		// still hold the clusters of the version before, or the new one if
		// its cluster subscription was answered after the publish (the
		// server answers a late request from the current snapshot).
		got := n.ackedVersion(resource.ClusterType)
		if ok := got == v || (n.delta && got == before); !ok {
			t.Errorf("node %s (delta %v) cluster version %q, want %q (or %q for delta)", n.id, n.delta, got, v, before)
		}
	}
	st := s.Status()
	if len(st.Nodes) != 8 || st.Converged != 8 || st.Version != v {
		t.Errorf("status: %d nodes, %d converged, version %s; want 8, 8, %s", len(st.Nodes), st.Converged, st.Version, v)
	}
	if len(st.Groups) != 1 || st.Groups[0] != (GroupStatus{Group: "default", Streams: 8, Converged: 8}) {
		t.Errorf("groups %+v, want one default group of 8 converged streams", st.Groups)
	}
	if _, err := json.Marshal(st); err != nil {
		t.Errorf("status is not JSON-able: %v", err)
	}
	if n := testutil.CollectAndCount(reg, "guardian_xds_convergence_seconds"); n != 1 {
		t.Errorf("convergence histogram series = %d, want 1", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", problems, err)
	}

	// A node that leaves stops counting.
	f.stop()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(s.metrics.nodes) != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := testutil.ToFloat64(s.metrics.nodes); got != 0 {
		t.Errorf("connected nodes after disconnect = %v, want 0", got)
	}
}

func TestSetWeightsRefusesBadInputAndKeepsServing(t *testing.T) {
	s, _ := newTestServer(t)
	if err := s.SetService(simService("pay")); err != nil {
		t.Fatal(err)
	}
	v := s.Version()
	cases := []struct {
		name    string
		rollout string
		w       rollout.Weights
		want    string
	}{
		{"unknown rollout", "nope", rollout.Weights{"stable": 100}, `rollout "nope"`},
		{"sum", "pay", rollout.Weights{"stable": 90, "canary": 5}, "sum to 95"},
		{"unknown version", "pay", rollout.Weights{"stable": 90, "green": 10}, "weights[green]"},
		{"negative", "pay", rollout.Weights{"stable": 110, "canary": -10}, "weights[canary] = -10"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.SetWeights(c.rollout, c.w)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("SetWeights(%q, %v) = %v, want an error containing %q", c.rollout, c.w, err, c.want)
			}
			if s.Version() != v {
				t.Errorf("version moved to %s after a refused change", s.Version())
			}
		})
	}
	// The rollout → service mapping.
	svc := simService("pay-eu")
	svc.Rollout = "pay-global"
	if err := s.SetService(svc); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWeights("pay-global", rollout.Weights{"stable": 50, "canary": 50}); err != nil {
		t.Fatal(err)
	}
	if name, versions, err := s.Lookup("pay-global"); err != nil || name != "pay-eu" || strings.Join(versions, ",") != "stable,canary" {
		t.Errorf("Lookup(pay-global) = %q %v %v", name, versions, err)
	}
	dup := simService("pay-us")
	dup.Rollout = "pay-global"
	if err := s.SetService(dup); err == nil {
		t.Error("two services driven by one rollout were accepted")
	}
	if err := s.RemoveService("pay-eu"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWeights("pay-global", rollout.Weights{"stable": 100}); err == nil {
		t.Error("SetWeights on a removed service succeeded")
	}
	if _, err := s.WaitAcked(context.Background(), "elsewhere-1"); err == nil {
		t.Error("WaitAcked on a foreign version succeeded")
	}
	// Nobody connected: a publish converges at once.
	if took, err := s.WaitAcked(context.Background(), s.Version()); err != nil || took < 0 {
		t.Errorf("WaitAcked with no nodes = %v, %v", took, err)
	}
}

func TestNewServerRejectsDuplicateRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewServer(Config{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(Config{Registerer: reg}); err == nil || !strings.Contains(err.Error(), "Registerer") {
		t.Errorf("second NewServer on one registry = %v, want a Registerer error", err)
	}
	if _, err := NewServer(Config{TLS: &TLSConfig{CertFile: "/nonexistent.pem", KeyFile: "/nonexistent.key"}}); err == nil || !strings.Contains(err.Error(), "CertFile") {
		t.Errorf("missing cert = %v, want an error naming CertFile", err)
	}
}

// BenchmarkConvergence1000 connects 1,000 simulated xDS clients (raw ADS
// streams, 25 per connection) and measures, per weight change, the time
// from SetWeights to the last node's ACK. The same is measured with one
// node in the same run as the baseline.
func BenchmarkConvergence1000(b *testing.B) {
	measure := func(b *testing.B, nodes int, iters int) []time.Duration {
		s, _ := newTestServer(b)
		if err := s.SetService(simService("bench")); err != nil {
			b.Fatal(err)
		}
		f := startFleet(b, s, "bench", nodes, 25, func(int) bool { return false })
		f.waitAll(b)
		var out []time.Duration
		for i := range iters {
			canary := 10 * (i%2 + 1)
			if err := s.SetWeights("bench", rollout.Weights{"stable": 100 - canary, "canary": canary}); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			took, err := s.WaitAcked(ctx, s.Version())
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, took)
		}
		f.stop()
		return out
	}
	base := measure(b, 1, 20)
	b.ResetTimer()
	conv := measure(b, 1000, b.N)
	b.StopTimer()
	med := func(d []time.Duration) time.Duration {
		d = append([]time.Duration(nil), d...)
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	mx := conv[0]
	for _, d := range conv {
		mx = max(mx, d)
	}
	b.ReportMetric(float64(med(conv).Microseconds())/1000, "ms-median-1000")
	b.ReportMetric(float64(mx.Microseconds())/1000, "ms-max-1000")
	b.ReportMetric(float64(med(base).Microseconds())/1000, "ms-median-1")
	b.ReportMetric(float64(med(conv))/float64(med(base)), "x-vs-1node")
}

package xds

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/deployment-guardian/guardian/rollout"
)

// fixedSource is an in-path recorder stand-in: a fixed cumulative snapshot.
type fixedSource struct{ snap rollout.Snapshot }

func (f fixedSource) Snapshot(string) (rollout.Snapshot, error) { return f.snap, nil }

func recorderSnapshot() rollout.Snapshot {
	mk := func(ok, fail, noAnswer int64, ms int64) rollout.VersionStats {
		h := rollout.NewLatencyHistogram()
		h.RecordValues(ms*1000, ok+fail)
		return rollout.VersionStats{Requests: ok + fail + noAnswer, Errors: fail + noAnswer, Status: [6]int64{noAnswer, 0, ok, 0, 0, fail}, Latency: h}
	}
	return rollout.Snapshot{Time: time.Unix(1764100000, 0), Versions: map[string]rollout.VersionStats{
		"stable": mk(990, 10, 0, 12),
		"canary": mk(90, 8, 2, 40),
	}}
}

func TestProxyClientFollowsWeightsAndFailsStatic(t *testing.T) {
	s, _ := newTestServer(t)
	if err := s.SetService(simService("edge")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWeights("edge", rollout.Weights{"stable": 90, "canary": 10}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go s.Serve(ln)

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	got := make(chan rollout.Weights, 16)
	pc, err := NewProxyClient(ProxyClientConfig{
		Conn: cc, NodeID: "guardian-proxy-1", Service: "edge",
		OnWeights:       func(w rollout.Weights) error { got <- w; return nil },
		Metrics:         fixedSource{recorderSnapshot()},
		MetricsInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); pc.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	expect := func(want rollout.Weights) {
		t.Helper()
		select {
		case w := <-got:
			if w["stable"] != want["stable"] || w["canary"] != want["canary"] {
				t.Fatalf("OnWeights(%v), want %v", w, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no weights %v within 10s; status %+v", want, pc.Status())
		}
	}
	expect(rollout.Weights{"stable": 90, "canary": 10})
	if err := s.SetWeights("edge", rollout.Weights{"stable": 100, "canary": 0}); err != nil {
		t.Fatal(err)
	}
	expect(rollout.Weights{"stable": 100, "canary": 0})
	ctxW, cancelW := context.WithTimeout(context.Background(), 10*time.Second)
	if _, err := s.WaitAcked(ctxW, s.Version()); err != nil {
		t.Fatal(err)
	}
	cancelW()

	// Its in-path numbers reach the control plane as if from an Envoy.
	deadline := time.Now().Add(10 * time.Second)
	var snap rollout.Snapshot
	for time.Now().Before(deadline) {
		snap, _ = s.Snapshot("edge")
		if snap.Versions["canary"].Requests > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	ca, st := snap.Versions["canary"], snap.Versions["stable"]
	if ca.Requests != 100 || ca.Errors != 10 || st.Requests != 1000 || st.Errors != 10 {
		t.Errorf("fleet view of the proxy: canary %d/%d stable %d/%d, want 100/10 and 1000/10 (requests/errors)", ca.Requests, ca.Errors, st.Requests, st.Errors)
	}
	// 40 ms lands in Envoy's (25, 50] bucket, read back at its midpoint.
	if p50 := ca.Latency.ValueAtQuantile(50); p50 < 37000 || p50 > 38000 {
		t.Errorf("canary p50 via the fleet = %d µs, want 37.5 ms", p50)
	}

	// Control plane gone: the proxy keeps its weights and says so.
	s.Stop()
	deadline = time.Now().Add(10 * time.Second)
	for pc.Status().Connected && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	status := pc.Status()
	if status.Connected || !status.Static || status.State != ClientStatic || status.Weights["stable"] != 100 {
		t.Errorf("status without a control plane = %+v, want static on stable 100", status)
	}
	if !strings.Contains(status.Message, "unreachable since") || pc.Ready() != nil {
		t.Errorf("static proxy: message %q, Ready() = %v; want 'unreachable since' and ready", status.Message, pc.Ready())
	}
	select {
	case w := <-got:
		t.Errorf("OnWeights(%v) called while the control plane is down", w)
	default:
	}

	// A new control plane on the same address: the proxy reconnects.
	s2, _ := newTestServer(t)
	if err := s2.SetService(simService("edge")); err != nil {
		t.Fatal(err)
	}
	if err := s2.SetWeights("edge", rollout.Weights{"stable": 75, "canary": 25}); err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("address %s taken meanwhile: %v", addr, err)
	}
	go s2.Serve(ln2)
	defer s2.Stop()
	expect(rollout.Weights{"stable": 75, "canary": 25})
	if !pc.Status().Connected {
		t.Error("not connected after the control plane came back")
	}
}

func TestEnvoyFamiliesRoundTrip(t *testing.T) {
	e := NewEnvoyMetrics(nil)
	e.Ingest("p1", EnvoyFamilies("edge", recorderSnapshot()))
	snap, err := e.Snapshot("edge")
	if err != nil {
		t.Fatal(err)
	}
	if st := snap.Versions["stable"]; st.Requests != 1000 || st.Errors != 10 || st.Latency.TotalCount() != 1000 {
		t.Errorf("stable round trip = %d requests %d errors %d samples", st.Requests, st.Errors, st.Latency.TotalCount())
	}
	// 12 ms falls in Envoy's (10, 25] ms bucket, read back at its midpoint.
	if p := snap.Versions["stable"].Latency.ValueAtQuantile(50); p < 17400 || p > 17600 {
		t.Errorf("stable p50 = %d µs, want 17.5 ms", p)
	}
}

func TestWeightsFromRouteConfiguration(t *testing.T) {
	svc := checkoutService() // has a header route ahead of the weighted one
	snap, err := BuildSnapshot("v1", []Service{svc})
	if err != nil {
		t.Fatal(err)
	}
	rc := snap.GetResources(resource.RouteType)["checkout"].(*route.RouteConfiguration)
	resp := func(rc *route.RouteConfiguration) *discovery.DiscoveryResponse {
		a, err := anypb.New(rc)
		if err != nil {
			t.Fatal(err)
		}
		return &discovery.DiscoveryResponse{VersionInfo: "v1", Resources: []*anypb.Any{a}}
	}
	w, err := weightsFrom("checkout", resp(rc))
	if err != nil || w["stable"] != 95 || w["canary"] != 5 || len(w) != 2 {
		t.Fatalf("weightsFrom = %v, %v; want stable 95 canary 5", w, err)
	}
	if w, err := weightsFrom("other", resp(rc)); w != nil || err != nil {
		t.Errorf("another service's routes = %v, %v; want nothing (keep the last weights)", w, err)
	}
	bad := proto.Clone(rc).(*route.RouteConfiguration)
	bad.VirtualHosts[0].Routes[1].GetRoute().GetWeightedClusters().Clusters[0].Weight = wrapperspb.UInt32(50)
	if _, err := weightsFrom("checkout", resp(bad)); err == nil || !strings.Contains(err.Error(), "sum to 55") {
		t.Errorf("weights summing to 55: %v, want a rejection", err)
	}
}

// A split the proxy cannot apply is NACKed with the proxy's reason, the
// control plane shows it, and the proxy keeps its weights.
func TestProxyClientNACKsWeightsTheProxyRefuses(t *testing.T) {
	s, _ := newTestServer(t)
	if err := s.SetService(simService("edge")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	reg := prometheus.NewRegistry()
	applied := make(chan rollout.Weights, 4)
	pc, err := NewProxyClient(ProxyClientConfig{
		Conn: cc, NodeID: "picky", Service: "edge", Registerer: reg,
		OnWeights: func(w rollout.Weights) error {
			if w["canary"] > 0 {
				return errors.New(`route default has no version "canary"`)
			}
			applied <- w
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); pc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case w := <-applied:
		if w["stable"] != 100 {
			t.Fatalf("first split %v, want stable 100", w)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no first split; status %+v", pc.Status())
	}
	good := s.Version()
	if err := s.SetWeights("edge", rollout.Weights{"stable": 80, "canary": 20}); err != nil {
		t.Fatal(err)
	}
	ctxW, cancelW := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelW()
	_, err = s.WaitAcked(ctxW, s.Version())
	if err == nil || !strings.Contains(err.Error(), "picky") || !strings.Contains(err.Error(), "proxy refused weights") {
		t.Fatalf("WaitAcked = %v, want a NACK from node picky naming the proxy's reason", err)
	}
	st := pc.Status()
	if st.Weights["stable"] != 100 || st.Version != good || !strings.Contains(st.LastError, "refused") || st.State != ClientConnected {
		t.Errorf("after a refused split: %+v, want stable 100 at version %s, connected, lastError naming the refusal", st, good)
	}
	if got := testutil.ToFloat64(pc.rejects); got != 1 {
		t.Errorf("guardian_xds_client_rejected_total = %v, want 1", got)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP guardian_xds_client_connected 1 while the control plane answers on a live stream, else 0.
# TYPE guardian_xds_client_connected gauge
guardian_xds_client_connected 1
# HELP guardian_xds_client_static 1 while the proxy runs on its last weights because the control plane is unreachable (fail static).
# TYPE guardian_xds_client_static gauge
guardian_xds_client_static 0
`), "guardian_xds_client_connected", "guardian_xds_client_static"); err != nil {
		t.Error(err)
	}
}

// Readiness follows Envoy's initial fetch: not ready until the first
// answer or the timeout, then ready (static when nothing came).
func TestProxyClientReadinessStates(t *testing.T) {
	cc, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	pc, err := NewProxyClient(ProxyClientConfig{Conn: cc, NodeID: "n", Service: "edge",
		OnWeights: func(rollout.Weights) error { return nil }, InitialFetchTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	now := t0
	pc.now = func() time.Time { return now }
	if st := pc.Status(); st.State != ClientWaiting || pc.Ready() == nil {
		t.Errorf("before Run: %+v ready=%v, want waiting and not ready", st, pc.Ready())
	}
	pc.started, pc.st.Since = t0, t0
	now = t0.Add(14 * time.Second)
	if err := pc.Ready(); err == nil || !strings.Contains(err.Error(), "waiting for the first configuration") {
		t.Errorf("14s in, nothing received: Ready() = %v, want waiting", err)
	}
	now = t0.Add(15 * time.Second)
	st := pc.Status()
	if pc.Ready() != nil || st.State != ClientStatic || !st.Static || st.Weights != nil ||
		!strings.Contains(st.Message, "unreachable since 2026-11-25T21:00:00Z; no configuration received") {
		t.Errorf("15s in, nothing received: %+v ready=%v, want static on the proxy's own weights", st, pc.Ready())
	}
	// Weights once received keep it static (and ready) however long it lasts.
	pc.weights, pc.st.Version = rollout.Weights{"stable": 70, "canary": 30}, "7"
	now = t0.Add(time.Hour)
	if st := pc.Status(); st.State != ClientStatic || !strings.Contains(st.Message, "keeping the last weights (version 7)") || st.Weights["canary"] != 30 {
		t.Errorf("static with weights: %+v", st)
	}
}

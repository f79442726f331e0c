package xds

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
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
		OnWeights:       func(w rollout.Weights) { got <- w },
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
	if status.Connected || !status.Static || status.Weights["stable"] != 100 {
		t.Errorf("status without a control plane = %+v, want static on stable 100", status)
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

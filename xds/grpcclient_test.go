package xds

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and balancers

	"github.com/deployment-guardian/guardian/rollout"
)

func dialXDS(t *testing.T, service string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("xds:///"+service, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func which(ctx context.Context, cc *grpc.ClientConn) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out wrapperspb.StringValue
	err := cc.Invoke(ctx, whichMethod, wrapperspb.String(""), &out)
	return out.GetValue(), err
}

// waitServing calls until an RPC lands on want (bounded), so the client has
// its configuration before anything is measured.
func waitServing(t *testing.T, cc *grpc.ClientConn, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		got, err := which(context.Background(), cc)
		if err == nil && got == want {
			return
		}
		last = err
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("client never reached %s; last error: %v", want, last)
}

func waitAcked(t *testing.T, s *Server) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	took, err := s.WaitAcked(ctx, s.Version())
	if err != nil {
		t.Fatalf("WaitAcked(%s): %v\nstatus: %+v", s.Version(), err, s.Status())
	}
	return took
}

func TestGRPCClientSplitAndAbort(t *testing.T) {
	stable, canary := startBackend(t, "stable"), startBackend(t, "canary")
	s := sharedXDS
	svc := Service{
		Name:     "checkout-split",
		Rollout:  "checkout",
		Versions: []Version{{Name: "stable", Endpoints: []string{stable}}, {Name: "canary", Endpoints: []string{canary}}},
		Weights:  rollout.Weights{"stable": 100, "canary": 0},
		// Envoy-only parts must not upset gRPC clients sharing the resources.
		Envoy:  &EnvoyListener{Address: "127.0.0.1", Port: 10901},
		Mirror: &Mirror{Version: "canary", Percent: 5},
	}
	if err := s.SetService(svc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.RemoveService(svc.Name) })

	const clients = 3
	ccs := make([]*grpc.ClientConn, clients)
	for i := range ccs {
		ccs[i] = dialXDS(t, svc.Name)
		waitServing(t, ccs[i], "stable")
	}

	if err := s.SetWeights("checkout", rollout.Weights{"stable": 90, "canary": 10}); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, s)
	// A cluster coming into use can fail RPCs for a few ms inside grpc-go
	// (xds.md): wait until the canary has answered once.
	waitServing(t, ccs[0], "canary")

	const n = 2000
	hits := map[string]int{}
	for i := range n {
		got, err := which(context.Background(), ccs[i%clients])
		if err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
		hits[got]++
	}
	share := 100 * float64(hits["canary"]) / n
	t.Logf("10%% canary over %d RPCs: %.2f%% canary (%v)", n, share, hits)
	if share < 8 || share > 12 {
		t.Errorf("canary share %.2f%%, want 10%% ± 2 points", share)
	}

	// Abort: canary to 0. Every client keeps calling; the switch time is
	// from the SetWeights call to the last answer from the canary, and the
	// fleet is done when every node has acknowledged the weight-0 snapshot.
	if err := s.SetWeights("checkout", rollout.Weights{"stable": 50, "canary": 50}); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, s)
	var (
		mu         sync.Mutex
		lastCanary time.Time
		wg         sync.WaitGroup
		start      = make(chan struct{})
		failures   []string
	)
	var t0 time.Time
	for _, cc := range ccs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			consecutive := 0
			deadline := time.Now().Add(15 * time.Second)
			for consecutive < 200 && time.Now().Before(deadline) {
				got, err := which(context.Background(), cc)
				done := time.Now()
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					continue
				}
				if got == "canary" {
					consecutive = 0
					mu.Lock()
					if done.After(lastCanary) {
						lastCanary = done
					}
					mu.Unlock()
				} else {
					mu.Lock()
					aborted := !t0.IsZero()
					mu.Unlock()
					if aborted {
						consecutive++
					}
				}
			}
			if consecutive < 200 {
				mu.Lock()
				failures = append(failures, "no 200 consecutive stable answers within 15s")
				mu.Unlock()
			}
		}()
	}
	mu.Lock()
	close(start)
	mu.Unlock()
	time.Sleep(20 * time.Millisecond) // let traffic flow at 50/50 first
	mu.Lock()
	t0 = time.Now()
	mu.Unlock()
	if err := s.SetWeights("checkout", rollout.Weights{"stable": 100, "canary": 0}); err != nil {
		t.Fatal(err)
	}
	version := s.Version()
	acked := waitAcked(t, s)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("after abort: %d failures, first: %s", len(failures), failures[0])
	}
	switchTime := max(lastCanary.Sub(t0), 0)
	t.Logf("abort: last canary answer %v after SetWeights; every node acknowledged version %s after %v", switchTime, version, acked)
	if switchTime > 2*time.Second {
		t.Errorf("abort took %v to reach every client, want well under 2s on loopback", switchTime)
	}
	for _, cc := range ccs {
		for range 20 {
			if got, err := which(context.Background(), cc); err != nil || got != "stable" {
				t.Fatalf("after abort: got %q, %v; want stable", got, err)
			}
		}
	}
	st := s.Status()
	if st.Converged == 0 || st.Version != version {
		t.Errorf("status after abort: %+v", st)
	}
}

func TestGRPCClientNACKKeepsLastGood(t *testing.T) {
	stable, canary := startBackend(t, "stable"), startBackend(t, "canary")
	s := sharedXDS
	svc := Service{
		Name:     "checkout-nack",
		Versions: []Version{{Name: "stable", Endpoints: []string{stable}}, {Name: "canary", Endpoints: []string{canary}}},
		Weights:  rollout.Weights{"stable": 100, "canary": 0},
	}
	if err := s.SetService(svc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.RemoveService(svc.Name) })
	cc := dialXDS(t, svc.Name)
	waitServing(t, cc, "stable")
	good := s.Version()
	waitAcked(t, s)
	nacksBefore := testutil.ToFloat64(s.metrics.nacks.WithLabelValues("Cluster"))

	// An invalid snapshot on purpose, past the checks: the stable cluster,
	// which the client uses, asks for MAGLEV, which gRPC rejects.
	bad := func() string {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.seq++
		version := s.boot + "-" + itoa(s.seq)
		services := []Service{svc}
		for name, other := range s.services {
			if name != svc.Name {
				services = append(services, other)
			}
		}
		snap, err := BuildSnapshot(version, services)
		if err != nil {
			t.Fatal(err)
		}
		snap.GetResources(resource.ClusterType)[ClusterName(svc.Name, "stable")].(*cluster.Cluster).LbPolicy = cluster.Cluster_MAGLEV
		if err := CheckConsistent(snap); err == nil || !strings.Contains(err.Error(), "MAGLEV") {
			t.Fatalf("CheckConsistent of the MAGLEV snapshot = %v, want it refused", err)
		}
		s.installLocked(version, snap, time.Now())
		return version
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := s.WaitAcked(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), testNodeID) || !strings.Contains(strings.ToLower(err.Error()), "maglev") {
		t.Fatalf("WaitAcked(bad) = %v, want a NACK naming node %s and the MAGLEV reason", err, testNodeID)
	}
	t.Logf("NACK surfaced: %v", err)

	// The node is held at its last good snapshot and keeps serving it.
	for range 50 {
		got, err := which(context.Background(), cc)
		if err != nil || got != "stable" {
			t.Fatalf("after NACK: got %q, %v; want stable from the last good snapshot", got, err)
		}
	}
	var found bool
	for _, n := range s.Status().Nodes {
		if n.Node != testNodeID {
			continue
		}
		for _, ty := range n.Types {
			if ty.Type == "Cluster" && ty.NACK != nil && ty.NACK.Version == bad {
				found = true
				if !strings.Contains(strings.ToLower(ty.NACK.Reason), "maglev") {
					t.Errorf("NACK reason %q does not name the problem", ty.NACK.Reason)
				}
				if n.Held != good {
					t.Errorf("node held at %q, want the last good version %q", n.Held, good)
				}
			}
		}
	}
	if !found {
		t.Fatalf("status has no Cluster NACK of %s for %s: %+v", bad, testNodeID, s.Status())
	}
	// The bad snapshot is not pushed again and again.
	if got := testutil.ToFloat64(s.metrics.nacks.WithLabelValues("Cluster")) - nacksBefore; got < 1 || got > float64(len(s.Status().Nodes)) {
		t.Errorf("Cluster NACKs after holding = %v, want one per stream", got)
	}

	// The next good publish reaches the node again.
	if err := s.SetWeights(svc.Name, rollout.Weights{"stable": 0, "canary": 100}); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, s)
	waitServing(t, cc, "canary")
	for _, n := range s.Status().Nodes {
		if n.Held != "" {
			t.Errorf("node %s still held at %s after a good publish", n.Node, n.Held)
		}
	}
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

package xds

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// simNode is a minimal xDS client on a raw ADS stream: it subscribes to one
// service's listener, route, clusters and load assignments by name, as a
// gRPC client does, and ACKs every response.
type simNode struct {
	id      string
	service string
	delta   bool

	mu    sync.Mutex
	acked map[string]string // type → version acknowledged
}

var simTypes = []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType}

func (n *simNode) names(typeURL string) []string {
	switch typeURL {
	case resource.ListenerType, resource.RouteType:
		return []string{n.service}
	default:
		return []string{ClusterName(n.service, "stable"), ClusterName(n.service, "canary")}
	}
}

func (n *simNode) ackedVersion(typeURL string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.acked[typeURL]
}

func (n *simNode) record(typeURL, version string) {
	n.mu.Lock()
	n.acked[typeURL] = version
	n.mu.Unlock()
}

// run serves the stream until ctx ends; ready is closed after the first
// request of every type is sent.
func (n *simNode) run(ctx context.Context, cc *grpc.ClientConn, ready chan<- struct{}) error {
	n.acked = map[string]string{}
	client := discovery.NewAggregatedDiscoveryServiceClient(cc)
	node := &core.Node{Id: n.id}
	if n.delta {
		st, err := client.DeltaAggregatedResources(ctx)
		if err != nil {
			return err
		}
		for i, t := range simTypes {
			req := &discovery.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: n.names(t)}
			if i == 0 {
				req.Node = node
			}
			if err := st.Send(req); err != nil {
				return err
			}
		}
		close(ready)
		for {
			resp, err := st.Recv()
			if err != nil {
				return quiet(ctx, err)
			}
			n.record(resp.GetTypeUrl(), resp.GetSystemVersionInfo())
			if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
				return quiet(ctx, err)
			}
		}
	}
	st, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	for i, t := range simTypes {
		req := &discovery.DiscoveryRequest{TypeUrl: t, ResourceNames: n.names(t)}
		if i == 0 {
			req.Node = node
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
	close(ready)
	for {
		resp, err := st.Recv()
		if err != nil {
			return quiet(ctx, err)
		}
		n.record(resp.GetTypeUrl(), resp.GetVersionInfo())
		if err := st.Send(&discovery.DiscoveryRequest{
			TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(),
			ResponseNonce: resp.GetNonce(), ResourceNames: n.names(resp.GetTypeUrl()),
		}); err != nil {
			return quiet(ctx, err)
		}
	}
}

func quiet(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// fleet is a server on loopback plus n simulated nodes spread over a few
// connections (HTTP/2 streams, like many proxies behind one NAT).
type fleet struct {
	srv   *Server
	nodes []*simNode
	conns []*grpc.ClientConn
	stop  func()
	errs  chan error
}

func startFleet(tb testing.TB, srv *Server, service string, n, perConn int, delta func(i int) bool) *fleet {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(ln)
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{srv: srv, errs: make(chan error, n)}
	var wg sync.WaitGroup
	for i := range n {
		if i%perConn == 0 {
			cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				tb.Fatal(err)
			}
			f.conns = append(f.conns, cc)
		}
		node := &simNode{id: "sim-" + itoa(uint64(i)), service: service, delta: delta(i)}
		f.nodes = append(f.nodes, node)
		ready := make(chan struct{})
		cc := f.conns[len(f.conns)-1]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := node.run(ctx, cc, ready); err != nil {
				f.errs <- err
			}
		}()
		select {
		case <-ready:
		case err := <-f.errs:
			tb.Fatal(err)
		}
	}
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			cancel()
			srv.Stop()
			wg.Wait()
			for _, cc := range f.conns {
				cc.Close()
			}
		})
	}
	tb.Cleanup(f.stop)
	return f
}

// waitFleet waits (bounded) until every simulated node has acknowledged the
// current version of every type it subscribed to.
func (f *fleet) waitAll(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		v := f.srv.Version()
		done := true
		for _, n := range f.nodes {
			for _, t := range simTypes {
				if n.ackedVersion(t) != v && !n.delta {
					done = false
				}
			}
			if n.delta && n.ackedVersion(resource.ListenerType) == "" {
				done = false
			}
		}
		if done {
			return
		}
		select {
		case err := <-f.errs:
			tb.Fatal(err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	for _, n := range f.nodes {
		n.mu.Lock()
		tb.Logf("node %s delta=%v acked %v", n.id, n.delta, n.acked)
		n.mu.Unlock()
	}
	tb.Fatalf("fleet did not converge on %s within 30s", f.srv.Version())
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/deployment-guardian/guardian/proxy"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/xds"
)

// xdsClientOpts are `guardian proxy`'s flags for joining a fleet.
type xdsClientOpts struct {
	addr, service, nodeID, route string
	caFile, certFile, keyFile    string
	initialFetch                 time.Duration
}

func addXDSClientFlags(cmd *cobra.Command, o *xdsClientOpts) {
	f := cmd.Flags()
	f.StringVar(&o.addr, "xds", "", "control plane (guardian run --xds-listen) to take weights from and report to, host:port")
	f.StringVar(&o.service, "xds-service", "", "xDS service whose weights this proxy follows (spec.xds.service); required with --xds")
	f.StringVar(&o.nodeID, "node-id", "", "node id shown in the control plane's fleet status (default: the host name)")
	f.StringVar(&o.route, "xds-route", "", "route the service's weights apply to (default: the route named as the service, or the only route)")
	f.StringVar(&o.caFile, "xds-ca", "", "PEM CA that signed the control plane's certificate (enables TLS to --xds)")
	f.StringVar(&o.certFile, "xds-cert", "", "PEM client certificate for a control plane that requires mTLS")
	f.StringVar(&o.keyFile, "xds-key", "", "PEM private key for --xds-cert")
	f.DurationVar(&o.initialFetch, "xds-initial-fetch-timeout", 15*time.Second, "how long /readyz waits for the control plane's first weights before the proxy serves its own (static)")
}

// proxyXDS is a running proxy's link to its control plane.
type proxyXDS struct {
	client *xds.ProxyClient
	conn   *grpc.ClientConn
	route  string
	node   string

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// xdsRouteFor picks the route the service's weights drive.
func xdsRouteFor(o xdsClientOpts, cfg proxy.Config) (string, error) {
	names := make([]string, len(cfg.Routes))
	for i, r := range cfg.Routes {
		names[i] = r.Name
	}
	switch {
	case o.route != "":
		if !slices.Contains(names, o.route) {
			return "", usageErr("--xds-route %q: no such route (routes: %s)", o.route, strings.Join(names, ", "))
		}
		return o.route, nil
	case slices.Contains(names, o.service):
		return o.service, nil
	case len(names) == 1:
		return names[0], nil
	}
	return "", usageErr("--xds-service %q: no route of that name among %s; name one with --xds-route", o.service, strings.Join(names, ", "))
}

// newProxyXDS checks the flags and connects (lazily: gRPC dials on first
// use) to the control plane. It returns nil without --xds.
func newProxyXDS(o xdsClientOpts, cfg proxy.Config, p *proxy.Proxy, reg prometheus.Registerer, log *slog.Logger) (*proxyXDS, error) {
	if o.addr == "" {
		if o.service != "" || o.nodeID != "" || o.route != "" || o.caFile != "" || o.certFile != "" || o.keyFile != "" {
			return nil, usageErr("--xds-service, --node-id, --xds-route, --xds-ca, --xds-cert and --xds-key need --xds ADDR")
		}
		return nil, nil
	}
	if o.service == "" {
		return nil, usageErr("--xds %s needs --xds-service NAME (the rollout's spec.xds.service)", o.addr)
	}
	if o.initialFetch <= 0 {
		return nil, usageErr("--xds-initial-fetch-timeout %s: want > 0", o.initialFetch)
	}
	route, err := xdsRouteFor(o, cfg)
	if err != nil {
		return nil, err
	}
	if o.nodeID == "" {
		if o.nodeID, err = os.Hostname(); err != nil || o.nodeID == "" {
			return nil, usageErr("--node-id: the host name is unknown (%v); set one", err)
		}
	}
	creds, err := xdsCredentials(o)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(o.addr,
		grpc.WithTransportCredentials(creds),
		// The channel's own reconnect backoff (gRPC's default grows to 120 s)
		// would otherwise keep a proxy static for minutes after its control
		// plane is back.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 2, Jitter: 0.2, MaxDelay: 10 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		// A control plane lost without a FIN (partition, dead host) is
		// noticed within 15 s; the server allows pings every 5 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	)
	if err != nil {
		return nil, usageErr("--xds %s: %v", o.addr, err)
	}
	client, err := xds.NewProxyClient(xds.ProxyClientConfig{
		Conn: conn, NodeID: o.nodeID, Service: o.service,
		OnWeights: func(w rollout.Weights) error {
			err := p.SetWeights(route, w)
			if err == nil {
				log.Info("xds: weights from the control plane applied", "route", route, "weights", w)
			}
			return err
		},
		Metrics: p, Rollout: route,
		InitialFetchTimeout: o.initialFetch,
		Registerer:          reg,
		Logger:              log,
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &proxyXDS{client: client, conn: conn, route: route, node: o.nodeID}, nil
}

func xdsCredentials(o xdsClientOpts) (credentials.TransportCredentials, error) {
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, usageErr("--xds-cert and --xds-key go together")
	}
	if o.caFile == "" {
		if o.certFile != "" {
			return nil, usageErr("--xds-cert needs --xds-ca (the CA that signed the control plane's certificate)")
		}
		return insecure.NewCredentials(), nil
	}
	pem, err := os.ReadFile(o.caFile)
	if err != nil {
		return nil, usageErr("--xds-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, usageErr("--xds-ca %s: no PEM certificate in it", o.caFile)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, usageErr("--xds-cert/--xds-key: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(tc), nil
}

// start subscribes until stop.
func (x *proxyXDS) start() {
	ctx, cancel := context.WithCancel(context.Background())
	x.cancel = cancel
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		x.client.Run(ctx)
	}()
}

func (x *proxyXDS) stop() {
	if x.cancel != nil {
		x.cancel()
	}
	x.wg.Wait()
	x.conn.Close()
}

// readyDetail is /readyz's "xds" field.
func (x *proxyXDS) readyDetail() map[string]any {
	return map[string]any{"xds": x.client.Status()}
}

// xdsPlane is the admin API's data plane for a fleet proxy: ready while the
// proxy serves and the control plane has answered (or the initial fetch
// timed out). A proxy gone static stays ready, as Envoy does: it keeps
// serving its last weights, and /readyz's body says so.
type xdsPlane struct {
	*proxy.Proxy
	x *proxyXDS
}

func (d xdsPlane) Ready() error {
	if err := d.Proxy.Ready(); err != nil {
		return err
	}
	if err := d.x.client.Ready(); err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	return nil
}

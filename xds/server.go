package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	metricsservice "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/deployment-guardian/guardian/rollout"
)

// Config sets up a Server. The zero value of every optional field is usable.
type Config struct {
	// Listen is the address Serve's caller listens on; informational (the
	// caller passes the listener), shown in Status.
	Listen string
	// TLS enables TLS, and mTLS when ClientCAFile is set. nil means
	// plaintext, for loopback and tests only.
	TLS *TLSConfig
	// NodeGroup maps a node to its group, shown in Status and used as the
	// label of per-group numbers. nil puts every node in group "default".
	NodeGroup func(*core.Node) string
	// Logger receives NACKs, publishes and stream events. nil discards.
	Logger *slog.Logger
	// Registerer receives the guardian_xds_* metrics. nil registers nothing.
	Registerer prometheus.Registerer
	// History is how many published snapshots are kept for rolling a
	// NACKing node back to its last acknowledged one; 0 means 16.
	History int
}

// TLSConfig holds PEM file paths.
type TLSConfig struct {
	CertFile     string
	KeyFile      string
	ClientCAFile string // when set, clients must present a certificate it signed
}

// Server is the ADS control plane. It implements rollout.TrafficRouter and,
// from Envoy's metrics service stream, rollout.MetricSource.
type Server struct {
	cfg     Config
	log     *slog.Logger
	cache   cache.SnapshotCache
	grpc    *grpc.Server
	intake  *EnvoyMetrics
	metrics *serverMetrics
	boot    string

	mu       sync.Mutex
	services map[string]Service // by service name
	seq      uint64
	current  *cache.Snapshot
	version  string
	history  []*cache.Snapshot // oldest first, current last
	streams  map[streamKey]*streamState
	pending  []*pendingVersion
	finished []*pendingVersion // the last few settled, newest last
}

var (
	_ rollout.TrafficRouter = (*Server)(nil)
	_ rollout.MetricSource  = (*Server)(nil)
)

// NewServer validates cfg and sets up the gRPC server with ADS, the
// per-type xDS services and Envoy's metrics service. It does not listen.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NodeGroup == nil {
		cfg.NodeGroup = func(*core.Node) string { return "default" }
	}
	if cfg.History == 0 {
		cfg.History = 16
	}
	if cfg.History < 2 {
		return nil, fmt.Errorf("xds: Config.History %d: must be at least 2", cfg.History)
	}
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(1 << 20),
		// Detect dead proxies within a minute so Status and WaitAcked stop
		// counting them, and allow the clients' own keepalive pings.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if cfg.TLS != nil {
		tc, err := cfg.TLS.load()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		boot:     strconv.FormatInt(time.Now().UnixNano(), 36),
		services: map[string]Service{},
		streams:  map[streamKey]*streamState{},
		intake:   NewEnvoyMetrics(cfg.Logger),
	}
	var err error
	if s.metrics, err = newServerMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	// Keyed per node, not per group: a node that NACKs is held at its last
	// good snapshot without holding back the rest of its group. Non-ADS
	// mode: in ADS mode the cache waits for a request naming every cluster,
	// and gRPC never requests zero-weight clusters.
	s.cache = cache.NewSnapshotCache(false, cache.IDHash{}, cacheLogger{s.log})
	xs := serverv3.NewServer(context.Background(), s.cache, s.callbacks())
	s.grpc = grpc.NewServer(opts...)
	discovery.RegisterAggregatedDiscoveryServiceServer(s.grpc, xs)
	listenerservice.RegisterListenerDiscoveryServiceServer(s.grpc, xs)
	routeservice.RegisterRouteDiscoveryServiceServer(s.grpc, xs)
	clusterservice.RegisterClusterDiscoveryServiceServer(s.grpc, xs)
	endpointservice.RegisterEndpointDiscoveryServiceServer(s.grpc, xs)
	metricsservice.RegisterMetricsServiceServer(s.grpc, s.intake)
	if err := s.publishLocked(); err != nil { // an empty snapshot, so new nodes get an answer
		return nil, err
	}
	return s, nil
}

func (t *TLSConfig) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("xds: TLS.CertFile/KeyFile: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("xds: TLS.ClientCAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("xds: TLS.ClientCAFile %s: no PEM certificates", t.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Serve serves xDS and the metrics service on ln until Stop.
func (s *Server) Serve(ln net.Listener) error {
	err := s.grpc.Serve(ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop closes every stream and listener. Clients keep their last
// configuration (fail static) and reconnect with backoff.
func (s *Server) Stop() { s.grpc.Stop() }

// GRPCServer exposes the underlying server so a caller can register more
// services (health, reflection) on the same port.
func (s *Server) GRPCServer() *grpc.Server { return s.grpc }

// Metrics is the Envoy metrics-service intake served on the same port.
func (s *Server) Metrics() *EnvoyMetrics { return s.intake }

// SetService adds or replaces a service and publishes a new snapshot. The
// snapshot is built and checked before anything changes: on error the fleet
// keeps its current configuration.
func (s *Server) SetService(svc Service) error {
	// Own copies: the caller may reuse its slices and maps.
	svc.Weights = maps.Clone(svc.Weights)
	svc.Versions = slices.Clone(svc.Versions)
	for i := range svc.Versions {
		svc.Versions[i].Endpoints = slices.Clone(svc.Versions[i].Endpoints)
	}
	svc.HeaderRoutes = slices.Clone(svc.HeaderRoutes)
	if svc.Mirror != nil {
		m := *svc.Mirror
		svc.Mirror = &m
	}
	if svc.Envoy != nil {
		e := *svc.Envoy
		svc.Envoy = &e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, other := range s.services {
		if name != svc.Name && other.RolloutName() == svc.RolloutName() {
			return fmt.Errorf("xds: service %q: rollout %q already drives service %q", svc.Name, svc.RolloutName(), name)
		}
	}
	prev, had := s.services[svc.Name]
	s.services[svc.Name] = svc
	if err := s.publishLocked(); err != nil {
		if had {
			s.services[svc.Name] = prev
		} else {
			delete(s.services, svc.Name)
		}
		return err
	}
	return nil
}

// RemoveService drops a service; clients see its resources deleted.
func (s *Server) RemoveService(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, ok := s.services[name]
	if !ok {
		return fmt.Errorf("xds: service %q: not found", name)
	}
	delete(s.services, name)
	if err := s.publishLocked(); err != nil {
		s.services[name] = prev
		return err
	}
	return nil
}

// SetWeights implements rollout.TrafficRouter: it builds one new snapshot,
// checks it and publishes it to every node. It returns once the snapshot is
// handed to the streams; WaitAcked reports when the fleet has applied it.
func (s *Server) SetWeights(rolloutName string, w rollout.Weights) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	name, ok := s.serviceForLocked(rolloutName)
	if !ok {
		return fmt.Errorf("xds: rollout %q: no service registered for it", rolloutName)
	}
	svc := s.services[name]
	prev := svc.Weights
	svc.Weights = maps.Clone(w)
	s.services[name] = svc
	if err := s.publishLocked(); err != nil {
		svc.Weights = prev
		s.services[name] = svc
		return err
	}
	return nil
}

// Version is the version of the snapshot published last.
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Lookup returns the service and version names a rollout is published as:
// the names its Envoy clusters (and so its stats) carry.
func (s *Server) Lookup(rolloutName string) (service string, versions []string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name, ok := s.serviceForLocked(rolloutName)
	if !ok {
		return "", nil, fmt.Errorf("xds: rollout %q: no service registered for it", rolloutName)
	}
	for _, v := range s.services[name].Versions {
		versions = append(versions, v.Name)
	}
	return name, versions, nil
}

// Snapshot implements rollout.MetricSource from the Envoy metrics-service
// stream, summed over the fleet's nodes.
func (s *Server) Snapshot(rolloutName string) (rollout.Snapshot, error) {
	svc, versions, err := s.Lookup(rolloutName)
	if err != nil {
		return rollout.Snapshot{}, err
	}
	return s.intake.ServiceSnapshot(svc, versions)
}

func (s *Server) serviceForLocked(rolloutName string) (string, bool) {
	for name, svc := range s.services {
		if svc.RolloutName() == rolloutName {
			return name, true
		}
	}
	return "", false
}

// publishLocked builds the snapshot of the current services and hands it to
// every known node.
func (s *Server) publishLocked() error {
	version := s.boot + "-" + strconv.FormatUint(s.seq+1, 10)
	snap, err := BuildSnapshot(version, slices.Collect(maps.Values(s.services)))
	if err != nil {
		return err
	}
	s.seq++
	s.installLocked(version, snap, time.Now())
	return nil
}

// installLocked makes snap current and sends it to every node. Split from
// publishLocked so tests can install a snapshot that skipped the checks.
func (s *Server) installLocked(version string, snap *cache.Snapshot, now time.Time) {
	prev := s.current
	s.current, s.version = snap, version
	s.history = append(s.history, snap)
	if len(s.history) > s.cfg.History {
		s.history = slices.Delete(s.history, 0, len(s.history)-s.cfg.History)
	}
	p := &pendingVersion{
		version:     version,
		seq:         s.seq,
		start:       now,
		outstanding: map[streamKey]bool{},
		changed:     changedNames(prev, snap),
		done:        make(chan struct{}),
	}
	nodes := map[string]bool{}
	for id, st := range s.streams {
		if st.node == "" {
			continue
		}
		nodes[st.node] = true
		st.held = ""
		if s.streamNeedsLocked(st, p) {
			p.outstanding[id] = true
		}
	}
	for node := range nodes {
		if err := s.cache.SetSnapshot(context.Background(), node, snap); err != nil {
			s.log.Error("xds: set snapshot", "node", node, "version", version, "err", err)
		}
	}
	s.metrics.published.Inc()
	s.log.Info("xds: published snapshot", "version", version, "nodes", len(nodes), "services", len(s.services))
	// Older waits complete when their nodes acknowledge this newer version.
	s.pending = append(s.pending, p)
	s.settleLocked(now)
}

// versionSeq orders versions this server published; other versions (from
// an earlier run) are older than all of them.
func (s *Server) versionSeq(v string) (uint64, bool) {
	rest, ok := strings.CutPrefix(v, s.boot+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	return n, err == nil
}

func (s *Server) snapshotByVersionLocked(v string) *cache.Snapshot {
	for i := len(s.history) - 1; i >= 0; i-- {
		if s.history[i].GetVersion(resource.ListenerType) == v {
			return s.history[i]
		}
	}
	return nil
}

// WaitAcked blocks until every node connected when version was published
// (and still connected) has acknowledged it or a later version, and returns
// the time from the publish to the last acknowledgement. A NACK of the
// version ends the wait with an error naming the node and its reason.
func (s *Server) WaitAcked(ctx context.Context, version string) (time.Duration, error) {
	s.mu.Lock()
	var p *pendingVersion
	for _, q := range slices.Concat(s.finished, s.pending) {
		if q.version == version {
			p = q
		}
	}
	if p == nil {
		seq, ok := s.versionSeq(version)
		s.mu.Unlock()
		if !ok || seq > s.seqSnapshot() {
			return 0, fmt.Errorf("xds: version %q was not published by this server", version)
		}
		// Settled and forgotten: it converged (or was superseded) long ago.
		return 0, nil
	}
	s.mu.Unlock()
	select {
	case <-p.done:
		s.mu.Lock() // took and err are written under s.mu before done closes
		defer s.mu.Unlock()
		return p.took, p.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (s *Server) seqSnapshot() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// cacheLogger adapts slog to go-control-plane's logger; its debug chatter
// stays at debug level.
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) Debugf(f string, a ...any) { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Infof(f string, a ...any)  { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Warnf(f string, a ...any)  { c.l.Warn(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Errorf(f string, a ...any) { c.l.Error(fmt.Sprintf(f, a...)) }

// AwaitApplied waits until every connected node has acknowledged the
// latest published snapshot: for the rollout driver, a rollback is done on
// the fleet only then.
func (s *Server) AwaitApplied(ctx context.Context) (time.Duration, error) {
	return s.WaitAcked(ctx, s.Version())
}

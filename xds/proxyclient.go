package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	metricsservice "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/deployment-guardian/guardian/rollout"
)

// ProxyClientConfig sets up a ProxyClient: Guardian's own proxy as a node of
// the fleet (`guardian proxy --xds ADDR`).
type ProxyClientConfig struct {
	// Conn is a client connection to the control plane (grpc.NewClient with
	// the transport credentials the server expects). The client does not
	// close it.
	Conn *grpc.ClientConn
	// NodeID names this proxy in the control plane's status; required.
	NodeID string
	// Service is the xDS service whose weights the proxy applies; required.
	Service string
	// OnWeights receives every new split, weights by version name. It is
	// never called with an empty or partial split; when the control plane is
	// unreachable it is not called at all (fail static). An error (the
	// proxy has no such version, say) rejects the configuration: the
	// control plane gets a NACK with the error as its reason, and the last
	// weights stay.
	OnWeights func(rollout.Weights) error
	// Metrics, when set, is streamed to the control plane every
	// MetricsInterval (default 1s) in Envoy's metrics-service format, so the
	// fleet's analysis counts this proxy like an Envoy. Rollout names the
	// rollout to ask it for (default Service).
	Metrics         rollout.MetricSource
	Rollout         string
	MetricsInterval time.Duration
	// InitialFetchTimeout bounds how long Ready waits for the first
	// configuration (default 15s, Envoy's initial_fetch_timeout). After it
	// the proxy is ready on the weights it was started with, and static.
	InitialFetchTimeout time.Duration
	// Registerer, when set, gets guardian_xds_client_* metrics.
	Registerer prometheus.Registerer
	// Logger; nil discards.
	Logger *slog.Logger
}

// ProxyClient keeps one ADS subscription to a service's route configuration
// and reconnects with backoff; the last weights stay in force meanwhile.
type ProxyClient struct {
	cfg     ProxyClientConfig
	now     func() time.Time
	updates prometheus.Counter
	rejects prometheus.Counter

	mu      sync.Mutex
	st      ProxyClientStatus
	weights rollout.Weights
	started time.Time // when Run began; zero before
}

// Client states, ProxyClientStatus.State.
const (
	// ClientWaiting: no configuration yet, within the initial fetch timeout.
	ClientWaiting = "waiting"
	// ClientConnected: the control plane answers on a live stream.
	ClientConnected = "connected"
	// ClientStatic: the control plane is unreachable; the proxy serves the
	// last weights it received, or the ones it started with.
	ClientStatic = "static"
)

// ProxyClientStatus is what /readyz reports.
type ProxyClientStatus struct {
	State     string          `json:"state"` // ClientWaiting, ClientConnected or ClientStatic
	Connected bool            `json:"connected"`
	Version   string          `json:"version,omitempty"` // route version applied last
	Updated   time.Time       `json:"updated,omitzero"`  // when it was applied
	Weights   rollout.Weights `json:"weights,omitempty"` // nil: none received, the proxy's own are in force
	// Static is true when the control plane is unreachable and the proxy
	// runs on the last weights it received (or, past the initial fetch
	// timeout, on the ones it started with).
	Static bool `json:"static"`
	// Since is when the connection last came up or went down (when Run
	// started, before any answer).
	Since     time.Time `json:"since,omitzero"`
	Message   string    `json:"message"`
	LastError string    `json:"lastError,omitempty"`
}

// NewProxyClient checks cfg and registers the client's metrics; Run does
// the work.
func NewProxyClient(cfg ProxyClientConfig) (*ProxyClient, error) {
	switch {
	case cfg.Conn == nil:
		return nil, errors.New("xds: ProxyClientConfig.Conn: required")
	case cfg.NodeID == "":
		return nil, errors.New("xds: ProxyClientConfig.NodeID: required")
	case cfg.Service == "":
		return nil, errors.New("xds: ProxyClientConfig.Service: required")
	case cfg.OnWeights == nil:
		return nil, errors.New("xds: ProxyClientConfig.OnWeights: required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MetricsInterval <= 0 {
		cfg.MetricsInterval = time.Second
	}
	if cfg.InitialFetchTimeout <= 0 {
		cfg.InitialFetchTimeout = 15 * time.Second
	}
	if cfg.Rollout == "" {
		cfg.Rollout = cfg.Service
	}
	c := &ProxyClient{
		cfg: cfg,
		now: time.Now,
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "guardian", Subsystem: "xds", Name: "client_updates_total",
			Help: "Weight splits received from the control plane and applied.",
		}),
		rejects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "guardian", Subsystem: "xds", Name: "client_rejected_total",
			Help: "Route configurations rejected (NACKed) by this proxy.",
		}),
	}
	if cfg.Registerer != nil {
		gauge := func(name, help string, f func(ProxyClientStatus) bool) prometheus.Collector {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "guardian", Subsystem: "xds", Name: name, Help: help},
				func() float64 {
					if f(c.Status()) {
						return 1
					}
					return 0
				})
		}
		for _, m := range []prometheus.Collector{
			gauge("client_connected", "1 while the control plane answers on a live stream, else 0.",
				func(s ProxyClientStatus) bool { return s.Connected }),
			gauge("client_static", "1 while the proxy runs on its last weights because the control plane is unreachable (fail static).",
				func(s ProxyClientStatus) bool { return s.Static }),
			c.updates, c.rejects,
		} {
			if err := cfg.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("xds: ProxyClientConfig.Registerer: %w", err)
			}
		}
	}
	return c, nil
}

// Status reports the connection and the weights in force.
func (c *ProxyClient) Status() ProxyClientStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.Weights = maps.Clone(c.weights)
	target := c.cfg.Conn.Target()
	switch {
	case st.Connected:
		st.State = ClientConnected
		if c.weights == nil {
			st.Message = fmt.Sprintf("connected to the control plane %s since %s; it publishes no weights for service %q, the proxy's own are in force",
				target, st.Since.UTC().Format(time.RFC3339), c.cfg.Service)
		} else {
			st.Message = fmt.Sprintf("connected to the control plane %s since %s; weights of version %s",
				target, st.Since.UTC().Format(time.RFC3339), st.Version)
		}
	case c.weights != nil || (!c.started.IsZero() && c.now().Sub(c.started) >= c.cfg.InitialFetchTimeout):
		st.State, st.Static = ClientStatic, true
		kept := "keeping the last weights (version " + st.Version + ")"
		if c.weights == nil {
			kept = "no configuration received; serving the proxy's own weights"
		}
		st.Message = fmt.Sprintf("static: control plane %s unreachable since %s; %s",
			target, st.Since.UTC().Format(time.RFC3339), kept)
	default:
		st.State = ClientWaiting
		st.Message = fmt.Sprintf("waiting for the first configuration from the control plane %s (at most %s)",
			target, c.cfg.InitialFetchTimeout)
	}
	return st
}

// Ready is nil once the proxy may take traffic: the control plane has
// answered, or the initial fetch timeout has passed (then it is static).
// A proxy that has had a configuration stays ready while static: it keeps
// serving, as Envoy does, and the state shows in Status.
func (c *ProxyClient) Ready() error {
	if st := c.Status(); st.State == ClientWaiting {
		return errors.New(st.Message)
	}
	return nil
}

// Run subscribes until ctx ends, reconnecting with backoff (100 ms doubling
// to 10 s, reset after a stream that delivered a configuration).
func (c *ProxyClient) Run(ctx context.Context) error {
	c.mu.Lock()
	c.started = c.now()
	c.st.Since = c.started
	c.mu.Unlock()
	backoff := 100 * time.Millisecond
	for {
		delivered, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.mu.Lock()
		if c.st.Connected {
			c.st.Connected, c.st.Since = false, c.now()
		}
		if err != nil {
			c.st.LastError = err.Error()
		}
		c.mu.Unlock()
		if delivered {
			backoff = 100 * time.Millisecond
		}
		c.cfg.Logger.Warn("xds: control plane stream ended; keeping the last weights", "err", err, "retry", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (c *ProxyClient) session(ctx context.Context) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(c.cfg.Conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, err
	}
	node := &core.Node{Id: c.cfg.NodeID, UserAgentName: "guardian-proxy"}
	names := []string{c.cfg.Service}
	if err := st.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType, ResourceNames: names}); err != nil {
		return false, err
	}
	var metricsErr chan error
	if c.cfg.Metrics != nil {
		metricsErr = make(chan error, 1)
		go func() { metricsErr <- c.streamMetrics(ctx, node) }()
	}
	accepted := ""
	for {
		resp, err := st.Recv()
		if err != nil {
			if metricsErr != nil {
				cancel()
				<-metricsErr
			}
			return delivered, err
		}
		req := &discovery.DiscoveryRequest{TypeUrl: resource.RouteType, ResponseNonce: resp.GetNonce(), ResourceNames: names}
		c.mu.Lock()
		if !c.st.Connected {
			c.st.Connected, c.st.Since = true, c.now()
		}
		last := c.weights
		c.mu.Unlock()
		w, err := weightsFrom(c.cfg.Service, resp)
		if err == nil && w != nil && !maps.Equal(w, last) {
			// Applied before the ACK, so an ACK means the proxy routes by it.
			if err = c.cfg.OnWeights(maps.Clone(w)); err != nil {
				err = fmt.Errorf("proxy refused weights %v: %w", w, err)
			} else {
				c.updates.Inc()
			}
		}
		if err != nil {
			c.cfg.Logger.Warn("xds: rejecting route configuration", "version", resp.GetVersionInfo(), "err", err)
			c.rejects.Inc()
			req.VersionInfo = accepted
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			c.mu.Lock()
			c.st.LastError = err.Error()
			c.mu.Unlock()
		} else {
			accepted = resp.GetVersionInfo()
			req.VersionInfo = accepted
			delivered = true
			c.mu.Lock()
			if w != nil {
				if !maps.Equal(w, c.weights) {
					c.st.Updated = c.now()
				}
				c.weights = w
			}
			c.st.Version, c.st.LastError = accepted, ""
			c.mu.Unlock()
		}
		if err := st.Send(req); err != nil {
			return delivered, err
		}
	}
}

// weightsFrom reads the weighted route of the service's route
// configuration; nil weights mean the service is not (or no longer)
// published, and the last weights stay.
func weightsFrom(service string, resp *discovery.DiscoveryResponse) (rollout.Weights, error) {
	for _, any := range resp.GetResources() {
		var rc route.RouteConfiguration
		if err := any.UnmarshalTo(&rc); err != nil {
			return nil, fmt.Errorf("not a RouteConfiguration: %w", err)
		}
		if rc.GetName() != service {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				wc := r.GetRoute().GetWeightedClusters()
				if wc == nil || len(r.GetMatch().GetHeaders()) > 0 {
					continue
				}
				w := rollout.Weights{}
				sum := 0
				for _, c := range wc.GetClusters() {
					v, ok := strings.CutPrefix(c.GetName(), service+"-")
					if !ok {
						return nil, fmt.Errorf("route %q: cluster %q is not a version of %q", rc.GetName(), c.GetName(), service)
					}
					n := int(c.GetWeight().GetValue())
					w[v] = n
					sum += n
				}
				if sum != 100 {
					return nil, fmt.Errorf("route %q: weights sum to %d, want 100", rc.GetName(), sum)
				}
				return w, nil
			}
		}
		return nil, fmt.Errorf("route %q: no weighted route", rc.GetName())
	}
	return nil, nil
}

func (c *ProxyClient) streamMetrics(ctx context.Context, node *core.Node) error {
	ms, err := metricsservice.NewMetricsServiceClient(c.cfg.Conn).StreamMetrics(ctx)
	if err != nil {
		return err
	}
	t := time.NewTicker(c.cfg.MetricsInterval)
	defer t.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		snap, err := c.cfg.Metrics.Snapshot(c.cfg.Rollout)
		if err != nil {
			c.cfg.Logger.Warn("xds: metrics snapshot", "err", err)
			continue
		}
		msg := &metricsservice.StreamMetricsMessage{EnvoyMetrics: EnvoyFamilies(c.cfg.Service, snap)}
		if first {
			msg.Identifier = &metricsservice.StreamMetricsMessage_Identifier{Node: node}
		}
		if err := ms.Send(msg); err != nil {
			return err
		}
		first = false
	}
}

// envoyBuckets are Envoy's default histogram bucket bounds in ms.
var envoyBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// EnvoyFamilies encodes a snapshot as Envoy's metrics service would send
// it: cumulative cluster.<service>-<version>.upstream_rq_<N>xx counters
// (requests without an answer count as 5xx, as Envoy's local 503s do) and
// the upstream_rq_time histogram in ms with Envoy's default buckets.
func EnvoyFamilies(service string, snap rollout.Snapshot) []*dto.MetricFamily {
	var out []*dto.MetricFamily
	ts := snap.Time.UnixMilli()
	for version, vs := range snap.Versions {
		prefix := "cluster." + ClusterName(service, version) + "."
		for k := 1; k <= 5; k++ {
			v := float64(vs.Status[k])
			if k == 5 {
				v += float64(vs.Status[0])
			}
			out = append(out, &dto.MetricFamily{
				Name:   proto.String(fmt.Sprintf("%supstream_rq_%dxx", prefix, k)),
				Type:   dto.MetricType_COUNTER.Enum(),
				Metric: []*dto.Metric{{Counter: &dto.Counter{Value: proto.Float64(v)}, TimestampMs: proto.Int64(ts)}},
			})
		}
		if vs.Latency == nil {
			continue
		}
		out = append(out, &dto.MetricFamily{
			Name:   proto.String(prefix + "upstream_rq_time"),
			Type:   dto.MetricType_HISTOGRAM.Enum(),
			Metric: []*dto.Metric{{Histogram: envoyHistogram(vs.Latency), TimestampMs: proto.Int64(ts)}},
		})
	}
	return out
}

func envoyHistogram(h *hdrhistogram.Histogram) *dto.Histogram {
	cum := make([]uint64, len(envoyBuckets))
	var sum float64
	for _, bar := range h.Distribution() {
		if bar.Count == 0 {
			continue
		}
		// A bar's values are equivalent within the histogram's precision;
		// its lower end decides the bucket, as the value was recorded.
		ms := float64(bar.From) / 1000
		sum += float64(bar.Count) * float64(bar.From+bar.To) / 2000
		for i, b := range envoyBuckets {
			if ms <= b {
				cum[i] += uint64(bar.Count)
				break
			}
		}
	}
	out := &dto.Histogram{SampleCount: proto.Uint64(uint64(h.TotalCount())), SampleSum: proto.Float64(sum)}
	var running uint64
	for i, b := range envoyBuckets {
		running += cum[i]
		out.Bucket = append(out.Bucket, &dto.Bucket{UpperBound: proto.Float64(b), CumulativeCount: proto.Uint64(running)})
	}
	if math.IsNaN(sum) {
		out.SampleSum = proto.Float64(0)
	}
	return out
}

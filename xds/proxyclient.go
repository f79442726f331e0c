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
	// unreachable it is not called at all (fail static).
	OnWeights func(rollout.Weights)
	// Metrics, when set, is streamed to the control plane every
	// MetricsInterval (default 1s) in Envoy's metrics-service format, so the
	// fleet's analysis counts this proxy like an Envoy. Rollout names the
	// rollout to ask it for (default Service).
	Metrics         rollout.MetricSource
	Rollout         string
	MetricsInterval time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// ProxyClient keeps one ADS subscription to a service's route configuration
// and reconnects with backoff; the last weights stay in force meanwhile.
type ProxyClient struct {
	cfg ProxyClientConfig

	mu      sync.Mutex
	st      ProxyClientStatus
	weights rollout.Weights
}

// ProxyClientStatus is what /readyz reports.
type ProxyClientStatus struct {
	Connected bool            `json:"connected"`
	Version   string          `json:"version,omitempty"` // route version applied last
	Updated   time.Time       `json:"updated,omitzero"`
	Weights   rollout.Weights `json:"weights,omitempty"`
	// Static is true when the control plane is unreachable and the proxy
	// runs on the last weights it received.
	Static    bool   `json:"static"`
	LastError string `json:"lastError,omitempty"`
}

// NewProxyClient checks cfg; Run does the work.
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
	if cfg.Rollout == "" {
		cfg.Rollout = cfg.Service
	}
	return &ProxyClient{cfg: cfg}, nil
}

// Status reports the connection and the weights in force.
func (c *ProxyClient) Status() ProxyClientStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.Weights = maps.Clone(c.weights)
	st.Static = !st.Connected && c.weights != nil
	return st
}

// Run subscribes until ctx ends, reconnecting with backoff (100 ms doubling
// to 10 s, reset after a stream that delivered a configuration).
func (c *ProxyClient) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		delivered, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.mu.Lock()
		c.st.Connected = false
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
		w, err := weightsFrom(c.cfg.Service, resp)
		if err != nil {
			c.cfg.Logger.Warn("xds: rejecting route configuration", "version", resp.GetVersionInfo(), "err", err)
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
			changed := w != nil && !maps.Equal(w, c.weights)
			if w != nil {
				c.weights = w
			}
			c.st.Connected, c.st.Version, c.st.Updated, c.st.LastError = true, accepted, time.Now(), ""
			c.mu.Unlock()
			if changed {
				c.cfg.OnWeights(maps.Clone(w))
			}
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

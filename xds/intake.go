package xds

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	metricsservice "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	dto "github.com/prometheus/client_model/go"

	"github.com/deployment-guardian/guardian/rollout"
)

// EnvoyMetrics receives Envoy's metrics service stream
// (envoy.stat_sinks.metrics_service) and keeps, per node and cluster, the
// cumulative upstream_rq_<N>xx counters and the upstream_rq_time histogram.
// Both naming modes are understood: plain stat names
// ("cluster.checkout-canary.upstream_rq_5xx") and emit_tags_as_labels
// ("cluster.upstream_rq_xx" with envoy.cluster_name and
// envoy.response_code_class labels). Counters must be cumulative (Envoy's
// default, report_counters_as_deltas off).
type EnvoyMetrics struct {
	metricsservice.UnimplementedMetricsServiceServer

	log *slog.Logger
	// Now is the clock stamped on snapshots; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	nodes   map[string]map[string]*clusterStats // node → cluster → latest
	retired map[string]*clusterTotals           // cluster → totals of reset nodes
}

var _ metricsservice.MetricsServiceServer = (*EnvoyMetrics)(nil)

// clusterStats is what one node last reported for one cluster.
type clusterStats struct {
	classes [6]int64 // 1..5 = 1xx..5xx
	// buckets are Envoy's cumulative histogram buckets in milliseconds,
	// sorted by upper bound; count is the sample count (covers +Inf).
	buckets []*dto.Bucket
	count   uint64
	// which fields a flush carried: a flush may hold part of the stats
	has     [6]bool
	hasHist bool
}

type clusterTotals struct {
	classes [6]int64
	latency *hdrhistogram.Histogram
}

// NewEnvoyMetrics returns an empty intake. Register it on a gRPC server with
// metricsservice.RegisterMetricsServiceServer, or use Server.Metrics.
func NewEnvoyMetrics(log *slog.Logger) *EnvoyMetrics {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &EnvoyMetrics{log: log, nodes: map[string]map[string]*clusterStats{}, retired: map[string]*clusterTotals{}}
}

// StreamMetrics implements the metrics service. Envoy names the node in the
// first message only.
func (e *EnvoyMetrics) StreamMetrics(stream metricsservice.MetricsService_StreamMetricsServer) error {
	node := ""
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&metricsservice.StreamMetricsResponse{})
		}
		if err != nil {
			return err
		}
		if id := msg.GetIdentifier().GetNode().GetId(); id != "" {
			node = id
		}
		if node == "" {
			return errors.New("xds: metrics stream: first message has no identifier.node.id")
		}
		e.Ingest(node, msg.GetEnvoyMetrics())
	}
}

// Ingest takes one flush of a node's metric families.
func (e *EnvoyMetrics) Ingest(node string, families []*dto.MetricFamily) {
	fresh := map[string]*clusterStats{}
	get := func(cluster string) *clusterStats {
		cs := fresh[cluster]
		if cs == nil {
			cs = &clusterStats{}
			fresh[cluster] = cs
		}
		return cs
	}
	for _, f := range families {
		name := f.GetName()
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[strings.ReplaceAll(l.GetName(), "_", ".")] = l.GetValue()
			}
			cluster, stat, ok := clusterStat(name, labels)
			if !ok {
				continue
			}
			switch {
			case f.GetType() == dto.MetricType_HISTOGRAM && stat == "upstream_rq_time":
				h := m.GetHistogram()
				cs := get(cluster)
				cs.buckets = append([]*dto.Bucket(nil), h.GetBucket()...)
				sort.Slice(cs.buckets, func(i, j int) bool { return cs.buckets[i].GetUpperBound() < cs.buckets[j].GetUpperBound() })
				cs.count = h.GetSampleCount()
				cs.hasHist = true
			case f.GetType() == dto.MetricType_COUNTER:
				class := 0
				if stat == "upstream_rq_xx" {
					class, _ = strconv.Atoi(labels["envoy.response.code.class"])
				} else if len(stat) == len("upstream_rq_5xx") && strings.HasPrefix(stat, "upstream_rq_") && strings.HasSuffix(stat, "xx") {
					class = int(stat[len("upstream_rq_")] - '0')
				}
				if class >= 1 && class <= 5 {
					v := m.GetCounter().GetValue()
					if v >= 0 && v < math.MaxInt64 {
						cs := get(cluster)
						cs.classes[class], cs.has[class] = int64(v), true
					}
				}
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	prev := e.nodes[node]
	if prev == nil {
		prev = map[string]*clusterStats{}
		e.nodes[node] = prev
	}
	for cluster, cs := range fresh {
		old := prev[cluster]
		if old == nil {
			prev[cluster] = cs
			continue
		}
		if old.reset(cs) {
			// The node restarted: keep what it had counted so the fleet's
			// totals stay cumulative.
			e.log.Info("xds: envoy counters reset", "node", node, "cluster", cluster)
			t := e.retired[cluster]
			if t == nil {
				t = &clusterTotals{latency: rollout.NewLatencyHistogram()}
				e.retired[cluster] = t
			}
			old.addTo(&t.classes, t.latency)
			prev[cluster] = cs
			continue
		}
		// Fields this flush did not carry keep their last values.
		for i := range cs.has {
			if cs.has[i] {
				old.classes[i] = cs.classes[i]
			}
		}
		if cs.hasHist {
			old.buckets, old.count = cs.buckets, cs.count
		}
	}
}

func (c *clusterStats) reset(next *clusterStats) bool {
	for i := range c.classes {
		if next.has[i] && next.classes[i] < c.classes[i] {
			return true
		}
	}
	return next.hasHist && next.count < c.count
}

// addTo adds the node's counts to classes and its latency buckets to h,
// each bucket's samples at the bucket's midpoint (Envoy reports ms).
func (c *clusterStats) addTo(classes *[6]int64, h *hdrhistogram.Histogram) {
	for i := range c.classes {
		classes[i] += c.classes[i]
	}
	var lower float64
	var below uint64
	for _, b := range c.buckets {
		cum := b.GetCumulativeCount()
		upper := b.GetUpperBound()
		if math.IsInf(upper, 1) {
			break
		}
		if cum > below {
			recordMS(h, (lower+upper)/2, int64(cum-below))
			below = cum
		}
		lower = upper
	}
	if c.count > below {
		// Above the last finite bound: Envoy's buckets stop at one hour.
		recordMS(h, lower*1.5, int64(c.count-below))
	}
}

func recordMS(h *hdrhistogram.Histogram, ms float64, n int64) {
	us := int64(ms*1000 + 0.5)
	us = max(us, rollout.LatencyLowestUS)
	us = min(us, rollout.LatencyHighestUS)
	_ = h.RecordValues(us, n) // in range by construction
}

// clusterStat splits a cluster stat into cluster and stat name.
func clusterStat(name string, labels map[string]string) (cluster, stat string, ok bool) {
	rest, ok := strings.CutPrefix(name, "cluster.")
	if !ok {
		// Prometheus-style names, when a sink or test uses them.
		if rest, ok = strings.CutPrefix(name, "envoy_cluster_"); !ok {
			return "", "", false
		}
	}
	if c := labels["envoy.cluster.name"]; c != "" {
		return c, rest, true
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// ServiceSnapshot sums, over every node, the numbers of the clusters of the
// given service versions (clusters named ClusterName(service, version)).
func (e *EnvoyMetrics) ServiceSnapshot(service string, versions []string) (rollout.Snapshot, error) {
	if len(versions) == 0 {
		return rollout.Snapshot{}, fmt.Errorf("xds: service %q: no versions", service)
	}
	now := time.Now
	if e.Now != nil {
		now = e.Now
	}
	snap := rollout.Snapshot{Time: now(), Versions: map[string]rollout.VersionStats{}}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, v := range versions {
		cluster := ClusterName(service, v)
		vs := rollout.VersionStats{Latency: rollout.NewLatencyHistogram()}
		if t := e.retired[cluster]; t != nil {
			for i := range t.classes {
				vs.Status[i] += t.classes[i]
			}
			vs.Latency.Merge(t.latency)
		}
		for _, clusters := range e.nodes {
			if cs := clusters[cluster]; cs != nil {
				cs.addTo(&vs.Status, vs.Latency)
			}
		}
		for _, n := range vs.Status {
			vs.Requests += n
		}
		vs.Errors = vs.Status[5]
		snap.Versions[v] = vs
	}
	return snap, nil
}

// Snapshot implements rollout.MetricSource with the rollout name taken as
// the service name and the versions "stable" and "canary". Server.Snapshot
// resolves the real service and versions.
func (e *EnvoyMetrics) Snapshot(rolloutName string) (rollout.Snapshot, error) {
	return e.ServiceSnapshot(rolloutName, []string{"stable", "canary"})
}

var _ rollout.MetricSource = (*EnvoyMetrics)(nil)

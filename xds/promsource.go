package xds

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"

	"github.com/deployment-guardian/guardian/rollout"
)

// PrometheusConfig sets up a PrometheusSource.
type PrometheusConfig struct {
	// Address is the Prometheus base URL, e.g. http://127.0.0.1:9090.
	Address string
	// Client replaces Address when set (custom transport, auth).
	Client api.Client
	// Lookup maps a rollout to its service and version names; Server.Lookup
	// fits. nil takes the rollout name as the service with versions stable
	// and canary.
	Lookup func(rollout string) (service string, versions []string, err error)
	// Selector is extra label matchers for every query, e.g.
	// `namespace="shop",job="envoy"`.
	Selector string
	// Timeout bounds each query; 0 means 5s.
	Timeout time.Duration
	// Now is the evaluation time of the queries; nil means time.Now.
	Now func() time.Time
}

// PrometheusSource is a rollout.MetricSource over a Prometheus that scrapes
// an Envoy fleet's /stats/prometheus: envoy_cluster_upstream_rq_xx by
// envoy_response_code_class and the envoy_cluster_upstream_rq_time
// histogram (ms buckets), per envoy_cluster_name. Series are read per scrape
// target and corrected for counter resets before they are summed, so the
// snapshots stay cumulative when proxies restart.
type PrometheusSource struct {
	cfg PrometheusConfig
	api promv1.API

	mu     sync.Mutex
	series map[string]*promSeries // by label set
}

type promSeries struct {
	cluster string
	class   int     // for rq_xx
	le      float64 // for buckets
	bucket  bool
	last    float64
	offset  float64 // sum of values before resets
}

var _ rollout.MetricSource = (*PrometheusSource)(nil)

var selectorRE = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(\\.|[^"\\])*"\s*(,\s*|$))*$`)

// NewPrometheusSource checks cfg; it does not contact Prometheus.
func NewPrometheusSource(cfg PrometheusConfig) (*PrometheusSource, error) {
	if cfg.Client == nil {
		if cfg.Address == "" {
			return nil, errors.New("xds: PrometheusConfig.Address: required")
		}
		c, err := api.NewClient(api.Config{Address: cfg.Address})
		if err != nil {
			return nil, fmt.Errorf("xds: PrometheusConfig.Address %q: %w", cfg.Address, err)
		}
		cfg.Client = c
	}
	if cfg.Selector != "" && !selectorRE.MatchString(cfg.Selector) {
		return nil, fmt.Errorf("xds: PrometheusConfig.Selector %q: want label matchers like job=\"envoy\"", cfg.Selector)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Lookup == nil {
		cfg.Lookup = func(r string) (string, []string, error) { return r, []string{"stable", "canary"}, nil }
	}
	return &PrometheusSource{cfg: cfg, api: promv1.NewAPI(cfg.Client), series: map[string]*promSeries{}}, nil
}

// Snapshot queries the current counters and buckets of the rollout's
// clusters.
func (p *PrometheusSource) Snapshot(rolloutName string) (rollout.Snapshot, error) {
	service, versions, err := p.cfg.Lookup(rolloutName)
	if err != nil {
		return rollout.Snapshot{}, err
	}
	clusters := map[string]string{} // cluster → version
	var alts []string
	for _, v := range versions {
		c := ClusterName(service, v)
		clusters[c] = v
		alts = append(alts, regexp.QuoteMeta(c))
	}
	sort.Strings(alts)
	match := fmt.Sprintf(`envoy_cluster_name=~"%s"`, strings.ReplaceAll(strings.Join(alts, "|"), `\`, `\\`))
	if p.cfg.Selector != "" {
		match += "," + strings.TrimSuffix(strings.TrimSpace(p.cfg.Selector), ",")
	}
	now := p.cfg.Now()
	xx, err := p.query(fmt.Sprintf("envoy_cluster_upstream_rq_xx{%s}", match), now)
	if err != nil {
		return rollout.Snapshot{}, err
	}
	buckets, err := p.query(fmt.Sprintf("envoy_cluster_upstream_rq_time_bucket{%s}", match), now)
	if err != nil {
		return rollout.Snapshot{}, err
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range xx {
		class, err := strconv.Atoi(string(s.Metric["envoy_response_code_class"]))
		if err != nil || class < 1 || class > 5 {
			continue
		}
		p.update(s, &promSeries{cluster: string(s.Metric["envoy_cluster_name"]), class: class})
	}
	for _, s := range buckets {
		le, err := strconv.ParseFloat(string(s.Metric["le"]), 64)
		if err != nil {
			continue
		}
		p.update(s, &promSeries{cluster: string(s.Metric["envoy_cluster_name"]), le: le, bucket: true})
	}

	type agg struct {
		classes [6]int64
		le      map[float64]float64
	}
	per := map[string]*agg{}
	for _, v := range versions {
		per[v] = &agg{le: map[float64]float64{}}
	}
	for _, s := range p.series {
		v, ok := clusters[s.cluster]
		if !ok {
			continue
		}
		total := s.offset + s.last
		if s.bucket {
			per[v].le[s.le] += total
		} else {
			per[v].classes[s.class] += int64(math.Round(total))
		}
	}
	snap := rollout.Snapshot{Time: now, Versions: map[string]rollout.VersionStats{}}
	for _, v := range versions {
		a := per[v]
		vs := rollout.VersionStats{Status: a.classes, Latency: rollout.NewLatencyHistogram()}
		for _, n := range a.classes {
			vs.Requests += n
		}
		vs.Errors = a.classes[5]
		cs := &clusterStats{}
		bounds := make([]float64, 0, len(a.le))
		for le := range a.le {
			bounds = append(bounds, le)
		}
		sort.Float64s(bounds)
		for _, le := range bounds {
			cum := uint64(math.Round(a.le[le]))
			if math.IsInf(le, 1) {
				cs.count = cum
				continue
			}
			cs.buckets = append(cs.buckets, &dto.Bucket{UpperBound: &le, CumulativeCount: &cum})
		}
		cs.addTo(&[6]int64{}, vs.Latency)
		snap.Versions[v] = vs
	}
	return snap, nil
}

// update folds one sample into its series, carrying the old value over a
// counter reset (a restarted proxy starts again from zero).
func (p *PrometheusSource) update(s *model.Sample, fresh *promSeries) {
	key := s.Metric.String()
	v := float64(s.Value)
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return
	}
	old, ok := p.series[key]
	if !ok {
		fresh.last = v
		p.series[key] = fresh
		return
	}
	if v < old.last {
		old.offset += old.last
	}
	old.last = v
}

func (p *PrometheusSource) query(q string, at time.Time) (model.Vector, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	defer cancel()
	val, _, _, err := p.api.Query(ctx, q, at)
	if err != nil {
		return nil, fmt.Errorf("xds: prometheus query %s: %w", q, err)
	}
	vec, ok := val.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("xds: prometheus query %s: got %s, want a vector", q, val.Type())
	}
	return vec, nil
}

package xds

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type serverMetrics struct {
	convergence prometheus.Histogram
	nacks       *prometheus.CounterVec
	nodes       prometheus.Gauge
	streams     prometheus.Gauge
	published   prometheus.Counter
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	m := &serverMetrics{
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "guardian", Subsystem: "xds", Name: "convergence_seconds",
			Help: "Time from publishing a snapshot (a weight change) to the last connected node's ACK of it.",
			// Loopback converges in milliseconds; a large fleet over a WAN in seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "guardian", Subsystem: "xds", Name: "nacks_total",
			Help: "xDS responses rejected by nodes, by resource type.",
		}, []string{"type"}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "guardian", Subsystem: "xds", Name: "connected_nodes",
			Help: "Distinct nodes with at least one open xDS stream.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "guardian", Subsystem: "xds", Name: "streams",
			Help: "Open xDS streams (state-of-the-world and delta).",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "guardian", Subsystem: "xds", Name: "snapshots_published_total",
			Help: "Snapshots published to the fleet.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.convergence, m.nacks, m.nodes, m.streams, m.published} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("xds: Config.Registerer: %w", err)
			}
		}
	}
	return m, nil
}

package admin

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// WeightsCollector exposes guardian_version_weight{route,version}, the
// percentage of keyless traffic each version receives, read from the data
// plane at scrape time.
type WeightsCollector struct {
	dp   DataPlane
	desc *prometheus.Desc
}

// NewWeightsCollector returns a collector over dp's weights.
func NewWeightsCollector(dp DataPlane) *WeightsCollector {
	return &WeightsCollector{dp: dp, desc: prometheus.NewDesc("guardian_version_weight",
		"Share of keyless traffic routed to a version, in percent (0-100).",
		[]string{"route", "version"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *WeightsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *WeightsCollector) Collect(ch chan<- prometheus.Metric) {
	routes := c.dp.Routes()
	slices.Sort(routes)
	for _, r := range routes {
		w, ok := c.dp.Weights(r)
		if !ok {
			continue
		}
		for v, n := range w {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), r, v)
		}
	}
}

var _ prometheus.Collector = (*WeightsCollector)(nil)

package rollout

import (
	"github.com/deployment-guardian/guardian/analysis"
)

// MonitorMetrics converts spec.analysis.metrics to the analysis package's
// specs, for analysis.NewMonitor. The spec spells the 99.9th percentile
// latency_p999; the analysis package parses it as latency_p99.9.
func (s *Spec) MonitorMetrics() []analysis.MetricSpec {
	out := make([]analysis.MetricSpec, len(s.Analysis.Metrics))
	for i, m := range s.Analysis.Metrics {
		name := m.Name
		if name == "latency_p999" {
			name = "latency_p99.9"
		}
		out[i] = analysis.MetricSpec{Name: name, Test: m.Test, MaxIncrease: m.MaxIncrease, MaxRatio: m.MaxRatio, Critical: m.Critical}
	}
	return out
}

// MonitorOptions are the analysis options the spec sets.
func (s *Spec) MonitorOptions() analysis.MonitorOptions {
	return analysis.MonitorOptions{MinSamples: s.Analysis.MinSamples}
}

package driver

import (
	"sync"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics exports rollouts to Prometheus: phase, step, weights, decisions
// and the time from the observation that caused a rollback to the weights
// being zeroed.
type Metrics struct {
	phase     *prometheus.GaugeVec
	step      *prometheus.GaugeVec
	weight    *prometheus.GaugeVec
	decisions *prometheus.CounterVec
	rollback  *prometheus.HistogramVec

	mu        sync.Mutex
	lastPhase map[string]rollout.Phase
}

var phases = []rollout.Phase{rollout.Progressing, rollout.Paused, rollout.Promoted, rollout.RolledBack, rollout.Aborted}

// NewMetrics registers the rollout metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "guardian", Subsystem: "rollout", Name: "phase",
			Help: "1 for the rollout's current phase, 0 for the others."}, []string{"rollout", "phase"}),
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "guardian", Subsystem: "rollout", Name: "step",
			Help: "Index of the rollout's current step (0-based)."}, []string{"rollout"}),
		weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "guardian", Subsystem: "rollout", Name: "weight_percent",
			Help: "Traffic weight the rollout assigns to each version."}, []string{"rollout", "version"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "guardian", Subsystem: "rollout", Name: "decisions_total",
			Help: "Rollouts ended, by outcome."}, []string{"rollout", "decision"}),
		rollback: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "guardian", Subsystem: "rollout", Name: "rollback_seconds",
			Help:    "Time from the observation that caused a rollback to the canary's weight being zeroed.",
			Buckets: []float64{1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5}}, []string{"rollout"}),
		lastPhase: map[string]rollout.Phase{},
	}
	for _, c := range []prometheus.Collector{m.phase, m.step, m.weight, m.decisions, m.rollback} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) observe(name string, st rollout.State) {
	for _, p := range phases {
		v := 0.0
		if st.Phase == p {
			v = 1
		}
		m.phase.WithLabelValues(name, string(p)).Set(v)
	}
	m.step.WithLabelValues(name).Set(float64(st.Step))
	for v, w := range st.Weights {
		m.weight.WithLabelValues(name, v).Set(float64(w))
	}
	m.mu.Lock()
	prev := m.lastPhase[name]
	m.lastPhase[name] = st.Phase
	m.mu.Unlock()
	if st.Phase != prev && st.Phase.Done() {
		m.decisions.WithLabelValues(name, string(st.Phase)).Inc()
	}
}

func (m *Metrics) rollbackLatency(name string, d time.Duration) {
	m.rollback.WithLabelValues(name).Observe(d.Seconds())
}

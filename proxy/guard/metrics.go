package guard

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts guard firings for Prometheus as
// guardian_guard_trips_total{route,trigger}.
type Metrics struct {
	trips *prometheus.CounterVec
}

// NewMetrics returns trip counters registered with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{trips: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "guardian",
		Subsystem: "guard",
		Name:      "trips_total",
		Help:      "Critical rollback triggers fired in the request path, by route and trigger metric.",
	}, []string{"route", "trigger"})}
	if reg != nil {
		if err := reg.Register(m.trips); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Count records that the guard of route fired t. It is cheap enough to call
// from onTrip.
func (m *Metrics) Count(route string, t Trip) {
	m.trips.WithLabelValues(route, t.Trigger.Metric).Inc()
}

// Collector exposes the counters for callers that register them themselves.
func (m *Metrics) Collector() prometheus.Collector { return m.trips }

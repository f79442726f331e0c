package analysis

import "testing"

// An analysis step can start before any traffic: ResetWindow on a Monitor
// that has seen no latency must be a no-op, not a panic.
func TestResetWindowBeforeAnyLatency(t *testing.T) {
	for _, specs := range [][]MetricSpec{
		{{Name: "latency_p99", MaxRatio: 1.5}},
		{{Name: "error_rate", MaxIncrease: 0.02}, {Name: "latency_p50", MaxRatio: 1.2}, {Name: "latency_mean", MaxRatio: 1.2}},
	} {
		m, err := NewMonitor(specs, 0.95, MonitorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m.ResetWindow()
		m.ResetWindow()
		if vs := m.Evaluate(); len(vs) != len(specs) {
			t.Errorf("Evaluate after resets gave %d verdicts, want %d", len(vs), len(specs))
		}
	}
}

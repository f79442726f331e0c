package guard

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestTripMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "consecutive_errors > 2")}, Watch: 1},
		func(tr Trip) { m.Count("checkout", tr) })
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for range 5 {
			g.Observe(1, time.Millisecond, true)
		}
		g.Reset()
	}
	want := `
# HELP guardian_guard_trips_total Critical rollback triggers fired in the request path, by route and trigger metric.
# TYPE guardian_guard_trips_total counter
guardian_guard_trips_total{route="checkout",trigger="consecutive_errors"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("second registration with one registry succeeded")
	}
}

package guard

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type healthBackend struct {
	*httptest.Server
	code atomic.Int32
	hits atomic.Int32
}

func newHealthBackend(t *testing.T) *healthBackend {
	b := &healthBackend{}
	b.code.Store(200)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if r.URL.Path != "/healthz" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(int(b.code.Load()))
	}))
	t.Cleanup(b.Close)
	return b
}

func TestHealthCheckerTripsGuard(t *testing.T) {
	stable, canary := newHealthBackend(t), newHealthBackend(t)
	var trip Trip
	g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "health_check_failures > 3")}, Watch: 1}, func(tr Trip) { trip = tr })
	if err != nil {
		t.Fatal(err)
	}
	hc := &HealthChecker{
		Targets: []Target{{0, stable.URL + "/healthz"}, {1, canary.URL + "/healthz"}},
		Sink:    g, Timeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler),
	}
	if err := hc.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, r := range hc.CheckOnce(ctx) {
		if !r.OK || r.Status != 200 {
			t.Fatalf("healthy probe %+v", r)
		}
	}
	canary.code.Store(503)
	for round := 1; round <= 3; round++ {
		res := hc.CheckOnce(ctx)
		if res[1].OK || res[1].Status != 503 || !res[0].OK {
			t.Fatalf("round %d: %+v", round, res)
		}
	}
	if _, ok := g.Tripped(); ok {
		t.Fatal("tripped after 3 failed rounds, threshold is > 3")
	}
	if hc.Healthy(canary.URL+"/healthz") || !hc.Healthy(stable.URL+"/healthz") || !hc.Healthy("http://never.probed/") {
		t.Error("Healthy does not reflect the last probes")
	}
	// The stable version failing does not count against the canary.
	stable.code.Store(500)
	hc.CheckOnce(ctx)
	if _, ok := g.Tripped(); !ok || trip.Observed != 4 || trip.Trigger.Metric != HealthCheckFailures {
		t.Fatalf("after 4 failed rounds: %+v", trip)
	}
	if canary.hits.Load() != 5 {
		t.Errorf("canary probed %d times, want 5", canary.hits.Load())
	}
}

func TestHealthCheckerRecoveryResets(t *testing.T) {
	canary := newHealthBackend(t)
	g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "health_check_failures > 1")}, Watch: 0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &HealthChecker{Targets: []Target{{0, canary.URL + "/healthz"}}, Sink: g, Logger: slog.New(slog.DiscardHandler)}
	for range 3 {
		canary.code.Store(502)
		hc.CheckOnce(context.Background())
		canary.code.Store(204)
		hc.CheckOnce(context.Background())
	}
	if _, ok := g.Tripped(); ok {
		t.Error("alternating failures tripped a > 1 consecutive trigger")
	}
}

// Refused connections and hung endpoints fail the probe within Timeout.
func TestHealthCheckerTransportFailures(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL + "/healthz"
	dead.Close()
	hang := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(hang)
	hc := &HealthChecker{Targets: []Target{{1, deadURL}, {1, hung.URL + "/healthz"}}, Timeout: 200 * time.Millisecond,
		Interval: time.Second, Logger: slog.New(slog.DiscardHandler)}
	start := time.Now()
	res := hc.CheckOnce(context.Background())
	if res[0].OK || res[0].Err == nil || res[1].OK || res[1].Err == nil {
		t.Fatalf("results %+v", res)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("a hung endpoint held the round for %v", el)
	}
}

func TestHealthCheckerRun(t *testing.T) {
	canary := newHealthBackend(t)
	canary.code.Store(500)
	tripped := make(chan Trip, 1)
	g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "health_check_failures > 2")}, Watch: 1}, func(tr Trip) { tripped <- tr })
	if err != nil {
		t.Fatal(err)
	}
	hc := &HealthChecker{Targets: []Target{{1, canary.URL + "/healthz"}}, Sink: g, Interval: 20 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hc.Run(ctx) }()
	select {
	case tr := <-tripped:
		if tr.Observed != 3 {
			t.Errorf("trip %+v", tr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run never tripped the guard")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestHealthCheckerValidate(t *testing.T) {
	cases := []struct {
		hc   *HealthChecker
		want string
	}{
		{&HealthChecker{}, "Targets is empty"},
		{&HealthChecker{Targets: []Target{{-1, "http://127.0.0.1/"}}}, "Targets[0]: Version -1"},
		{&HealthChecker{Targets: []Target{{0, "http://127.0.0.1/"}, {0, "ftp://x/"}}}, `Targets[1]: URL "ftp://x/"`},
		{&HealthChecker{Targets: []Target{{0, "127.0.0.1:80/healthz"}}}, "Targets[0]: URL"},
	}
	for _, c := range cases {
		err := c.hc.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate: %v, want %q", err, c.want)
		}
		if err := c.hc.Run(context.Background()); err == nil {
			t.Error("Run accepted an invalid checker")
		}
	}
}

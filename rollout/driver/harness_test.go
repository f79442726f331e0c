package driver

import (
	"context"
	"log/slog"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/store"
)

// profile is the traffic one version gets per Snapshot call.
type profile struct {
	// Requests is the rollout's traffic per interval at this version's
	// share: the version gets Requests × its weight / 100, so the split
	// matches the routing probability the Monitor assumes.
	Requests  int64
	ErrorRate float64
	// LatencyMs is the mean latency; samples spread ±Jitter (a fraction)
	// around it.
	LatencyMs float64
	Jitter    float64
}

// trafficSource is a MetricSource whose every Snapshot adds one interval of
// synthetic traffic per version, drawn from a seeded generator, so tests
// control what the Monitor sees without a proxy and without sleeping.
type trafficSource struct {
	mu       sync.Mutex
	rng      *rand.Rand
	profiles map[string]profile
	cum      map[string]rollout.VersionStats
	calls    int
	// canaryWeight is the weight the router applied (set by startDriver).
	canaryWeight func() int
}

func newTrafficSource(stable, canary profile) *trafficSource {
	return &trafficSource{
		rng:      rand.New(rand.NewPCG(1, 2)),
		profiles: map[string]profile{"stable": stable, "canary": canary},
		cum:      map[string]rollout.VersionStats{},
	}
}

func (s *trafficSource) set(version string, p profile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.profiles[version] = p
}

func (s *trafficSource) Snapshot(string) (rollout.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	out := rollout.Snapshot{Time: time.Now(), Versions: map[string]rollout.VersionStats{}}
	w := 0
	if s.canaryWeight != nil {
		w = s.canaryWeight()
	}
	for v, p := range s.profiles {
		share := w
		if v == "stable" {
			share = 100 - w
		}
		n := p.Requests * int64(share) / 100
		c := s.cum[v]
		if c.Latency == nil {
			c.Latency = rollout.NewLatencyHistogram()
		}
		for range n {
			c.Requests++
			if s.rng.Float64() < p.ErrorRate {
				c.Errors++
				c.Status[5]++
			} else {
				c.Status[2]++
			}
			us := p.LatencyMs * 1000 * (1 - p.Jitter + 2*p.Jitter*s.rng.Float64())
			_ = c.Latency.RecordValue(int64(max(us, 1)))
		}
		s.cum[v] = c
		out.Versions[v] = rollout.VersionStats{Requests: c.Requests, Errors: c.Errors, Status: c.Status, Latency: c.Latency.Clone()}
	}
	return out, nil
}

// weightChange is one SetWeights call as the router saw it.
type weightChange struct {
	At      time.Time
	Weights rollout.Weights
}

// recordingRouter is a TrafficRouter that keeps every change.
type recordingRouter struct {
	mu      sync.Mutex
	history []weightChange
}

func (r *recordingRouter) SetWeights(_ string, w rollout.Weights) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.history = append(r.history, weightChange{At: time.Now(), Weights: maps.Clone(w)})
	return nil
}

func (r *recordingRouter) canary() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.history) == 0 {
		return 0
	}
	return r.history[len(r.history)-1].Weights["canary"]
}

// maxCanary is the highest canary weight ever applied.
func (r *recordingRouter) maxCanary() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := 0
	for _, c := range r.history {
		m = max(m, c.Weights["canary"])
	}
	return m
}

// weights lists the distinct canary weights in the order applied.
func (r *recordingRouter) weights() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, c := range r.history {
		if w := c.Weights["canary"]; len(out) == 0 || out[len(out)-1] != w {
			out = append(out, w)
		}
	}
	return out
}

// zeroedAfter is when the canary weight was first set to 0 after t, or
// the zero time.
func (r *recordingRouter) zeroedAfter(t time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.history {
		if !c.At.Before(t) && c.Weights["canary"] == 0 {
			return c.At
		}
	}
	return time.Time{}
}

type harness struct {
	t      *testing.T
	drv    *Driver
	router *recordingRouter
	source *trafficSource
	store  *store.Store
	runErr chan error
}

// startDriver parses spec, opens a real bbolt store, and runs a real Driver
// until the test ends. cfg's Spec, Store, Routers and Source are filled in.
func startDriver(t *testing.T, spec string, src *trafficSource, cfg Config) *harness {
	t.Helper()
	return startDriverRouter(t, spec, src, cfg, &recordingRouter{})
}

// startDriverRouter is startDriver with the test's own router, for
// receivers that look at the weights while the rollout starts.
func startDriverRouter(t *testing.T, spec string, src *trafficSource, cfg Config, router *recordingRouter) *harness {
	t.Helper()
	specs, err := rollout.Parse(t.Name()+".yaml", []byte(spec))
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, router: router, source: src, store: st, runErr: make(chan error, 1)}
	cfg.Spec, cfg.Store, cfg.Source = specs[0], st, src
	cfg.Routers = append(cfg.Routers, h.router)
	src.canaryWeight = h.router.canary
	if cfg.Env == nil {
		cfg.Env = func(string) string { return "" }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	h.drv, err = New(cfg)
	if err != nil {
		t.Fatalf("driver.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { h.runErr <- h.drv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.drv.Done():
		case <-time.After(30 * time.Second):
			t.Errorf("driver did not stop within 30s")
		}
		_ = st.Close()
	})
	return h
}

// waitFor polls cond until it holds or timeout passes; it fails the test
// with what the rollout was doing.
func (h *harness) waitFor(what string, timeout time.Duration, cond func(rollout.State) bool) rollout.State {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := h.drv.State()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: not reached within %s; phase %s step %d weights %v message %q", what, timeout, st.Phase, st.Step, st.Weights, st.Message)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEnd waits for the rollout to end and returns its final state.
func (h *harness) waitEnd(timeout time.Duration) rollout.State {
	h.t.Helper()
	select {
	case <-h.drv.Done():
	case <-time.After(timeout):
		st := h.drv.State()
		h.t.Fatalf("rollout did not end within %s; phase %s step %d weights %v message %q", timeout, st.Phase, st.Step, st.Weights, st.Message)
	}
	return h.drv.State()
}

// events returns the rollout's stored history.
func (h *harness) events() []rollout.Event {
	h.t.Helper()
	evs, err := h.store.Events(h.drv.Name(), 0)
	if err != nil {
		h.t.Fatal(err)
	}
	out := make([]rollout.Event, len(evs))
	for i, e := range evs {
		out[i] = e.Event
	}
	return out
}

package guard

import (
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
)

// stream simulates a proxy's completed requests: rps requests per second,
// each going to the canary (version 1) with probability share.
type stream struct {
	rng   *rand.Rand
	rps   float64
	share float64
	i     int64
}

func newStream(seed uint64, rps, share float64) *stream {
	return &stream{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), rps: rps, share: share}
}

// next returns the simulated time of the next request and its version.
func (s *stream) next() (time.Duration, int) {
	s.i++
	v := 0
	if s.rng.Float64() < s.share {
		v = 1
	}
	return time.Duration(float64(s.i) / s.rps * float64(time.Second)), v
}

func mustTrigger(t testing.TB, s string) Trigger {
	t.Helper()
	tr, err := ParseTrigger(s)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func specTriggers(t testing.TB) []Trigger {
	return []Trigger{mustTrigger(t, "error_rate > 5%"), mustTrigger(t, "p99_latency > 5000ms")}
}

// Acceptance: the canary at 10% of 2,000 req/s turns to 100% HTTP 500 after a
// healthy half minute; the guard must fire after at most 25 canary requests
// and within 150 ms of the change.
func TestCanaryTurnsToAllErrors(t *testing.T) {
	worstN, worstT := 0, time.Duration(0)
	for seed := uint64(1); seed <= 20; seed++ {
		var trips atomic.Int32
		g, err := New(Config{Triggers: specTriggers(t), Watch: 1}, func(Trip) { trips.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		s := newStream(seed, 2000, 0.10)
		change := 30 * time.Second
		bad, firedAt := 0, time.Duration(-1)
		for firedAt < 0 {
			at, v := s.next()
			broken := at >= change
			failed := s.rng.Float64() < 0.01 // 1% background errors before the change
			if broken && v == 1 {
				failed = true
				bad++
			}
			g.Observe(v, time.Duration(5+s.rng.IntN(20))*time.Millisecond, failed)
			if _, ok := g.Tripped(); ok {
				if !broken {
					t.Fatalf("seed %d: tripped at %v, before the canary broke", seed, at)
				}
				firedAt = at - change
			}
			if at > change+time.Minute {
				t.Fatalf("seed %d: no trip a minute after the canary broke", seed)
			}
		}
		if bad > 25 || firedAt > 150*time.Millisecond {
			t.Errorf("seed %d: fired after %d bad canary requests, %v after the change; want <= 25 and <= 150ms", seed, bad, firedAt)
		}
		if trips.Load() != 1 {
			t.Errorf("seed %d: onTrip called %d times, want 1", seed, trips.Load())
		}
		trip, _ := g.Tripped()
		if trip.Trigger.Metric != ErrorRate || !(trip.Bound > 0.05) || trip.Requests < 1 || !strings.Contains(trip.Reason, "Wilson lower bound") {
			t.Errorf("seed %d: trip %+v lacks its evidence", seed, trip)
		}
		worstN, worstT = max(worstN, bad), max(worstT, firedAt)
	}
	t.Logf("worst of 20 seeds: %d bad canary requests, %v after the change", worstN, worstT)
}

// A canary broken from its first request still needs MinRequests requests.
func TestBrokenFromStartWaitsForMinRequests(t *testing.T) {
	g, err := New(Config{Triggers: specTriggers(t), Watch: 1, MinRequests: 15}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 15; i++ {
		if _, ok := g.Tripped(); ok {
			t.Fatalf("tripped after %d requests, MinRequests is 15", i-1)
		}
		g.Observe(1, time.Millisecond, true)
	}
	if trip, ok := g.Tripped(); !ok || trip.Requests != 15 || trip.Errors != 15 {
		t.Fatalf("after 15 failures: trip %+v ok %v", trip, ok)
	}
}

// Acceptance: A/A, both versions with 1% random errors, 60 s at 2,000 req/s
// with a 10% canary: the guard never fires, for 20 seeds.
func TestAANeverTrips(t *testing.T) {
	for seed := uint64(100); seed < 120; seed++ {
		g, err := New(Config{Triggers: append(specTriggers(t), mustTrigger(t, "p999_latency > 5s")), Watch: 1}, func(tr Trip) {
			t.Errorf("seed %d: A/A tripped: %s", seed, tr.Reason)
		})
		if err != nil {
			t.Fatal(err)
		}
		s := newStream(seed, 2000, 0.10)
		canary := 0
		for {
			at, v := s.next()
			if at > time.Minute {
				break
			}
			canary += v
			g.Observe(v, time.Duration(1+s.rng.ExpFloat64()*20e3)*time.Microsecond, s.rng.Float64() < 0.01)
		}
		if canary < 11000 {
			t.Fatalf("seed %d: only %d canary requests simulated", seed, canary)
		}
	}
}

// Detection power and false-alarm behaviour around the threshold: a canary
// at twice the allowed error rate is caught within a few hundred requests; one
// at 60% of it is not flagged over 20,000 requests.
func TestRatesNearThreshold(t *testing.T) {
	run := func(seed uint64, p float64, limit int) int {
		g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "error_rate > 5%")}, Watch: 0}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(seed, 7))
		for i := 1; i <= limit; i++ {
			g.Observe(0, time.Millisecond, rng.Float64() < p)
			if _, ok := g.Tripped(); ok {
				return i
			}
		}
		return 0
	}
	worst := 0
	for seed := uint64(1); seed <= 20; seed++ {
		n := run(seed, 0.10, 5000)
		if n == 0 {
			t.Errorf("seed %d: a 10%% error rate was not caught in 5000 requests", seed)
		}
		worst = max(worst, n)
		if n := run(seed, 0.03, 20000); n != 0 {
			t.Errorf("seed %d: a 3%% error rate tripped error_rate > 5%% at request %d", seed, n)
		}
	}
	t.Logf("10%% errors vs error_rate > 5%%: caught within %d requests (worst of 20)", worst)
}

func TestLatencyQuantileTrigger(t *testing.T) {
	var got Trip
	g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "p99_latency > 5000ms")}, Watch: 1}, func(tr Trip) { got = tr })
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	// 0.5% of requests slower than 5 s: p99 is still below 5 s.
	for range 20000 {
		lat := time.Duration(rng.IntN(100)) * time.Millisecond
		if rng.Float64() < 0.005 {
			lat = 6 * time.Second
		}
		g.Observe(1, lat, false)
	}
	if _, ok := g.Tripped(); ok {
		t.Fatalf("tripped with 0.5%% of requests above 5s: %s", got.Reason)
	}
	// Errors do not move a latency trigger.
	for range 50 {
		g.Observe(1, time.Millisecond, true)
	}
	if _, ok := g.Tripped(); ok {
		t.Fatal("fast failures tripped a latency trigger")
	}
	slow := 0
	for slow < 100 {
		g.Observe(1, 5001*time.Millisecond, false)
		slow++
		if _, ok := g.Tripped(); ok {
			break
		}
	}
	if slow > 25 {
		t.Errorf("all requests at 5.001s: tripped after %d, want <= 25", slow)
	}
	if got.Trigger.Metric != "p99_latency" || !(got.Bound > 0.01) || !strings.Contains(got.Reason, "slower than 5s") {
		t.Errorf("trip = %+v", got)
	}
}

func TestConsecutiveErrors(t *testing.T) {
	calls := 0
	g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "consecutive_errors > 10")}, Watch: 1}, func(Trip) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		g.Observe(1, time.Millisecond, true)
	}
	g.Observe(0, time.Millisecond, false) // the stable version does not break the run
	g.Observe(1, time.Millisecond, false) // the canary's success does
	for range 10 {
		g.Observe(1, time.Millisecond, true)
	}
	if _, ok := g.Tripped(); ok {
		t.Fatal("tripped on 10 consecutive errors, threshold is > 10")
	}
	g.Observe(0, time.Millisecond, true) // stable errors are not the canary's
	g.Observe(1, time.Millisecond, true)
	trip, ok := g.Tripped()
	if !ok || trip.Observed != 11 || trip.Trigger.Metric != ConsecutiveErrors || calls != 1 {
		t.Fatalf("after 11 consecutive errors: %+v ok %v calls %d", trip, ok, calls)
	}
	if trip.Requests != 11 || trip.Errors != 11 {
		t.Errorf("trip evidence %d/%d, want the run of 11", trip.Errors, trip.Requests)
	}
}

func TestHealthCheckFailures(t *testing.T) {
	g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "health_check_failures > 3")}, Watch: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		g.HealthCheckFailed(1)
	}
	g.HealthCheckOK(1)
	for range 3 {
		g.HealthCheckFailed(1)
		g.HealthCheckFailed(0)
	}
	if _, ok := g.Tripped(); ok {
		t.Fatal("tripped on 3 consecutive failures, threshold is > 3")
	}
	g.HealthCheckFailed(1)
	trip, ok := g.Tripped()
	if !ok || trip.Observed != 4 || !strings.Contains(trip.Reason, "health checks failed") {
		t.Fatalf("after 4 failures: %+v ok %v", trip, ok)
	}
}

// onTrip runs exactly once per arming even when many goroutines cross the
// boundary together, and Reset re-arms.
func TestTripOncePerArming(t *testing.T) {
	var calls atomic.Int32
	g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "error_rate > 5%"), mustTrigger(t, "consecutive_errors > 3")}, Watch: 1},
		func(Trip) { calls.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	hammer := func() {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 2000 {
					g.Observe(1, time.Millisecond, true)
				}
			}()
		}
		wg.Wait()
	}
	hammer()
	if calls.Load() != 1 || g.Armed() {
		t.Fatalf("first arming: %d calls, armed %v", calls.Load(), g.Armed())
	}
	g.Reset()
	if _, ok := g.Tripped(); ok || !g.Armed() {
		t.Fatal("Reset did not clear the trip")
	}
	g.Observe(1, time.Millisecond, false)
	if _, ok := g.Tripped(); ok {
		t.Fatal("tripped right after Reset on a success")
	}
	hammer()
	if calls.Load() != 2 {
		t.Fatalf("after Reset: %d calls in total, want 2", calls.Load())
	}
}

// The reported bound is the analysis package's Wilson bound.
func TestTripBoundIsWilson(t *testing.T) {
	g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "error_rate > 5%")}, Watch: 0, Confidence: 0.95}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		g.Observe(0, time.Millisecond, i%2 == 0)
		if _, ok := g.Tripped(); ok || i > 1000 {
			break
		}
	}
	trip, ok := g.Tripped()
	if !ok {
		t.Fatal("50% errors never tripped")
	}
	lo, _, _ := analysis.WilsonInterval(trip.Errors, trip.Requests, 0.95)
	if lo != trip.Bound || !(lo > 0.05) || trip.Observed != float64(trip.Errors)/float64(trip.Requests) {
		t.Errorf("trip %+v, Wilson(%d, %d, 0.95) = %v", trip, trip.Errors, trip.Requests, lo)
	}
}

// Long excursions are halved, not dropped, and the packed counts never
// overflow their 16 bits.
func TestWindowHalving(t *testing.T) {
	g, err := New(Config{Triggers: []Trigger{mustTrigger(t, "error_rate > 40%")}, Watch: 0, Window: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &g.rates[0]
	for i := range 5000 {
		g.Observe(0, time.Millisecond, i%5 < 2) // exactly 40%: S wanders, never far
		_, n, k := unpack(r.state.Load())
		if n > 100 || k > n {
			t.Fatalf("request %d: excursion n=%d k=%d exceeds the window", i, n, k)
		}
	}
}

func TestNewValidates(t *testing.T) {
	er := Trigger{Metric: ErrorRate, Threshold: 0.05}
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no triggers", Config{}, "Triggers is empty"},
		{"bad watch", Config{Triggers: []Trigger{er}, Watch: -1}, "Watch -1"},
		{"confidence", Config{Triggers: []Trigger{er}, Confidence: 1}, "Confidence 1 "},
		{"window", Config{Triggers: []Trigger{er}, Window: 70000}, "Window 70000"},
		{"metric", Config{Triggers: []Trigger{er, {Metric: "latency", Threshold: 1}}}, `Triggers[1]: unknown metric "latency"`},
		{"rate", Config{Triggers: []Trigger{{Metric: ErrorRate, Threshold: 5}}}, "Triggers[0]: error_rate threshold 5 is not a fraction"},
		{"count", Config{Triggers: []Trigger{{Metric: ConsecutiveErrors, Threshold: 2.5}}}, "not a whole count"},
		{"twice", Config{Triggers: []Trigger{er, er}}, "Triggers[1]: error_rate appears twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: err %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestParseTrigger(t *testing.T) {
	good := []struct {
		in   string
		want Trigger
	}{
		{"error_rate > 5%", Trigger{ErrorRate, 0.05}},
		{"error_rate>0.5%", Trigger{ErrorRate, 0.005}},
		{"error_rate > 0.05", Trigger{ErrorRate, 0.05}},
		{"p99_latency > 5000ms", Trigger{"p99_latency", 5}},
		{"p999_latency > 2s", Trigger{"p999_latency", 2}},
		{"latency_p50 > 250ms", Trigger{"p50_latency", 0.25}},
		{"p90_latency > 1m", Trigger{"p90_latency", 60}},
		{"consecutive_errors > 10", Trigger{ConsecutiveErrors, 10}},
		{"health_check_failures > 3", Trigger{HealthCheckFailures, 3}},
	}
	for _, c := range good {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseTrigger(c.in)
			if err != nil || got != c.want {
				t.Fatalf("ParseTrigger(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			}
			again, err := ParseTrigger(got.String())
			if err != nil || again != got {
				t.Errorf("round trip via %q: %+v, %v", got.String(), again, err)
			}
		})
	}
	bad := []struct{ in, want string }{
		{"error_rate > 5", "write 5% for a percentage"},
		{"error_rate > 150%", "not a fraction"},
		{"error_rate > five", "not a number"},
		{"error_rate < 5%", "only '>' is supported"},
		{"error_rate >= 5%", "'>=' is not supported"},
		{"error_rate", "want METRIC > THRESHOLD"},
		{"p99_latency > 5000", "needs a unit"},
		{"p99_latency > soon", "not a duration"},
		{"p99_latency > 2m", "between 0 and 60s"},
		{"p98_latency > 1s", `unknown metric "p98_latency"`},
		{"consecutive_errors > 2.5", "not a whole number"},
		{"> 5%", "missing metric"},
		{"error_rate >", "missing threshold"},
	}
	for _, c := range bad {
		t.Run(c.in, func(t *testing.T) {
			_, err := ParseTrigger(c.in)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.in) {
				t.Errorf("ParseTrigger(%q): err %v, want one quoting the input and containing %q", c.in, err, c.want)
			}
		})
	}
}

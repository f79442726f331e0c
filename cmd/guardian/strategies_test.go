package main

// End-to-end tests of the blue-green, feature-flag and A/B strategies
// through Guardian's own proxy: the runtime `guardian run` builds (proxy,
// guards, drivers, admin API) in process, with real backends on loopback
// that answer with their version.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/driver"
)

// stratBackend answers its version's name; with fail set it answers 500.
// It counts user requests, preview requests (carrying the preview header)
// and failed answers.
type stratBackend struct {
	name    string
	srv     *httptest.Server
	fail    atomic.Bool
	users   atomic.Int64
	preview atomic.Int64
	failed  atomic.Int64
	// headers records the value of X-Variant of every request received.
	mu       sync.Mutex
	variants map[string]int
}

func newStratBackend(t *testing.T, name string) *stratBackend {
	t.Helper()
	b := &stratBackend{name: name, variants: map[string]int{}}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(driver.PreviewHeader) != "" {
			b.preview.Add(1)
		} else {
			b.users.Add(1)
		}
		b.mu.Lock()
		b.variants[r.Header.Get("X-Variant")]++
		b.mu.Unlock()
		if b.fail.Load() {
			b.failed.Add(1)
			http.Error(w, name+" failing", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// stratRun starts the runtime for one spec (YAML with ADDR, STABLE and
// CANARY placeholders) and returns it with the proxy's and admin API's
// base URLs.
func stratRun(t *testing.T, spec string, stable, canary *stratBackend) (*runtime, string, string) {
	t.Helper()
	return stratRunFiles(t, spec, nil, stable, canary)
}

// stratRunFiles is stratRun with more files (name → content) beside the
// spec, such as smoke suites.
func stratRunFiles(t *testing.T, spec string, files map[string]string, stable, canary *stratBackend) (*runtime, string, string) {
	t.Helper()
	listen := freeAddr(t)
	spec = strings.NewReplacer("ADDR", listen, "STABLE", stable.srv.URL, "CANARY", canary.srv.URL).Replace(spec)
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "rollout.yaml")
	if err := os.WriteFile(file, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	specs, err := rollout.LoadFiles(file)
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := startRuntime(runtimeOpts{specs: specs, stateDir: dir, adminListener: adminLn,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("startRuntime: %v", err)
	}
	t.Cleanup(func() { rt.shutdown(5 * time.Second) })
	return rt, "http://" + listen, "http://" + adminLn.Addr().String()
}

// stratWait polls the rollout's state until ok, failing after timeout with
// the state seen.
func stratWait(t *testing.T, rt *runtime, timeout time.Duration, what string, ok func(rollout.State) bool) rollout.State {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := rt.drivers[0].State()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; phase %s step %d (%s): %s", timeout, what, st.Phase, st.Step, st.StepName, st.Message)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stratPromote is `guardian promote NAME` over the admin API.
func stratPromote(t *testing.T, admin, name string) {
	t.Helper()
	resp, err := http.Post(admin+"/api/v1/rollouts/"+name+"/promote", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("promote %s: %s %s", name, resp.Status, body)
	}
}

// stratGet sends GET with headers (pairs) and returns the status and body.
func stratGet(c *http.Client, url string, h ...string) (int, string, error) {
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func stratClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
}

// stratHit is one user request as its worker saw it.
type stratHit struct {
	start, end time.Time
	body       string
	ok         bool
}

// stratLoad sends paced user requests (no preview header) from workers
// goroutines at about rate per second in total, each worker one request
// at a time, until stop is closed or max requests were sent. Each
// worker's answers are kept in order.
func stratLoad(url string, workers, rate, max int, stop <-chan struct{}) func() [][]stratHit {
	out := make([][]stratHit, workers)
	var wg sync.WaitGroup
	var sent atomic.Int64
	begin := time.Now()
	c := stratClient()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				if sent.Add(1) > int64(max) {
					return
				}
				slot := begin.Add(time.Duration(k*workers+w) * time.Second / time.Duration(rate))
				select {
				case <-stop:
					return
				case <-time.After(time.Until(slot)):
				}
				h := stratHit{start: time.Now()}
				code, body, err := stratGet(c, url)
				h.end = time.Now()
				h.body, h.ok = body, err == nil && code == 200
				if err != nil {
					h.body = "error: " + err.Error()
				}
				out[w] = append(out[w], h)
			}
		}()
	}
	return func() [][]stratHit { wg.Wait(); return out }
}

func TestBlueGreenSwitchIsAtomicAndRollsBackInThePath(t *testing.T) {
	blue := newStratBackend(t, "blue")
	green := newStratBackend(t, "green")
	// The smoke suite reaches green through Guardian's listener: only
	// the preview header the validation carries can get it there.
	rt, base, admin := stratRunFiles(t, `
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: payments}
spec:
  listen: ADDR
  blue: {url: STABLE}
  green: {url: CANARY}
  strategy:
    blueGreen:
      autoPromotion: false
      previewURL: http://ADDR
      validate:
        smoke: smoke.yaml
        analysis: {duration: 1s}
      monitor: {duration: 10m}
  analysis:
    interval: 100ms
    metrics:
      - {name: error_rate, maxIncrease: 5%}
  rollbackTriggers:
    critical: [error_rate > 5%]
`, map[string]string{"smoke.yaml": `
apiVersion: guardian.dev/v1alpha1
kind: SmokeSuite
metadata: {name: green}
tests:
  - name: green answers on the preview
    http: {path: /}
    expect: {status: 200, bodyContains: green}
`}, blue, green)

	const workers = 32
	stop := make(chan struct{})
	results := stratLoad(base+"/", workers, 2000, 400000, stop)
	// Validation traffic reaches green through the preview route while
	// users stay on blue.
	previewStop := make(chan struct{})
	var previewWG sync.WaitGroup
	var previewBad atomic.Int64
	for range 2 {
		previewWG.Add(1)
		go func() {
			defer previewWG.Done()
			c := stratClient()
			for i := 0; i < 20000; i++ {
				select {
				case <-previewStop:
					return
				default:
				}
				if code, body, err := stratGet(c, base+"/", driver.PreviewHeader, "1"); err != nil || code != 200 || body != "green" {
					previewBad.Add(1)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	st := stratWait(t, rt, 60*time.Second, "validation to pass and the approval before the switch", func(s rollout.State) bool {
		return s.Phase.Done() || s.Phase == rollout.Paused
	})
	close(previewStop)
	previewWG.Wait()
	if st.Phase != rollout.Paused || st.PausedBy != rollout.PausedByApproval {
		t.Fatalf("after validation: phase %s pausedBy %q (%s), want Paused by approval", st.Phase, st.PausedBy, st.Message)
	}
	var smokePassed bool
	evs, _ := rt.store.Events("payments", 0)
	for _, e := range evs {
		smokePassed = smokePassed || (e.Type == rollout.EventGate && strings.Contains(e.Message, "smoke") && strings.Contains(e.Message, "Pass"))
	}
	if !smokePassed {
		t.Errorf("no passing smoke gate in the history: %+v", evs)
	}
	if n := previewBad.Load(); n != 0 {
		t.Errorf("%d preview requests did not get green", n)
	}
	if n := green.users.Load(); n != 0 {
		t.Fatalf("green served %d user requests before the switch", n)
	}
	if green.preview.Load() == 0 {
		t.Fatal("green served no preview request")
	}

	time.Sleep(500 * time.Millisecond) // users on blue before the switch
	stratPromote(t, admin, "payments")
	stratWait(t, rt, 10*time.Second, "the switch", func(s rollout.State) bool { return s.Weights["canary"] == 100 })
	if w, _ := rt.proxy.Weights("payments"); w["canary"] != 100 || w["stable"] != 0 {
		t.Fatalf("proxy weights after the switch %v, want canary 100", w)
	}
	time.Sleep(time.Second) // users on green, monitored

	failAt := time.Now()
	green.fail.Store(true)
	st = stratWait(t, rt, 10*time.Second, "the rollback", func(s rollout.State) bool { return s.Phase.Done() })
	rolledBackSeen := time.Now()
	if st.Phase != rollout.RolledBack || !strings.Contains(st.Message, "critical trigger") {
		t.Errorf("phase %s (%s), want RolledBack by the critical trigger", st.Phase, st.Message)
	}
	time.Sleep(500 * time.Millisecond) // users back on blue
	close(stop)
	hits := results()

	// Per worker, requests are sequential: the versions must read
	// blue… green… blue…, switching once each way, never back and forth.
	var total, failures, afterRollback, afterRollbackBad int
	var first, last time.Time
	for w, seq := range hits {
		phase := 0 // 0 blue before the switch, 1 green, 2 blue after the rollback
		for i, h := range seq {
			total++
			if first.IsZero() || h.start.Before(first) {
				first = h.start
			}
			if h.start.After(last) {
				last = h.start
			}
			if !h.ok {
				failures++
				if h.end.Before(failAt) {
					t.Errorf("worker %d request %d failed before green was broken: %s", w, i, h.body)
				}
			}
			if h.start.After(rolledBackSeen) {
				afterRollback++
				if h.body != "blue" || !h.ok {
					afterRollbackBad++
				}
			}
			v := strings.Fields(h.body)
			if len(v) == 0 {
				continue
			}
			switch {
			case v[0] == "blue" && phase == 1:
				phase = 2
			case v[0] == "green" && phase == 0:
				phase = 1
			case v[0] == "green" && phase == 2:
				t.Fatalf("worker %d request %d: green after the switch back to blue", w, i)
			}
		}
		if phase != 2 {
			t.Errorf("worker %d never went blue → green → blue (ended in phase %d)", w, phase)
		}
	}
	// Across workers: once any user has had green's answer, a request
	// that starts later is decided after the switch and must get green
	// too, until green breaks (requests still in flight when it broke may
	// already be switched back).
	var firstGreenEnd time.Time
	for _, seq := range hits {
		for _, h := range seq {
			if h.body == "green" && (firstGreenEnd.IsZero() || h.end.Before(firstGreenEnd)) {
				firstGreenEnd = h.end
			}
		}
	}
	for w, seq := range hits {
		for i, h := range seq {
			if h.body == "blue" && h.start.After(firstGreenEnd) && h.end.Before(failAt) {
				t.Errorf("worker %d request %d started after a user had green's answer and got blue", w, i)
			}
		}
	}
	rate := float64(total) / last.Sub(first).Seconds()
	t.Logf("%d user requests at %.0f req/s; %d failed, all after green broke; green answered %d failures before the guard switched back",
		total, rate, failures, green.failed.Load())
	if rate < 200 {
		t.Errorf("load ran at %.0f req/s, too slow to say anything about atomicity", rate)
	}
	// The guard zeroes green in the request path: only the requests that
	// gave it its evidence (about 7) and those already on their way to
	// green (at most one per worker) reach it.
	if n := green.failed.Load(); n == 0 || n > workers+10 {
		t.Errorf("green answered %d failures after it broke, want a handful (1..%d)", n, workers+10)
	}
	if afterRollback == 0 || afterRollbackBad != 0 {
		t.Errorf("after the rollback %d of %d user requests were not answered by blue", afterRollbackBad, afterRollback)
	}
	if w, _ := rt.proxy.Weights("payments"); w["stable"] != 100 {
		t.Errorf("proxy weights after the rollback %v, want stable 100", w)
	}
}

func TestFeatureFlagCohortsThenStickyPercentages(t *testing.T) {
	stable := newStratBackend(t, "stable")
	canary := newStratBackend(t, "canary")
	rt, base, admin := stratRun(t, `
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: search}
spec:
  listen: ADDR
  stable: {url: STABLE}
  canary: {url: CANARY}
  strategy:
    featureFlag:
      userKey: {header: X-User}
      cohorts:
        - name: internal
          match: [{header: X-Internal-User, exact: "true"}]
        - name: beta
          match: [{cookie: beta, exact: "1"}]
      stages:
        - {cohort: internal, pause: {}}
        - {cohort: beta, pause: {}}
        - {percent: 5, pause: {}}
        - {percent: 25, pause: {}}
        - percent: 100
  analysis:
    interval: 100ms
    metrics:
      - {name: error_rate, maxIncrease: 5%}
`, stable, canary)

	c := stratClient()
	version := func(h ...string) string {
		t.Helper()
		code, body, err := stratGet(c, base+"/", h...)
		if err != nil || code != 200 {
			t.Fatalf("GET with %v: %d %q %v", h, code, body, err)
		}
		return body
	}
	// usersIn sends one request for each of users user keys and returns
	// the keys the canary answered.
	usersIn := func(users int) map[int]bool {
		t.Helper()
		in := map[int]bool{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					u := int(next.Add(1) - 1)
					if u >= users {
						return
					}
					code, body, err := stratGet(c, base+"/", "X-User", fmt.Sprintf("user-%d", u))
					if err != nil || code != 200 {
						t.Errorf("user-%d: %d %v", u, code, err)
						return
					}
					if body == "canary" {
						mu.Lock()
						in[u] = true
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		return in
	}
	paused := func(step string) {
		t.Helper()
		stratWait(t, rt, 10*time.Second, step, func(s rollout.State) bool {
			return s.Phase == rollout.Paused && strings.Contains(s.Plan[max(s.Step-1, 0)], step)
		})
	}

	paused("internal")
	if got := version("X-Internal-User", "true", "X-User", "user-1"); got != "canary" {
		t.Errorf("internal cohort at the internal stage got %s, want canary", got)
	}
	if got := version("Cookie", "beta=1"); got != "stable" {
		t.Errorf("beta cohort at the internal stage got %s, want stable", got)
	}
	if in := usersIn(2000); len(in) != 0 {
		t.Fatalf("%d users reached the canary at the internal stage, want 0", len(in))
	}

	stratPromote(t, admin, "search")
	paused("beta")
	for _, h := range [][]string{{"X-Internal-User", "true"}, {"Cookie", "a=b; beta=1"}} {
		if got := version(h...); got != "canary" {
			t.Errorf("cohort %v at the beta stage got %s, want canary", h, got)
		}
	}
	if in := usersIn(2000); len(in) != 0 {
		t.Fatalf("%d users reached the canary at the beta stage, want 0", len(in))
	}

	var prev map[int]bool
	for _, pct := range []int{5, 25} {
		stratPromote(t, admin, "search")
		paused(fmt.Sprintf("%d%%", pct))
		const users = 10000
		in := usersIn(users)
		share := 100 * float64(len(in)) / users
		t.Logf("%d%%: %d of %d users on the canary (%.2f%%)", pct, len(in), users, share)
		if share < float64(pct)-1 || share > float64(pct)+1 {
			t.Errorf("%d%% stage: %.2f%% of distinct users on the canary, want within ±1 point", pct, share)
		}
		for u := range prev {
			if !in[u] {
				t.Errorf("user-%d was in at the previous stage and is out at %d%%", u, pct)
			}
		}
		// Sticky: asking again gives every user the same answer.
		for u := range 200 {
			got := version("X-User", fmt.Sprintf("user-%d", u))
			if (got == "canary") != in[u] {
				t.Errorf("user-%d moved to %s on a second request at %d%%", u, got, pct)
			}
		}
		if got := version("X-Internal-User", "true"); got != "canary" {
			t.Errorf("internal cohort at %d%% got %s, want canary", pct, got)
		}
		prev = in
	}
	stratPromote(t, admin, "search")
	stratWait(t, rt, 10*time.Second, "promotion", func(s rollout.State) bool { return s.Phase == rollout.Promoted })
	if in := usersIn(2000); len(in) != 2000 {
		t.Errorf("after promotion %d of 2000 users on the canary", len(in))
	}
}

func TestABRoutesMirrorAndManualApproval(t *testing.T) {
	stable := newStratBackend(t, "stable")
	canary := newStratBackend(t, "canary")
	rt, base, admin := stratRun(t, `
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: recommendations}
spec:
  listen: ADDR
  stable: {url: STABLE}
  canary: {url: CANARY}
  strategy:
    canary:
      steps:
        - setMirror: {percent: 20}
        - pause: {}
        - setMirror: {percent: 0}
        - setHeaderRoute:
            name: variant-b
            match: [{header: X-Variant, exact: b}]
        - pause: {}
        - setHeaderRoute: {name: variant-b}
        - approval: {}
        - setWeight: 100
  analysis:
    interval: 100ms
    metrics:
      - {name: error_rate, maxIncrease: 5%}
`, stable, canary)
	c := stratClient()
	answers := func(n int, h ...string) map[string]int {
		t.Helper()
		out := map[string]int{}
		for range n {
			code, body, err := stratGet(c, base+"/", h...)
			if err != nil {
				t.Fatal(err)
			}
			out[fmt.Sprintf("%d %s", code, body)]++
		}
		return out
	}
	stratWait(t, rt, 10*time.Second, "the mirror step's pause", func(s rollout.State) bool {
		return s.Phase == rollout.Paused && s.Mirror == 20
	})

	// Mirroring: users only ever get stable's answers; a fifth of the
	// requests are copied to the canary and recorded apart.
	if got := answers(500); got["200 stable"] != 500 {
		t.Fatalf("users while mirroring got %v, want 500 × stable", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for canary.users.Load() < 100 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a late extra copy would show now
	if n := canary.users.Load(); n != 100 {
		t.Errorf("canary received %d shadow copies of 500 requests at 20%%, want 100", n)
	}
	snap, _ := rt.proxy.Snapshot("recommendations")
	if m := snap.Versions["mirror"]; m.Requests != 100 {
		t.Errorf("mirror recorded %d requests, want 100", m.Requests)
	}
	if n := snap.Versions["canary"].Requests; n != 0 {
		t.Errorf("canary's user numbers hold %d requests, want 0: shadow traffic is recorded apart", n)
	}

	// A/B: only matching requests reach the canary.
	stratPromote(t, admin, "recommendations")
	stratWait(t, rt, 10*time.Second, "the header route's pause", func(s rollout.State) bool {
		return s.Phase == rollout.Paused && len(s.Routes) == 1 && s.Mirror == 0
	})
	before := canary.users.Load()
	if got := answers(200, "X-Variant", "b"); got["200 canary"] != 200 {
		t.Errorf("X-Variant: b got %v, want 200 × canary", got)
	}
	for _, h := range [][]string{{"X-Variant", "a"}, {"X-Variant", "B"}, {}} {
		if got := answers(200, h...); got["200 stable"] != 200 {
			t.Errorf("%v got %v, want 200 × stable", h, got)
		}
	}
	if n := canary.users.Load() - before; n != 200 {
		t.Errorf("canary received %d requests at the A/B step, want exactly the 200 matching ones", n)
	}
	canary.mu.Lock()
	if n := canary.variants["a"] + canary.variants[""]; n != 100 {
		// The 100 non-matching shadow copies of the mirror step only.
		t.Errorf("canary saw %d requests without X-Variant: b, want only the 100 mirrored earlier", n)
	}
	canary.mu.Unlock()

	// Manual approval: the rollout waits until promote.
	stratPromote(t, admin, "recommendations")
	st := stratWait(t, rt, 10*time.Second, "the approval", func(s rollout.State) bool {
		return s.Phase == rollout.Paused && s.PausedBy == rollout.PausedByApproval
	})
	if len(st.Routes) != 0 {
		t.Errorf("routes at the approval %v, want the header route removed", st.Routes)
	}
	resp, err := http.Get(admin + "/api/v1/rollouts/recommendations")
	if err != nil {
		t.Fatal(err)
	}
	var status driver.Status
	json.NewDecoder(resp.Body).Decode(&status)
	resp.Body.Close()
	if status.Phase != rollout.Paused || !strings.Contains(status.Message, "approval") {
		t.Errorf("status at the approval: %s %q, want Paused waiting for approval", status.Phase, status.Message)
	}
	time.Sleep(300 * time.Millisecond) // three analysis intervals: still waiting
	if st := rt.drivers[0].State(); st.Phase != rollout.Paused || st.Weights["canary"] != 0 {
		t.Fatalf("without promote the rollout moved on: %s weights %v", st.Phase, st.Weights)
	}
	if got := answers(100, "X-Variant", "b"); got["200 stable"] != 100 {
		t.Errorf("X-Variant: b after the route was removed got %v, want stable", got)
	}
	stratPromote(t, admin, "recommendations")
	stratWait(t, rt, 10*time.Second, "promotion", func(s rollout.State) bool { return s.Phase == rollout.Promoted })
	if got := answers(100); got["200 canary"] != 100 {
		t.Errorf("after promotion users got %v, want canary", got)
	}
}

func TestTwoRolloutsOnTwoListenersDoNotCaptureEachOther(t *testing.T) {
	a1, a2 := newStratBackend(t, "a-stable"), newStratBackend(t, "a-canary")
	b1, b2 := newStratBackend(t, "b-stable"), newStratBackend(t, "b-canary")
	addrA, addrB := freeAddr(t), freeAddr(t)
	spec := fmt.Sprintf(`
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: a}
spec:
  listen: %s
  stable: {url: %s}
  canary: {url: %s}
  strategy: {canary: {steps: [{pause: {}}]}}
---
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: b}
spec:
  listen: %s
  stable: {url: %s}
  canary: {url: %s}
  strategy: {canary: {steps: [{pause: {}}]}}
`, addrA, a1.srv.URL, a2.srv.URL, addrB, b1.srv.URL, b2.srv.URL)
	dir := t.TempDir()
	file := filepath.Join(dir, "r.yaml")
	os.WriteFile(file, []byte(spec), 0o644)
	specs, err := rollout.LoadFiles(file)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := startRuntime(runtimeOpts{specs: specs, stateDir: dir, log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.shutdown(5 * time.Second)
	c := stratClient()
	for range 20 {
		if _, body, err := stratGet(c, "http://"+addrA+"/"); err != nil || body != "a-stable" {
			t.Fatalf("rollout a's listener answered %q %v, want a-stable", body, err)
		}
		if _, body, err := stratGet(c, "http://"+addrB+"/"); err != nil || body != "b-stable" {
			t.Fatalf("rollout b's listener answered %q %v, want b-stable", body, err)
		}
	}
}

func TestRunFleetOnlyRolloutServesTheFleetAPI(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "fleet.yaml")
	os.WriteFile(file, []byte(`
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  stable: {endpoints: ["127.0.0.1:9101"]}
  canary: {endpoints: ["127.0.0.1:9102"]}
  xds: {service: checkout}
  strategy: {canary: {steps: [{setWeight: 5}, {pause: {}}]}}
`), 0o644)
	admin, xdsAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runRollouts(ctx, []string{file}, runOpts{admin: admin, stateDir: dir, xdsListen: xdsAddr, drain: 5 * time.Second})
	}()
	exited := false
	defer func() {
		cancel()
		if exited {
			return
		}
		if err := <-done; err != nil {
			t.Errorf("guardian run: %v", err)
		}
	}()
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			exited = true
			t.Fatalf("guardian run with a fleet-only rollout exited: %v", err)
		default:
		}
		if resp, err = http.Get("http://" + admin + "/api/v1/fleet"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("GET /api/v1/fleet: %v", err)
	}
	defer resp.Body.Close()
	var fleet map[string]any
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&fleet) != nil {
		t.Fatalf("GET /api/v1/fleet: %s, want 200 JSON", resp.Status)
	}
	resp, err = http.Get("http://" + admin + "/api/v1/rollouts/checkout")
	if err != nil {
		t.Fatal(err)
	}
	var st driver.Status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.Weights["canary"] != 5 {
		t.Errorf("fleet-only rollout weights %v, want canary 5 after its first step", st.Weights)
	}
}

package main

// End-to-end tests of issue 4's acceptance list: the real guardian binary
// (built once in TestMain), real HTTP backends on loopback, a bounded load
// loop, and the CLI talking to the admin API.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/bench/demo"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/driver"
	"github.com/deployment-guardian/guardian/rollout/store"
)

var guardianBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "guardian-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	guardianBin = filepath.Join(dir, "guardian")
	out, err := exec.Command("go", "build", "-o", guardianBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building guardian for the end-to-end tests: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// e2eAddr returns a loopback address nobody listens on right now.
func e2eAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func e2eServe(t *testing.T, s *demo.Service) string {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL
}

// guardianProc is one `guardian run` process.
type guardianProc struct {
	t        *testing.T
	cmd      *exec.Cmd
	admin    string
	listen   string
	stateDir string
	files    []string
	log      *e2eLog
	exited   chan struct{}
	exitErr  error
}

type e2eLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *e2eLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *e2eLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startGuardian runs `guardian run FILE --admin ADDR --state-dir DIR` and
// waits until the admin API answers.
func e2eStart(t *testing.T, admin, stateDir string, files ...string) *guardianProc {
	t.Helper()
	p := &guardianProc{t: t, admin: admin, stateDir: stateDir, files: files, log: &e2eLog{}, exited: make(chan struct{})}
	args := append([]string{"run"}, files...)
	args = append(args, "--admin", admin, "--state-dir", stateDir, "--drain", "2s")
	p.cmd = exec.Command(guardianBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.Env = append(os.Environ(), "GUARDIAN_TOKEN=")
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("guardian log:\n%s", p.log.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/api/v1/rollouts")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("guardian exited at start: %v\n%s", p.exitErr, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("guardian's admin API did not come up at %s:\n%s", admin, p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *guardianProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (p *guardianProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// cli runs a client command against the process's admin API.
func (p *guardianProc) cli(args ...string) (stdout, stderr string, code int) {
	return e2eRun(p.t, append(args, "--admin", "http://"+p.admin)...)
}

func e2eRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(guardianBin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("running guardian %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

func (p *guardianProc) status(name string) driver.Status {
	p.t.Helper()
	out, errOut, code := p.cli("status", name, "-o", "json")
	if code != 0 {
		p.t.Fatalf("status %s: exit %d: %s", name, code, errOut)
	}
	var s driver.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		p.t.Fatalf("status %s: %v\n%s", name, err, out)
	}
	return s
}

// waitStatus polls until ok holds or the timeout passes.
func (p *guardianProc) waitStatus(name string, timeout time.Duration, what string, ok func(driver.Status) bool) driver.Status {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := p.status(name)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: not reached in %s; last status: phase %s step %d weights %v: %s", what, timeout, s.Phase, s.Step, s.Weights, s.Message)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *guardianProc) history(name string) []store.StoredEvent {
	p.t.Helper()
	out, errOut, code := p.cli("history", name, "-o", "json")
	if code != 0 {
		p.t.Fatalf("history: exit %d: %s", code, errOut)
	}
	var evs []store.StoredEvent
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		p.t.Fatal(err)
	}
	return evs
}

func e2eSpec(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startLoad runs a bounded load in the background; the returned function
// stops it and returns its result.
func e2eLoad(t *testing.T, l demo.Load) func() demo.LoadResult {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan demo.LoadResult, 1)
	go func() {
		res, err := l.Run(ctx)
		if err != nil {
			t.Error(err)
		}
		ch <- res
	}()
	var once sync.Once
	var res demo.LoadResult
	stop := func() demo.LoadResult {
		once.Do(func() { cancel(); res = <-ch })
		return res
	}
	t.Cleanup(func() { stop() })
	return stop
}

func TestE2EHealthyCanaryIsPromoted(t *testing.T) {
	dir := t.TempDir()
	stable, canary := demo.NewService("stable", time.Millisecond), demo.NewService("canary", time.Millisecond)
	listen := e2eAddr(t)
	spec := e2eSpec(t, dir, "checkout.yaml", fmt.Sprintf(`apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: %s
  stable: {url: %s}
  canary: {url: %s}
  strategy:
    canary:
      steps:
        - setWeight: 20
        - pause: {duration: 2s}
        - setWeight: 50
        - pause: {duration: 2s}
        - setWeight: 100
  analysis:
    interval: 250ms
    metrics:
      - {name: error_rate, test: two-proportion-z, maxIncrease: 5%%}
  rollbackTriggers:
    critical: [error_rate > 20%%]
`, listen, e2eServe(t, stable), e2eServe(t, canary)))
	p := e2eStart(t, e2eAddr(t), filepath.Join(dir, "state"), spec)
	stop := e2eLoad(t, demo.Load{URL: "http://" + listen + "/", Rate: 500, Duration: 90 * time.Second})

	out, errOut, code := p.cli("wait", "checkout", "--timeout", "80s", "--interval", "200ms")
	res := stop()
	if code != 0 {
		t.Fatalf("guardian wait: exit %d, want 0\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if !strings.Contains(out, "Promoted") {
		t.Errorf("wait output %q does not say Promoted", out)
	}
	s := p.status("checkout")
	if s.Phase != rollout.Promoted || s.Weights["canary"] != 100 || s.Weights["stable"] != 0 {
		t.Fatalf("status: phase %s weights %v, want Promoted at canary 100%%", s.Phase, s.Weights)
	}
	if res.Failed > 0 || res.Errors > 0 {
		t.Errorf("load saw %d errors and %d transport failures during a healthy rollout: %+v", res.Errors, res.Failed, res)
	}
	// Every step was walked, in order.
	var weights []string
	for _, e := range p.history("checkout") {
		if e.Type == rollout.EventWeights {
			weights = append(weights, e.Message)
		}
	}
	want := []string{"canary weight 0% → 20%", "canary weight 20% → 50%", "canary weight 50% → 100%"}
	if strings.Join(weights, "|") != strings.Join(want, "|") {
		t.Errorf("weight events %q, want %q", weights, want)
	}
	// The dashboard and the report tell the same story.
	dash, _, code := p.cli("status", "checkout")
	if code != 0 || !strings.Contains(dash, "### Decision: PROMOTED") || !strings.Contains(dash, "Error Rate") {
		t.Errorf("status dashboard (exit %d):\n%s", code, dash)
	}
	md, _, code := p.cli("report", "checkout")
	if code != 0 || !strings.Contains(md, "## Deployment Report") || !strings.Contains(md, "PROMOTED") {
		t.Errorf("report (exit %d):\n%s", code, md)
	}
}

func TestE2ERollbackOnErrorsWithinTwentyFiveBadRequests(t *testing.T) {
	dir := t.TempDir()
	stable, canary := demo.NewService("stable", 0), demo.NewService("canary", 0)
	listen := e2eAddr(t)
	spec := e2eSpec(t, dir, "checkout.yaml", fmt.Sprintf(`apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: %s
  stable: {url: %s}
  canary: {url: %s}
  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: 10m}
        - setWeight: 100
  analysis:
    interval: 1s
    metrics:
      - {name: error_rate, test: two-proportion-z, maxIncrease: 2%%}
  rollbackTriggers:
    critical: [error_rate > 5%%]
`, listen, e2eServe(t, stable), e2eServe(t, canary)))
	p := e2eStart(t, e2eAddr(t), filepath.Join(dir, "state"), spec)
	p.waitStatus("checkout", 10*time.Second, "canary at 10%", func(s driver.Status) bool { return s.Weights["canary"] == 10 })

	stop := e2eLoad(t, demo.Load{URL: "http://" + listen + "/", Rate: 2000, Duration: 8 * time.Second, Workers: 64})
	time.Sleep(time.Second) // healthy traffic first: the guard must cut a canary that broke later
	healthyServed := canary.Served()
	canary.SetErrorRate(1)
	s := p.waitStatus("checkout", 10*time.Second, "rolled back", func(s driver.Status) bool { return s.Phase.Done() })
	time.Sleep(500 * time.Millisecond) // let any request still routed to the canary land, so it is counted
	res := stop()

	if s.Phase != rollout.RolledBack || s.Weights["canary"] != 0 {
		t.Fatalf("phase %s weights %v, want RolledBack at canary 0%%: %s", s.Phase, s.Weights, s.Message)
	}
	bad := canary.Errors()
	t.Logf("canary served %d healthy requests, then %d bad ones before the rollback; load %+v", healthyServed, bad, res)
	if healthyServed < 100 {
		t.Fatalf("the canary served only %d requests before it broke: the load did not run at 2,000 req/s", healthyServed)
	}
	if bad > 25 {
		t.Errorf("the canary served %d bad requests before the rollback, want at most 25", bad)
	}
	if bad == 0 {
		t.Errorf("the canary served no bad request: the rollback did not follow the failure")
	}
	if after := canary.Served(); after != healthyServed+bad {
		t.Errorf("served count moved after counting: %d vs %d", after, healthyServed+bad)
	}

	// The decision is on /metrics too.
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`guardian_rollout_phase{phase="RolledBack",rollout="checkout"} 1`,
		`guardian_rollout_decisions_total{decision="RolledBack",rollout="checkout"} 1`,
		`guardian_rollout_weight_percent{rollout="checkout",version="canary"} 0`,
		`guardian_rollout_rollback_seconds_count{rollout="checkout"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	out, errOut, code := p.cli("wait", "checkout", "--timeout", "5s")
	if code != 3 {
		t.Errorf("guardian wait: exit %d, want 3\n%s%s", code, out, errOut)
	}
	md, _, code := p.cli("report", "checkout", "-o", "markdown")
	if code != 0 {
		t.Fatalf("report: exit %d", code)
	}
	for _, want := range []string{"ROLLED BACK", "error_rate > 5%"} {
		if !strings.Contains(md, want) {
			t.Errorf("report does not name %q:\n%s", want, md)
		}
	}
	js, _, _ := p.cli("report", "checkout", "-o", "json")
	var rep struct {
		Decision string `json:"decision"`
		Evidence []struct {
			Metric string          `json:"metric"`
			Reason string          `json:"reason"`
			Data   json.RawMessage `json:"data"`
		} `json:"evidence"`
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("report -o json: %v\n%s", err, js)
	}
	found := false
	for _, e := range rep.Evidence {
		if strings.Contains(e.Reason, "error_rate > 5%") && strings.Contains(string(e.Data), `"errors"`) && strings.Contains(string(e.Data), `"bound"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("report's evidence does not carry the trigger and its counts: %s", js)
	}
}

func TestE2EKill9DuringPauseResumes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stable, canary := demo.NewService("stable", 0), demo.NewService("canary", 0)
	listen := e2eAddr(t)
	spec := e2eSpec(t, dir, "checkout.yaml", fmt.Sprintf(`apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: %s
  stable: {url: %s}
  canary: {url: %s}
  strategy:
    canary:
      steps:
        - setWeight: 5
        - setWeight: 25
        - pause: {duration: 60s}
        - setWeight: 100
  analysis:
    interval: 200ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
`, listen, e2eServe(t, stable), e2eServe(t, canary)))
	admin, state := e2eAddr(t), filepath.Join(dir, "state")
	p := e2eStart(t, admin, state, spec)
	p.waitStatus("checkout", 10*time.Second, "pause at 25%", func(s driver.Status) bool { return s.Weights["canary"] == 25 && s.Step == 2 })
	time.Sleep(6 * time.Second)
	before := p.status("checkout")
	eventsBefore := p.history("checkout")
	// A `guardian wait` started before the crash waits the restart out.
	waiter := exec.Command(guardianBin, "wait", "checkout", "--admin", "http://"+admin, "--timeout", "60s", "--interval", "100ms")
	var waitOut, waitErr bytes.Buffer
	waiter.Stdout, waiter.Stderr = &waitOut, &waitErr
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = waiter.Process.Kill() })
	time.Sleep(300 * time.Millisecond)
	p.kill() // SIGKILL: no shutdown path runs
	killedAt := time.Now()

	time.Sleep(2 * time.Second) // downtime does not count against the pause
	p2 := e2eStart(t, admin, state, spec)
	restartedAt := time.Now()
	after := p2.status("checkout")
	if after.Step != 2 || after.Weights["canary"] != 25 || after.Weights["stable"] != 75 || after.Phase != rollout.Progressing {
		t.Fatalf("after restart: phase %s step %d weights %v, want Progressing step 2 at canary 25%%", after.Phase, after.Step, after.Weights)
	}
	// The pause keeps what it had left: at most PersistEvery (1s) of
	// progress can be lost, plus the polling gaps; downtime is not counted.
	lost := before.Remaining - after.Remaining // positive: time counted between the two reads
	t.Logf("remaining before kill %.2fs, after restart %.2fs", before.Remaining, after.Remaining)
	counted := restartedAt.Sub(killedAt)
	if lost < -2 || lost > 3 {
		t.Errorf("remaining before kill %.1fs, after restart %.1fs (down %.1fs): the pause did not keep its remaining time", before.Remaining, after.Remaining, counted.Seconds())
	}

	// The proxy serves the stored weights right away: about 25% canary.
	c0, s0 := canary.Served(), stable.Served()
	res, err := demo.Load{URL: "http://" + listen + "/", Rate: 400, Duration: 5 * time.Second, MaxRequests: 800}.Run(context.Background())
	if err != nil || res.OK != 800 {
		t.Fatalf("load after restart: %+v %v", res, err)
	}
	share := float64(canary.Served()-c0) / float64(canary.Served()-c0+stable.Served()-s0)
	if share < 0.18 || share > 0.32 {
		t.Errorf("canary share after restart %.3f, want about 0.25", share)
	}

	// No event lost: the history before the kill is a prefix of the one
	// after, and sequence numbers run 1..N without a gap.
	evs := p2.history("checkout")
	if len(evs) < len(eventsBefore) {
		t.Fatalf("history shrank: %d events before the kill, %d after", len(eventsBefore), len(evs))
	}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: history has a gap", i, e.Seq)
		}
		if i < len(eventsBefore) && (e.Type != eventsBefore[i].Type || e.Message != eventsBefore[i].Message) {
			t.Fatalf("event %d changed across the restart: %q, was %q", e.Seq, e.Message, eventsBefore[i].Message)
		}
	}
	// Promote by hand: the waiter that outlived the crash sees it and exits 0.
	if out, errOut, code := p2.cli("promote", "checkout", "--full"); code != 0 {
		t.Fatalf("promote --full: exit %d: %s%s", code, out, errOut)
	}
	if err := waiter.Wait(); err != nil {
		t.Errorf("guardian wait across the restart: %v\nstdout: %s\nstderr: %s", err, waitOut.String(), waitErr.String())
	}
	if !strings.Contains(waitOut.String(), "checkout: Promoted") || !strings.Contains(waitErr.String(), "still waiting") {
		t.Errorf("guardian wait across the restart said %q / %q", waitOut.String(), waitErr.String())
	}

	// The text history shows the same sequence numbers.
	text, _, _ := p2.cli("history", "checkout")
	if !strings.Contains(text, "SEQ") || !strings.Contains(text, fmt.Sprintf("\n%d ", len(evs))) {
		t.Errorf("history text:\n%s", text)
	}
}

func TestE2EBadSpecAndBadReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	// A malformed spec is refused whole, naming file, line and field.
	bad := e2eSpec(t, dir, "bad.yaml", `apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: 127.0.0.1:1
  stable: {url: http://127.0.0.1:2}
  canary: {url: http://127.0.0.1:3}
  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: 1m}
        - setWeight: 140
`)
	_, errOut, code := e2eRun(t, "run", bad, "--admin", e2eAddr(t), "--state-dir", filepath.Join(dir, "bad-state"))
	if code != 2 {
		t.Errorf("run with a malformed spec: exit %d, want 2\n%s", code, errOut)
	}
	if want := "bad.yaml:13: spec.strategy.canary.steps[2].setWeight: 140 is not between 0 and 100"; !strings.Contains(errOut, want) {
		t.Errorf("stderr %q does not contain %q", errOut, want)
	}

	// A running rollout is not disturbed by a bad reload.
	stable, canary := demo.NewService("stable", 0), demo.NewService("canary", 0)
	listen := e2eAddr(t)
	good := fmt.Sprintf(`apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: %s
  stable: {url: %s}
  canary: {url: %s}
  strategy:
    canary:
      steps:
        - setWeight: 30
        - pause: {duration: 10m}
        - setWeight: 100
  analysis:
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
`, listen, e2eServe(t, stable), e2eServe(t, canary))
	spec := e2eSpec(t, dir, "checkout.yaml", good)
	p := e2eStart(t, e2eAddr(t), filepath.Join(dir, "state"), spec)
	before := p.waitStatus("checkout", 10*time.Second, "pause at 30%", func(s driver.Status) bool { return s.Weights["canary"] == 30 })

	// A good reload (the same file) keeps the running weights too.
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.log.String(), "reloaded"); {
		if time.Now().After(deadline) {
			t.Fatalf("no 'reloaded' in the log after SIGHUP:\n%s", p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := p.status("checkout"); s.Weights["canary"] != 30 {
		t.Fatalf("after a good reload: weights %v, want canary 30%%", s.Weights)
	}
	c0, s0 := canary.Served(), stable.Served()
	if _, err := (demo.Load{URL: "http://" + listen + "/", Rate: 400, Duration: 5 * time.Second, MaxRequests: 400}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if share := float64(canary.Served()-c0) / float64(canary.Served()-c0+stable.Served()-s0); share < 0.2 || share > 0.4 {
		t.Fatalf("canary share after a good reload %.3f, want about 0.30: the proxy lost the rollout's weights", share)
	}

	broken := strings.Replace(good, "setWeight: 100", "setWeight: 100\n        - pause: {duration: soon}", 1)
	e2eSpec(t, dir, "checkout.yaml", broken)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.log.String(), "reload refused") {
		if time.Now().After(deadline) {
			t.Fatalf("no 'reload refused' in the log after SIGHUP with a broken file:\n%s", p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(p.log.String(), "checkout.yaml:14") {
		t.Errorf("the refusal does not name the file and line:\n%s", p.log.String())
	}
	time.Sleep(500 * time.Millisecond)
	if !p.alive() {
		t.Fatalf("guardian exited after a bad reload: %v", p.exitErr)
	}
	after := p.status("checkout")
	if after.Phase != before.Phase || after.Step != before.Step || after.Weights["canary"] != 30 || after.Weights["stable"] != 70 {
		t.Fatalf("after a bad reload: phase %s step %d weights %v, want %s step %d at canary 30%%", after.Phase, after.Step, after.Weights, before.Phase, before.Step)
	}
	c0, s0 = canary.Served(), stable.Served()
	res, err := demo.Load{URL: "http://" + listen + "/", Rate: 400, Duration: 5 * time.Second, MaxRequests: 800}.Run(context.Background())
	if err != nil || res.OK != 800 {
		t.Fatalf("load after the bad reload: %+v %v", res, err)
	}
	if share := float64(canary.Served()-c0) / float64(canary.Served()-c0+stable.Served()-s0); share < 0.22 || share > 0.38 {
		t.Errorf("canary share after the bad reload %.3f, want about 0.30", share)
	}
}

func TestE2ELatencyShiftIsRolledBack(t *testing.T) {
	dir := t.TempDir()
	stable, canary := demo.NewService("stable", 5*time.Millisecond), demo.NewService("canary", 5*time.Millisecond)
	listen := e2eAddr(t)
	spec := e2eSpec(t, dir, "checkout.yaml", fmt.Sprintf(`apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: %s
  stable: {url: %s}
  canary: {url: %s}
  strategy:
    canary:
      steps:
        - setWeight: 20
        - pause: {duration: 10m}
        - setWeight: 100
  analysis:
    interval: 500ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
      - {name: latency_p50, test: mann-whitney-u, maxRatio: 1.5}
`, listen, e2eServe(t, stable), e2eServe(t, canary)))
	p := e2eStart(t, e2eAddr(t), filepath.Join(dir, "state"), spec)
	p.waitStatus("checkout", 10*time.Second, "canary at 20%", func(s driver.Status) bool { return s.Weights["canary"] == 20 })
	stop := e2eLoad(t, demo.Load{URL: "http://" + listen + "/", Rate: 1000, Duration: 40 * time.Second, Workers: 96})
	time.Sleep(3 * time.Second) // the latency tests warm up on the baseline first
	if s := p.status("checkout"); s.Phase != rollout.Progressing {
		t.Fatalf("healthy canary already %s: %s", s.Phase, s.Message)
	}
	canary.SetDelay(35 * time.Millisecond)
	shifted := time.Now()
	s := p.waitStatus("checkout", 20*time.Second, "rolled back", func(s driver.Status) bool { return s.Phase.Done() })
	took := time.Since(shifted)
	res := stop()
	t.Logf("rolled back %.1fs after the +30ms shift; load %+v; %s", took.Seconds(), res, s.Message)
	if s.Phase != rollout.RolledBack {
		t.Fatalf("phase %s, want RolledBack: %s", s.Phase, s.Message)
	}
	if took > 10*time.Second {
		t.Errorf("rolled back %.1fs after the shift, want within 10s", took.Seconds())
	}
	if !strings.Contains(s.Message, "latency_p50") {
		t.Errorf("the rollback reason does not name latency_p50: %s", s.Message)
	}
	if res.Sent < 3000 {
		t.Errorf("the load sent only %d requests: not 1,000 req/s", res.Sent)
	}
}

func TestE2EAACanaryIsNotRolledBack(t *testing.T) {
	if testing.Short() {
		t.Skip("60 s of A/A traffic; runs without -short")
	}
	dir := t.TempDir()
	stable, canary := demo.NewService("stable", time.Millisecond), demo.NewService("canary", time.Millisecond)
	stable.SetErrorRate(0.005)
	canary.SetErrorRate(0.005)
	listen := e2eAddr(t)
	spec := e2eSpec(t, dir, "checkout.yaml", fmt.Sprintf(`apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: %s
  stable: {url: %s}
  canary: {url: %s}
  strategy:
    canary:
      steps:
        - setWeight: 20
        - pause: {duration: 30m}
        - setWeight: 100
  analysis:
    interval: 250ms
    metrics:
      - {name: error_rate, maxIncrease: 1%%}
      - {name: latency_p50, maxRatio: 1.2}
      - {name: latency_p99, maxRatio: 1.5}
  rollbackTriggers:
    critical: [error_rate > 5%%]
    sustained:
      - {condition: error_rate > 2%%, for: 10s}
`, listen, e2eServe(t, stable), e2eServe(t, canary)))
	p := e2eStart(t, e2eAddr(t), filepath.Join(dir, "state"), spec)
	p.waitStatus("checkout", 10*time.Second, "canary at 20%", func(s driver.Status) bool { return s.Weights["canary"] == 20 })
	stop := e2eLoad(t, demo.Load{URL: "http://" + listen + "/", Rate: 1000, Duration: 60 * time.Second, Workers: 64})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if s := p.status("checkout"); s.Phase != rollout.Progressing {
			stop()
			t.Fatalf("A/A canary ended %s: %s", s.Phase, s.Message)
		}
		time.Sleep(time.Second)
	}
	res := stop()
	if res.Sent < 40000 {
		t.Errorf("the load sent only %d requests in 60s: not 1,000 req/s", res.Sent)
	}
	s := p.status("checkout")
	t.Logf("after %d requests (%d errors): phase %s, %s", res.Sent, res.Errors, s.Phase, s.Message)
	if s.Phase != rollout.Progressing || s.Weights["canary"] != 20 {
		t.Fatalf("A/A canary: phase %s weights %v", s.Phase, s.Weights)
	}
}

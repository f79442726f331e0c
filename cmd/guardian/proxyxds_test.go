package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deployment-guardian/guardian/proxy"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/xds"
)

// versionBackend answers its name and counts what it served.
func versionBackend(t *testing.T, name string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// fleetProxy is a `guardian proxy --xds` run in-process.
type fleetProxy struct {
	t      *testing.T
	listen string
	admin  string
	c      *http.Client
	cancel context.CancelFunc
	done   chan error
}

func startFleetProxy(t *testing.T, args ...string) *fleetProxy {
	t.Helper()
	fp := &fleetProxy{t: t, listen: freeAddr(t), admin: freeAddr(t), c: &http.Client{Timeout: 5 * time.Second}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	fp.cancel = cancel
	go func() {
		root := newRoot()
		root.SetArgs(append([]string{"proxy", "--listen", fp.listen, "--admin", fp.admin, "--drain", "2s"}, args...))
		fp.done <- root.ExecuteContext(ctx)
	}()
	t.Cleanup(fp.stop)
	return fp
}

func (fp *fleetProxy) stop() {
	if fp.cancel == nil {
		return
	}
	fp.cancel()
	fp.cancel = nil
	select {
	case err := <-fp.done:
		if err != nil {
			fp.t.Errorf("guardian proxy returned %v", err)
		}
	case <-time.After(15 * time.Second):
		fp.t.Error("guardian proxy did not stop")
	}
}

// readyz returns /readyz's code and its "xds" field (code 0 when the admin
// API does not answer yet).
func (fp *fleetProxy) readyz() (int, xds.ProxyClientStatus) {
	var body struct {
		XDS xds.ProxyClientStatus `json:"xds"`
	}
	resp, err := fp.c.Get("http://" + fp.admin + "/readyz")
	if err != nil {
		return 0, body.XDS
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		fp.t.Fatalf("/readyz body: %v", err)
	}
	return resp.StatusCode, body.XDS
}

func (fp *fleetProxy) waitState(state string, within time.Duration) xds.ProxyClientStatus {
	fp.t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, st := fp.readyz()
		if code == 200 && st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			fp.t.Fatalf("/readyz never 200 with xds state %q within %s; last %d %+v", state, within, code, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (fp *fleetProxy) weights(route string) rollout.Weights {
	fp.t.Helper()
	resp, err := fp.c.Get("http://" + fp.admin + "/api/v1/weights?route=" + route)
	if err != nil {
		fp.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Routes map[string]rollout.Weights `json:"routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		fp.t.Fatal(err)
	}
	return body.Routes[route]
}

// waitWeights polls the proxy's weights and returns how long the change
// took to show.
func (fp *fleetProxy) waitWeights(route string, want rollout.Weights, within time.Duration) time.Duration {
	fp.t.Helper()
	start := time.Now()
	for {
		got := fp.weights(route)
		if got["stable"] == want["stable"] && got["canary"] == want["canary"] {
			return time.Since(start)
		}
		if time.Since(start) > within {
			fp.t.Fatalf("proxy weights %v, want %v within %s; readyz: %v", got, want, within, fmt.Sprint(fp.readyz()))
		}
		time.Sleep(time.Millisecond)
	}
}

// split sends n sequential keyless requests and counts the canary's answers.
func (fp *fleetProxy) split(n int) int {
	fp.t.Helper()
	canary := 0
	for range n {
		resp, err := fp.c.Get("http://" + fp.listen + "/")
		if err != nil {
			fp.t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch string(b) {
		case "canary":
			canary++
		case "stable":
		default:
			fp.t.Fatalf("proxy answered %d %q", resp.StatusCode, b)
		}
	}
	return canary
}

func (fp *fleetProxy) metric(name string) string {
	fp.t.Helper()
	resp, err := fp.c.Get("http://" + fp.admin + "/metrics")
	if err != nil {
		fp.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

func hostPort(t *testing.T, rawURL string) string {
	t.Helper()
	return strings.TrimPrefix(rawURL, "http://")
}

// startControlPlane serves an xds.Server with service "edge" (rollout
// "edge-rollout") on addr, retrying the listen briefly: a restarted
// control plane takes back the port its predecessor had.
func startControlPlane(t *testing.T, addr, stable, canary string, w rollout.Weights) *xds.Server {
	t.Helper()
	s, err := xds.NewServer(xds.Config{Listen: addr, Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetService(xds.Service{Name: "edge", Rollout: "edge-rollout",
		Versions: []xds.Version{{Name: "stable", Endpoints: []string{stable}}, {Name: "canary", Endpoints: []string{canary}}},
		Weights:  w}); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	for deadline := time.Now().Add(5 * time.Second); ; {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("control plane: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	go s.Serve(ln)
	return s
}

// The acceptance path of `guardian proxy --xds`: weights follow the control
// plane, the proxy's numbers reach its MetricSource, a lost control plane
// leaves the proxy static (same split, ready, saying so), and a restarted
// one on the same address is followed again.
func TestProxyXDSFollowsControlPlaneAndFailsStatic(t *testing.T) {
	stable, stableHits := versionBackend(t, "stable")
	canary, canaryHits := versionBackend(t, "canary")
	xdsAddr := freeAddr(t)
	cp := startControlPlane(t, xdsAddr, hostPort(t, stable.URL), hostPort(t, canary.URL), rollout.Weights{"stable": 100, "canary": 0})
	defer func() { cp.Stop() }()

	fp := startFleetProxy(t, "--stable", stable.URL, "--canary", canary.URL, "--canary-weight", "50",
		"--xds", xdsAddr, "--xds-service", "edge", "--node-id", "guardian-edge-1")
	st := fp.waitState(xds.ClientConnected, 20*time.Second)
	// The control plane's split replaces the one the proxy started with.
	fp.waitWeights("default", rollout.Weights{"stable": 100, "canary": 0}, 10*time.Second)
	if !strings.Contains(st.Message, "connected to the control plane") {
		t.Errorf("connected message %q", st.Message)
	}
	if v := fp.metric("guardian_xds_client_connected"); v != "1" {
		t.Errorf("guardian_xds_client_connected = %q, want 1", v)
	}

	if err := cp.SetWeights("edge-rollout", rollout.Weights{"stable": 70, "canary": 30}); err != nil {
		t.Fatal(err)
	}
	took := fp.waitWeights("default", rollout.Weights{"stable": 70, "canary": 30}, 10*time.Second)
	t.Logf("SetWeights 30%% on the control plane → proxy routes by it: %s", took)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if _, err := cp.WaitAcked(ctx, cp.Version()); err != nil {
		t.Fatalf("the proxy did not acknowledge the 30%% split: %v", err)
	}
	cancel()
	if got := fp.split(200); got != 60 {
		t.Errorf("at 30%% from the control plane: %d of 200 requests on the canary, want 60 (the wheel is exact)", got)
	}

	// The proxy's in-path numbers are the control plane's MetricSource for
	// the rollout.
	var snap rollout.Snapshot
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		snap, _ = cp.Snapshot("edge-rollout")
		if snap.Versions["canary"].Requests == canaryHits.Load() && snap.Versions["stable"].Requests == stableHits.Load() {
			break
		}
	}
	sv, cv := snap.Versions["stable"], snap.Versions["canary"]
	if cv.Requests != canaryHits.Load() || sv.Requests != stableHits.Load() || cv.Requests != 60 || cv.Errors != 0 || sv.Status[2] != sv.Requests {
		t.Errorf("control plane's view: stable %d (2xx %d) canary %d/%d errors; backends served stable %d canary %d",
			sv.Requests, sv.Status[2], cv.Requests, cv.Errors, stableHits.Load(), canaryHits.Load())
	}
	if cv.Latency == nil || cv.Latency.TotalCount() != cv.Requests {
		t.Errorf("canary latency via the metrics stream: %v, want %d samples", cv.Latency, cv.Requests)
	}

	// Control plane gone: same split, still ready, static in the body.
	cp.Stop()
	st = fp.waitState(xds.ClientStatic, 20*time.Second)
	if st.Connected || !st.Static || st.Weights["canary"] != 30 || !strings.Contains(st.Message, "unreachable since") || st.Since.IsZero() {
		t.Errorf("static status %+v", st)
	}
	t.Logf("/readyz while static: %s", st.Message)
	if v := fp.metric("guardian_xds_client_connected"); v != "0" {
		t.Errorf("guardian_xds_client_connected while static = %q, want 0", v)
	}
	if got := fp.split(100); got != 30 {
		t.Errorf("static at 30%%: %d of 100 requests on the canary, want 30", got)
	}

	// A new control plane on the same address is followed again.
	cp = startControlPlane(t, xdsAddr, hostPort(t, stable.URL), hostPort(t, canary.URL), rollout.Weights{"stable": 20, "canary": 80})
	fp.waitWeights("default", rollout.Weights{"stable": 20, "canary": 80}, 20*time.Second)
	fp.waitState(xds.ClientConnected, 10*time.Second)
	if got := fp.split(100); got != 80 {
		t.Errorf("after reconnecting at 80%%: %d of 100 requests on the canary, want 80", got)
	}
	if v := fp.metric("guardian_xds_client_connected"); v != "1" {
		t.Errorf("guardian_xds_client_connected after reconnecting = %q, want 1", v)
	}
}

// `guardian run --xds-listen` with a fleet-only rollout and a `guardian
// proxy --xds` joining it: the rollout's weight reaches the proxy, the
// fleet status lists it, and an abort moves its traffic to stable.
func TestRunXDSWithJoiningProxyAbort(t *testing.T) {
	stable, _ := versionBackend(t, "stable")
	canary, _ := versionBackend(t, "canary")
	dir := t.TempDir()
	spec := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(spec, []byte(fmt.Sprintf(`apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: edge}
spec:
  stable: {url: %s}
  canary: {url: %s}
  xds: {service: edge}
  strategy:
    canary:
      steps:
        - setWeight: 50
        - pause: {}
        - setWeight: 100
  analysis:
    interval: 250ms
    metrics:
      - {name: error_rate, test: two-proportion-z, maxIncrease: 5%%}
`, stable.URL, canary.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	runAdmin, xdsAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetArgs([]string{"run", spec, "--admin", runAdmin, "--state-dir", filepath.Join(dir, "state"),
			"--xds-listen", xdsAddr, "--drain", "2s", "--token", ""})
		runDone <- root.ExecuteContext(ctx)
	}()
	defer func() {
		cancel()
		select {
		case err := <-runDone:
			if err != nil {
				t.Errorf("guardian run returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("guardian run did not stop")
		}
	}()

	fp := startFleetProxy(t, "--stable", stable.URL, "--canary", canary.URL,
		"--xds", xdsAddr, "--xds-service", "edge", "--node-id", "guardian-edge-2")
	fp.waitState(xds.ClientConnected, 20*time.Second)
	fp.waitWeights("default", rollout.Weights{"stable": 50, "canary": 50}, 20*time.Second)
	if got := fp.split(100); got != 50 {
		t.Errorf("rollout at 50%%: %d of 100 requests on the canary, want 50", got)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + runAdmin + "/api/v1/fleet")
	if err != nil {
		t.Fatal(err)
	}
	var fleet xds.FleetStatus
	json.NewDecoder(resp.Body).Decode(&fleet)
	resp.Body.Close()
	if len(fleet.Nodes) == 0 || fleet.Nodes[0].Node != "guardian-edge-2" {
		t.Errorf("fleet status nodes %+v, want guardian-edge-2", fleet.Nodes)
	}

	// Abort while requests flow; time the abort to the last canary answer
	// and require 200 stable answers in a row after it.
	type answer struct {
		at     time.Time
		canary bool
	}
	answers := make(chan answer, 4096)
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		defer close(answers)
		lc := &http.Client{Timeout: 5 * time.Second}
		for i := 0; i < 4000; i++ {
			select {
			case <-stopLoad:
				return
			default:
			}
			resp, err := lc.Get("http://" + fp.listen + "/")
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- answer{time.Now(), string(b) == "canary"}
		}
	}()
	time.Sleep(50 * time.Millisecond) // requests in flight on both versions before the abort
	abortAt := time.Now()
	resp, err = c.Post("http://"+runAdmin+"/api/v1/rollouts/edge/abort", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("abort: %s", resp.Status)
	}
	var lastCanary time.Time
	streak := 0
	deadline := time.Now().Add(20 * time.Second)
	for a := range answers {
		if a.at.Before(abortAt) {
			continue
		}
		if a.canary {
			lastCanary, streak = a.at, 0
		} else {
			streak++
		}
		if streak >= 200 || time.Now().After(deadline) {
			break
		}
	}
	close(stopLoad)
	for range answers {
	}
	<-loadDone
	if streak < 200 {
		t.Fatalf("after the abort: only %d stable answers in a row (last canary %v after the abort)", streak, lastCanary.Sub(abortAt))
	}
	if w := fp.weights("default"); w["canary"] != 0 {
		t.Errorf("proxy weights after the abort %v, want canary 0", w)
	}
	_, st := fp.readyz()
	t.Logf("abort → the proxy applied the weight-0 split: %s", st.Updated.Sub(abortAt))
	if lastCanary.IsZero() {
		t.Logf("abort → every request on stable: no canary answer after the abort request was sent")
	} else {
		t.Logf("abort → last canary answer through the fleet proxy: %s after the abort request", lastCanary.Sub(abortAt))
	}
}

// Before the control plane's first answer the proxy is not ready (as Envoy
// waits for its initial fetch); past the timeout it is ready, static, on
// the weights it was started with.
func TestProxyXDSInitialFetchTimeout(t *testing.T) {
	stable, _ := versionBackend(t, "stable")
	canary, _ := versionBackend(t, "canary")
	nobody := freeAddr(t)
	fp := startFleetProxy(t, "--stable", stable.URL, "--canary", canary.URL, "--canary-weight", "10",
		"--xds", nobody, "--xds-service", "edge", "--node-id", "lonely", "--xds-initial-fetch-timeout", "3s")
	var code int
	var st xds.ProxyClientStatus
	for deadline := time.Now().Add(10 * time.Second); code == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		code, st = fp.readyz()
	}
	if code != 503 || st.State != xds.ClientWaiting || !strings.Contains(st.Message, "waiting for the first configuration") {
		t.Errorf("right after start: /readyz %d %+v, want 503 waiting", code, st)
	}
	st = fp.waitState(xds.ClientStatic, 20*time.Second)
	if st.Weights != nil || !strings.Contains(st.Message, "no configuration received") {
		t.Errorf("static without any configuration: %+v", st)
	}
	if got := fp.split(100); got != 10 {
		t.Errorf("on its own weights: %d of 100 requests on the canary, want 10", got)
	}
}

func TestProxyXDSUsageErrors(t *testing.T) {
	base := []string{"proxy", "--listen", "127.0.0.1:0", "--admin", "", "--stable", "127.0.0.1:1", "--canary", "127.0.0.1:2"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"service without --xds", []string{"--xds-service", "edge"}, "need --xds ADDR"},
		{"--xds without service", []string{"--xds", "127.0.0.1:1"}, "--xds-service"},
		{"unknown route", []string{"--xds", "127.0.0.1:1", "--xds-service", "edge", "--xds-route", "nope"}, `--xds-route "nope": no such route (routes: default)`},
		{"cert without key", []string{"--xds", "127.0.0.1:1", "--xds-service", "edge", "--xds-ca", "/dev/null", "--xds-cert", "c.pem"}, "--xds-cert and --xds-key go together"},
		{"cert without CA", []string{"--xds", "127.0.0.1:1", "--xds-service", "edge", "--xds-cert", "c.pem", "--xds-key", "k.pem"}, "--xds-cert needs --xds-ca"},
		{"CA without PEM", []string{"--xds", "127.0.0.1:1", "--xds-service", "edge", "--xds-ca", "/dev/null"}, "--xds-ca /dev/null: no PEM certificate"},
		{"zero initial fetch", []string{"--xds", "127.0.0.1:1", "--xds-service", "edge", "--xds-initial-fetch-timeout", "0s"}, "--xds-initial-fetch-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newRoot()
			root.SetArgs(append(append([]string{}, base...), tc.args...))
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			err := root.Execute()
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want exit 2 mentioning %q", err, tc.want)
			}
		})
	}
}

func TestXDSRouteFor(t *testing.T) {
	routes := func(names ...string) proxy.Config {
		var c proxy.Config
		for _, n := range names {
			c.Routes = append(c.Routes, proxy.Route{Name: n})
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		o      xdsClientOpts
		cfg    proxy.Config
		want   string
		errHas string
	}{
		{"the only route", xdsClientOpts{service: "edge"}, routes("default"), "default", ""},
		{"the route named as the service", xdsClientOpts{service: "checkout"}, routes("search", "checkout"), "checkout", ""},
		{"--xds-route wins", xdsClientOpts{service: "checkout", route: "search"}, routes("search", "checkout"), "search", ""},
		{"ambiguous", xdsClientOpts{service: "edge"}, routes("search", "checkout"), "", `--xds-service "edge": no route of that name among search, checkout; name one with --xds-route`},
		{"unknown --xds-route", xdsClientOpts{service: "edge", route: "x"}, routes("default"), "", `--xds-route "x": no such route`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := xdsRouteFor(tc.o, tc.cfg)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("xdsRouteFor = %q, %v; want an error with %q", got, err, tc.errHas)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("xdsRouteFor = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

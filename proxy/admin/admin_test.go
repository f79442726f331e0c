package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/deployment-guardian/guardian/rollout"
)

// fakePlane is an in-memory data plane.
type fakePlane struct {
	mu      sync.Mutex
	weights map[string]rollout.Weights
	snaps   map[string]rollout.Snapshot
	ready   error
	sets    int
}

func newFake() *fakePlane {
	return &fakePlane{
		weights: map[string]rollout.Weights{"checkout": {"stable": 100, "canary": 0}},
		snaps:   map[string]rollout.Snapshot{},
	}
}

func (f *fakePlane) Routes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for r := range f.weights {
		out = append(out, r)
	}
	return out
}

func (f *fakePlane) Weights(route string) (rollout.Weights, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.weights[route]
	if !ok {
		return nil, false
	}
	out := rollout.Weights{}
	for k, v := range w {
		out[k] = v
	}
	return out, true
}

func (f *fakePlane) SetWeights(route string, w rollout.Weights) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w["canary"] == 42 {
		return errors.New("the data plane refuses 42")
	}
	f.weights[route] = w
	f.sets++
	return nil
}

func (f *fakePlane) Snapshot(route string) (rollout.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.snaps[route]
	if !ok {
		return rollout.Snapshot{}, fmt.Errorf("no recorder for %q", route)
	}
	return s, nil
}

func (f *fakePlane) Ready() error { return f.ready }

type client struct {
	t     *testing.T
	base  string
	token string
}

func (c client) do(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("%s %s: bad JSON %q: %v", method, path, raw, err)
		}
	} else {
		out = map[string]any{"text": string(raw)}
	}
	return resp.StatusCode, out
}

func start(t *testing.T, cfg Config, dp DataPlane) (client, *Server) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := New(cfg, dp)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return client{t: t, base: ts.URL, token: cfg.Token}, s
}

func TestNewRefusesOpenAddressWithoutToken(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9090", ":9090", "10.1.2.3:80", "example.com:80", "[::]:9090"} {
		if _, err := New(Config{Addr: addr}, newFake()); err == nil || !strings.Contains(err.Error(), "Token") {
			t.Errorf("Addr %s without Token: err %v, want a refusal asking for a Token", addr, err)
		}
		if _, err := New(Config{Addr: addr, Token: "t0ken"}, newFake()); err != nil {
			t.Errorf("Addr %s with Token: %v", addr, err)
		}
	}
	for _, addr := range []string{"", "127.0.0.1:0", "[::1]:9090", "localhost:9090", "127.1.2.3:1"} {
		if _, err := New(Config{Addr: addr}, newFake()); err != nil {
			t.Errorf("loopback Addr %q: %v", addr, err)
		}
	}
	if _, err := New(Config{Addr: "nonsense"}, newFake()); err == nil || !strings.Contains(err.Error(), `Addr "nonsense"`) {
		t.Errorf("bad Addr: err %v", err)
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("nil data plane accepted")
	}
}

func TestWeights(t *testing.T) {
	f := newFake()
	c, _ := start(t, Config{}, f)

	code, body := c.do("GET", "/api/v1/weights", "")
	if code != 200 || fmt.Sprint(body["routes"]) != "map[checkout:map[canary:0 stable:100]]" {
		t.Fatalf("GET weights: %d %v", code, body)
	}
	code, body = c.do("PUT", "/api/v1/weights", `{"canary": 10}`)
	if code != 200 || fmt.Sprint(body["routes"]) != "map[checkout:map[canary:10 stable:90]]" {
		t.Fatalf(`PUT {"canary": 10}: %d %v`, code, body)
	}
	if w, _ := f.Weights("checkout"); w["stable"] != 90 || w["canary"] != 10 {
		t.Fatalf("data plane weights %v", w)
	}
	code, _ = c.do("PUT", "/api/v1/weights?route=checkout", `{"stable": 25, "canary": 75}`)
	if w, _ := f.Weights("checkout"); code != 200 || w["canary"] != 75 {
		t.Fatalf("PUT all named: %d, weights %v", code, w)
	}

	bad := []struct{ body, want string }{
		{`{"canary": 140}`, "canary: 140 is not between 0 and 100"},
		{`{"canary": -1}`, "canary: -1 is not between 0 and 100"},
		{`{"canary": "ten"}`, `canary: "ten" is not a whole percentage`},
		{`{"canary": 12.5}`, "canary: 12.5 is not a whole percentage"},
		{`{"blue": 10}`, "blue: unknown version (the route has canary, stable)"},
		{`{"stable": 50, "canary": 40}`, "the weights sum to 90, not 100"},
		{`[10]`, "body: want a JSON object"},
		{``, "body: want a JSON object"},
		{`{}`, "body: no version named"},
		{`{"canary": 10} {"canary": 20}`, "trailing data"},
		{`{"canary": 42}`, "route checkout: the data plane refuses 42"},
	}
	for _, b := range bad {
		code, body := c.do("PUT", "/api/v1/weights", b.body)
		if code != 400 || !strings.Contains(fmt.Sprint(body["error"]), b.want) {
			t.Errorf("PUT %s: %d %v, want 400 with %q", b.body, code, body, b.want)
		}
	}
	if w, _ := f.Weights("checkout"); w["canary"] != 75 {
		t.Errorf("a refused PUT changed the weights: %v", w)
	}

	// Several routes: PUT must name one, GET lists all.
	f.weights["search"] = rollout.Weights{"blue": 100, "green": 0, "canary": 0}
	code, body = c.do("PUT", "/api/v1/weights", `{"canary": 10}`)
	if code != 400 || !strings.Contains(fmt.Sprint(body["error"]), "several routes (checkout, search); name one with ?route=NAME") {
		t.Errorf("PUT with two routes: %d %v", code, body)
	}
	code, body = c.do("PUT", "/api/v1/weights?route=search", `{"canary": 10}`)
	if code != 400 || !strings.Contains(fmt.Sprint(body["error"]), "name every version (missing blue, green)") {
		t.Errorf("PUT one of three versions: %d %v", code, body)
	}
	code, body = c.do("GET", "/api/v1/weights?route=nope", "")
	if code != 400 || !strings.Contains(fmt.Sprint(body["error"]), `unknown route "nope"`) {
		t.Errorf("GET unknown route: %d %v", code, body)
	}
	code, body = c.do("GET", "/api/v1/weights", "")
	if routes, _ := body["routes"].(map[string]any); code != 200 || len(routes) != 2 {
		t.Errorf("GET with two routes: %d %v", code, body)
	}
	code, body = c.do("DELETE", "/api/v1/weights", "")
	if code != http.StatusMethodNotAllowed || !strings.Contains(fmt.Sprint(body["error"]), "allowed: GET, PUT") {
		t.Errorf("DELETE weights: %d %v", code, body)
	}
	code, body = c.do("GET", "/api/v1/nothing", "")
	if code != 404 || !strings.Contains(fmt.Sprint(body["error"]), "no API endpoint GET /api/v1/nothing") {
		t.Errorf("unknown endpoint: %d %v", code, body)
	}
}

func TestStats(t *testing.T) {
	f := newFake()
	canary := rollout.NewLatencyHistogram()
	for i := int64(1); i <= 1000; i++ {
		_ = canary.RecordValue(i * 1000) // 1..1000 ms
	}
	f.snaps["checkout"] = rollout.Snapshot{Time: time.Unix(1700000000, 0), Versions: map[string]rollout.VersionStats{
		"canary": {Requests: 1000, Errors: 50, Status: [6]int64{10, 0, 950, 0, 0, 40}, Latency: canary},
		"stable": {Requests: 0, Latency: rollout.NewLatencyHistogram()},
	}}
	c, _ := start(t, Config{}, f)
	code, body := c.do("GET", "/api/v1/stats", "")
	if code != 200 {
		t.Fatalf("GET stats: %d %v", code, body)
	}
	raw, _ := json.Marshal(body)
	var got StatsResponse
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	cs := got.Routes["checkout"].Versions["canary"]
	if cs.Requests != 1000 || cs.Errors != 50 || cs.ErrorRate != 0.05 {
		t.Errorf("canary counts %+v", cs)
	}
	for _, q := range []struct {
		name      string
		got, want float64
	}{{"p50", cs.P50ms, 500}, {"p90", cs.P90ms, 900}, {"p99", cs.P99ms, 990}, {"p999", cs.P999ms, 999}} {
		if q.got < q.want*0.999 || q.got > q.want*1.001 {
			t.Errorf("%s = %v ms, want %v", q.name, q.got, q.want)
		}
	}
	if cs.Status["2xx"] != 950 || cs.Status["5xx"] != 40 || cs.Status["error"] != 10 {
		t.Errorf("status classes %v", cs.Status)
	}
	if st := got.Routes["checkout"].Versions["stable"]; st.Requests != 0 || st.ErrorRate != 0 || st.P99ms != 0 {
		t.Errorf("empty stable = %+v, want zeros", st)
	}
	if got.Routes["checkout"].Weights["stable"] != 100 {
		t.Errorf("stats weights %v", got.Routes["checkout"].Weights)
	}

	f.weights["broken"] = rollout.Weights{"stable": 100}
	code, body = c.do("GET", "/api/v1/stats?route=broken", "")
	if code != 500 || !strings.Contains(fmt.Sprint(body["error"]), `route broken: no recorder for "broken"`) {
		t.Errorf("stats of a failing source: %d %v", code, body)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	f := newFake()
	c, _ := start(t, Config{}, f)
	if code, body := c.do("GET", "/healthz", ""); code != 200 || body["status"] != "ok" {
		t.Errorf("healthz: %d %v", code, body)
	}
	if code, body := c.do("GET", "/readyz", ""); code != 200 {
		t.Errorf("readyz: %d %v", code, body)
	}
	f.ready = errors.New("route checkout: no healthy stable endpoint")
	if code, body := c.do("GET", "/readyz", ""); code != 503 || body["error"] != "not ready: route checkout: no healthy stable endpoint" {
		t.Errorf("readyz when not ready: %d %v", code, body)
	}
	if code, _ := c.do("GET", "/metrics", ""); code != 404 {
		t.Errorf("/metrics without a Gatherer: %d, want 404", code)
	}
}

func TestTokenAndMetrics(t *testing.T) {
	var logs bytes.Buffer
	reg := prometheus.NewPedanticRegistry()
	f := newFake()
	const token = "s3cret-t0ken"
	c, s := start(t, Config{Addr: "0.0.0.0:0", Token: token, Gatherer: reg, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, f)
	s.Handle("POST /api/v1/rollouts/{name}/promote", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"promoted": r.PathValue("name")})
	}))

	anon := client{t: t, base: c.base}
	wrong := client{t: t, base: c.base, token: "s3cret-t0keN"}
	for _, path := range []string{"/api/v1/weights", "/api/v1/stats", "/metrics"} {
		for _, cl := range []client{anon, wrong} {
			if code, body := cl.do("GET", path, ""); code != 401 || body["error"] != "missing or wrong bearer token" {
				t.Errorf("GET %s with token %q: %d %v, want 401", path, cl.token, code, body)
			}
		}
	}
	if code, _ := anon.do("PUT", "/api/v1/weights", `{"canary": 50}`); code != 401 || f.sets != 0 {
		t.Errorf("anonymous PUT: %d, %d weight changes", code, f.sets)
	}
	if code, _ := anon.do("POST", "/api/v1/rollouts/checkout/promote", ""); code != 401 {
		t.Errorf("anonymous POST to a mounted handler: %d", code)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _ := anon.do("GET", path, ""); code != 200 {
			t.Errorf("GET %s without token: %d, want 200", path, code)
		}
	}
	if code, body := c.do("POST", "/api/v1/rollouts/checkout/promote", ""); code != 200 || body["promoted"] != "checkout" {
		t.Errorf("mounted handler with token: %d %v", code, body)
	}
	if code, _ := c.do("PUT", "/api/v1/weights", `{"canary": 20}`); code != 200 {
		t.Errorf("PUT with token: %d", code)
	}
	code, body := c.do("GET", "/metrics", "")
	text := fmt.Sprint(body["text"])
	if code != 200 || !strings.Contains(text, `guardian_version_weight{route="checkout",version="canary"} 20`) {
		t.Errorf("/metrics: %d\n%s", code, text)
	}
	if strings.Contains(logs.String(), "t0ken") || strings.Contains(logs.String(), "t0keN") {
		t.Errorf("a token reached the log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "refused request without a valid bearer token") {
		t.Errorf("refusals not logged:\n%s", logs.String())
	}
}

func TestWeightsCollector(t *testing.T) {
	f := newFake()
	f.weights["search"] = rollout.Weights{"blue": 30, "green": 70}
	want := `
# HELP guardian_version_weight Share of keyless traffic routed to a version, in percent (0-100).
# TYPE guardian_version_weight gauge
guardian_version_weight{route="checkout",version="canary"} 0
guardian_version_weight{route="checkout",version="stable"} 100
guardian_version_weight{route="search",version="blue"} 30
guardian_version_weight{route="search",version="green"} 70
`
	col := NewWeightsCollector(f)
	if err := testutil.CollectAndCompare(col, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(col); err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// Serve on a real listener, then shut down while a request is in flight:
// the request completes.
func TestServeAndShutdown(t *testing.T) {
	f := newFake()
	s, err := New(Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)}, f)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	entered := make(chan struct{})
	s.Handle("GET /api/v1/slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		writeJSON(w, 200, map[string]string{"status": "done"})
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	c := client{t: t, base: "http://" + ln.Addr().String()}
	if code, _ := c.do("GET", "/healthz", ""); code != 200 {
		t.Fatalf("healthz on the served listener: %d", code)
	}
	// Serve stores the listener before accepting, so after an answer Addr
	// must report the real port.
	if s.Addr() != ln.Addr().String() {
		t.Fatalf("Addr() = %s, want %s", s.Addr(), ln.Addr())
	}
	done := make(chan int, 1)
	go func() {
		resp, err := http.Get(c.base + "/api/v1/slow")
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	close(release)
	if code := <-done; code != 200 {
		t.Errorf("in-flight request during shutdown: %d", code)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

func TestServeRefusesOpenListenerWithoutToken(t *testing.T) {
	s, err := New(Config{}, newFake())
	if err != nil {
		t.Fatal(err)
	}
	ln := fakeListener{addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9090}}
	if err := s.Serve(ln); err == nil || !strings.Contains(err.Error(), "not on loopback") {
		t.Errorf("Serve on 10.0.0.1 without Token: %v", err)
	}
}

type fakeListener struct{ addr net.Addr }

func (l fakeListener) Accept() (net.Conn, error) { return nil, errors.New("closed") }
func (l fakeListener) Close() error              { return nil }
func (l fakeListener) Addr() net.Addr            { return l.addr }

func TestReadyDetailJoinsTheReadinessBody(t *testing.T) {
	f := newFake()
	c, _ := start(t, Config{ReadyDetail: func() map[string]any {
		return map[string]any{"xds": map[string]any{"state": "static"}, "status": "ignored: taken"}
	}}, f)
	code, body := c.do("GET", "/readyz", "")
	if xds, _ := body["xds"].(map[string]any); code != 200 || body["status"] != "ready" || xds["state"] != "static" {
		t.Errorf("readyz with detail: %d %v, want 200, status ready and xds.state static", code, body)
	}
	f.ready = errors.New("proxy: shutting down")
	code, body = c.do("GET", "/readyz", "")
	if xds, _ := body["xds"].(map[string]any); code != 503 || body["error"] != "not ready: proxy: shutting down" || xds["state"] != "static" {
		t.Errorf("not ready with detail: %d %v", code, body)
	}
}

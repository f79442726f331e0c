package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/proxy/guard"
	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/deployment-guardian/guardian/rollout"
)

// backend is an httptest server that answers with its name and counts what
// it received.
type backend struct {
	name string
	srv  *httptest.Server
	n    atomic.Int64
	last atomic.Pointer[http.Request]
}

func newBackend(t *testing.T, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.n.Add(1)
		b.last.Store(r)
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) url() string { return b.srv.URL }

// twoVersions is a one-route config splitting "/" between stable and canary.
func twoVersions(stable, canary string, canaryWeight int) Config {
	return Config{Routes: []Route{{
		Name: "app",
		Versions: []Version{
			{Name: "stable", Endpoints: []string{stable}},
			{Name: "canary", Endpoints: []string{canary}},
		},
		Weights: rollout.Weights{"stable": 100 - canaryWeight, "canary": canaryWeight},
	}}}
}

// startProxy serves cfg on 127.0.0.1:0 and returns the proxy and its base URL.
func startProxy(t *testing.T, cfg Config, opts Options) (*Proxy, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveForTest(t, p, ln, nil)
	return p, "http://" + ln.Addr().String()
}

// serveForTest serves p on ln (with TLS when tc is set) until the test
// ends, then shuts it down and waits for Serve to return.
func serveForTest(t *testing.T, p *Proxy, ln net.Listener, tc *tls.Config) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln, tc) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		<-done
	})
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}, Timeout: 10 * time.Second}
}

// get returns the status and body of GET url with headers h (pairs).
func get(t *testing.T, c *http.Client, url string, h ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(h); i += 2 {
		if strings.EqualFold(h[i], "Host") {
			req.Host = h[i+1]
			continue
		}
		req.Header.Add(h[i], h[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// hammer sends n GETs from workers goroutines and counts answers by body.
func hammer(t *testing.T, url string, n, workers int, hdr func(i int) (string, string)) map[string]int {
	t.Helper()
	c := newClient()
	var mu sync.Mutex
	counts := map[string]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]int{}
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					break
				}
				req, _ := http.NewRequest("GET", url, nil)
				if hdr != nil {
					k, v := hdr(int(i))
					req.Header.Set(k, v)
				}
				resp, err := c.Do(req)
				if err != nil {
					local["error: "+err.Error()]++
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					local[fmt.Sprintf("status %d", resp.StatusCode)]++
					continue
				}
				local[string(b)]++
			}
			mu.Lock()
			for k, v := range local {
				counts[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return counts
}

func TestRoutingByHostAndPath(t *testing.T) {
	api := newBackend(t, "api", nil)
	web := newBackend(t, "web", nil)
	admin := newBackend(t, "admin-host", nil)
	cfg := Config{Routes: []Route{
		{Name: "admin", Match: Match{Host: "admin.example"}, Versions: []Version{{Name: "stable", Endpoints: []string{admin.url()}}}},
		{Name: "api", Match: Match{PathPrefix: "/api/"}, Versions: []Version{{Name: "stable", Endpoints: []string{api.url()}}}},
		{Name: "web", Versions: []Version{{Name: "stable", Endpoints: []string{web.url()}}}},
	}}
	_, base := startProxy(t, cfg, Options{})
	c := newClient()
	for _, tc := range []struct {
		path, host, want string
	}{
		{"/api/users", "", "api"},
		{"/apix", "", "web"},
		{"/", "", "web"},
		{"/api/users", "ADMIN.example:8080", "admin-host"},
		{"/", "admin.example", "admin-host"},
	} {
		t.Run(tc.host+tc.path, func(t *testing.T) {
			var h []string
			if tc.host != "" {
				h = []string{"Host", tc.host}
			}
			code, body := get(t, c, base+tc.path, h...)
			if code != 200 || body != tc.want {
				t.Fatalf("got %d %q, want 200 %q", code, body, tc.want)
			}
		})
	}
}

func TestForwardedHeadersAndHopByHop(t *testing.T) {
	b := newBackend(t, "b", nil)
	_, base := startProxy(t, Config{Routes: []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}}}, Options{})
	c := newClient()
	code, _ := get(t, c, base+"/a%2Fb/../c?x=1", "X-Forwarded-For", "10.0.0.1", "Connection", "X-Secret", "X-Secret", "s",
		"Keep-Alive", "timeout=5", "Proxy-Authorization", "Basic x", "Host", "shop.example")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	r := b.last.Load()
	for k, want := range map[string]string{
		"X-Forwarded-For":     "10.0.0.1, 127.0.0.1",
		"X-Forwarded-Proto":   "http",
		"X-Forwarded-Host":    "shop.example",
		"X-Secret":            "",
		"Keep-Alive":          "",
		"Proxy-Authorization": "",
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("backend got %s=%q, want %q", k, got, want)
		}
	}
	if r.Host != "shop.example" {
		t.Errorf("backend Host %q, want shop.example", r.Host)
	}
	if r.RequestURI != "/a%2Fb/../c?x=1" {
		t.Errorf("backend RequestURI %q, want the path as sent", r.RequestURI)
	}
}

// Header names are case-insensitive and clients send them in any case:
// hop-by-hop headers in lower case, and the headers a lower-case Connection
// names, must not reach the upstream, nor upstream hop-by-hop headers the
// client.
func TestHopByHopInAnyCase(t *testing.T) {
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["keep-alive"] = []string{"timeout=5"}
		w.Header()["proxy-authenticate"] = []string{"Basic"}
		io.WriteString(w, "ok")
	})
	_, base := startProxy(t, Config{Routes: []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}}}, Options{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: shop.example\r\nkeep-alive: timeout=5\r\nte: trailers\r\n"+
		"proxy-authorization: Basic secret\r\nconnection: x-secret, keep-alive\r\nX-Secret: s\r\nX-Kept: k\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, k := range []string{"Keep-Alive", "Proxy-Authenticate"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("client got upstream hop-by-hop header %s=%q", k, v)
		}
	}
	r := b.last.Load()
	for _, k := range []string{"Keep-Alive", "Te", "Proxy-Authorization", "X-Secret"} {
		if v := r.Header.Get(k); v != "" {
			t.Errorf("backend got %s=%q, want it removed", k, v)
		}
	}
	if v := r.Header.Get("X-Kept"); v != "k" {
		t.Errorf("backend got X-Kept=%q, want k", v)
	}
}

func TestKeylessShareIsExact(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	canary := newBackend(t, "canary", nil)
	p, base := startProxy(t, twoVersions(stable.url(), canary.url(), 10), Options{})
	const n = 20000
	counts := hammer(t, base+"/", n, 16, nil)
	if counts["stable"]+counts["canary"] != n {
		t.Fatalf("answers %v, want %d successes", counts, n)
	}
	share := float64(counts["canary"]) / n * 100
	if share < 9 || share > 11 {
		t.Fatalf("canary share %.2f%%, want 10±1", share)
	}
	// The wheel is exact per 100 requests: any 20,000 are exactly 2,000.
	if counts["canary"] != 2000 {
		t.Errorf("canary got %d of %d, want exactly 2000", counts["canary"], n)
	}
	snap, err := p.Snapshot("app")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []*backend{stable, canary} {
		if got, want := snap.Versions[b.name].Requests, b.n.Load(); got != want {
			t.Errorf("proxy recorded %d requests for %s, backend received %d", got, b.name, want)
		}
	}
}

func TestStickyKeysAreMonotone(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	canary := newBackend(t, "canary", nil)
	cfg := twoVersions(stable.url(), canary.url(), 1)
	cfg.Routes[0].Sticky.Header = "X-User"
	p, base := startProxy(t, cfg, Options{})
	c := newClient()
	const users = 1000
	inCanary := map[int]bool{}
	for _, w := range []int{1, 5, 25, 50} {
		if err := p.SetWeights("app", rollout.Weights{"stable": 100 - w, "canary": w}); err != nil {
			t.Fatal(err)
		}
		n := 0
		for u := range users {
			// Twice per user: the answer must not change within a step.
			_, first := get(t, c, base+"/", "X-User", fmt.Sprintf("user-%d", u))
			_, again := get(t, c, base+"/", "X-User", fmt.Sprintf("user-%d", u))
			if first != again {
				t.Fatalf("weight %d: user-%d got %s then %s", w, u, first, again)
			}
			if first == "canary" {
				n++
				inCanary[u] = true
			} else if inCanary[u] {
				t.Fatalf("weight %d: user-%d left the canary", w, u)
			}
		}
		if share := float64(n) / users * 100; share < float64(w)-4 || share > float64(w)+4 {
			t.Errorf("weight %d: %.1f%% of users in canary, want %d±4", w, share, w)
		}
	}
}

func TestCohortRulesWin(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	canary := newBackend(t, "canary", nil)
	cfg := twoVersions(stable.url(), canary.url(), 0)
	cfg.Routes[0].Sticky.Header = "X-User"
	cfg.Routes[0].Cohorts = []Cohort{
		{Header: "X-Beta", Value: "1", Version: "canary"},
		{Cookie: "group", Value: "internal", Version: "canary"},
		{Query: "pin", Version: "stable"},
	}
	p, base := startProxy(t, cfg, Options{})
	c := newClient()
	for _, w := range []int{0, 50, 100} {
		if err := p.SetWeights("app", rollout.Weights{"stable": 100 - w, "canary": w}); err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			user := fmt.Sprintf("u%d", i)
			if _, got := get(t, c, base+"/", "X-Beta", "1", "X-User", user); got != "canary" {
				t.Fatalf("weight %d: X-Beta: 1 went to %s", w, got)
			}
			if _, got := get(t, c, base+"/", "Cookie", "a=b; group=internal", "X-User", user); got != "canary" {
				t.Fatalf("weight %d: group=internal cookie went to %s", w, got)
			}
			if _, got := get(t, c, base+"/?pin", "X-User", user); got != "stable" {
				t.Fatalf("weight %d: ?pin went to %s", w, got)
			}
		}
		if w == 0 {
			if _, got := get(t, c, base+"/", "X-Beta", "2"); got != "stable" {
				t.Fatalf("X-Beta: 2 (no match) at canary 0%% went to %s", got)
			}
		}
	}
}

// loadFor sends about rate requests a second for d and returns the
// failures seen (any non-200 or transport error), with a sample.
func loadFor(t *testing.T, url string, rate int, d time.Duration, during func(stop <-chan struct{})) (int, int, string) {
	t.Helper()
	c := newClient()
	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var sample atomic.Value
	var wg sync.WaitGroup
	const workers = 48
	interval := time.Duration(int64(time.Second) * workers / int64(rate))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(interval)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
				}
				sent.Add(1)
				resp, err := c.Get(url)
				if err != nil {
					failed.Add(1)
					sample.Store(err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					sample.Store(resp.Status)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { during(stop); close(done) }()
	time.Sleep(d)
	close(stop)
	<-done
	wg.Wait()
	s, _ := sample.Load().(string)
	return int(sent.Load()), int(failed.Load()), s
}

func TestWeightChangesUnderLoad(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	canary := newBackend(t, "canary", nil)
	p, base := startProxy(t, twoVersions(stable.url(), canary.url(), 10), Options{})
	var changes int
	sent, failed, sample := loadFor(t, base+"/", 2000, 3*time.Second, func(stop <-chan struct{}) {
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			w := changes % 101
			if err := p.SetWeights("app", rollout.Weights{"stable": 100 - w, "canary": w}); err != nil {
				t.Error(err)
				return
			}
			changes++
		}
	})
	t.Logf("%d requests, %d weight changes", sent, changes)
	if failed != 0 {
		t.Fatalf("%d of %d requests failed (e.g. %s), want 0", failed, sent, sample)
	}
	// The acceptance bar is 2,000 req/s and 100 changes a second; allow a
	// little for a loaded CI machine, not a thinner test.
	if sent < 4800 || changes < 250 {
		t.Fatalf("load too thin to mean anything: %d requests (want ≥4,800 in 3 s), %d changes (want ≥250)", sent, changes)
	}
}

func TestReloadUnderLoad(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	canary := newBackend(t, "canary", nil)
	other := newBackend(t, "other", nil)
	cfg := twoVersions(stable.url(), canary.url(), 10)
	p, base := startProxy(t, cfg, Options{})
	if err := p.SetWeights("app", rollout.Weights{"stable": 70, "canary": 30}); err != nil {
		t.Fatal(err)
	}
	var reloads int
	sent, failed, sample := loadFor(t, base+"/", 2000, 3*time.Second, func(stop <-chan struct{}) {
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			next := twoVersions(stable.url(), canary.url(), 10)
			// Alternate the pool of stable and add a second route.
			if reloads%2 == 1 {
				next.Routes[0].Versions[0].Endpoints = []string{stable.url(), other.url()}
				next.Routes = append(next.Routes, Route{Name: "extra", Match: Match{PathPrefix: "/extra"},
					Versions: []Version{{Name: "v", Endpoints: []string{other.url()}}}})
			}
			if err := p.Reload(next); err != nil {
				t.Error(err)
				return
			}
			reloads++
		}
	})
	t.Logf("%d requests, %d reloads", sent, reloads)
	if failed != 0 {
		t.Fatalf("%d of %d requests failed across reloads (e.g. %s), want 0", failed, sent, sample)
	}
	if sent < 4800 || reloads < 100 {
		t.Fatalf("load too thin to mean anything: %d requests (want ≥4,800 in 3 s), %d reloads (want ≥100)", sent, reloads)
	}
	if w, _ := p.Weights("app"); w["canary"] != 30 {
		t.Errorf("weights after reloads %v, want the rollout's canary=30 kept", w)
	}
	// An invalid config is refused whole and changes nothing.
	bad := twoVersions(stable.url(), canary.url(), 10)
	bad.Routes[0].Versions[1].LB = "random"
	if err := p.Reload(bad); err == nil || !strings.Contains(err.Error(), "routes[0].versions[1].lb") {
		t.Errorf("Reload(bad) = %v, want an error naming routes[0].versions[1].lb", err)
	}
	// A config that changes the weights wins over the current ones.
	changed := twoVersions(stable.url(), canary.url(), 50)
	if err := p.Reload(changed); err != nil {
		t.Fatal(err)
	}
	if w, _ := p.Weights("app"); w["canary"] != 50 {
		t.Errorf("weights after reload with new weights %v, want canary=50", w)
	}
}

func TestErrorStatuses(t *testing.T) {
	slow := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	ok := newBackend(t, "ok", nil)
	var mu sync.Mutex
	var reported []*ForwardError
	cfg := Config{Routes: []Route{
		{Name: "dead", Match: Match{PathPrefix: "/dead"}, Versions: []Version{{Name: "v", Endpoints: []string{deadAddr}}}},
		{Name: "empty", Match: Match{PathPrefix: "/empty"}, Versions: []Version{{Name: "v"}}},
		{Name: "slow", Match: Match{PathPrefix: "/slow"}, RequestTimeout: Duration(200 * time.Millisecond),
			Versions: []Version{{Name: "v", Endpoints: []string{slow.url()}}}},
		{Name: "ok", Versions: []Version{{Name: "v", Endpoints: []string{ok.url()}}}},
	}, MaxHeaderBytes: 4096, MaxBodyBytes: 1024}
	p, base := startProxy(t, cfg, Options{ErrorHandler: func(e *ForwardError) {
		mu.Lock()
		reported = append(reported, e)
		mu.Unlock()
	}})
	c := newClient()
	for _, tc := range []struct {
		path  string
		want  int
		route string
		kind  record.ErrorKind
	}{
		{"/dead", 502, "dead", record.Refused},
		{"/empty", 503, "empty", record.Other},
		{"/slow", 504, "slow", record.Timeout},
	} {
		t.Run(tc.route, func(t *testing.T) {
			code, _ := get(t, c, base+tc.path)
			if code != tc.want {
				t.Fatalf("GET %s: %d, want %d", tc.path, code, tc.want)
			}
			mu.Lock()
			last := reported[len(reported)-1]
			mu.Unlock()
			if last.Route != tc.route || last.Kind != tc.kind || last.Status != tc.want {
				t.Errorf("reported %v, want route %s kind %s status %d", last, tc.route, tc.kind, tc.want)
			}
			snap, _ := p.Snapshot(tc.route)
			if s := snap.Versions["v"]; s.Requests != 1 || s.Errors != 1 || s.Status[0] != 1 {
				t.Errorf("recorded %+v, want 1 request, 1 error, no HTTP answer", s)
			}
		})
	}
	raw := func(t *testing.T, req string) string {
		t.Helper()
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, req)
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return line
	}
	for _, tc := range []struct{ name, req, want string }{
		{"malformed request line", "GARBAGE\r\n\r\n", "400"},
		{"bad header", "GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", "400"},
		{"duplicate content-length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "400"},
		{"oversize header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8000) + "\r\n\r\n", "431"},
		{"oversize body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + strings.Repeat("b", 2000), "413"},
		{"transfer-encoding on HTTP/1.0", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"},
		{"fine", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if line := raw(t, tc.req); !strings.Contains(line, " "+tc.want+" ") {
				t.Fatalf("status line %q, want %s", line, tc.want)
			}
		})
	}
}

func TestGracefulShutdownDrainsInFlight(t *testing.T) {
	started := make(chan struct{})
	slow := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	})
	p, err := New(Config{Routes: []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{slow.url()}}}}}},
		Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln, nil) }()
	if err := waitReady(p); err != nil {
		t.Fatal(err)
	}
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{code: resp.StatusCode, body: string(b)}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	r := <-res
	if r.err != nil || r.code != 200 || r.body != "done" {
		t.Fatalf("in-flight request got %d %q %v, want 200 done", r.code, r.body, r.err)
	}
	if err := <-served; err != http.ErrServerClosed {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
	if p.Ready() == nil {
		t.Error("Ready() = nil after Shutdown")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

func waitReady(p *Proxy) error {
	deadline := time.Now().Add(5 * time.Second)
	for p.Ready() != nil {
		if time.Now().After(deadline) {
			return p.Ready()
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// fakeGuard records what the proxy told it.
type fakeGuard struct {
	mu     sync.Mutex
	calls  int
	failed [2]int
}

func (g *fakeGuard) Observe(v int, _ time.Duration, failed bool) {
	g.mu.Lock()
	g.calls++
	if failed {
		g.failed[v]++
	}
	g.mu.Unlock()
}

func TestRecordsStatusAndFeedsObserver(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	canary := newBackend(t, "canary", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) })
	g := &fakeGuard{}
	_, base := startProxy(t, twoVersions(stable.url(), canary.url(), 50), Options{Observers: map[string]Observer{"app": g}})
	counts := hammer(t, base+"/", 200, 4, nil)
	if counts["stable"] != 100 || counts["status 500"] != 100 {
		t.Fatalf("answers %v, want 100 stable and 100 status 500", counts)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.calls != 200 || g.failed[0] != 0 || g.failed[1] != 100 {
		t.Errorf("guard saw %d calls, failures %v; want 200 and [0 100]", g.calls, g.failed)
	}
}

func TestMirror(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	shadow := newBackend(t, "shadow", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond) // slower than the user path: must not delay it
		http.Error(w, "shadow fails", 500)
	})
	cfg := Config{Routes: []Route{{Name: "app",
		Versions: []Version{{Name: "stable", Endpoints: []string{stable.url()}}, {Name: "shadow", Endpoints: []string{shadow.url()}}},
		Mirror:   &Mirror{Version: "shadow", Percent: 20}}}}
	p, base := startProxy(t, cfg, Options{})
	c := newClient()
	for range 100 {
		start := time.Now()
		if code, body := get(t, c, base+"/"); code != 200 || body != "stable" {
			t.Fatalf("user got %d %q, want 200 stable", code, body)
		}
		if d := time.Since(start); d > 40*time.Millisecond {
			t.Logf("slow user request: %v", d)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for shadow.n.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := shadow.n.Load(); got != 20 {
		t.Fatalf("shadow received %d of 100, want 20", got)
	}
	deadline = time.Now().Add(5 * time.Second)
	var snap rollout.Snapshot
	for time.Now().Before(deadline) {
		snap, _ = p.Snapshot("app")
		if snap.Versions[record.MirrorVersion].Requests == 20 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := snap.Versions[record.MirrorVersion]; m.Requests != 20 || m.Errors != 20 {
		t.Errorf("mirror recorded %d requests %d errors, want 20 and 20", m.Requests, m.Errors)
	}
	if s := snap.Versions["shadow"]; s.Requests != 0 {
		t.Errorf("shadow's user stats hold %d requests, want 0: mirrored traffic must stay apart", s.Requests)
	}
	if s := snap.Versions["stable"]; s.Requests != 100 || s.Errors != 0 {
		t.Errorf("stable recorded %+v, want 100 requests, 0 errors", s)
	}
}

// TestMirrorCopiesBodies mirrors every request with a body, over HTTP/1.1
// (a body in the lane's first read, and one beyond it) and over h2c: the
// mirror gets the same body as the user's version, and a body over
// mirrorBodyMax is not mirrored at all.
func TestMirrorCopiesBodies(t *testing.T) {
	echo := func(name string) *backend {
		return newBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %d %x", name, len(b), sha256.Sum256(b))
		})
	}
	var mu sync.Mutex
	var shadowGot []string
	stable := echo("stable")
	shadow := newBackend(t, "shadow", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		shadowGot = append(shadowGot, fmt.Sprintf("%d %x", len(b), sha256.Sum256(b)))
		mu.Unlock()
	})
	cfg := Config{Routes: []Route{{Name: "app",
		Versions: []Version{{Name: "stable", Endpoints: []string{stable.url()}}, {Name: "shadow", Endpoints: []string{shadow.url()}}},
		Mirror:   &Mirror{Version: "shadow", Percent: 100}}}}
	_, base := startProxy(t, cfg, Options{})
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	clients := map[string]*http.Client{"http/1.1": newClient(), "h2c": {Transport: &http.Transport{Protocols: &protos}, Timeout: 10 * time.Second}}
	for _, name := range []string{"http/1.1", "h2c"} {
		for _, size := range []int{10, 20 << 10, mirrorBodyMax + 1} {
			body := bytes.Repeat([]byte{byte('a' + size%26)}, size)
			sum := fmt.Sprintf("%d %x", size, sha256.Sum256(body))
			mu.Lock()
			shadowGot = nil
			mu.Unlock()
			resp, err := clients[name].Post(base+"/upload", "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Fatalf("%s %d bytes: %v", name, size, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != "stable "+sum {
				t.Fatalf("%s %d bytes: user got %q, want the stable echo of the whole body", name, size, got)
			}
			want := []string{sum}
			if size > mirrorBodyMax {
				want = nil
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				mu.Lock()
				n := len(shadowGot)
				mu.Unlock()
				if n >= len(want) || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond) // a copy that should not come has had its chance
			mu.Lock()
			if !slices.Equal(shadowGot, want) {
				t.Errorf("%s %d bytes: mirror got %v, want %v", name, size, shadowGot, want)
			}
			mu.Unlock()
		}
	}
}

func TestAccessLog(t *testing.T) {
	b := newBackend(t, "b", nil)
	var buf syncBuffer
	_, base := startProxy(t, Config{Routes: []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}}}, Options{AccessLog: &buf})
	get(t, newClient(), base+"/x?q=\"1\"")
	line := buf.String()
	for _, want := range []string{`"method":"GET"`, `"uri":"/x?q=\"1\""`, `"route":"r"`, `"version":"v"`, `"status":200`, `"proto":"HTTP/1.1"`} {
		if !strings.Contains(line, want) {
			t.Errorf("access log %q lacks %s", line, want)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestGuardCutsBrokenCanary is the acceptance scenario with the real guard:
// at 10% of ~2,000 req/s the canary turns to 100% HTTP 500, and the guard
// must stop canary traffic after at most 25 canary requests.
func TestGuardCutsBrokenCanary(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	var broken atomic.Bool
	var failedAt atomic.Int64
	canary := newBackend(t, "canary", func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			failedAt.Add(1)
			http.Error(w, "broken", 500)
			return
		}
		io.WriteString(w, "canary")
	})
	trig, err := guard.ParseTrigger("error_rate > 5%")
	if err != nil {
		t.Fatal(err)
	}
	var p *Proxy
	tripped := make(chan time.Time, 1)
	g, err := guard.New(guard.Config{Triggers: []guard.Trigger{trig}, Watch: 1}, func(guard.Trip) {
		if err := p.SetWeights("app", rollout.Weights{"stable": 100}); err != nil {
			t.Error(err)
		}
		tripped <- time.Now()
	})
	if err != nil {
		t.Fatal(err)
	}
	p, base := startProxy(t, twoVersions(stable.url(), canary.url(), 10), Options{Observers: map[string]Observer{"app": g}})
	var brokeAt time.Time
	sent, _, _ := loadFor(t, base+"/", 2000, 2*time.Second, func(stop <-chan struct{}) {
		select {
		case <-stop:
		case <-time.After(500 * time.Millisecond):
			brokeAt = time.Now()
			broken.Store(true)
		}
	})
	select {
	case at := <-tripped:
		t.Logf("%d requests; guard fired %v after the canary broke, after %d failed canary requests", sent, at.Sub(brokeAt), failedAt.Load())
	default:
		t.Fatalf("guard never fired; canary failed %d requests", failedAt.Load())
	}
	if n := failedAt.Load(); n > 25 {
		t.Errorf("canary served %d failing requests, want ≤ 25", n)
	}
	if w, _ := p.Weights("app"); w["canary"] != 0 {
		t.Errorf("weights after trip %v, want canary 0", w)
	}
}

func TestSmugglingAttemptIsContained(t *testing.T) {
	var paths sync.Map
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.Path, true)
		io.WriteString(w, "ok")
	})
	_, base := startProxy(t, Config{Routes: []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}}}, Options{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// CL.TE: a front end trusting Content-Length would forward the trailing
	// request as part of this one; the back end would then see two.
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	io.WriteString(conn, "POST /front HTTP/1.1\r\nHost: x\r\nContent-Length: "+fmt.Sprint(5+len(smuggled))+
		"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+smuggled)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("got %d close=%v, want 200 with the connection closed after it", resp.StatusCode, resp.Close)
	}
	time.Sleep(100 * time.Millisecond) // let a smuggled request, if any, reach the backend
	if _, ok := paths.Load("/smuggled"); ok || b.n.Load() != 1 {
		t.Fatalf("backend received %d requests (smuggled: %v), want only /front", b.n.Load(), ok)
	}
}

// healthGuard is a fake guard that also takes health-check rounds.
type healthGuard struct {
	fakeGuard
	failedRounds, okRounds atomic.Int64
}

func (g *healthGuard) HealthCheckFailed(int) { g.failedRounds.Add(1) }
func (g *healthGuard) HealthCheckOK(int)     { g.okRounds.Add(1) }

func TestActiveHealthChecksEjectAndFeedTheGuard(t *testing.T) {
	var sick atomic.Bool
	good := newBackend(t, "good", nil)
	flaky := newBackend(t, "flaky", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && sick.Load() {
			http.Error(w, "sick", 503)
			return
		}
		io.WriteString(w, "flaky")
	})
	sick.Store(true)
	g := &healthGuard{}
	cfg := Config{Routes: []Route{{Name: "app", Versions: []Version{{Name: "v",
		Endpoints:   []string{good.url(), flaky.url()},
		HealthCheck: &HealthCheck{Path: "/healthz", Interval: Duration(20 * time.Millisecond), Timeout: Duration(time.Second)}}}}}}
	_, base := startProxy(t, cfg, Options{Observers: map[string]Observer{"app": g}})
	waitUntil(t, func() bool { return g.failedRounds.Load() >= 2 }, "failed health rounds reach the guard")
	if counts := hammer(t, base+"/", 100, 4, nil); counts["good"] != 100 {
		t.Fatalf("with flaky down: %v, want all 100 on good", counts)
	}
	sick.Store(false)
	waitUntil(t, func() bool { return g.okRounds.Load() >= 2 }, "passing rounds after recovery")
	if counts := hammer(t, base+"/", 100, 4, nil); counts["good"] != 50 || counts["flaky"] != 50 {
		t.Fatalf("after recovery: %v, want round-robin 50/50", counts)
	}
}

func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

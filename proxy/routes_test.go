package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/deployment-guardian/guardian/rollout"
)

// h2cClient speaks HTTP/2 with prior knowledge, so requests take the
// net/http path of the proxy.
func h2cClient() *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 10 * time.Second}
}

// getRaw sends GET with header names exactly as given (no canonical case).
func getRaw(t *testing.T, c *http.Client, url string, h map[string]string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range h {
		req.Header[k] = []string{v}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return resp.Status
	}
	return string(b)
}

func TestSetRoutesMatchRules(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	canary := newBackend(t, "canary", nil)
	cfg := twoVersions(stable.url(), canary.url(), 0)
	cfg.Routes[0].Sticky.Header = "X-User"
	p, base := startProxy(t, cfg, Options{})
	routes := []rollout.Route{
		{Name: "ab", Version: "canary", Match: []rollout.MatchRule{
			{Source: "header", Name: "X-Variant", Op: "exact", Value: "b"},
		}},
		{Name: "beta", Version: "canary", Match: []rollout.MatchRule{
			{Source: "cookie", Name: "plan", Op: "prefix", Value: "beta-"},
			{Source: "query", Name: "ui", Op: "regex", Value: "v[0-9]+"},
		}},
	}
	if err := p.SetRoutes("app", routes); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path string
		h          map[string]string
		want       string
	}{
		{"header exact", "/", map[string]string{"X-Variant": "b"}, "canary"},
		{"header name in any case", "/", map[string]string{"x-vARIANT": "b"}, "canary"},
		{"header value differs", "/", map[string]string{"X-Variant": "bb"}, "stable"},
		{"no header", "/", nil, "stable"},
		{"cookie prefix and query regex", "/?ui=v12", map[string]string{"Cookie": "a=1; plan=beta-2024"}, "canary"},
		{"regex is anchored", "/?ui=xv12", map[string]string{"Cookie": "plan=beta-2024"}, "stable"},
		{"one rule of two", "/?ui=v1", map[string]string{"Cookie": "plan=gold"}, "stable"},
		{"sticky user still on stable at 0%", "/", map[string]string{"X-User": "u1"}, "stable"},
	}
	for _, proto := range []struct {
		name string
		c    *http.Client
	}{{"http1", newClient()}, {"h2c", h2cClient()}} {
		for _, tc := range cases {
			t.Run(proto.name+"/"+tc.name, func(t *testing.T) {
				if got := getRaw(t, proto.c, base+tc.path, tc.h); got != tc.want {
					t.Errorf("got %s, want %s", got, tc.want)
				}
			})
		}
	}
	got, _, _ := p.MatchRoutes("app")
	if len(got) != 2 || got[0].Name != "ab" || got[1].Name != "beta" {
		t.Errorf("MatchRoutes = %+v, want the two routes set", got)
	}
	if err := p.SetRoutes("app", nil); err != nil {
		t.Fatal(err)
	}
	if got := getRaw(t, newClient(), base+"/", map[string]string{"X-Variant": "b"}); got != "stable" {
		t.Errorf("after clearing the routes X-Variant: b went to %s, want stable", got)
	}
}

func TestSetRoutesRefusesBadRulesWhole(t *testing.T) {
	p, err := New(twoVersions("127.0.0.1:1", "127.0.0.1:2", 0), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	good := rollout.Route{Name: "ok", Version: "canary", Match: []rollout.MatchRule{{Source: "header", Name: "X-A", Op: "exact", Value: "1"}}}
	if err := p.SetRoutes("app", []rollout.Route{good}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		route rollout.Route
		want  string
	}{
		{"unknown version", rollout.Route{Name: "x", Version: "green", Match: good.Match}, `version: unknown version "green"`},
		{"bad regex", rollout.Route{Name: "x", Version: "canary", Match: []rollout.MatchRule{{Source: "query", Name: "q", Op: "regex", Value: "("}}}, "bad regular expression"},
		{"bad source", rollout.Route{Name: "x", Version: "canary", Match: []rollout.MatchRule{{Source: "body", Name: "q", Op: "exact"}}}, `"body" is not header, cookie or query`},
		{"bad op", rollout.Route{Name: "x", Version: "canary", Match: []rollout.MatchRule{{Source: "header", Name: "q", Op: "suffix"}}}, `"suffix" is not exact, prefix or regex`},
		{"no rules", rollout.Route{Name: "x", Version: "canary"}, "at least one rule"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.SetRoutes("app", []rollout.Route{good, tc.route})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SetRoutes = %v, want an error containing %q", err, tc.want)
			}
			if got, _, _ := p.MatchRoutes("app"); len(got) != 1 || got[0].Name != "ok" {
				t.Errorf("a refused SetRoutes changed the routes to %+v", got)
			}
		})
	}
	if err := p.SetRoutes("nope", nil); err == nil {
		t.Error("SetRoutes on an unknown route succeeded")
	}
	for _, pct := range []int{-1, 101} {
		if err := p.SetMirror("app", pct); err == nil {
			t.Errorf("SetMirror(%d) succeeded", pct)
		}
	}
}

func TestSetMirrorShadowsTheCanary(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	canary := newBackend(t, "canary", nil)
	p, base := startProxy(t, twoVersions(stable.url(), canary.url(), 0), Options{})
	if err := p.SetMirror("app", 25); err != nil {
		t.Fatal(err)
	}
	c := newClient()
	for range 200 {
		if code, body := get(t, c, base+"/"); code != 200 || body != "stable" {
			t.Fatalf("user got %d %q, want 200 stable: mirroring must not change answers", code, body)
		}
	}
	waitUntil(t, func() bool {
		s, _ := p.Snapshot("app")
		return s.Versions[record.MirrorVersion].Requests == 50
	}, "50 mirrored requests recorded")
	if got := canary.n.Load(); got != 50 {
		t.Errorf("canary received %d shadow requests of 200 at 25%%, want 50", got)
	}
	s, _ := p.Snapshot("app")
	if s.Versions["canary"].Requests != 0 || s.Versions["stable"].Requests != 200 {
		t.Errorf("user stats stable=%d canary=%d, want 200 and 0", s.Versions["stable"].Requests, s.Versions["canary"].Requests)
	}
	if _, m, _ := p.MatchRoutes("app"); m != 25 {
		t.Errorf("MatchRoutes mirror = %d, want 25", m)
	}
	if err := p.SetMirror("app", 0); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		get(t, c, base+"/")
	}
	if got := canary.n.Load(); got != 50 {
		t.Errorf("canary received %d after mirroring stopped, want still 50", got)
	}
}

func TestReloadKeepsMatchRoutesAndMirror(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	canary := newBackend(t, "canary", nil)
	cfg := twoVersions(stable.url(), canary.url(), 0)
	p, base := startProxy(t, cfg, Options{})
	if err := p.SetRoutes("app", []rollout.Route{{Name: "ab", Version: "canary",
		Match: []rollout.MatchRule{{Source: "header", Name: "X-Variant", Op: "exact", Value: "b"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetMirror("app", 10); err != nil {
		t.Fatal(err)
	}
	next := cfg
	next.Routes = slices.Clone(cfg.Routes) // the proxy holds cfg's slice
	next.Routes[0].RequestTimeout = Duration(30 * time.Second)
	if err := p.Reload(next); err != nil {
		t.Fatal(err)
	}
	routes, mirror, _ := p.MatchRoutes("app")
	if len(routes) != 1 || mirror != 10 {
		t.Fatalf("after reload: routes %+v mirror %d, want the route and 10", routes, mirror)
	}
	if got := getRaw(t, newClient(), base+"/", map[string]string{"X-Variant": "b"}); got != "canary" {
		t.Errorf("after reload X-Variant: b went to %s, want canary", got)
	}
}

func TestRoutesBoundToListeners(t *testing.T) {
	a := newBackend(t, "a", nil)
	b := newBackend(t, "b", nil)
	lnA, _ := net.Listen("tcp", "127.0.0.1:0")
	lnB, _ := net.Listen("tcp", "127.0.0.1:0")
	addrA, addrB := lnA.Addr().String(), lnB.Addr().String()
	// Same match on both: without binding, the first route would take
	// every request of both listeners.
	cfg := Config{
		Listeners: []Listener{{Addr: addrA}, {Addr: addrB}},
		Routes: []Route{
			{Name: "a", Listeners: []string{addrA}, Versions: []Version{{Name: "stable", Endpoints: []string{a.url()}}}},
			{Name: "b", Listeners: []string{addrB}, Versions: []Version{{Name: "stable", Endpoints: []string{b.url()}}}},
		},
	}
	p, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range []net.Listener{lnA, lnB} {
		go p.Serve(ln, nil)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	for _, c := range []*http.Client{newClient(), h2cClient()} {
		for range 5 {
			if got := getRaw(t, c, "http://"+addrA+"/", nil); got != "a" {
				t.Fatalf("listener %s answered by %s, want a", addrA, got)
			}
			if got := getRaw(t, c, "http://"+addrB+"/", nil); got != "b" {
				t.Fatalf("listener %s answered by %s, want b", addrB, got)
			}
		}
	}
	bad := cfg
	bad.Routes = []Route{{Name: "x", Listeners: []string{"127.0.0.1:1"}, Versions: []Version{{Name: "v", Endpoints: []string{a.url()}}}}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "routes[0].listeners[0]") {
		t.Errorf("Validate of a route bound to an unknown listener = %v, want routes[0].listeners[0] named", err)
	}
}

func TestNoRoutesOnlyWithoutListeners(t *testing.T) {
	p, err := New(Config{}, Options{})
	if err != nil {
		t.Fatalf("New with no listener and no route: %v", err)
	}
	if len(p.Routes()) != 0 {
		t.Errorf("Routes = %v, want none", p.Routes())
	}
	cfg := Config{Listeners: []Listener{{Addr: "127.0.0.1:0"}}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "routes: at least one route") {
		t.Errorf("Validate of a listener without routes = %v, want routes required", err)
	}
}

func TestListenerFor(t *testing.T) {
	cfg := Config{Listeners: []Listener{{Addr: "127.0.0.1:8080"}, {Addr: ":9000"}, {Addr: "localhost:7000"}, {Addr: "10.0.0.1:7000"}}}
	for _, tc := range []struct {
		addr string
		want int
	}{
		{"127.0.0.1:8080", 0},
		{"[::]:9000", 1},
		{"127.0.0.1:7000", -1}, // two listeners on port 7000: ambiguous
		{"127.0.0.1:1", -1},
	} {
		if got := listenerFor(cfg, tc.addr); got != tc.want {
			t.Errorf("listenerFor(%s) = %d, want %d", tc.addr, got, tc.want)
		}
	}
}

func TestRoutesBoundToATLSListener(t *testing.T) {
	plain := newBackend(t, "plain", nil)
	secure := newBackend(t, "secure", nil)
	tc, pool := selfSigned(t)
	lnPlain, _ := net.Listen("tcp", "127.0.0.1:0")
	lnTLS, _ := net.Listen("tcp", "127.0.0.1:0")
	addrPlain, addrTLS := lnPlain.Addr().String(), lnTLS.Addr().String()
	cfg := Config{
		Listeners: []Listener{{Addr: addrPlain}, {Addr: addrTLS}},
		Routes: []Route{
			{Name: "plain", Listeners: []string{addrPlain}, Versions: []Version{{Name: "v", Endpoints: []string{plain.url()}}}},
			{Name: "secure", Listeners: []string{addrTLS}, Versions: []Version{{Name: "v", Endpoints: []string{secure.url()}}}},
		},
	}
	p, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(lnPlain, nil)
	go p.Serve(lnTLS, tc)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	for _, h2 := range []bool{true, false} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		if got := getRaw(t, c, "https://"+addrTLS+"/", nil); got != "secure" {
			t.Errorf("TLS listener (h2 %v) answered by %s, want secure", h2, got)
		}
	}
	if got := getRaw(t, newClient(), "http://"+addrPlain+"/", nil); got != "plain" {
		t.Errorf("plain listener answered by %s, want plain", got)
	}
}

// Package proxy is Guardian's data plane: an edge reverse proxy that splits
// each route's traffic between versions by cohort rules, sticky user keys and
// weights, forwards it, and records every request in the path.
//
// One listener sorts connections by protocol. HTTP/1.1, plain or over TLS,
// is served by the lane (h1.go): its own keep-alive loop and pooled
// upstream client, for a strict subset of HTTP/1.1 that covers ordinary
// requests; a connection with any other request is handed, bytes and all,
// to a fasthttp server with a fasthttp.HostClient per endpoint. HTTP/2 (TLS ALPN h2, or the h2c prior-knowledge
// preface) is handed to a net/http server and forwarded by
// httputil.ReverseProxy, which carries gRPC's trailers and streams. WebSocket
// upgrades are hijacked and copied both ways. Every path shares routing,
// version choice, the recorder and the guard.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployment-guardian/guardian/proxy/admin"
	"github.com/deployment-guardian/guardian/proxy/guard"
	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/deployment-guardian/guardian/rollout"
)

// Observer sees every completed user request of a route: the guard.
// Observe runs on the request path and must be fast and safe for concurrent
// use.
type Observer interface {
	Observe(version int, latency time.Duration, failed bool)
}

// Options are the proxy's hooks. The zero value is valid; each field states
// its default.
type Options struct {
	// Logger receives error and lifecycle lines. Nil means slog.Default().
	Logger *slog.Logger
	// Dial opens upstream connections for both the HTTP/1.1 and the HTTP/2
	// path. Nil means a net.Dialer with Timeouts.Connect.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ErrorHandler is told about every request the proxy answered itself
	// because the upstream failed or the route had no endpoint; the status
	// has already been chosen (502 refused/reset, 503 no endpoint, 504
	// timeout). Nil means one slog warning line per failure.
	ErrorHandler func(e *ForwardError)
	// Observers maps route names to their guard. A route without one is
	// only recorded.
	Observers map[string]Observer
	// Metrics, when set, exposes every route's recorder to Prometheus and
	// follows reloads.
	Metrics *record.Metrics
	// AccessLog overrides Config.AccessLog.Path with a writer. Nil means
	// the path from the config (off when empty).
	AccessLog io.Writer
}

// ForwardError describes one failed forwarding attempt.
type ForwardError struct {
	Route    string
	Version  string
	Endpoint string // empty when the pool had none
	Method   string
	Path     string
	Status   int // the status the proxy answered with
	Kind     record.ErrorKind
	Err      error
}

func (e *ForwardError) Error() string {
	return fmt.Sprintf("route %s version %s endpoint %s: %s %s: %d (%s): %v",
		e.Route, e.Version, e.Endpoint, e.Method, e.Path, e.Status, e.Kind, e.Err)
}

// Proxy is the data plane. It implements rollout.TrafficRouter (SetWeights),
// rollout.MetricSource (Snapshot) and the admin API's DataPlane.
type Proxy struct {
	opts   Options
	log    *slog.Logger
	state  atomic.Pointer[state]
	writes sync.Mutex // serialises SetWeights and Reload; readers take no lock

	// endpoints are shared across routes and reloads by their raw spec.
	endpoints map[string]*endpoint

	fast *fastServer
	h2   *h2Server
	lane h1Lane
	alog *accessLog

	mu        sync.Mutex
	listeners []net.Listener
	serving   bool
	closing   atomic.Bool
	hijacked  map[net.Conn]struct{}
	health    *healthRun // probe loops of the current state, once serving
}

// state is one immutable configuration generation.
type state struct {
	cfg    Config
	routes []*route
	byName map[string]*route
	// bound is set when some route is bound to listeners: only then does
	// a request's listener matter.
	bound bool
}

// route is a compiled Route. Everything but the split pointer is immutable.
type route struct {
	name       string
	host       string
	prefix     string
	versions   []string
	pools      []*pool
	cohorts    []cohortRule
	stickyHdr  string
	stickyCook string
	split      atomic.Pointer[split]
	cfgWeights rollout.Weights
	// dyn holds the match routes and mirror a rollout sets; swapped
	// whole like split.
	dyn       atomic.Pointer[dynamic]
	listeners []int // indexes into Config.Listeners; empty = all
	timeout   time.Duration
	stream    bool
	// laneOK: every endpoint speaks HTTP/1.1, so the lane can forward
	// the route's requests; h2c endpoints need the fasthttp path's bridge.
	laneOK bool
	rec    *record.Recorder
	obs    Observer
}

// New builds a proxy for cfg. It validates cfg, opens no socket and starts
// no goroutine; serve with ListenAndServe or Serve.
func New(cfg Config, opts Options) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Proxy{
		opts:      opts,
		log:       opts.Logger,
		endpoints: map[string]*endpoint{},
		hijacked:  map[net.Conn]struct{}{},
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	var err error
	if p.alog, err = openAccessLog(cfg.AccessLog.Path, opts.AccessLog); err != nil {
		return nil, fmt.Errorf("accessLog.path: %w", err)
	}
	st, err := p.compile(cfg, nil)
	if err != nil {
		return nil, err
	}
	p.state.Store(st)
	p.publishMetrics(nil, st)
	t := cfg.Timeouts.withDefaults()
	p.fast = newFastServer(p, cfg, t)
	p.h2 = newH2Server(p, t)
	return p, nil
}

// compile turns a validated config into a state, reusing endpoints, recorders
// and current weights from prev where they still apply.
func (p *Proxy) compile(cfg Config, prev *state) (*state, error) {
	t := cfg.Timeouts.withDefaults()
	st := &state{cfg: cfg, byName: map[string]*route{}}
	// Endpoints no longer named are dropped; requests still using them
	// finish, and their idle connections close: the lane's here, the
	// fasthttp clients' with their cleaner.
	used := map[string]*endpoint{}
	defer func() {
		for key, e := range p.endpoints {
			if used[key] != e {
				e.dropped.Store(true)
				e.h1.expire(time.Now().Add(time.Hour))
			}
		}
		p.endpoints = used
	}()
	for _, rc := range cfg.Routes {
		r := &route{
			name:       rc.Name,
			host:       strings.ToLower(rc.Match.Host),
			prefix:     rc.Match.PathPrefix,
			stickyHdr:  rc.Sticky.Header,
			stickyCook: rc.Sticky.Cookie,
			timeout:    time.Duration(rc.RequestTimeout),
			stream:     rc.StreamResponseBody,
			obs:        p.opts.Observers[rc.Name],
			cfgWeights: rc.Weights,
			listeners:  listenerIndexes(cfg, rc.Listeners),
			laneOK:     true,
		}
		st.bound = st.bound || len(r.listeners) > 0
		if r.prefix == "" {
			r.prefix = "/"
		}
		if r.timeout == 0 {
			r.timeout = time.Duration(t.Request)
		}
		idx := map[string]int{}
		for i, v := range rc.Versions {
			idx[v.Name] = i
			r.versions = append(r.versions, v.Name)
			pl := &pool{least: v.LB == LeastRequest}
			for _, raw := range v.Endpoints {
				spec, _ := parseEndpoint(raw) // checked by Validate
				key := spec.scheme + "://" + spec.addr
				e := used[key]
				if e == nil {
					e = p.endpoints[key]
				}
				if e == nil {
					e = newEndpoint(raw, spec, t, p.dialFunc(t))
				}
				used[key] = e
				pl.eps = append(pl.eps, e)
				r.laneOK = r.laneOK && spec.scheme != "h2c"
			}
			r.pools = append(r.pools, pl)
		}
		for _, c := range rc.Cohorts {
			cr := cohortRule{value: []byte(c.Value), anyVal: c.Value == "", version: idx[c.Version]}
			switch {
			case c.Header != "":
				cr.kind, cr.name = cohortHeader, c.Header
			case c.Cookie != "":
				cr.kind, cr.name = cohortCookie, c.Cookie
			default:
				cr.kind, cr.name = cohortQuery, c.Query
			}
			cr.nameB = []byte(cr.name)
			r.cohorts = append(r.cohorts, cr)
		}
		var cfgMirror *mirrorPolicy
		if m := rc.Mirror; m != nil && m.Percent > 0 {
			cfgMirror = &mirrorPolicy{version: idx[m.Version], percent: uint64(m.Percent)}
		}
		w := rc.Weights
		if len(w) == 0 {
			w = rollout.Weights{r.versions[0]: 100}
		}
		var old *route
		if prev != nil {
			old = prev.byName[r.name]
		}
		if old != nil && slices.Equal(old.versions, r.versions) {
			r.rec = old.rec
			// Keep the weights the rollout has set unless the operator
			// changed them in the file.
			if maps := weightsEqual(old.cfgWeights, rc.Weights); maps {
				w = old.split.Load().weightsOf(old.versions)
			}
		} else {
			r.rec = record.New(r.versions)
		}
		r.split.Store(newSplit(r.versions, w))
		p.carryDynamic(r, old, cfgMirror)
		st.routes = append(st.routes, r)
		st.byName[r.name] = r
	}
	return st, nil
}

func weightsEqual(a, b rollout.Weights) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func (p *Proxy) dialFunc(t Timeouts) func(addr string) (net.Conn, error) {
	if p.opts.Dial == nil {
		return nil
	}
	connect := time.Duration(t.Connect)
	return func(addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), connect)
		defer cancel()
		return p.opts.Dial(ctx, "tcp", addr)
	}
}

func (p *Proxy) publishMetrics(prev, st *state) {
	m := p.opts.Metrics
	if m == nil {
		return
	}
	for _, r := range st.routes {
		m.Add(r.name, r.rec)
	}
	if prev != nil {
		for _, r := range prev.routes {
			if st.byName[r.name] == nil {
				m.Remove(r.name)
			}
		}
	}
}

// Reload swaps in cfg atomically: requests in flight finish on the routes
// they started on, new requests see the new routes. An invalid cfg is
// refused whole. A route keeps its recorder when its versions are unchanged,
// and its current weights unless cfg changes that route's weights.
// Listeners and the access log are fixed at New; a cfg that changes the
// listeners is refused.
func (p *Proxy) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	p.writes.Lock()
	defer p.writes.Unlock()
	prev := p.state.Load()
	if !slices.EqualFunc(prev.cfg.Listeners, cfg.Listeners, func(a, b Listener) bool {
		return a.Addr == b.Addr && (a.TLS == nil) == (b.TLS == nil) && (a.TLS == nil || *a.TLS == *b.TLS)
	}) {
		return errors.New("listeners: cannot change on reload; restart the proxy")
	}
	st, err := p.compile(cfg, prev)
	if err != nil {
		return err
	}
	p.state.Store(st)
	p.publishMetrics(prev, st)
	p.mu.Lock()
	var old *healthRun
	if p.serving && !p.closing.Load() {
		old, p.health = p.health, p.startHealth(st)
	}
	p.mu.Unlock()
	old.halt()
	p.log.Info("proxy: configuration reloaded", "routes", len(st.routes))
	return nil
}

// SetWeights sets a route's split. w names versions of the route with
// percentages summing to 100; versions left out get 0. It takes effect for
// the next request and never waits for requests in flight.
func (p *Proxy) SetWeights(routeName string, w rollout.Weights) error {
	p.writes.Lock()
	defer p.writes.Unlock()
	r := p.state.Load().byName[routeName]
	if r == nil {
		return fmt.Errorf("proxy: unknown route %q", routeName)
	}
	known := make(map[string]bool, len(r.versions))
	for _, v := range r.versions {
		known[v] = true
	}
	if err := checkWeights(w, known); err != nil {
		return fmt.Errorf("proxy: route %s: %w", routeName, err)
	}
	r.split.Store(newSplit(r.versions, w))
	return nil
}

// Weights returns a route's current split.
func (p *Proxy) Weights(routeName string) (rollout.Weights, bool) {
	r := p.state.Load().byName[routeName]
	if r == nil {
		return nil, false
	}
	return r.split.Load().weightsOf(r.versions), true
}

// Snapshot returns the route's cumulative numbers from its recorder.
func (p *Proxy) Snapshot(routeName string) (rollout.Snapshot, error) {
	r := p.state.Load().byName[routeName]
	if r == nil {
		return rollout.Snapshot{}, fmt.Errorf("proxy: unknown route %q", routeName)
	}
	return r.rec.Snapshot(), nil
}

// Recorder returns the route's recorder, for callers that keep windows or
// export it.
func (p *Proxy) Recorder(routeName string) (*record.Recorder, bool) {
	r := p.state.Load().byName[routeName]
	if r == nil {
		return nil, false
	}
	return r.rec, true
}

// Routes lists the route names in config order.
func (p *Proxy) Routes() []string {
	st := p.state.Load()
	out := make([]string, len(st.routes))
	for i, r := range st.routes {
		out[i] = r.name
	}
	return out
}

// Versions lists a route's versions in config order (the recorder's and
// the guard's version indexes).
func (p *Proxy) Versions(routeName string) ([]string, bool) {
	r := p.state.Load().byName[routeName]
	if r == nil {
		return nil, false
	}
	return slices.Clone(r.versions), true
}

// Ready reports whether the proxy is serving and not shutting down.
func (p *Proxy) Ready() error {
	if p.closing.Load() {
		return errors.New("proxy: shutting down")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.serving {
		return errors.New("proxy: not serving yet")
	}
	return nil
}

// Addrs returns the addresses of the listeners being served.
func (p *Proxy) Addrs() []net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]net.Addr, len(p.listeners))
	for i, ln := range p.listeners {
		out[i] = ln.Addr()
	}
	return out
}

// ListenAndServe opens every configured listener and serves until Shutdown;
// it then returns http.ErrServerClosed.
func (p *Proxy) ListenAndServe() error {
	cfg := p.state.Load().cfg
	if len(cfg.Listeners) == 0 {
		return errors.New("proxy: no listeners configured")
	}
	errc := make(chan error, len(cfg.Listeners))
	var lns []net.Listener
	for i, l := range cfg.Listeners {
		var tc *tls.Config
		if l.TLS != nil {
			cert, err := tls.LoadX509KeyPair(l.TLS.CertFile, l.TLS.KeyFile)
			if err != nil {
				closeAll(lns)
				return fmt.Errorf("listeners[%d].tls: %w", i, err)
			}
			tc = &tls.Config{Certificates: []tls.Certificate{cert}}
		}
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			closeAll(lns)
			return fmt.Errorf("listeners[%d].addr: %w", i, err)
		}
		lns = append(lns, ln)
		go func() { errc <- p.serve(ln, tc, i) }()
	}
	return <-errc
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// Serve accepts connections on ln until Shutdown. With tc set it terminates
// TLS, offering h2 and http/1.1 (tc.NextProtos is overwritten in a copy).
// It returns http.ErrServerClosed after Shutdown. Routes bound to
// listeners (Route.Listeners) see ln as the configured listener with ln's
// address, or else the only one with its port.
func (p *Proxy) Serve(ln net.Listener, tc *tls.Config) error {
	return p.serve(ln, tc, listenerFor(p.state.Load().cfg, ln.Addr().String()))
}

func (p *Proxy) serve(ln net.Listener, tc *tls.Config, lis int) error {
	if p.closing.Load() {
		return http.ErrServerClosed
	}
	p.mu.Lock()
	first := !p.serving
	p.serving = true
	p.listeners = append(p.listeners, ln)
	if first {
		p.health = p.startHealth(p.state.Load())
	}
	p.mu.Unlock()
	if first {
		go p.fast.serve()
		go p.h2.serve()
	}
	if tc != nil {
		tc = tc.Clone()
		tc.NextProtos = []string{"h2", "http/1.1"}
		if tc.MinVersion == 0 {
			tc.MinVersion = tls.VersionTLS12
		}
	}
	return p.acceptLoop(ln, tc, lis)
}

// Shutdown stops accepting, lets requests in flight finish, then closes idle
// connections; hijacked (WebSocket) connections are closed when ctx ends or
// once the HTTP servers are drained. It returns ctx's error if ctx ends first.
func (p *Proxy) Shutdown(ctx context.Context) error {
	if !p.closing.CompareAndSwap(false, true) {
		return errors.New("proxy: already shut down")
	}
	p.mu.Lock()
	closeAll(p.listeners)
	serving := p.serving
	health := p.health
	p.health = nil
	p.mu.Unlock()
	health.halt()
	var errs []error
	if serving {
		var wg sync.WaitGroup
		wg.Add(3)
		var fastErr, h2Err, laneErr error
		go func() {
			defer wg.Done()
			if !p.lane.shutdown(ctx.Done()) {
				laneErr = ctx.Err()
			}
		}()
		// A connection the lane hands over once the fasthttp server has
		// stopped is closed, like one accepted after Shutdown.
		go func() { defer wg.Done(); fastErr = p.fast.shutdown(ctx) }()
		go func() { defer wg.Done(); h2Err = p.h2.shutdown(ctx) }()
		wg.Wait()
		errs = append(errs, fastErr, h2Err, laneErr)
	}
	p.mu.Lock()
	for c := range p.hijacked {
		c.Close()
	}
	p.mu.Unlock()
	if err := p.alog.close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (p *Proxy) trackHijacked(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		if p.closing.Load() {
			return false
		}
		p.hijacked[c] = struct{}{}
	} else {
		delete(p.hijacked, c)
	}
	return true
}

// match finds the route for a request that arrived on listener lis (an
// index into Config.Listeners, -1 when unknown), host (port stripped, any
// case) and path.
func (st *state) match(lis int, host, path []byte) *route {
	if i := lastColon(host); i >= 0 {
		host = host[:i]
	}
	for _, r := range st.routes {
		if r.host != "" && !equalFoldASCII(host, r.host) {
			continue
		}
		if len(r.listeners) > 0 && !slices.Contains(r.listeners, lis) {
			continue
		}
		if len(path) >= len(r.prefix) && string(path[:len(r.prefix)]) == r.prefix {
			return r
		}
	}
	return nil
}

// lastColon finds a port separator, ignoring colons inside an IPv6 literal.
func lastColon(h []byte) int {
	for i := len(h) - 1; i >= 0; i-- {
		switch h[i] {
		case ':':
			return i
		case ']':
			return -1
		}
	}
	return -1
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// report hands a forwarding failure to the error hook.
func (p *Proxy) report(e *ForwardError) {
	if h := p.opts.ErrorHandler; h != nil {
		h(e)
		return
	}
	p.log.Warn("proxy: upstream failed", "route", e.Route, "version", e.Version,
		"endpoint", e.Endpoint, "method", e.Method, "path", e.Path,
		"status", e.Status, "kind", e.Kind.String(), "err", e.Err)
}

// finish records a completed user request and feeds the guard.
func (r *route) finish(v int, lat time.Duration, status int, kind record.ErrorKind) {
	if kind == record.None && status >= 500 {
		kind = record.Upstream5xx
	}
	r.rec.Record(v, lat, status, kind)
	if r.obs != nil {
		r.obs.Observe(v, lat, kind != record.None)
	}
}

// Interface guards: the proxy is the rollout engine's in-process traffic
// router and metric source, and the admin API's data plane.
var (
	_ rollout.TrafficRouter = (*Proxy)(nil)
	_ rollout.MetricSource  = (*Proxy)(nil)
	_ admin.DataPlane       = (*Proxy)(nil)
	_ Observer              = (*guard.Guard)(nil)
)

package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/deployment-guardian/guardian/rollout"
)

// Match-rule operators, as rollout.MatchRule.Op spells them.
const (
	opExact  = "exact"
	opPrefix = "prefix"
	opRegex  = "regex"
)

// matchRule is a compiled rollout.MatchRule.
type matchRule struct {
	kind  cohortKind
	name  string
	nameB []byte
	op    string
	value []byte
	re    *regexp.Regexp // op regex: anchored, compiled once by SetRoutes
}

func (m *matchRule) test(v []byte, present bool) bool {
	if !present {
		return false
	}
	switch m.op {
	case opPrefix:
		return bytes.HasPrefix(v, m.value)
	case opRegex:
		return m.re.Match(v)
	default:
		return bytes.Equal(v, m.value)
	}
}

// matchRoute is a compiled rollout.Route: every rule must match.
type matchRoute struct {
	rules   []matchRule
	version int
}

// dynamic is what a running rollout sets on a route besides its weights:
// match routes (cohorts, A/B) and the mirror share. It is immutable and
// swapped whole, like split, so the request path takes no lock and never
// sees half a change.
type dynamic struct {
	spec   []rollout.Route // as given to SetRoutes, kept across reloads
	routes []matchRoute
	mirror *mirrorPolicy
	// mirrorSet records that SetMirror overrides the config's mirror.
	mirrorSet bool
}

// compileRoutes checks routes against a route's versions and compiles
// their rules. Regular expressions match the whole value (RE2 syntax), as
// in Istio and Gateway API header matches.
func compileRoutes(routes []rollout.Route, versions []string) ([]matchRoute, error) {
	out := make([]matchRoute, 0, len(routes))
	var errs []error
	for i, rt := range routes {
		f := fmt.Sprintf("routes[%d] (%s)", i, rt.Name)
		v := slices.Index(versions, rt.Version)
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s.version: unknown version %q", f, rt.Version))
		}
		if len(rt.Match) == 0 {
			errs = append(errs, fmt.Errorf("%s.match: at least one rule is required", f))
		}
		mr := matchRoute{version: v}
		for j, r := range rt.Match {
			rf := fmt.Sprintf("%s.match[%d]", f, j)
			c := matchRule{name: r.Name, nameB: []byte(r.Name), op: r.Op, value: []byte(r.Value)}
			switch r.Source {
			case "header":
				c.kind = cohortHeader
			case "cookie":
				c.kind = cohortCookie
			case "query":
				c.kind = cohortQuery
			default:
				errs = append(errs, fmt.Errorf("%s.source: %q is not header, cookie or query", rf, r.Source))
			}
			if r.Name == "" {
				errs = append(errs, fmt.Errorf("%s.name: required", rf))
			}
			switch r.Op {
			case opExact, opPrefix:
			case opRegex:
				re, err := regexp.Compile(`^(?:` + r.Value + `)$`)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s.value: bad regular expression: %v", rf, err))
				}
				c.re = re
			default:
				errs = append(errs, fmt.Errorf("%s.op: %q is not exact, prefix or regex", rf, r.Op))
			}
			mr.rules = append(mr.rules, c)
		}
		out = append(out, mr)
	}
	return out, errors.Join(errs...)
}

// mirrorVersion is where SetMirror sends copies: the version named
// "canary", else the last listed (the newest).
func (r *route) mirrorVersion() int {
	if i := slices.Index(r.versions, "canary"); i >= 0 {
		return i
	}
	return len(r.versions) - 1
}

// SetRoutes replaces a route's match routes: requests matching every rule
// of one of them go to its version whatever the weights (feature-flag
// cohorts, A/B header routes). They are tried in order after the config's
// cohorts and before sticky keys and weights. Nil or empty clears them.
// Regular expressions are compiled here, once; the change is atomic and
// takes effect for the next request. Reload keeps them.
func (p *Proxy) SetRoutes(routeName string, routes []rollout.Route) error {
	p.writes.Lock()
	defer p.writes.Unlock()
	r := p.state.Load().byName[routeName]
	if r == nil {
		return fmt.Errorf("proxy: unknown route %q", routeName)
	}
	compiled, err := compileRoutes(routes, r.versions)
	if err != nil {
		return fmt.Errorf("proxy: route %s: %w", routeName, err)
	}
	d := *r.dyn.Load()
	d.spec, d.routes = slices.Clone(routes), compiled
	r.dyn.Store(&d)
	return nil
}

// SetMirror copies percent (0..100) of a route's requests to its canary
// (the version named "canary", else the last listed). Copies are sent
// asynchronously, their responses discarded and recorded as mirror
// traffic, never as the version's user traffic. Zero stops mirroring. It
// overrides the config's mirror and survives reloads.
func (p *Proxy) SetMirror(routeName string, percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("proxy: route %s: mirror percent %d is not within 0..100", routeName, percent)
	}
	p.writes.Lock()
	defer p.writes.Unlock()
	r := p.state.Load().byName[routeName]
	if r == nil {
		return fmt.Errorf("proxy: unknown route %q", routeName)
	}
	d := *r.dyn.Load()
	d.mirror, d.mirrorSet = nil, true
	if percent > 0 {
		d.mirror = &mirrorPolicy{version: r.mirrorVersion(), percent: uint64(percent)}
	}
	r.dyn.Store(&d)
	return nil
}

// MatchRoutes returns the match routes last set on a route and its mirror
// percentage.
func (p *Proxy) MatchRoutes(routeName string) (routes []rollout.Route, mirror int, ok bool) {
	r := p.state.Load().byName[routeName]
	if r == nil {
		return nil, 0, false
	}
	d := r.dyn.Load()
	if d.mirror != nil {
		mirror = int(d.mirror.percent)
	}
	return slices.Clone(d.spec), mirror, true
}

// carryDynamic gives a recompiled route the match routes and mirror its
// previous generation had, so a reload never undoes a running rollout.
func (p *Proxy) carryDynamic(r *route, old *route, cfgMirror *mirrorPolicy) {
	d := &dynamic{mirror: cfgMirror}
	if old != nil {
		od := old.dyn.Load()
		if compiled, err := compileRoutes(od.spec, r.versions); err == nil {
			d.spec, d.routes = od.spec, compiled
		} else if len(od.spec) > 0 {
			p.log.Warn("proxy: match routes dropped on reload: their versions are gone", "route", r.name, "err", err)
		}
		if od.mirrorSet {
			d.mirrorSet = true
			d.mirror = nil
			if od.mirror != nil {
				d.mirror = &mirrorPolicy{version: r.mirrorVersion(), percent: od.mirror.percent}
			}
		}
	}
	r.dyn.Store(d)
}

// headerFast finds a request header by name in any case: the HTTP/1.1
// server keeps names as received, and HTTP field names are
// case-insensitive.
func headerFast(h *fasthttp.RequestHeader, name []byte) ([]byte, bool) {
	if v := h.PeekBytes(name); v != nil {
		return v, true
	}
	for k, v := range h.All() {
		if bytes.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

// valueFast looks up what a rule or cohort reads from an HTTP/1.1 request.
func valueFast(req *fasthttp.Request, kind cohortKind, name string, nameB []byte) ([]byte, bool) {
	switch kind {
	case cohortHeader:
		return headerFast(&req.Header, nameB)
	case cohortCookie:
		v := req.Header.Cookie(name)
		return v, v != nil
	default:
		args := req.URI().QueryArgs()
		return args.PeekBytes(nameB), args.HasBytes(nameB)
	}
}

func (m *matchRoute) matchFast(req *fasthttp.Request) bool {
	for i := range m.rules {
		c := &m.rules[i]
		if !c.test(valueFast(req, c.kind, c.name, c.nameB)) {
			return false
		}
	}
	return true
}

// stdValues reads rule values from a net/http request, parsing the query
// at most once.
type stdValues struct {
	req   *http.Request
	query url.Values
}

func (s *stdValues) get(kind cohortKind, name string) ([]byte, bool) {
	switch kind {
	case cohortHeader:
		vs := s.req.Header.Values(name)
		if len(vs) == 0 {
			return nil, false
		}
		return []byte(vs[0]), true
	case cohortCookie:
		ck, err := s.req.Cookie(name)
		if err != nil {
			return nil, false
		}
		return []byte(ck.Value), true
	default:
		if s.query == nil {
			s.query = s.req.URL.Query()
		}
		vs, ok := s.query[name]
		if !ok || len(vs) == 0 {
			return nil, ok
		}
		return []byte(vs[0]), true
	}
}

func (m *matchRoute) matchStd(s *stdValues) bool {
	for i := range m.rules {
		c := &m.rules[i]
		if !c.test(s.get(c.kind, c.name)) {
			return false
		}
	}
	return true
}

// listenerIndexes resolves a Route's Listeners to indexes of
// cfg.Listeners (Validate has checked every name).
func listenerIndexes(cfg Config, names []string) []int {
	var out []int
	for _, n := range names {
		if i := slices.IndexFunc(cfg.Listeners, func(l Listener) bool { return l.Addr == n }); i >= 0 {
			out = append(out, i)
		}
	}
	return out
}

// listenerFor names the configured listener a socket serves: the one
// with the same address, else the only one with the same port (a config
// may say localhost:8080 or :8080 where the socket reports 127.0.0.1:8080
// or [::]:8080). -1 means none: only routes bound to no listener serve it.
func listenerFor(cfg Config, addr string) int {
	if i := slices.IndexFunc(cfg.Listeners, func(l Listener) bool { return l.Addr == addr }); i >= 0 {
		return i
	}
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	found := -1
	for i, l := range cfg.Listeners {
		if l.Addr[strings.LastIndexByte(l.Addr, ':')+1:] == port {
			if found >= 0 {
				return -1
			}
			found = i
		}
	}
	return found
}

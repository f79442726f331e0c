package proxy

import (
	"crypto/tls"
	"math/rand/v2"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// endpoint is one upstream address with its HTTP/1.1 connection pool. The
// same endpoint value is shared by every route and every config generation
// that names it, so a reload keeps warm connections.
type endpoint struct {
	spec     endpointSpec
	raw      string
	url      *url.URL // for the net/http path: http or https scheme
	scheme   []byte   // http or https, for the fasthttp request URI
	hc       *fasthttp.HostClient
	streamHC *fasthttp.HostClient // same address, response bodies streamed
	inflight atomic.Int64
	h1       h1Pool        // the HTTP/1.1 lane's idle connections
	maxIdle  time.Duration // how long an idle connection is kept
	// dropped is set when a reload leaves the endpoint out: its idle
	// connections are closed and none is pooled again.
	dropped atomic.Bool
	// down is set by active health checks; picks avoid it while a healthy
	// endpoint remains.
	down atomic.Bool
}

// pool is one version's endpoints and its balancing policy.
type pool struct {
	eps   []*endpoint
	least bool
	rr    atomic.Uint64
}

// pick returns an endpoint, or nil for an empty pool. An endpoint marked
// down by health checks is passed over for the next healthy one; when all
// are down the first choice stands.
func (p *pool) pick() *endpoint {
	e := p.choose()
	if e == nil || !e.down.Load() {
		return e
	}
	n := uint64(len(p.eps))
	start := p.rr.Add(1)
	for i := range n {
		if o := p.eps[(start+i)%n]; !o.down.Load() {
			return o
		}
	}
	return e
}

func (p *pool) choose() *endpoint {
	switch n := len(p.eps); {
	case n == 0:
		return nil
	case n == 1:
		return p.eps[0]
	case p.least:
		// Power of two choices: two distinct random endpoints, the one with
		// fewer requests in flight wins. Avoids the herd that a global
		// least-request scan sends to a freshly emptied endpoint.
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := p.eps[i], p.eps[j]
		if b.inflight.Load() < a.inflight.Load() {
			return b
		}
		return a
	default:
		return p.eps[(p.rr.Add(1)-1)%uint64(n)]
	}
}

// newEndpoint builds an endpoint and its HostClients from the timeouts.
func newEndpoint(raw string, spec endpointSpec, t Timeouts, dial func(addr string) (net.Conn, error)) *endpoint {
	scheme := "http"
	if spec.scheme == "https" {
		scheme = "https"
	}
	e := &endpoint{spec: spec, raw: raw, url: &url.URL{Scheme: scheme, Host: spec.addr}, scheme: []byte(scheme),
		maxIdle: min(time.Duration(t.Idle), 30*time.Second)}
	mk := func(stream bool) *fasthttp.HostClient {
		connect := time.Duration(t.Connect)
		hc := &fasthttp.HostClient{
			Addr:                          spec.addr,
			IsTLS:                         spec.scheme == "https",
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
			// Never retry: a retried request hides a canary's error from
			// the analysis and the guard.
			MaxIdemponentCallAttempts: 1,
			RetryIfErr:                func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
			ReadTimeout:               time.Duration(t.ResponseHeader),
			WriteTimeout:              time.Duration(t.ResponseHeader),
			MaxIdleConnDuration:       min(time.Duration(t.Idle), 30*time.Second),
			MaxConns:                  4096,
			StreamResponseBody:        stream,
			ReadBufferSize:            16 << 10,
		}
		if spec.scheme == "https" {
			hc.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
		}
		if dial != nil {
			hc.Dial = dial
		} else {
			hc.Dial = func(addr string) (net.Conn, error) {
				return (&net.Dialer{Timeout: connect}).Dial("tcp", addr)
			}
		}
		return hc
	}
	e.hc = mk(false)
	e.streamHC = mk(true)
	return e
}

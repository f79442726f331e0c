package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/valyala/fasthttp"
)

// fastServer is the HTTP/1.1 fast path.
type fastServer struct {
	p   *Proxy
	srv *fasthttp.Server
	ln  *chanListener
}

func newFastServer(p *Proxy, cfg Config, t Timeouts) *fastServer {
	maxHdr := cfg.MaxHeaderBytes
	if maxHdr == 0 {
		maxHdr = DefaultMaxHeaderBytes
	}
	maxBody := cfg.MaxBodyBytes
	if maxBody == 0 {
		maxBody = DefaultMaxBodyBytes
	}
	f := &fastServer{p: p, ln: newChanListener()}
	f.srv = &fasthttp.Server{
		Handler: p.serveFast,
		// The read buffer bounds the request line plus headers: a larger
		// header block fails with ErrSmallBuffer, answered 431.
		ReadBufferSize:                maxHdr,
		IdleTimeout:                   time.Duration(t.Idle),
		ReadTimeout:                   time.Duration(t.Request),
		DisableHeaderNamesNormalizing: true,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		DisablePreParseMultipartForm:  true,
		CloseOnShutdown:               true,
		MaxRequestBodySize:            maxBody,
		Logger:                        fastLogger{p},
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			var small *fasthttp.ErrSmallBuffer
			var ne net.Error
			switch {
			case errors.As(err, &small):
				ctx.Error("request header too large\n", fasthttp.StatusRequestHeaderFieldsTooLarge)
			case errors.Is(err, fasthttp.ErrBodyTooLarge):
				ctx.Error("request body too large\n", fasthttp.StatusRequestEntityTooLarge)
			case errors.As(err, &ne) && ne.Timeout():
				ctx.Error("request timeout\n", fasthttp.StatusRequestTimeout)
			default:
				ctx.Error("malformed request\n", fasthttp.StatusBadRequest)
			}
		},
	}
	return f
}

func (f *fastServer) serve() {
	if err := f.srv.Serve(f.ln); err != nil && !errors.Is(err, net.ErrClosed) {
		f.p.log.Error("proxy: http/1.1 server stopped", "err", err)
	}
}

func (f *fastServer) shutdown(ctx context.Context) error {
	f.ln.Close()
	return f.srv.ShutdownWithContext(ctx)
}

type fastLogger struct{ p *Proxy }

func (l fastLogger) Printf(format string, args ...any) {
	l.p.log.Debug("proxy: http/1.1", "msg", sprintf(format, args...))
}

// Hop-by-hop headers (RFC 9110 §7.6.1) besides Connection and
// Transfer-Encoding, which fasthttp frames itself.
var hopHeaders = [][]byte{
	[]byte("Keep-Alive"), []byte("Proxy-Connection"), []byte("Proxy-Authenticate"),
	[]byte("Proxy-Authorization"), []byte("Te"), []byte("Trailer"), []byte("Upgrade"),
}

var (
	hdrConnection = []byte("Connection")
	hdrXFF        = []byte("X-Forwarded-For")
	hdrXFProto    = []byte("X-Forwarded-Proto")
	hdrXFHost     = []byte("X-Forwarded-Host")
	hdrExpect     = []byte("Expect")
	valHTTPS      = []byte("https")
	proto11       = []byte("HTTP/1.1")
	valHTTP       = []byte("http")
)

// serveFast forwards one HTTP/1.1 request.
func (p *Proxy) serveFast(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	st := p.state.Load()
	lis := -1
	if st.bound {
		lis = listenerOf(ctx.Conn())
	}
	r := st.match(lis, ctx.Host(), ctx.Path())
	if r == nil {
		ctx.Error("no route\n", fasthttp.StatusNotFound)
		p.alog.fast(ctx, start, "", "", fasthttp.StatusNotFound, record.None)
		return
	}
	req := &ctx.Request
	v := r.chooseFast(req)
	if isUpgradeFast(&req.Header) {
		p.serveUpgradeFast(ctx, r, v, start)
		return
	}
	ep := r.pools[v].pick()
	if ep == nil {
		p.failFast(ctx, r, v, nil, start, fasthttp.StatusServiceUnavailable, record.Other, errNoEndpoint)
		return
	}
	stripHopFast(&req.Header)
	req.Header.DelBytes(hdrExpect)
	// A proxy sends its own HTTP version (RFC 9110 §7.6.3). Forwarded as
	// HTTP/1.0, a request left the upstream free to close the connection
	// without saying so, and the pooled connection then failed the next
	// request with a broken pipe.
	req.Header.SetProtocolBytes(proto11)
	setForwardedFast(ctx)
	if m := r.dyn.Load().mirror; m.take() {
		p.mirrorFast(r, m, req)
	}
	if ep.spec.scheme == "h2c" {
		p.forwardH2C(ctx, r, v, ep, start)
		return
	}
	// The upstream's scheme, not the client's: fasthttp refuses to send an
	// https request URI over a plain HostClient.
	req.URI().SetSchemeBytes(ep.scheme)
	hc := ep.hc
	if r.stream {
		hc = ep.streamHC
	}
	ep.inflight.Add(1)
	err := hc.DoDeadline(req, &ctx.Response, start.Add(r.timeout))
	ep.inflight.Add(-1)
	if err != nil {
		kind, status := classify(err)
		p.failFast(ctx, r, v, ep, start, status, kind, err)
		return
	}
	resp := &ctx.Response
	resp.Header.ResetConnectionClose()
	for _, h := range hopHeaders {
		resp.Header.DelBytes(h)
	}
	stripHopRespAnyCase(&resp.Header)
	status := resp.StatusCode()
	lat := time.Since(start)
	r.finish(v, lat, status, record.None)
	p.alog.fast(ctx, start, r.name, r.versions[v], status, record.None)
}

// isUpgradeFast reports whether the request asks for a protocol upgrade.
// fasthttp only sees "Connection: upgrade" under that exact name when it
// keeps names as received, so a lower-case "connection" is looked up too.
func isUpgradeFast(h *fasthttp.RequestHeader) bool {
	if h.ConnectionUpgrade() {
		return true
	}
	up := false
	rawFields(h.RawHeaders(), func(name, value []byte) bool {
		up = bytes.EqualFold(name, hdrConnection) && namedIn(value, []byte("upgrade"))
		return !up
	})
	return up
}

var errNoEndpoint = errors.New("version has no endpoints")

func (p *Proxy) failFast(ctx *fasthttp.RequestCtx, r *route, v int, ep *endpoint, start time.Time, status int, kind record.ErrorKind, err error) {
	r.finish(v, time.Since(start), 0, kind)
	ctx.Response.Reset()
	ctx.Error(errorBody(status), status)
	p.alog.fast(ctx, start, r.name, r.versions[v], status, kind)
	fe := &ForwardError{Route: r.name, Version: r.versions[v], Method: string(ctx.Method()),
		Path: string(ctx.Path()), Status: status, Kind: kind, Err: err}
	if ep != nil {
		fe.Endpoint = ep.raw
	}
	p.report(fe)
}

func errorBody(status int) string {
	switch status {
	case 503:
		return "no upstream endpoint available\n"
	case 504:
		return "upstream timed out\n"
	default:
		return "upstream unavailable\n"
	}
}

// classify maps a transport error to its kind and the status the client
// gets: 504 for timeouts, 502 for everything else.
func classify(err error) (record.ErrorKind, int) {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return record.Timeout, fasthttp.StatusGatewayTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return record.Refused, fasthttp.StatusBadGateway
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF):
		return record.Reset, fasthttp.StatusBadGateway
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return record.Other, fasthttp.StatusServiceUnavailable
	default:
		return record.Other, fasthttp.StatusBadGateway
	}
}

// chooseFast picks the version: the config's cohort rules, then the match
// routes a rollout set, then the sticky key, then the weights.
func (r *route) chooseFast(req *fasthttp.Request) int {
	for i := range r.cohorts {
		c := &r.cohorts[i]
		if c.matches(valueFast(req, c.kind, c.name, c.nameB)) {
			return c.version
		}
	}
	d := r.dyn.Load()
	for i := range d.routes {
		if d.routes[i].matchFast(req) {
			return d.routes[i].version
		}
	}
	s := r.split.Load()
	var key []byte
	if r.stickyHdr != "" {
		key = req.Header.Peek(r.stickyHdr)
	} else if r.stickyCook != "" {
		key = req.Header.Cookie(r.stickyCook)
	}
	if len(key) > 0 {
		return s.sticky(key)
	}
	return s.keyless()
}

// stripHopFast removes hop-by-hop request headers, including those the
// Connection header names.
func stripHopFast(h *fasthttp.RequestHeader) {
	if conn := h.PeekBytes(hdrConnection); len(conn) > 0 {
		for tok := range bytes.SplitSeq(conn, []byte(",")) {
			tok = bytes.TrimSpace(tok)
			if len(tok) > 0 && !bytes.EqualFold(tok, []byte("close")) && !bytes.EqualFold(tok, []byte("keep-alive")) {
				h.DelBytes(tok)
			}
		}
		h.DelBytes(hdrConnection)
	}
	for _, k := range hopHeaders {
		h.DelBytes(k)
	}
	stripHopAnyCase(h)
}

// isHopName reports whether key names a hop-by-hop header, in any case.
// The length picks the candidates, so most names cost one comparison.
func isHopName(key []byte) bool {
	switch len(key) {
	case 2:
		return bytes.EqualFold(key, []byte("Te"))
	case 7:
		return bytes.EqualFold(key, []byte("Trailer")) || bytes.EqualFold(key, []byte("Upgrade"))
	case 10:
		return bytes.EqualFold(key, hdrConnection) || bytes.EqualFold(key, []byte("Keep-Alive"))
	case 16:
		return bytes.EqualFold(key, []byte("Proxy-Connection"))
	case 18:
		return bytes.EqualFold(key, []byte("Proxy-Authenticate"))
	case 19:
		return bytes.EqualFold(key, []byte("Proxy-Authorization"))
	}
	return false
}

// namedIn reports whether a comma-separated Connection value names key.
func namedIn(conn, key []byte) bool {
	for tok := range bytes.SplitSeq(conn, []byte(",")) {
		if bytes.EqualFold(bytes.TrimSpace(tok), key) {
			return true
		}
	}
	return false
}

// namesOthers reports whether a Connection value names a header, that is,
// holds a token besides close and keep-alive.
func namesOthers(conn []byte) bool {
	for tok := range bytes.SplitSeq(conn, []byte(",")) {
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 && !bytes.EqualFold(tok, []byte("close")) && !bytes.EqualFold(tok, []byte("keep-alive")) {
			return true
		}
	}
	return false
}

// rawFields calls f with the name and value of each field in a raw header
// block ("Name: value" lines), stopping when f returns false.
func rawFields(raw []byte, f func(name, value []byte) bool) {
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		c := bytes.IndexByte(line, ':')
		if c <= 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if !f(line[:c], bytes.TrimSpace(line[c+1:])) {
			return
		}
	}
}

// stripHopAnyCase removes the hop-by-hop headers that the exact-case
// deletes miss. The server keeps header names as received
// (DisableHeaderNamesNormalizing) and fasthttp deletes by exact name, so
// "keep-alive", "proxy-authorization" or a lower-case "connection" and the
// headers it names would otherwise reach the upstream. It reads the raw
// header block (empty unless the request came off the wire), which deleting
// does not change; a name exactly as received is what DelBytes matches.
func stripHopAnyCase(h *fasthttp.RequestHeader) {
	raw := h.RawHeaders()
	others := false
	rawFields(raw, func(name, value []byte) bool {
		if !isHopName(name) {
			return true
		}
		if bytes.EqualFold(name, hdrConnection) && namesOthers(value) {
			others = true
		}
		h.DelBytes(name)
		return true
	})
	if !others {
		return
	}
	rawFields(raw, func(name, _ []byte) bool {
		named := false
		rawFields(raw, func(cn, cv []byte) bool {
			named = bytes.EqualFold(cn, hdrConnection) && namedIn(cv, name)
			return !named
		})
		if named {
			h.DelBytes(name)
		}
		return true
	})
}

// stripHopRespAnyCase removes hop-by-hop response headers whose names the
// upstream sent in another case than the exact-case deletes expect. It runs
// after them, so a name found here is not in the exact case.
func stripHopRespAnyCase(h *fasthttp.ResponseHeader) {
	for range 8 { // each round deletes one name; bounded so it cannot spin
		var found []byte
		for k := range h.All() {
			if isHopName(k) {
				found = k
				break
			}
		}
		if found == nil {
			return
		}
		var name [32]byte // hop names are at most 19 bytes
		h.DelBytes(name[:copy(name[:], found)])
	}
}

// setForwardedFast appends the client to X-Forwarded-For and sets
// X-Forwarded-Proto and X-Forwarded-Host.
func setForwardedFast(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	var buf [256]byte
	b := buf[:0]
	if prior := h.PeekBytes(hdrXFF); len(prior) > 0 {
		b = append(b, prior...)
		b = append(b, ", "...)
	}
	if ip, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		b = ip.Unmap().AppendTo(b)
	}
	h.SetBytesKV(hdrXFF, b)
	if ctx.IsTLS() {
		h.SetBytesKV(hdrXFProto, valHTTPS)
	} else {
		h.SetBytesKV(hdrXFProto, valHTTP)
	}
	h.SetBytesKV(hdrXFHost, ctx.Host())
}

// mirrorBodyMax bounds the body of a request that is mirrored: the copy
// needs the whole body in memory. Larger requests are not mirrored (and
// do not count towards the mirror's percentage).
const mirrorBodyMax = 64 << 10

// mirrorSlots bounds concurrent mirrored requests; when all are busy the
// copy is dropped rather than queued, so mirroring can never slow users.
var mirrorSlots = make(chan struct{}, 256)

// mirrorTarget takes a mirror slot and picks the mirror version's endpoint;
// ok is false when the copy is to be dropped (no free slot, or no endpoint,
// which is recorded). The caller releases the slot when its copy is done.
func mirrorTarget(r *route, m *mirrorPolicy) (ep *endpoint, ok bool) {
	select {
	case mirrorSlots <- struct{}{}:
	default:
		return nil, false
	}
	if ep = r.pools[m.version].pick(); ep == nil {
		<-mirrorSlots
		r.rec.RecordMirror(0, 0, record.Other)
		return nil, false
	}
	return ep, true
}

func (p *Proxy) mirrorFast(r *route, m *mirrorPolicy, req *fasthttp.Request) {
	ep, ok := mirrorTarget(r, m)
	if !ok {
		return
	}
	cp := fasthttp.AcquireRequest()
	req.CopyTo(cp)
	cp.URI().SetSchemeBytes(ep.scheme)
	sendMirror(r, ep, cp)
}

// sendMirror sends cp, a request of its own, to ep in the background and
// records the answer as the mirror's; it releases cp and the mirror slot.
func sendMirror(r *route, ep *endpoint, cp *fasthttp.Request) {
	timeout := r.timeout
	go func() {
		defer func() { <-mirrorSlots }()
		resp := fasthttp.AcquireResponse()
		start := time.Now()
		err := ep.hc.DoTimeout(cp, resp, timeout)
		lat := time.Since(start)
		if err != nil {
			kind, _ := classify(err)
			r.rec.RecordMirror(lat, 0, kind)
		} else {
			kind := record.None
			if resp.StatusCode() >= 500 {
				kind = record.Upstream5xx
			}
			r.rec.RecordMirror(lat, resp.StatusCode(), kind)
		}
		fasthttp.ReleaseRequest(cp)
		fasthttp.ReleaseResponse(resp)
	}()
}

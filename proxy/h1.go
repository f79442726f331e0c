package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployment-guardian/guardian/proxy/record"
)

// The HTTP/1.1 lane serves HTTP/1.1 connections (plain or TLS) with its own
// keep-alive loop and upstream client, because fasthttp's server and
// HostClient cost 10-25% more CPU per request than nginx on the same core
// (docs/proxy.md). It accepts only a strict, unambiguous subset of
// HTTP/1.1: origin-form targets with plain paths, one Host, at most one
// Content-Length, no Transfer-Encoding, no Expect, no Upgrade, Connection
// naming nothing but close or keep-alive. At the first request outside that
// subset it hands the connection, with every byte read so far, to the
// fasthttp server, which applies its full parser and defences (400, 413,
// 431, chunked bodies, 100-continue, WebSocket). A connection never goes
// back: the lane's parser therefore never has to agree with fasthttp's on
// anything but the requests it accepts.

// h1MaxFields bounds the header fields the lane parses; a request with more
// goes to fasthttp.
const h1MaxFields = 64

// h1BufSize is a lane connection's first read buffer; it grows to the
// configured header limit when a request head needs it.
const h1BufSize = 4 << 10

// deadlineSlack is how stale a connection's deadline may be before it is
// set again: setting one costs a runtime timer update, so a busy
// connection refreshes it about once a second instead of per request.
const deadlineSlack = time.Second

type span struct{ a, b int32 }

func (s span) of(b []byte) []byte { return b[s.a:s.b] }

// Field treatment when the request is rewritten for the upstream.
const (
	fieldKeep uint8 = iota
	fieldDrop       // hop-by-hop, or X-Forwarded-Proto/Host which the proxy sets
	fieldXFF        // X-Forwarded-For: joined with the client's address
)

type h1field struct {
	name, value span
	how         uint8
}

// h1head is a parsed request head; spans index the connection's buffer
// from the head's first byte.
type h1head struct {
	method, target, path, query, host span
	fields                            [h1MaxFields]h1field
	nf                                int
	contentLength                     int64 // -1 when absent
	close                             bool
	head                              bool // HEAD: the response has no body
	xff                               int  // X-Forwarded-For fields seen
}

// charClass marks ASCII digits and letters and the bytes of extra.
func charClass(extra string) (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range extra {
		t[c] = true
	}
	return t
}

var (
	// tokenChar marks the RFC 9110 tchar bytes.
	tokenChar = charClass("!#$%&'*+-.^_`|~")
	// pathChar marks the bytes a lane path may hold: RFC 3986 pchar and
	// '/' without '%', so the raw path is the one fasthttp would route on.
	pathChar = charClass("-._~!$&'()*+,;=:@/")
	// regNameChar marks the bytes of a host name or IPv4 address the lane
	// takes.
	regNameChar = charClass("-._~")
	// ipv6Char marks the bytes inside an IPv6 literal's brackets.
	ipv6Char = func() (t [256]bool) {
		for _, c := range "0123456789abcdefABCDEF:." {
			t[c] = true
		}
		return t
	}()
)

// plainHost reports whether a Host value is a name, an IPv4 address or a
// bracketed IPv6 address, each with an optional numeric port: what every
// HTTP stack reads the same way.
func plainHost(h []byte) bool {
	i := 0
	if len(h) > 0 && h[0] == '[' {
		for i = 1; i < len(h) && ipv6Char[h[i]]; i++ {
		}
		if i == 1 || i >= len(h) || h[i] != ']' {
			return false
		}
		if a, err := netip.ParseAddr(string(h[1:i])); err != nil || !a.Is6() {
			return false
		}
		i++
	} else {
		for i < len(h) && regNameChar[h[i]] {
			i++
		}
		if i == 0 {
			return false
		}
	}
	if i == len(h) {
		return true
	}
	if h[i] != ':' || i+1 == len(h) || len(h)-i > 6 {
		return false
	}
	for _, c := range h[i+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// malformedAnswer is what fasthttp answers a malformed request.
const malformedAnswer = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Content-Length: 18\r\nConnection: close\r\n\r\nmalformed request\n"

// plausibleStart reports whether b can begin a request line: a method
// token and a space. Anything else (a TLS hello on a plain port, a stray
// byte) is refused at once.
func plausibleStart(b []byte) bool {
	if len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
		return true // an empty line before the request: fasthttp's to judge
	}
	for i, c := range b {
		switch {
		case tokenChar[c] && i < 16:
		case c == ' ' && i > 0:
			return true
		default:
			return false
		}
	}
	return true
}

// parseRequestHead parses b, a request head ending in CRLF CRLF, into h.
// It returns false for anything outside the lane's subset.
func parseRequestHead(b []byte, h *h1head) bool {
	*h = h1head{contentLength: -1, nf: 0}
	i := 0
	for i < len(b) && tokenChar[b[i]] {
		i++
	}
	if i == 0 || i > 16 || i >= len(b) || b[i] != ' ' {
		return false
	}
	h.method = span{0, int32(i)}
	h.head = i == 4 && string(b[:4]) == "HEAD"
	if i == 7 && string(b[:7]) == "CONNECT" {
		return false
	}
	i++
	start := i
	if i >= len(b) || b[i] != '/' {
		return false
	}
	q := -1
	for ; i < len(b) && b[i] != ' '; i++ {
		c := b[i]
		if q < 0 {
			if c == '?' {
				q = i
				continue
			}
			if !pathChar[c] {
				return false
			}
			// No "//" and no "." or ".." segment: fasthttp would
			// normalise them before routing.
			if c == '/' && b[i-1] == '/' && i > start {
				return false
			}
			if c == '.' && b[i-1] == '/' {
				n := i + 1
				if n < len(b) && b[n] == '.' {
					n++
				}
				if n < len(b) && (b[n] == '/' || b[n] == '?' || b[n] == ' ') {
					return false
				}
			}
		} else if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	h.target = span{int32(start), int32(i)}
	if q < 0 {
		h.path = h.target
		h.query = span{int32(i), int32(i)}
	} else {
		h.path = span{int32(start), int32(q)}
		h.query = span{int32(q + 1), int32(i)}
	}
	const version = " HTTP/1.1\r\n"
	if len(b)-i < len(version) || string(b[i:i+len(version)]) != version {
		return false
	}
	i += len(version)
	hostSeen := false
	for {
		if i+1 >= len(b) {
			return false
		}
		if b[i] == '\r' {
			if b[i+1] != '\n' {
				return false
			}
			break // the empty line
		}
		ns, ne, vs, ve, next, ok := scanField(b, i)
		if !ok {
			return false
		}
		i = next
		if h.nf == h1MaxFields {
			return false
		}
		f := h1field{name: span{int32(ns), int32(ne)}, value: span{int32(vs), int32(ve)}}
		name, value := b[ns:ne], b[vs:ve]
		switch len(name) {
		case 2: // TE
			if bytes.EqualFold(name, []byte("TE")) {
				f.how = fieldDrop
			}
		case 4:
			if bytes.EqualFold(name, []byte("Host")) {
				if hostSeen || !plainHost(value) {
					return false
				}
				hostSeen = true
				h.host = f.value
			}
		case 6:
			if bytes.EqualFold(name, []byte("Expect")) {
				return false
			}
		case 7:
			if bytes.EqualFold(name, []byte("Upgrade")) {
				return false
			}
			if bytes.EqualFold(name, []byte("Trailer")) {
				return false // fasthttp refuses some; let it judge
			}
		case 10:
			if bytes.EqualFold(name, hdrConnection) {
				for tok := range bytes.SplitSeq(value, []byte(",")) {
					tok = bytes.TrimSpace(tok)
					switch {
					case bytes.EqualFold(tok, []byte("close")):
						h.close = true
					case len(tok) == 0, bytes.EqualFold(tok, []byte("keep-alive")):
					default:
						return false // names a header, or upgrade
					}
				}
				f.how = fieldDrop
			} else if bytes.EqualFold(name, []byte("Keep-Alive")) {
				f.how = fieldDrop
			}
		case 14:
			if bytes.EqualFold(name, []byte("Content-Length")) {
				if h.contentLength >= 0 || len(value) == 0 || len(value) > 18 {
					return false
				}
				var n int64
				for _, c := range value {
					if c < '0' || c > '9' {
						return false
					}
					n = n*10 + int64(c-'0')
				}
				h.contentLength = n
			}
		case 15:
			if bytes.EqualFold(name, hdrXFF) {
				f.how = fieldXFF
				h.xff++
			}
		case 16:
			if bytes.EqualFold(name, []byte("Proxy-Connection")) || bytes.EqualFold(name, hdrXFHost) {
				f.how = fieldDrop
			}
		case 17:
			if bytes.EqualFold(name, []byte("Transfer-Encoding")) {
				return false
			}
			if bytes.EqualFold(name, hdrXFProto) {
				f.how = fieldDrop
			}
		case 18, 19:
			if bytes.EqualFold(name, []byte("Proxy-Authenticate")) || bytes.EqualFold(name, []byte("Proxy-Authorization")) {
				f.how = fieldDrop
			}
		}
		if len(name) == 14 && bytes.EqualFold(name, []byte("HTTP2-Settings")) {
			return false
		}
		h.fields[h.nf] = f
		h.nf++
	}
	return hostSeen
}

// scanField reads the header field line at b[i:]: "name: value" CRLF, the
// name a token, the value free of control bytes but tab. It returns the
// name and value (trimmed) bounds and where the next line starts; ok is
// false for anything else, obs-fold, a space before ':' and a bare LF
// among them.
func scanField(b []byte, i int) (ns, ne, vs, ve, next int, ok bool) {
	ns = i
	for i < len(b) && tokenChar[b[i]] {
		i++
	}
	if i == ns || i >= len(b) || b[i] != ':' {
		return
	}
	ne = i
	i++
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	vs = i
	for i < len(b) && b[i] != '\r' {
		if c := b[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return
		}
		i++
	}
	if i+1 >= len(b) || b[i+1] != '\n' {
		return
	}
	ve = i
	for ve > vs && (b[ve-1] == ' ' || b[ve-1] == '\t') {
		ve--
	}
	return ns, ne, vs, ve, i + 2, true
}

// idempotent reports whether sending the request twice does no harm: an
// idempotent method (RFC 9110 §9.2.2), or an Idempotency-Key field.
func (h *h1head) idempotent(b []byte) bool {
	switch string(h.method.of(b)) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	_, ok := h.header(b, []byte("Idempotency-Key"))
	if !ok {
		_, ok = h.header(b, []byte("X-Idempotency-Key"))
	}
	return ok
}

// header returns the first field named name, in any case.
func (h *h1head) header(b, name []byte) ([]byte, bool) {
	for i := range h.nf {
		f := &h.fields[i]
		if bytes.EqualFold(f.name.of(b), name) {
			return f.value.of(b), true
		}
	}
	return nil, false
}

// cookie returns the value of cookie name from the Cookie fields.
func (h *h1head) cookie(b []byte, name string) ([]byte, bool) {
	for i := range h.nf {
		f := &h.fields[i]
		if !bytes.EqualFold(f.name.of(b), []byte("Cookie")) {
			continue
		}
		for kv := range bytes.SplitSeq(f.value.of(b), []byte(";")) {
			kv = bytes.TrimSpace(kv)
			k, v, _ := bytes.Cut(kv, []byte("="))
			if string(bytes.TrimSpace(k)) == name {
				return trimQuotes(bytes.TrimSpace(v)), true
			}
		}
	}
	return nil, false
}

func trimQuotes(v []byte) []byte {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// queryArg returns query argument name, percent-decoded like fasthttp's
// QueryArgs; decoding allocates, but only for values that need it.
func (h *h1head) queryArg(b []byte, name []byte) ([]byte, bool) {
	for kv := range bytes.SplitSeq(h.query.of(b), []byte("&")) {
		k, v, _ := bytes.Cut(kv, []byte("="))
		if bytes.Equal(unescapeQuery(k), name) {
			return unescapeQuery(v), true
		}
	}
	return nil, false
}

func unescapeQuery(s []byte) []byte {
	if bytes.IndexByte(s, '%') < 0 && bytes.IndexByte(s, '+') < 0 {
		return s
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			out = append(out, ' ')
		case c == '%' && i+2 < len(s) && unhex(s[i+1]) >= 0 && unhex(s[i+2]) >= 0:
			out = append(out, byte(unhex(s[i+1])<<4|unhex(s[i+2])))
			i += 2
		default:
			out = append(out, c)
		}
	}
	return out
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func (h *h1head) value(b []byte, kind cohortKind, name string, nameB []byte) ([]byte, bool) {
	switch kind {
	case cohortHeader:
		return h.header(b, nameB)
	case cohortCookie:
		return h.cookie(b, name)
	default:
		return h.queryArg(b, nameB)
	}
}

// chooseH1 is chooseFast for a lane request.
func (r *route) chooseH1(h *h1head, b []byte) int {
	for i := range r.cohorts {
		c := &r.cohorts[i]
		if c.matches(h.value(b, c.kind, c.name, c.nameB)) {
			return c.version
		}
	}
	d := r.dyn.Load()
	for i := range d.routes {
		m := &d.routes[i]
		ok := true
		for j := range m.rules {
			c := &m.rules[j]
			if !c.test(h.value(b, c.kind, c.name, c.nameB)) {
				ok = false
				break
			}
		}
		if ok {
			return m.version
		}
	}
	s := r.split.Load()
	var key []byte
	if r.stickyHdr != "" {
		key, _ = h.header(b, []byte(r.stickyHdr))
	} else if r.stickyCook != "" {
		key, _ = h.cookie(b, r.stickyCook)
	}
	if len(key) > 0 {
		return s.sticky(key)
	}
	return s.keyless()
}

// Lane connection states, for drain on shutdown.
const (
	h1Idle int32 = iota // waiting for a request's first byte
	h1Busy
	h1Closed
)

// h1conn is one client connection on the lane.
type h1conn struct {
	p      *Proxy
	c      net.Conn
	lis    int
	buf    []byte
	r, w   int // buf[r:w] is read but not yet handled
	out    []byte
	ip     []byte // the client address as X-Forwarded-For text
	remote string
	state  atomic.Int32
	tls    bool // c is a *tls.Conn: X-Forwarded-Proto https
	idle   time.Duration
	slack  time.Duration // how stale a deadline may be (deadlineSlack)
	dl     time.Time     // when the read deadline was last set
	wdl    time.Time     // when the write deadline was last set
	headAt int           // buf offset of the current request's head
	h      h1head
	// raw writes a response and waits for the next request without the
	// read that would find nothing (rawIO); pending is the response it
	// is to write. That wait relies on the client sending nothing before
	// it has the response: a pipelining client could have, unseen, so the
	// sweeper wakes a wait that lasts (waiting, waitSince, pokeMu), and a
	// connection seen pipelining stops using it.
	raw       *rawIO
	pending   []byte
	pipelined bool
	waiting   atomic.Int32 // waitNone, waitRaw, waitPoked
	waitSince atomic.Int64 // unix nanoseconds
	pokeMu    sync.Mutex
}

var h1BufPool = sync.Pool{New: func() any { b := make([]byte, h1BufSize); return &b }}

const (
	waitNone int32 = iota
	waitRaw
	waitPoked
)

// pokeAfter is how long a raw wait lasts before the sweeper turns it into
// an ordinary read: the bound on the stall a pipelining client can meet.
const pokeAfter = 50 * time.Millisecond

// h1Lane tracks the lane's connections so Shutdown can drain them.
type h1Lane struct {
	mu      sync.Mutex
	conns   map[*h1conn]struct{}
	sweeper bool
}

// sweep pokes raw waits older than pokeAfter, and about once a second
// closes upstream connections idle longer than their endpoint keeps them
// (an upstream that closed them would otherwise leave them half-closed
// until the next request), until the proxy closes.
func (l *h1Lane) sweep(p *Proxy) {
	t := time.NewTicker(pokeAfter)
	defer t.Stop()
	for tick := 1; ; tick++ {
		<-t.C
		if p.closing.Load() {
			return
		}
		now := time.Now()
		if tick%20 == 0 {
			for _, r := range p.state.Load().routes {
				for _, pl := range r.pools {
					for _, ep := range pl.eps {
						ep.h1.expire(now.Add(-ep.maxIdle))
					}
				}
			}
		}
		limit := now.Add(-pokeAfter).UnixNano()
		l.mu.Lock()
		for c := range l.conns {
			if c.waiting.Load() == waitRaw && c.waitSince.Load() < limit {
				c.poke()
			}
		}
		l.mu.Unlock()
	}
}

// poke ends a raw wait: a deadline in the past wakes it, and the loop
// then reads the ordinary way.
func (hc *h1conn) poke() {
	hc.pokeMu.Lock()
	if hc.waiting.CompareAndSwap(waitRaw, waitPoked) {
		hc.c.SetReadDeadline(time.Unix(1, 0))
	}
	hc.pokeMu.Unlock()
}

func (l *h1Lane) add(c *h1conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.p.closing.Load() {
		return false
	}
	if l.conns == nil {
		l.conns = map[*h1conn]struct{}{}
	}
	if !l.sweeper {
		l.sweeper = true
		go l.sweep(c.p)
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *h1Lane) remove(c *h1conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// shutdown closes idle connections at once and busy ones after their
// current response, and waits for all to go, or until ctx ends.
func (l *h1Lane) shutdown(done <-chan struct{}) bool {
	for {
		l.mu.Lock()
		for c := range l.conns {
			if c.state.CompareAndSwap(h1Idle, h1Closed) {
				c.c.Close()
			}
		}
		n := len(l.conns)
		l.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-done:
			l.mu.Lock()
			for c := range l.conns {
				c.c.Close()
			}
			l.mu.Unlock()
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// serveH1 runs the lane for a connection (plain TCP, or TLS that chose
// http/1.1) whose first bytes, read while sorting it, are pre.
func (p *Proxy) serveH1(c net.Conn, pre []byte, lis int) {
	bp := h1BufPool.Get().(*[]byte)
	hc := &h1conn{p: p, c: c, lis: lis, buf: *bp}
	_, hc.tls = c.(*tls.Conn)
	hc.idle = time.Duration(p.state.Load().cfg.Timeouts.withDefaults().Idle)
	hc.slack = min(deadlineSlack, hc.idle/8)
	hc.raw = newRawIO(c, hc.wentIdle)
	if !p.lane.add(hc) {
		c.Close()
		h1BufPool.Put(bp)
		return
	}
	hc.w = copy(hc.buf, pre)
	handedOff := hc.loop()
	p.lane.remove(hc)
	if !handedOff {
		if hc.pending != nil {
			c.Write(hc.pending) // the last answer, when shutdown began after it
		}
		c.Close()
	}
	if cap(hc.buf) == h1BufSize {
		*bp = hc.buf[:h1BufSize]
		h1BufPool.Put(bp)
	}
}

// loop serves requests until the connection ends or is handed off; it
// reports whether it was handed off.
func (hc *h1conn) loop() bool {
	p := hc.p
	idle := hc.idle
	maxHdr := p.state.Load().cfg.MaxHeaderBytes
	if maxHdr == 0 {
		maxHdr = DefaultMaxHeaderBytes
	}
	scanned := 0 // bytes of buf[r:w] known to hold no end of head
	for {
		end := -1
		if hc.w > hc.r {
			from := max(hc.r, hc.r+scanned-3)
			if i := bytes.Index(hc.buf[from:hc.w], []byte("\r\n\r\n")); i >= 0 {
				end = from + i + 4
			}
		}
		if end < 0 {
			// Reading a head is idle as far as shutdown goes: no request
			// is in flight until the head is whole. A pending response
			// goes out first; rawIO turns the connection idle then.
			if hc.pending == nil && !hc.state.CompareAndSwap(h1Busy, h1Idle) && hc.state.Load() == h1Closed {
				return false
			}
			scanned = hc.w - hc.r
			if hc.w-hc.r >= maxHdr {
				return hc.handoff() // fasthttp answers 431
			}
			if !plausibleStart(hc.buf[hc.r:hc.w]) {
				// Answered now: waiting for a blank line that garbage
				// never sends would hold the connection until the idle
				// timeout.
				hc.write([]byte(malformedAnswer))
				return false
			}
			if hc.w == len(hc.buf) {
				if hc.r > 0 {
					hc.w = copy(hc.buf, hc.buf[hc.r:hc.w])
					hc.r = 0
				} else {
					nb := make([]byte, maxHdr+1)
					hc.w = copy(nb, hc.buf[:hc.w])
					hc.buf = nb
				}
			}
			if hc.r == hc.w {
				hc.r, hc.w, scanned = 0, 0, 0
			}
			now := hc.readDeadline()
			if hc.pending != nil {
				ok, retry := hc.flushAndWait(now, idle)
				if !ok {
					return false
				}
				if !retry {
					continue
				}
			}
			n, err := hc.c.Read(hc.buf[hc.w:])
			hc.w += n
			if err != nil {
				return false
			}
			continue
		}
		if !hc.state.CompareAndSwap(h1Idle, h1Busy) && hc.state.Load() != h1Busy {
			return false // closed by shutdown
		}
		if end-hc.r > maxHdr {
			return hc.handoff() // fasthttp answers 431
		}
		scanned = 0
		hc.headAt = hc.r
		head := hc.buf[hc.r:end]
		if !parseRequestHead(head, &hc.h) {
			return hc.handoff()
		}
		next := hc.serve(head, end)
		hc.pipelined = hc.pipelined || hc.r < hc.w
		switch next {
		case h1Handed:
			return true
		case h1Close:
			return false
		}
		if hc.h.close || p.closing.Load() {
			return false
		}
	}
}

// wentIdle marks the connection idle once its response is written.
func (hc *h1conn) wentIdle() { hc.state.CompareAndSwap(h1Busy, h1Idle) }

// flushAndWait writes the pending response and waits for the next
// request's first bytes. ok false means the connection is done; retry
// means nothing was read and the loop should read the ordinary way.
func (hc *h1conn) flushAndWait(now time.Time, idle time.Duration) (ok, retry bool) {
	out := hc.pending
	hc.pending = nil
	hc.waitSince.Store(now.UnixNano())
	hc.waiting.Store(waitRaw)
	written, n, err := hc.raw.writeThenRead(out, hc.buf[hc.w:])
	if !hc.waiting.CompareAndSwap(waitRaw, waitNone) {
		// Poked: once the poke's deadline is in, put the real one back.
		hc.pokeMu.Lock()
		hc.waiting.Store(waitNone)
		hc.pokeMu.Unlock()
		hc.dl = time.Now()
		hc.c.SetReadDeadline(hc.dl.Add(idle))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = nil
		}
		if written == len(out) && err == nil && n == 0 {
			// Bytes already waiting mean their wake-up was lost: the
			// client sends before it has its answers. Stop raw waits on
			// this connection.
			m, rerr := hc.raw.readNow(hc.buf[hc.w:])
			if m > 0 || rerr != nil {
				hc.pipelined = true
				hc.w += m
				return rerr == nil, false
			}
		}
	}
	if written < len(out) {
		if err != nil && !errors.Is(err, errWouldBlock) {
			return false, false
		}
		if werr := hc.write(out[written:]); werr != nil {
			return false, false
		}
		hc.wentIdle()
		return true, true
	}
	hc.w += n
	if err != nil {
		return false, false
	}
	return true, n == 0
}

// readDeadline sets the idle timeout on reads unless a recent one stands;
// it returns the time now.
func (hc *h1conn) readDeadline() time.Time {
	now := time.Now()
	if now.Sub(hc.dl) > hc.slack {
		hc.c.SetReadDeadline(now.Add(hc.idle))
		hc.dl = now
	}
	return now
}

// write writes b to the client, bounded by the idle timeout: a client that
// stops reading is dropped after that long.
func (hc *h1conn) write(b []byte) error {
	if now := time.Now(); now.Sub(hc.wdl) > hc.slack {
		hc.c.SetWriteDeadline(now.Add(hc.idle))
		hc.wdl = now
	}
	_, err := hc.c.Write(b)
	return err
}

// discard reads and drops the next n body bytes, for a request answered
// without its body; it keeps what follows them. False means the client
// failed to send them.
func (hc *h1conn) discard(n int64) bool {
	if avail := int64(hc.w - hc.r); avail >= n {
		hc.r += int(n)
		return true
	}
	n -= int64(hc.w - hc.r)
	hc.r, hc.w = 0, 0
	for n > 0 {
		hc.readDeadline()
		m, err := hc.c.Read(hc.buf)
		if int64(m) > n {
			hc.r, hc.w = int(n), m
			return true
		}
		n -= int64(m)
		if err != nil && n > 0 {
			return false
		}
	}
	return true
}

// handoff gives the connection, with the bytes read and not yet served, to
// the fasthttp server.
func (hc *h1conn) handoff() bool {
	hc.c.SetDeadline(time.Time{})
	rest := bytes.Clone(hc.buf[hc.r:hc.w])
	if tc, ok := hc.c.(*tls.Conn); ok {
		hc.p.fast.ln.push(&peekedTLSConn{Conn: tc, buf: rest, lis: hc.lis})
	} else {
		hc.p.fast.ln.push(&peekedConn{Conn: hc.c, buf: rest, lis: hc.lis})
	}
	return true
}

func (hc *h1conn) clientIP() []byte {
	if hc.ip == nil {
		if ap, err := netip.ParseAddrPort(hc.c.RemoteAddr().String()); err == nil {
			hc.ip = ap.Addr().Unmap().AppendTo(nil)
		} else {
			hc.ip = []byte{}
		}
		hc.remote = hc.c.RemoteAddr().String()
	}
	return hc.ip
}

// upstreamHead appends the request head to send upstream: hop-by-hop
// fields dropped, X-Forwarded-* set.
func (hc *h1conn) upstreamHead(out, b []byte) []byte {
	h := &hc.h
	out = append(out, h.method.of(b)...)
	out = append(out, ' ')
	out = append(out, h.target.of(b)...)
	out = append(out, " HTTP/1.1\r\n"...)
	for i := range h.nf {
		f := &h.fields[i]
		if f.how != fieldKeep {
			continue
		}
		out = append(out, f.name.of(b)...)
		out = append(out, ": "...)
		out = append(out, f.value.of(b)...)
		out = append(out, "\r\n"...)
	}
	out = append(out, "X-Forwarded-For: "...)
	if h.xff > 0 {
		for i := range h.nf {
			if f := &h.fields[i]; f.how == fieldXFF {
				out = append(out, f.value.of(b)...)
				out = append(out, ", "...)
			}
		}
	}
	out = append(out, hc.clientIP()...)
	if hc.tls {
		out = append(out, "\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: "...)
	} else {
		out = append(out, "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: "...)
	}
	out = append(out, h.host.of(b)...)
	return append(out, "\r\n\r\n"...)
}

// What serve leaves the connection to do.
const (
	h1Next   = iota // read the next request
	h1Close         // close the connection
	h1Handed        // handed to fasthttp
)

// serve forwards the request whose head is head (ending at buf offset
// end).
func (hc *h1conn) serve(head []byte, end int) int {
	p := hc.p
	h := &hc.h
	start := time.Now()
	st := p.state.Load()
	lis := -1
	if st.bound {
		lis = hc.lis
	}
	r := st.match(lis, h.host.of(head), h.path.of(head))
	if r == nil {
		hc.writeError(start, nil, 0, 404, "no route\n", record.None)
		return hc.skipBody(end)
	}
	if !r.laneOK {
		hc.handoff()
		return h1Handed
	}
	maxBody := st.cfg.MaxBodyBytes
	if maxBody == 0 {
		maxBody = DefaultMaxBodyBytes
	}
	if h.contentLength > int64(maxBody) {
		hc.handoff() // fasthttp answers 413
		return h1Handed
	}
	v := r.chooseH1(h, head)
	ep := r.pools[v].pick()
	if ep == nil {
		hc.fail(r, v, nil, start, 503, record.Other, errNoEndpoint)
		return hc.skipBody(end)
	}
	// The body: what is buffered now, and what is still on the wire.
	var body []byte
	var rest int64
	if h.contentLength > 0 {
		avail := int64(hc.w - end)
		if avail >= h.contentLength {
			body = hc.buf[end : end+int(h.contentLength)]
		} else {
			body = hc.buf[end:hc.w]
			rest = h.contentLength - avail
		}
	}
	hc.out = hc.upstreamHead(hc.out[:0], head)
	hc.r = end + len(body)
	if m := r.dyn.Load().mirror; m != nil && h.contentLength <= mirrorBodyMax && m.take() {
		if rest > 0 {
			// The copy needs the whole body: read the rest now.
			full := make([]byte, h.contentLength)
			k := copy(full, body)
			hc.readDeadline()
			if _, err := io.ReadFull(hc.c, full[k:]); err != nil {
				return h1Close
			}
			body, rest = full, 0
		}
		p.mirrorH1(r, m, hc.out, body)
	}
	return p.forwardH1(hc, r, v, ep, start, body, rest)
}

// skipBody passes over the body of a request the proxy answered itself,
// its head ending at end.
func (hc *h1conn) skipBody(end int) int {
	hc.r = end
	if n := hc.h.contentLength; n > 0 && !hc.discard(n) {
		return h1Close
	}
	return h1Next
}

// fail answers a request the upstream could not, records it and reports.
func (hc *h1conn) fail(r *route, v int, ep *endpoint, start time.Time, status int, kind record.ErrorKind, err error) {
	r.finish(v, time.Since(start), 0, kind)
	fe := &ForwardError{Route: r.name, Version: r.versions[v], Method: string(hc.h.method.of(hc.headBytes())),
		Path: string(hc.h.path.of(hc.headBytes())), Status: status, Kind: kind, Err: err}
	if ep != nil {
		fe.Endpoint = ep.raw
	}
	// Reported before the answer goes out, as on the other paths: whoever
	// sees the error status can count on the report having been made.
	hc.p.report(fe)
	hc.writeError(start, r, v, status, errorBody(status), kind)
}

// headBytes starts with the current request's head; valid until the next
// request is read.
func (hc *h1conn) headBytes() []byte { return hc.buf[hc.headAt:] }

// writeError writes a plain-text error response like fasthttp's ctx.Error.
func (hc *h1conn) writeError(start time.Time, r *route, v int, status int, msg string, kind record.ErrorKind) {
	out := hc.out[:0]
	out = append(out, "HTTP/1.1 "...)
	out = appendStatusLine(out, status)
	out = append(out, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	out = appendInt(out, int64(len(msg)))
	if hc.h.close || hc.p.closing.Load() {
		out = append(out, "\r\nConnection: close"...)
	}
	out = append(out, "\r\n\r\n"...)
	if !hc.h.head {
		out = append(out, msg...)
	}
	hc.out = out
	route, version := "", ""
	if r != nil {
		route, version = r.name, r.versions[v]
	}
	hc.log(start, route, version, status, kind, len(msg))
	hc.write(out)
}

func (hc *h1conn) log(start time.Time, route, version string, status int, kind record.ErrorKind, n int) {
	l := hc.p.alog
	if l == nil {
		return
	}
	b := hc.headBytes()
	hc.clientIP()
	l.write(entry{start: start, proto: "HTTP/1.1", method: string(hc.h.method.of(b)), host: string(hc.h.host.of(b)),
		path: hc.h.target.of(b), remote: hc.remote, route: route, version: version,
		status: status, kind: kind, bytesOut: n})
}

package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/valyala/fasthttp"
)

// upBufSize is an upstream connection's buffer: it bounds the response
// head and is the unit in which bodies are copied.
const upBufSize = 16 << 10

// maxIdleConns bounds the idle connections the lane keeps per endpoint.
const maxIdleConns = 1024

// upConn is a pooled HTTP/1.1 connection to an endpoint.
type upConn struct {
	c      net.Conn
	raw    *rawIO // nil unless c is a plain socket
	buf    []byte
	idleAt time.Time
	dl     time.Time // the deadline set last
	dlSet  time.Time // when it was set
}

// h1Pool keeps an endpoint's idle lane connections, most recent last.
type h1Pool struct {
	mu   sync.Mutex
	idle []*upConn
}

var (
	errBadResponse  = errors.New("malformed response from upstream")
	errRespTooLarge = errors.New("upstream response head too large")
)

// get returns an idle connection, or a new one; reused says which.
func (p *Proxy) getUpConn(ep *endpoint, now time.Time, timeout time.Duration) (uc *upConn, reused bool, err error) {
	pl := &ep.h1
	maxIdle := ep.maxIdle
	pl.mu.Lock()
	for n := len(pl.idle); n > 0; n = len(pl.idle) {
		uc = pl.idle[n-1]
		pl.idle[n-1] = nil
		pl.idle = pl.idle[:n-1]
		if now.Sub(uc.idleAt) < maxIdle {
			pl.mu.Unlock()
			return uc, true, nil
		}
		uc.c.Close()
	}
	pl.mu.Unlock()
	c, err := p.dialEndpoint(ep, timeout)
	if err != nil {
		return nil, false, err
	}
	uc = &upConn{c: c, buf: make([]byte, upBufSize)}
	uc.raw = newRawIO(c, nil)
	return uc, false, nil
}

// putUpConn returns a connection whose last exchange ended cleanly.
func putUpConn(ep *endpoint, uc *upConn, now time.Time) {
	if ep.dropped.Load() {
		uc.c.Close()
		return
	}
	uc.idleAt = now
	pl := &ep.h1
	pl.mu.Lock()
	// The oldest are first: close those idle too long, and any beyond
	// the cap.
	drop := 0
	for drop < len(pl.idle) && (now.Sub(pl.idle[drop].idleAt) >= ep.maxIdle || len(pl.idle)-drop >= maxIdleConns) {
		pl.idle[drop].c.Close()
		drop++
	}
	if drop > 0 {
		pl.idle = append(pl.idle[:0], pl.idle[drop:]...)
	}
	pl.idle = append(pl.idle, uc)
	pl.mu.Unlock()
}

// expire closes the idle connections that went idle before limit; a
// limit in the future closes them all.
func (pl *h1Pool) expire(limit time.Time) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	keep := pl.idle[:0]
	for _, uc := range pl.idle {
		if uc.idleAt.Before(limit) {
			uc.c.Close()
		} else {
			keep = append(keep, uc)
		}
	}
	clear(pl.idle[len(keep):])
	pl.idle = keep
}

// setDeadline sets d unless a deadline set less than slack ago is within
// slack of it, so a busy connection does not update a timer per request.
func (uc *upConn) setDeadline(now, d time.Time, slack time.Duration) {
	if now.Sub(uc.dlSet) < slack && !d.Before(uc.dl) && d.Sub(uc.dl) < slack {
		return
	}
	uc.c.SetDeadline(d)
	uc.dl, uc.dlSet = d, now
}

// upResp is a parsed response head.
type upResp struct {
	status    int
	keepAlive bool
	chunked   bool
	length    int64 // -1: none (chunked or until close)
	noBody    bool
}

// forwardH1 sends the request upstream (hc.out holds its head; body is the
// buffered part of the body, rest the bytes still to read from the client)
// and relays the response. It returns what the connection does next.
func (p *Proxy) forwardH1(hc *h1conn, r *route, v int, ep *endpoint, start time.Time, body []byte, rest int64) int {
	slack := min(deadlineSlack, r.timeout/16)
	deadline := start.Add(r.timeout)
	var uc *upConn
	var resp upResp
	var n, end int
	replayable := rest == 0 // the whole request is in memory
	for attempt := 0; ; attempt++ {
		var reused bool
		var err error
		uc, reused, err = p.getUpConn(ep, start, time.Until(deadline))
		if err == nil {
			uc.setDeadline(start, deadline, slack)
			ep.inflight.Add(1)
			n, end, err = exchange(uc, hc, hc.out, body, &rest)
			if err == nil {
				err = parseResponseHead(uc.buf[:end], hc.h.head, &resp)
			}
			ep.inflight.Add(-1)
			if err == nil {
				break
			}
			uc.c.Close()
			if errors.As(err, new(clientAbort)) {
				return h1Close // the client's fault: not the version's
			}
			// A pooled connection the upstream closed while idle fails
			// before any answer: try once more on a new one when the whole
			// request is still at hand, and either it never got out (the
			// write failed) or sending it twice does no harm (an
			// idempotent method, or an Idempotency-Key), as Go's Transport
			// does. A retry after an answer would hide a canary's error,
			// so there is none.
			if reused && n == 0 && replayable && attempt == 0 && staleConnErr(err) &&
				(errors.As(err, new(writeFailed)) || hc.h.idempotent(hc.headBytes())) {
				continue
			}
		}
		kind, status := classify(err)
		if errors.Is(err, errBadResponse) || errors.Is(err, errRespTooLarge) {
			kind, status = record.Other, http.StatusBadGateway
		}
		hc.fail(r, v, ep, start, status, kind, err)
		if rest > 0 && !hc.discard(rest) {
			return h1Close
		}
		return h1Next
	}
	// Latency ends here, at the response head, for a body that takes more
	// than this read: a stream (server-sent events, a download) would
	// otherwise be timed by its length, not by how fast the version
	// answered. It is recorded once the body has ended, ok or not.
	lat := time.Since(start)
	// The response head for the client, then the body.
	closeClient := hc.h.close || p.closing.Load() || (!resp.noBody && !resp.chunked && resp.length < 0)
	out := hc.out[:0]
	out = append(out, "HTTP/1.1 "...)
	out = appendResponseFields(out, uc.buf[:end], closeClient)
	bodyIn := uc.buf[end:n]
	status := resp.status
	var sc chunkScanner
	done := resp.noBody
	var take int
	switch {
	case resp.noBody:
	case resp.chunked:
		var err error
		take, done, err = sc.scan(bodyIn)
		if err != nil {
			return p.abortH1(hc, r, v, ep, uc, start, lat, status, err, false)
		}
	case resp.length >= 0:
		take = int(min(int64(len(bodyIn)), resp.length))
		resp.length -= int64(take)
		done = resp.length == 0
	default:
		take = len(bodyIn)
	}
	if take < len(bodyIn) {
		resp.keepAlive = false // bytes beyond the response: do not reuse
	}
	// The body bytes are copied out of uc.buf before uc goes back to the
	// pool, where another request may take it at once.
	out = append(out, bodyIn[:take]...)
	hc.out = out
	sent := take
	if done {
		r.finish(v, lat, status, record.None)
		p.releaseUp(ep, uc, resp.keepAlive)
		hc.log(start, r.name, r.versions[v], status, record.None, sent)
		if hc.raw != nil && !closeClient && hc.r == hc.w && !hc.pipelined {
			// The loop writes it as it starts waiting for the next
			// request (rawIO).
			hc.pending = out
			return h1Next
		}
		if err := hc.write(out); err != nil || closeClient {
			return h1Close
		}
		return h1Next
	}
	// A body larger than one read: relay it as it comes.
	if err := hc.write(out); err != nil {
		uc.c.Close()
		r.finish(v, lat, status, record.None)
		hc.log(start, r.name, r.versions[v], status, record.None, sent)
		return h1Close
	}
	for !done {
		m, err := uc.c.Read(uc.buf)
		chunk := uc.buf[:m]
		switch {
		case resp.chunked:
			var serr error
			take, done, serr = sc.scan(chunk)
			if serr != nil {
				err = serr
			}
		case resp.length >= 0:
			take = int(min(int64(m), resp.length))
			resp.length -= int64(take)
			done = resp.length == 0
		default:
			take = m
			if err == io.EOF {
				done, err = true, nil
			}
		}
		if take < m {
			resp.keepAlive = false
		}
		if done {
			r.finish(v, lat, status, record.None)
		}
		if take > 0 {
			if werr := hc.write(chunk[:take]); werr != nil {
				uc.c.Close()
				if !done {
					r.finish(v, lat, status, record.None)
				}
				hc.log(start, r.name, r.versions[v], status, record.None, sent)
				return h1Close
			}
			sent += take
		}
		if err != nil && !done {
			// The status has gone out: the client learns of the failure
			// by the connection closing mid-body.
			return p.abortH1(hc, r, v, ep, uc, start, lat, status, err, true)
		}
	}
	p.releaseUp(ep, uc, resp.keepAlive)
	hc.log(start, r.name, r.versions[v], status, record.None, sent)
	if closeClient {
		return h1Close
	}
	return h1Next
}

// releaseUp returns a connection whose exchange ended cleanly to the pool,
// or closes it.
func (p *Proxy) releaseUp(ep *endpoint, uc *upConn, keepAlive bool) {
	if keepAlive && !p.closing.Load() {
		putUpConn(ep, uc, time.Now())
	} else {
		uc.c.Close()
	}
}

// abortH1 ends a response that failed after its head was read; headSent
// says whether the client has it.
func (p *Proxy) abortH1(hc *h1conn, r *route, v int, ep *endpoint, uc *upConn, start time.Time, lat time.Duration, status int, err error, headSent bool) int {
	uc.c.Close()
	kind, _ := classify(err)
	if kind == record.Other {
		kind = record.Reset
	}
	r.finish(v, lat, 0, kind)
	fe := &ForwardError{Route: r.name, Version: r.versions[v], Endpoint: ep.raw, Method: string(hc.h.method.of(hc.headBytes())),
		Path: string(hc.h.path.of(hc.headBytes())), Status: status, Kind: kind, Err: err}
	if !headSent {
		// Nothing has gone out: answer 502 like any upstream failure.
		fe.Status = http.StatusBadGateway
		p.report(fe)
		hc.writeError(start, r, v, http.StatusBadGateway, errorBody(http.StatusBadGateway), kind)
		return h1Next
	}
	hc.log(start, r.name, r.versions[v], status, kind, -1)
	p.report(fe)
	return h1Close
}

// writeFailed is the request not getting out to the upstream whole.
type writeFailed struct{ err error }

func (e writeFailed) Error() string { return e.err.Error() }
func (e writeFailed) Unwrap() error { return e.err }

// clientAbort is the client failing to send its whole body.
type clientAbort struct{ err error }

func (e clientAbort) Error() string { return "client body: " + e.err.Error() }
func (e clientAbort) Unwrap() error { return e.err }

func staleConnErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// exchange writes the request and reads until the response head is in
// uc.buf. It returns the bytes read (n) and where the head ends; n is 0
// when nothing at all came back. *rest counts down the body bytes still
// to come from the client.
func exchange(uc *upConn, hc *h1conn, out, body []byte, rest *int64) (n, end int, err error) {
	if len(body) > 0 && len(out)+len(body) <= upBufSize {
		out = append(out, body...)
		body = nil
	}
	if uc.raw != nil && len(body) == 0 && *rest == 0 {
		written, m, err := uc.raw.writeThenRead(out, uc.buf)
		if written == len(out) {
			if err != nil {
				return 0, 0, err
			}
			return readRespHead(uc, m)
		}
		if !errors.Is(err, errWouldBlock) {
			return 0, 0, writeFailed{err}
		}
		out = out[written:] // what the socket did not take
	}
	if _, err = uc.c.Write(out); err != nil {
		return 0, 0, writeFailed{err}
	}
	if len(body) > 0 {
		if _, err = uc.c.Write(body); err != nil {
			return 0, 0, writeFailed{err}
		}
	}
	for *rest > 0 {
		// The client's body streams through the upstream buffer, which
		// is free until the response.
		hc.readDeadline()
		m, rerr := hc.c.Read(uc.buf[:min(int64(len(uc.buf)), *rest)])
		if m > 0 {
			*rest -= int64(m)
			if _, err = uc.c.Write(uc.buf[:m]); err != nil {
				return 0, 0, err
			}
		}
		if rerr != nil && *rest > 0 {
			return 0, 0, clientAbort{rerr}
		}
	}
	return readRespHead(uc, 0)
}

// readRespHead reads until uc.buf holds a whole response head; the first
// n bytes are already there. It returns the bytes in uc.buf and where the
// head ends.
func readRespHead(uc *upConn, n int) (int, int, error) {
	scanned := 0
	for {
		if i := bytes.Index(uc.buf[scanned:n], []byte("\r\n\r\n")); i >= 0 {
			end := scanned + i + 4
			// Interim 1xx answers (but 101) are dropped, as fasthttp's
			// client does.
			if interimStatus(uc.buf[:end]) {
				n = copy(uc.buf, uc.buf[end:n])
				scanned = 0
				continue
			}
			return n, end, nil
		}
		scanned = max(0, n-3)
		if n == len(uc.buf) {
			return n, 0, errRespTooLarge
		}
		m, err := uc.c.Read(uc.buf[n:])
		n += m
		if err != nil {
			if errors.Is(err, io.EOF) && n > 0 {
				err = io.ErrUnexpectedEOF
			}
			return n, 0, err
		}
	}
}

func interimStatus(head []byte) bool {
	return len(head) > 12 && head[9] == '1' && !(head[10] == '0' && head[11] == '1')
}

// parseResponseHead checks an upstream response head and finds its
// framing. A response the lane cannot frame without doubt is refused
// (502), never guessed at: that is where response smuggling starts.
func parseResponseHead(b []byte, toHEAD bool, r *upResp) error {
	*r = upResp{length: -1}
	if len(b) < 16 || string(b[:7]) != "HTTP/1." || (b[7] != '1' && b[7] != '0') || b[8] != ' ' {
		return errBadResponse
	}
	http11 := b[7] == '1'
	st := 0
	for _, c := range b[9:12] {
		if c < '0' || c > '9' {
			return errBadResponse
		}
		st = st*10 + int(c-'0')
	}
	if st < 100 || (b[12] != ' ' && b[12] != '\r') {
		return errBadResponse
	}
	r.status = st
	r.keepAlive = http11
	// The reason phrase: visible bytes, spaces and tabs, up to CRLF.
	i := 12
	if b[i] == ' ' {
		for i++; i < len(b) && b[i] != '\r'; i++ {
			if c := b[i]; (c < ' ' && c != '\t') || c == 0x7f {
				return errBadResponse
			}
		}
	}
	if i+1 >= len(b) || b[i] != '\r' || b[i+1] != '\n' {
		return errBadResponse
	}
	i += 2
	var te, cl bool
	for {
		if i+1 >= len(b) {
			return errBadResponse
		}
		if b[i] == '\r' {
			if b[i+1] != '\n' || i+2 != len(b) {
				return errBadResponse
			}
			break // the empty line that ends the head
		}
		ns, ne, vs, ve, next, ok := scanField(b, i)
		if !ok {
			return errBadResponse
		}
		name, value := b[ns:ne], b[vs:ve]
		i = next
		switch len(name) {
		case 10:
			if bytes.EqualFold(name, hdrConnection) {
				for tok := range bytes.SplitSeq(value, []byte(",")) {
					tok = bytes.TrimSpace(tok)
					if bytes.EqualFold(tok, []byte("close")) {
						r.keepAlive = false
					} else if !http11 && bytes.EqualFold(tok, []byte("keep-alive")) {
						r.keepAlive = true
					}
				}
			}
		case 14:
			if bytes.EqualFold(name, []byte("Content-Length")) {
				n, err := strconv.ParseInt(string(value), 10, 64)
				if err != nil || n < 0 || value[0] == '+' || (cl && n != r.length) {
					return errBadResponse
				}
				cl = true
				r.length = n
			}
		case 17:
			if bytes.EqualFold(name, []byte("Transfer-Encoding")) {
				if te || !bytes.EqualFold(value, []byte("chunked")) {
					return errBadResponse
				}
				te = true
			}
		}
	}
	if te && cl {
		return errBadResponse
	}
	switch {
	case toHEAD, st == 204, st == 304, st < 200:
		if st == 101 {
			return errBadResponse // no upgrade was asked for
		}
		r.noBody = true
		r.length = 0
	case te:
		r.chunked = true
		r.length = -1
	case !cl:
		r.keepAlive = false // delimited by close
	}
	return nil
}

// appendResponseFields appends the status line's code and reason and the
// fields of the upstream head b for the client: hop-by-hop fields and those
// its Connection names are dropped (Transfer-Encoding stays: the body is
// relayed in the framing it came in).
func appendResponseFields(out, b []byte, closeClient bool) []byte {
	i := bytes.IndexByte(b, '\n') + 1
	out = append(out, b[9:i]...)
	var conn []byte
	for j := i; j < len(b); {
		e := bytes.IndexByte(b[j:], '\n') + j + 1
		line := b[j:e]
		if c := bytes.IndexByte(line, ':'); c > 0 && bytes.EqualFold(line[:c], hdrConnection) {
			conn = append(conn, ',')
			conn = append(conn, bytes.TrimSpace(line[c+1:])...)
		}
		j = e
	}
	for j := i; j < len(b); {
		e := bytes.IndexByte(b[j:], '\n') + j + 1
		line := b[j:e]
		j = e
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			continue // the final CRLF
		}
		name := line[:c]
		if isHopName(name) || (len(conn) > 0 && namedIn(conn, name)) {
			continue
		}
		out = append(out, line...)
	}
	if closeClient {
		out = append(out, "Connection: close\r\n"...)
	}
	return append(out, "\r\n"...)
}

// chunkScanner follows a chunked body as it is relayed, to find its end.
// It checks the syntax strictly: a malformed body aborts the response.
type chunkScanner struct {
	state  uint8
	size   uint64
	digits int
	line   int
}

const (
	csSize uint8 = iota
	csSizeBWS
	csExt
	csSizeLF
	csData
	csDataCR
	csDataLF
	csTrailerStart
	csTrailer
	csTrailerLF
	csEndLF
)

var errBadChunk = errors.New("malformed chunked body from upstream")

// scan consumes b and returns how many of its bytes belong to the body and
// whether the body ended there.
func (s *chunkScanner) scan(b []byte) (int, bool, error) {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch s.state {
		case csSize:
			switch {
			case unhex(c) >= 0:
				if s.digits == 15 {
					return i, false, errBadChunk
				}
				s.size = s.size<<4 | uint64(unhex(c))
				s.digits++
			case s.digits > 0 && c == ';':
				s.state, s.line = csExt, 0
			case s.digits > 0 && (c == ' ' || c == '\t'):
				s.state = csSizeBWS
			case s.digits > 0 && c == '\r':
				s.state = csSizeLF
			default:
				return i, false, errBadChunk
			}
		case csSizeBWS: // RFC 9112 §7.1.1: only whitespace, then ';' or the end
			switch c {
			case ' ', '\t':
			case ';':
				s.state, s.line = csExt, 0
			case '\r':
				s.state = csSizeLF
			default:
				return i, false, errBadChunk
			}
		case csExt:
			if c == '\r' {
				s.state = csSizeLF
			} else if (c < ' ' && c != '\t') || s.line > 4096 {
				return i, false, errBadChunk
			}
			s.line++
		case csSizeLF:
			if c != '\n' {
				return i, false, errBadChunk
			}
			if s.size == 0 {
				s.state, s.line = csTrailerStart, 0
			} else {
				s.state = csData
			}
		case csData:
			k := min(uint64(len(b)-i), s.size)
			s.size -= k
			i += int(k) - 1
			if s.size == 0 {
				s.state = csDataCR
			}
		case csDataCR:
			if c != '\r' {
				return i, false, errBadChunk
			}
			s.state = csDataLF
		case csDataLF:
			if c != '\n' {
				return i, false, errBadChunk
			}
			s.state, s.digits = csSize, 0
		case csTrailerStart:
			if c == '\r' {
				s.state = csEndLF
			} else {
				s.state = csTrailer
				i--
			}
		case csTrailer:
			s.line++
			if c == '\r' {
				s.state = csTrailerLF
			} else if (c < ' ' && c != '\t') || s.line > 16<<10 {
				return i, false, errBadChunk
			}
		case csTrailerLF:
			if c != '\n' {
				return i, false, errBadChunk
			}
			s.state = csTrailerStart
		case csEndLF:
			if c != '\n' {
				return i, false, errBadChunk
			}
			return i + 1, true, nil
		}
	}
	return len(b), false, nil
}

// mirrorH1 copies a lane request, as rewritten for the upstream, to the
// mirror version; the copy's answer is recorded and discarded.
func (p *Proxy) mirrorH1(r *route, m *mirrorPolicy, head, body []byte) {
	ep, ok := mirrorTarget(r, m)
	if !ok {
		return
	}
	cp := fasthttp.AcquireRequest()
	cp.Header.DisableNormalizing()
	if err := cp.Header.Read(bufio.NewReader(bytes.NewReader(head))); err != nil {
		<-mirrorSlots
		fasthttp.ReleaseRequest(cp)
		r.rec.RecordMirror(0, 0, record.Other)
		return
	}
	cp.SetBody(body)
	cp.URI().SetSchemeBytes(ep.scheme)
	sendMirror(r, ep, cp)
}

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// appendStatusLine appends "code reason\r\n".
func appendStatusLine(b []byte, status int) []byte {
	b = appendInt(b, int64(status))
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	return append(b, "\r\n"...)
}

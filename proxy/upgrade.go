package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/valyala/fasthttp"
)

// maxUpgradeHead bounds the upstream's answer to an upgrade request.
const maxUpgradeHead = 16 << 10

var errBadUpgradeAnswer = errors.New("malformed answer to upgrade request")

// serveUpgradeFast forwards an HTTP/1.1 upgrade (WebSocket): it sends the
// handshake to an endpoint on a fresh connection and, on 101, hijacks the
// client connection and copies bytes both ways until either side closes.
// The handshake is recorded like any request (status 101); the session
// that follows is not a request and is not timed.
func (p *Proxy) serveUpgradeFast(ctx *fasthttp.RequestCtx, r *route, v int, start time.Time) {
	ep := r.pools[v].pick()
	if ep == nil {
		p.failFast(ctx, r, v, nil, start, fasthttp.StatusServiceUnavailable, record.Other, errNoEndpoint)
		return
	}
	req := &ctx.Request
	// Keep Connection and Upgrade: they are the point of the request.
	for _, h := range hopHeaders {
		if !bytes.EqualFold(h, []byte("Upgrade")) {
			req.Header.DelBytes(h)
		}
	}
	// The same names in another letter case, as received (the server
	// keeps names as they came, and DelBytes matches exactly).
	rawFields(req.Header.RawHeaders(), func(name, _ []byte) bool {
		if isHopName(name) && !bytes.EqualFold(name, hdrConnection) && !bytes.EqualFold(name, []byte("Upgrade")) {
			req.Header.DelBytes(name)
		}
		return true
	})
	setForwardedFast(ctx)
	up, err := p.dialEndpoint(ep, time.Until(start.Add(r.timeout)))
	if err != nil {
		kind, status := classify(err)
		p.failFast(ctx, r, v, ep, start, status, kind, err)
		return
	}
	up.SetDeadline(start.Add(r.timeout))
	var out bytes.Buffer
	req.Header.SetContentLength(len(req.Body()))
	if _, err := req.WriteTo(&out); err == nil {
		_, err = up.Write(out.Bytes())
	}
	if err != nil {
		up.Close()
		kind, status := classify(err)
		p.failFast(ctx, r, v, ep, start, status, kind, err)
		return
	}
	br := bufio.NewReaderSize(up, 4096)
	head, code, err := readHead(br)
	if err != nil {
		up.Close()
		kind, status := classify(err)
		p.failFast(ctx, r, v, ep, start, status, kind, err)
		return
	}
	if code != fasthttp.StatusSwitchingProtocols {
		// Refused upgrade: relay it as an ordinary response.
		err := ctx.Response.Read(bufio.NewReader(io.MultiReader(bytes.NewReader(head), br)))
		up.Close()
		if err != nil {
			kind, status := classify(err)
			p.failFast(ctx, r, v, ep, start, status, kind, err)
			return
		}
		ctx.Response.Header.ResetConnectionClose()
		r.finish(v, time.Since(start), code, record.None)
		p.alog.fast(ctx, start, r.name, r.versions[v], code, record.None)
		return
	}
	up.SetDeadline(time.Time{})
	r.finish(v, time.Since(start), code, record.None)
	p.alog.fast(ctx, start, r.name, r.versions[v], code, record.None)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		if !p.trackHijacked(c, true) {
			up.Close()
			return
		}
		defer p.trackHijacked(c, false)
		if _, err := c.Write(head); err != nil {
			up.Close()
			return
		}
		splice(c, up, br)
	})
}

// splice copies client↔upstream until one side ends, then closes both.
// Buffered upstream bytes already read with the head go first.
func splice(client, up net.Conn, br *bufio.Reader) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(client, br)
		closeWrite(client)
	}()
	go func() {
		defer wg.Done()
		io.Copy(up, client)
		closeWrite(up)
	}()
	wg.Wait()
	client.Close()
	up.Close()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// readHead reads an HTTP/1.1 response head and its status code.
func readHead(br *bufio.Reader) ([]byte, int, error) {
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) && len(head) < maxUpgradeHead {
				continue
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, 0, errBadUpgradeAnswer
			}
			return nil, 0, err
		}
		if len(head) > maxUpgradeHead {
			return nil, 0, errBadUpgradeAnswer
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			break
		}
	}
	// "HTTP/1.1 101 Switching Protocols"
	if len(head) < 12 || !bytes.HasPrefix(head, []byte("HTTP/1.")) || head[8] != ' ' {
		return nil, 0, errBadUpgradeAnswer
	}
	code, err := strconv.Atoi(string(head[9:12]))
	if err != nil {
		return nil, 0, errBadUpgradeAnswer
	}
	return head, code, nil
}

// dialEndpoint opens a dedicated connection (upgrades cannot use a pool).
func (p *Proxy) dialEndpoint(ep *endpoint, timeout time.Duration) (net.Conn, error) {
	cfg := p.state.Load().cfg
	connect := time.Duration(cfg.Timeouts.withDefaults().Connect)
	if timeout > 0 {
		connect = min(connect, timeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), connect)
	defer cancel()
	var c net.Conn
	var err error
	if p.opts.Dial != nil {
		c, err = p.opts.Dial(ctx, "tcp", ep.spec.addr)
	} else {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", ep.spec.addr)
	}
	if err != nil {
		return nil, err
	}
	if ep.spec.scheme == "https" {
		host, _, _ := net.SplitHostPort(ep.spec.addr)
		tc := tls.Client(c, &tls.Config{ServerName: host, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	}
	return c, nil
}

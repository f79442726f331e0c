package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"time"

	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/valyala/fasthttp"
)

// forwardH2C carries an HTTP/1.1 request to an endpoint that only speaks
// HTTP/2 without TLS (declared h2c://), through the HTTP/2 path's
// transport. It buffers the response body: HTTP/1.1 clients of h2c-only
// services are the rare case, and the fast path is kept for the common one.
func (p *Proxy) forwardH2C(ctx *fasthttp.RequestCtx, r *route, v int, ep *endpoint, start time.Time) {
	req := &ctx.Request
	c, cancel := context.WithDeadline(context.Background(), start.Add(r.timeout))
	defer cancel()
	out, err := http.NewRequestWithContext(c, string(req.Header.Method()),
		"http://"+ep.spec.addr+string(req.RequestURI()), bytes.NewReader(req.Body()))
	if err != nil {
		p.failFast(ctx, r, v, ep, start, fasthttp.StatusBadGateway, record.Other, err)
		return
	}
	out.Host = string(ctx.Host())
	for k, val := range req.Header.All() {
		switch string(k) {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		out.Header.Add(string(k), string(val))
	}
	out.ContentLength = int64(len(req.Body()))
	ep.inflight.Add(1)
	resp, err := p.h2.h2c.RoundTrip(out)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	ep.inflight.Add(-1)
	if err != nil {
		kind, status := classify(err)
		p.failFast(ctx, r, v, ep, start, status, kind, err)
		return
	}
	ctx.Response.Reset()
	ctx.Response.SetStatusCode(resp.StatusCode)
	for k, vals := range resp.Header {
		switch k {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Trailer", "Content-Length":
			continue
		}
		for _, val := range vals {
			ctx.Response.Header.Add(k, val)
		}
	}
	ctx.Response.SetBody(body)
	r.finish(v, time.Since(start), resp.StatusCode, record.None)
	p.alog.fast(ctx, start, r.name, r.versions[v], resp.StatusCode, record.None)
}

// probeH2C health-checks an h2c-only endpoint over HTTP/2.
func probeH2C(ep *endpoint, hc HealthCheck) bool {
	c, cancel := context.WithTimeout(context.Background(), time.Duration(hc.Timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(c, "GET", "http://"+ep.spec.addr+hc.Path, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "guardian-health-check")
	resp, err := h2cProbeTransport.RoundTrip(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

var h2cProbeTransport = func() *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: &p}
}()

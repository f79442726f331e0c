package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/deployment-guardian/guardian/proxy/record"
)

// h2Server serves HTTP/2 (TLS h2 and h2c) with net/http and forwards with
// httputil.ReverseProxy, which relays trailers and flushes streams.
type h2Server struct {
	p   *Proxy
	srv *http.Server
	ln  *chanListener
	rp  *httputil.ReverseProxy
	// h1 speaks HTTP/1.1 (or h2 by ALPN for https) upstream; h2c speaks
	// HTTP/2 with prior knowledge, for gRPC and h2c endpoints.
	h1, h2c *http.Transport
}

type ctxKey struct{}

// lisKey carries the index of the listener a connection came in on.
type lisKey struct{}

// h2Req carries the routing decision from ServeHTTP to the ReverseProxy
// hooks.
type h2Req struct {
	r     *route
	v     int
	ep    *endpoint
	grpc  bool
	kind  record.ErrorKind
	code  int
	err   error
	start time.Time
	// client is the inbound request's own context, to tell a client that
	// went away from the route's timeout.
	client context.Context
}

func (hr *h2Req) clientGone() bool { return hr.client != nil && hr.client.Err() != nil }

func newH2Server(p *Proxy, t Timeouts) *h2Server {
	h := &h2Server{p: p, ln: newChanListener()}
	var protos http.Protocols
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(true)
	h.srv = &http.Server{
		Handler:           h,
		Protocols:         &protos,
		IdleTimeout:       time.Duration(t.Idle),
		ReadHeaderTimeout: sortTimeout,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, lisKey{}, listenerOf(c))
		},
	}
	dial := (&net.Dialer{Timeout: time.Duration(t.Connect)}).DialContext
	if p.opts.Dial != nil {
		dial = p.opts.Dial
	}
	h.h1 = &http.Transport{
		DialContext:           dial,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       time.Duration(t.Idle),
		ResponseHeaderTimeout: time.Duration(t.ResponseHeader),
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
	}
	var up http.Protocols
	up.SetUnencryptedHTTP2(true)
	up.SetHTTP2(true)
	h.h2c = &http.Transport{
		DialContext:           dial,
		Protocols:             &up,
		IdleConnTimeout:       time.Duration(t.Idle),
		ResponseHeaderTimeout: time.Duration(t.ResponseHeader),
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
	}
	h.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			hr := pr.In.Context().Value(ctxKey{}).(*h2Req)
			pr.SetURL(hr.ep.url)
			pr.Out.Host = pr.In.Host
			// Rewrite drops inbound X-Forwarded-*; keep the chain like the
			// HTTP/1.1 path does, then append this hop.
			if prior := pr.In.Header.Values("X-Forwarded-For"); len(prior) > 0 {
				pr.Out.Header["X-Forwarded-For"] = prior
			}
			pr.SetXForwarded()
		},
		Transport:      h,
		ModifyResponse: trailersOnlyToTrailers,
		FlushInterval:  -1, // gRPC and SSE streams must not wait for a buffer to fill
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			hr := req.Context().Value(ctxKey{}).(*h2Req)
			hr.kind, hr.code = classify(err)
			if errors.Is(err, context.Canceled) && hr.clientGone() {
				// The client went away: not the version's fault, and there
				// is nobody to answer. Recorded as 499, a client error.
				hr.kind, hr.code = record.None, 499
			}
			hr.err = err
			if hr.grpc {
				// gRPC clients read the status from grpc-status, not the
				// HTTP code.
				w.Header().Set("Content-Type", "application/grpc")
				w.Header().Set("Grpc-Status", "14") // UNAVAILABLE
				w.Header().Set("Grpc-Message", "guardian: upstream unavailable")
				w.WriteHeader(http.StatusOK)
				return
			}
			http.Error(w, strings.TrimSuffix(errorBody(hr.code), "\n"), hr.code)
		},
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	return h
}

// RoundTrip picks the upstream protocol: gRPC needs HTTP/2 end to end, and
// endpoints declared h2c only speak HTTP/2.
func (h *h2Server) RoundTrip(req *http.Request) (*http.Response, error) {
	hr := req.Context().Value(ctxKey{}).(*h2Req)
	if hr.ep.spec.scheme == "h2c" || (hr.grpc && hr.ep.spec.scheme == "http") {
		return h.h2c.RoundTrip(req)
	}
	return h.h1.RoundTrip(req)
}

func (h *h2Server) serve() {
	if err := h.srv.Serve(h.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		h.p.log.Error("proxy: http/2 server stopped", "err", err)
	}
}

func (h *h2Server) shutdown(ctx context.Context) error {
	err := h.srv.Shutdown(ctx)
	h.h1.CloseIdleConnections()
	h.h2c.CloseIdleConnections()
	return err
}

// ServeHTTP forwards one HTTP/2 request.
func (h *h2Server) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	p := h.p
	start := time.Now()
	st := p.state.Load()
	lis := -1
	if st.bound {
		if v, ok := req.Context().Value(lisKey{}).(int); ok {
			lis = v
		}
	}
	r := st.match(lis, []byte(req.Host), []byte(req.URL.Path))
	if r == nil {
		http.Error(w, "no route", http.StatusNotFound)
		p.alog.std(req, start, "", "", http.StatusNotFound, record.None)
		return
	}
	v := r.chooseStd(req)
	hr := &h2Req{r: r, v: v, start: start, grpc: strings.HasPrefix(req.Header.Get("Content-Type"), "application/grpc")}
	hr.ep = r.pools[v].pick()
	if hr.ep == nil {
		r.finish(v, time.Since(start), 0, record.Other)
		if hr.grpc {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "14")
			w.Header().Set("Grpc-Message", "guardian: no upstream endpoint")
			w.WriteHeader(http.StatusOK)
		} else {
			http.Error(w, "no upstream endpoint available", http.StatusServiceUnavailable)
		}
		p.alog.std(req, start, r.name, r.versions[v], http.StatusServiceUnavailable, record.Other)
		p.report(&ForwardError{Route: r.name, Version: r.versions[v], Method: req.Method, Path: req.URL.Path,
			Status: http.StatusServiceUnavailable, Kind: record.Other, Err: errNoEndpoint})
		return
	}
	if m := r.dyn.Load().mirror; m != nil && mirrorableStd(req, hr.grpc) && m.take() {
		body, err := bufferBodyStd(req)
		if err != nil {
			// The client did not send its whole body: nothing to forward.
			http.Error(w, "request body incomplete", http.StatusBadRequest)
			return
		}
		p.mirrorStd(r, m, req, body)
	}
	hr.client = req.Context()
	ctx, cancel := context.WithTimeout(context.WithValue(req.Context(), ctxKey{}, hr), r.timeout)
	defer cancel()
	sw := &statusWriter{ResponseWriter: w}
	hr.ep.inflight.Add(1)
	defer func() {
		hr.ep.inflight.Add(-1)
		// ReverseProxy aborts with http.ErrAbortHandler when a streamed
		// body breaks after the head was sent; record it before passing
		// the abort on.
		if e := recover(); e != nil {
			kind, status := record.Reset, sw.code
			if hr.clientGone() {
				kind, status = record.None, 499
			}
			r.finish(v, time.Since(start), status, kind)
			panic(e)
		}
	}()
	h.rp.ServeHTTP(sw, req.WithContext(ctx))
	lat := time.Since(start)
	status := sw.code
	kind := hr.kind
	if hr.code == 499 {
		status = 499
	} else if hr.err != nil {
		status = 0
		p.report(&ForwardError{Route: r.name, Version: r.versions[v], Endpoint: hr.ep.raw, Method: req.Method,
			Path: req.URL.Path, Status: hr.code, Kind: hr.kind, Err: hr.err})
	} else if hr.grpc && grpcServerFault(grpcStatus(w.Header())) {
		kind = record.GRPC
	}
	r.finish(v, lat, status, kind)
	logged := status
	if hr.err != nil {
		logged = hr.code
	}
	p.alog.std(req, start, r.name, r.versions[v], logged, kind)
}

// grpcStatus finds grpc-status among the headers and trailers that
// ReverseProxy copied into the response header map: as a header
// (trailers-only responses), as an announced trailer, or with TrailerPrefix.
func grpcStatus(h http.Header) string {
	if s := h.Get("Grpc-Status"); s != "" {
		return s
	}
	return h.Get(http.TrailerPrefix + "Grpc-Status")
}

// grpcServerFault reports whether a gRPC status code blames the server:
// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
// DATA_LOSS. Client-side codes (NOT_FOUND, INVALID_ARGUMENT…) are answers.
func grpcServerFault(s string) bool {
	switch s {
	case "2", "4", "12", "13", "14", "15":
		return true
	}
	return false
}

// chooseStd is chooseFast for net/http requests.
func (r *route) chooseStd(req *http.Request) int {
	vals := stdValues{req: req}
	for i := range r.cohorts {
		c := &r.cohorts[i]
		if c.matches(vals.get(c.kind, c.name)) {
			return c.version
		}
	}
	d := r.dyn.Load()
	for i := range d.routes {
		if d.routes[i].matchStd(&vals) {
			return d.routes[i].version
		}
	}
	s := r.split.Load()
	var key string
	if r.stickyHdr != "" {
		key = req.Header.Get(r.stickyHdr)
	} else if r.stickyCook != "" {
		if ck, err := req.Cookie(r.stickyCook); err == nil {
			key = ck.Value
		}
	}
	if key != "" {
		return s.sticky([]byte(key))
	}
	return s.keyless()
}

// statusWriter remembers the status sent; Unwrap lets ReverseProxy flush
// and read trailers through http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// mirrorableStd reports whether a request can be mirrored: one with no
// body, or a body of known length up to mirrorBodyMax. A gRPC call or a
// body of unknown length is a stream, and copying it would hold the
// user's request until it ends.
func mirrorableStd(req *http.Request, grpc bool) bool {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		return true
	}
	return !grpc && req.ContentLength > 0 && req.ContentLength <= mirrorBodyMax
}

// bufferBodyStd reads a mirrorable request's body into memory and puts a
// reader of it back in its place, so the user's request and its copy each
// get the whole body.
func bufferBodyStd(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		return nil, nil
	}
	b := make([]byte, req.ContentLength)
	if _, err := io.ReadFull(req.Body, b); err != nil {
		return nil, err
	}
	req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(b))
	return b, nil
}

// mirrorStd sends a copy of an HTTP/2 request, with body (the whole of it,
// from bufferBodyStd), to the mirror version.
func (p *Proxy) mirrorStd(r *route, m *mirrorPolicy, req *http.Request, body []byte) {
	ep, ok := mirrorTarget(r, m)
	if !ok {
		return
	}
	out := req.Clone(context.Background())
	out.URL.Scheme, out.URL.Host = ep.url.Scheme, ep.url.Host
	out.RequestURI = ""
	out.Body = http.NoBody
	if len(body) > 0 {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.ContentLength = int64(len(body))
	}
	timeout := r.timeout
	go func() {
		defer func() { <-mirrorSlots }()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		tr := p.h2.h1
		if ep.spec.scheme == "h2c" {
			tr = p.h2.h2c
		}
		resp, err := tr.RoundTrip(out.WithContext(ctx))
		lat := time.Since(start)
		if err != nil {
			kind, _ := classify(err)
			r.rec.RecordMirror(lat, 0, kind)
			return
		}
		resp.Body.Close()
		kind := record.None
		if resp.StatusCode >= 500 {
			kind = record.Upstream5xx
		}
		r.rec.RecordMirror(lat, resp.StatusCode, kind)
	}()
}

// trailersOnlyToTrailers turns a gRPC "trailers-only" response (status in
// the header block, no body) into headers plus trailers. Relayed as is, the
// status would go out as ordinary headers followed by a separate end of
// stream whenever the header block is flushed early, and gRPC clients then
// report "server closed the stream without sending trailers".
func trailersOnlyToTrailers(res *http.Response) error {
	if !strings.HasPrefix(res.Header.Get("Content-Type"), "application/grpc") || res.Header.Get("Grpc-Status") == "" {
		return nil
	}
	if res.Trailer == nil {
		res.Trailer = http.Header{}
	}
	for _, k := range []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin"} {
		if vs, ok := res.Header[k]; ok {
			res.Trailer[k] = vs
			delete(res.Header, k)
		}
	}
	return nil
}

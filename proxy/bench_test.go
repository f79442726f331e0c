package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/valyala/fasthttp"
)

// fastBackend serves a small fixed body on loopback with fasthttp, so the
// benchmarks measure the proxy, not the backend.
func fastBackend(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello from the backend\n") }}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

func benchProxy(b *testing.B, cfg Config) (*Proxy, string) {
	b.Helper()
	p, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go p.Serve(ln, nil)
	b.Cleanup(func() { p.Shutdown(b.Context()) })
	return p, ln.Addr().String()
}

// runClient sends n GETs to addr over keep-alive connections from
// parallel goroutines and returns the time per request.
func runClient(b *testing.B, addr string, n int) time.Duration {
	hc := &fasthttp.HostClient{Addr: addr, MaxConns: 256}
	const workers = 32
	per := n / workers
	if per == 0 {
		per = 1
	}
	errc := make(chan error, workers)
	start := time.Now()
	for range workers {
		go func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + addr + "/")
			for range per {
				if err := hc.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					errc <- fmt.Errorf("status %d err %v", resp.StatusCode(), err)
					return
				}
			}
			errc <- nil
		}()
	}
	for range workers {
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start) / time.Duration(per*workers)
}

// BenchmarkProxyVsDirect reports the time per request through the proxy
// (90/10 split, recording on) and, in the same run, straight to the same
// backend: x_direct is the proxied/direct ratio of time per request.
func BenchmarkProxyVsDirect(b *testing.B) {
	backend := fastBackend(b)
	cfg := twoVersions(backend, backend, 10)
	_, addr := benchProxy(b, cfg)
	runClient(b, backend, 2000) // warm both connection pools
	runClient(b, addr, 2000)
	b.ResetTimer()
	direct := runClient(b, backend, b.N)
	proxied := runClient(b, addr, b.N)
	b.StopTimer()
	b.ReportMetric(float64(direct.Nanoseconds()), "direct-ns/req")
	b.ReportMetric(float64(proxied.Nanoseconds()), "proxied-ns/req")
	b.ReportMetric(float64(proxied)/float64(direct), "x_direct")
}

// BenchmarkServeFast measures the proxy's own HTTP/1.1 request path
// (route match, version choice, header rewrite, upstream exchange,
// recording) with -benchmem: the allocations shown are the proxy's.
// BenchmarkLaneVsFastHTTP sends the same requests through the HTTP/1.1
// lane and through the fasthttp path of one proxy, in interleaved rounds,
// and reports each path's time per request and the ratio (x_fasthttp
// below 1: the lane costs less). The client and the backend are the same
// for both and share the machine, so the ratio understates the difference
// between the proxies' own costs; bench/proxy/run.sh measures that on a
// pinned core.
func BenchmarkLaneVsFastHTTP(b *testing.B) {
	backend := fastBackend(b)
	p, lane := benchProxy(b, twoVersions(backend, backend, 10))
	fast := startFastOnly(b, p)
	runClient(b, lane, 2000) // warm both paths' connection pools
	runClient(b, fast, 2000)
	const rounds = 4
	var tl, tf time.Duration
	b.ResetTimer()
	for range rounds {
		tl += runClient(b, lane, b.N/rounds+1)
		tf += runClient(b, fast, b.N/rounds+1)
	}
	b.StopTimer()
	b.ReportMetric(float64(tl.Nanoseconds())/rounds, "lane-ns/req")
	b.ReportMetric(float64(tf.Nanoseconds())/rounds, "fasthttp-ns/req")
	b.ReportMetric(float64(tl)/float64(tf), "x_fasthttp")
	b.ReportMetric(0, "ns/op")
}

func BenchmarkServeFast(b *testing.B) {
	backend := fastBackend(b)
	cfg := twoVersions(backend, backend, 10)
	cfg.Routes[0].Sticky.Header = "X-User"
	p, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	for _, keyed := range []bool{false, true} {
		b.Run(fmt.Sprintf("sticky=%v", keyed), func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			var req fasthttp.Request
			remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5555}
			b.ReportAllocs()
			for b.Loop() {
				req.Reset()
				req.Header.SetMethod("GET")
				req.SetRequestURI("/api/items?id=7")
				req.Header.SetHost("shop.example")
				if keyed {
					req.Header.Set("X-User", "user-42")
				}
				ctx.Init(&req, remote, nil)
				p.serveFast(&ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatalf("status %d", ctx.Response.StatusCode())
				}
			}
		})
	}
}

// BenchmarkChoose is the version choice alone.
func BenchmarkChoose(b *testing.B) {
	r := &route{versions: []string{"stable", "canary"}, stickyHdr: "X-User",
		cohorts: []cohortRule{{kind: cohortHeader, name: "X-Beta", nameB: []byte("X-Beta"), value: []byte("1"), version: 1}}}
	r.split.Store(newSplit(r.versions, rollout.Weights{"stable": 90, "canary": 10}))
	r.dyn.Store(&dynamic{})
	var req fasthttp.Request
	req.Header.Set("X-User", "user-42")
	b.ReportAllocs()
	for b.Loop() {
		r.chooseFast(&req)
	}
}

// BenchmarkChooseWithMatchRoutes adds what an A/B rollout sets: a header
// route and a regex route that both miss, the costly case (every rule is
// looked up, headers in any case). Compare with BenchmarkChoose.
func BenchmarkChooseWithMatchRoutes(b *testing.B) {
	r := &route{versions: []string{"stable", "canary"}, stickyHdr: "X-User"}
	r.split.Store(newSplit(r.versions, rollout.Weights{"stable": 90, "canary": 10}))
	compiled, err := compileRoutes([]rollout.Route{
		{Name: "ab", Version: "canary", Match: []rollout.MatchRule{{Source: "header", Name: "X-Variant", Op: "exact", Value: "b"}}},
		{Name: "beta", Version: "canary", Match: []rollout.MatchRule{{Source: "cookie", Name: "plan", Op: "regex", Value: "beta-[0-9]+"}}},
	}, r.versions)
	if err != nil {
		b.Fatal(err)
	}
	r.dyn.Store(&dynamic{routes: compiled})
	var req fasthttp.Request
	req.Header.Set("X-User", "user-42")
	req.Header.Set("Cookie", "plan=gold")
	b.ReportAllocs()
	for b.Loop() {
		r.chooseFast(&req)
	}
}

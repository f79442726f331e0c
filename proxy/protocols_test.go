package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/proxy/record"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// selfSigned returns a server TLS config for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "guardian-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// startTLSProxy serves cfg with TLS on 127.0.0.1:0.
func startTLSProxy(t *testing.T, cfg Config) (*Proxy, string, *x509.CertPool) {
	t.Helper()
	tc, pool := selfSigned(t)
	p, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveForTest(t, p, ln, tc)
	return p, "https://" + ln.Addr().String(), pool
}

func TestTLSServesHTTP2AndHTTP1(t *testing.T) {
	stable := newBackend(t, "stable", nil)
	canary := newBackend(t, "canary", nil)
	p, base, pool := startTLSProxy(t, twoVersions(stable.url(), canary.url(), 50))
	for _, tc := range []struct {
		name  string
		h2    bool
		proto string
	}{{"h2", true, "HTTP/2.0"}, {"http/1.1", false, "HTTP/1.1"}} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: tc.h2}
			if !tc.h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			seen := map[string]int{}
			for range 10 {
				resp, err := c.Get(base + "/")
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.Proto != tc.proto || resp.StatusCode != 200 {
					t.Fatalf("got %s %d, want %s 200", resp.Proto, resp.StatusCode, tc.proto)
				}
				seen[string(b)]++
			}
			if seen["stable"] != 5 || seen["canary"] != 5 {
				t.Errorf("split %v, want 5/5 at 50%%", seen)
			}
			if got := stable.last.Load().Header.Get("X-Forwarded-Proto"); got != "https" {
				t.Errorf("X-Forwarded-Proto %q, want https", got)
			}
		})
	}
	snap, _ := p.Snapshot("app")
	if n := snap.Versions["stable"].Requests + snap.Versions["canary"].Requests; n != 20 {
		t.Errorf("recorded %d requests over both paths, want 20", n)
	}
}

func TestH2CWithTrailers(t *testing.T) {
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "body:"+r.Header.Get("X-Forwarded-Proto"))
		w.Header().Set("X-Checksum", "abc")
	})
	_, base := startProxy(t, Config{Routes: []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}}}, Options{})
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", base+"/", nil)
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.last.Load().Header.Get("X-Forwarded-For"); got != "10.0.0.1, 127.0.0.1" {
		t.Errorf("backend X-Forwarded-For %q, want the chain with this hop appended", got)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "body:http" {
		t.Fatalf("got %s %q, want HTTP/2 body:http", resp.Proto, body)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "abc" {
		t.Errorf("trailer X-Checksum %q, want abc", got)
	}
}

func TestGRPCUnaryStreamingAndStatus(t *testing.T) {
	gs := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		return status.Error(codes.Unavailable, "backend says no")
	}))
	hs := health.NewServer()
	hs.SetServingStatus("shop", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)

	p, base := startProxy(t, Config{Routes: []Route{{Name: "grpc",
		Versions: []Version{{Name: "v", Endpoints: []string{"http://" + gl.Addr().String()}}}}}}, Options{})
	conn, err := grpc.NewClient(strings.TrimPrefix(base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)

	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "shop"})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary Check = %v, %v; want SERVING", resp, err)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check(nope) error %v, want NotFound relayed from trailers", err)
	}

	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch message %v, %v; want SERVING", m, err)
	}
	hs.SetServingStatus("shop", healthpb.HealthCheckResponse_NOT_SERVING)
	if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("second Watch message %v, %v; want NOT_SERVING streamed through", m, err)
	}

	err = conn.Invoke(ctx, "/shop.Cart/Add", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "backend says no") {
		t.Fatalf("Invoke error %v, want the backend's Unavailable", err)
	}
	cancel()

	snap, _ := p.Snapshot("grpc")
	v := snap.Versions["v"]
	// Check SERVING, Check NotFound (a client-side code, not an error),
	// Unavailable (a server fault). The Watch stream ended by cancel counts
	// too but may still be in flight; check the floor.
	if v.Requests < 3 || v.Errors < 1 {
		t.Errorf("recorded %d requests %d errors, want ≥3 and ≥1 (the Unavailable)", v.Requests, v.Errors)
	}
	rec, _ := p.Recorder("grpc")
	if k := rec.Kinds(0); k[record.GRPC] != 1 {
		t.Errorf("gRPC-kind errors %d, want 1 (Unavailable only; NotFound is an answer)", k[record.GRPC])
	}
}

func TestWebSocketEcho(t *testing.T) {
	b := newBackend(t, "ws", func(w http.ResponseWriter, r *http.Request) {
		websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }).ServeHTTP(w, r)
	})
	p, base := startProxy(t, Config{Routes: []Route{{Name: "ws", Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}}}, Options{})
	ws, err := websocket.Dial(strings.Replace(base, "http://", "ws://", 1)+"/echo", "", "http://127.0.0.1/")
	if err != nil {
		t.Fatalf("dial through proxy: %v", err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(5 * time.Second))
	for _, msg := range []string{"hello", strings.Repeat("x", 100_000), "bye"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		// The echo server answers per read, so a long message may come
		// back in several frames; read it whole.
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(ws, buf); err != nil {
			t.Fatal(err)
		}
		if got := string(buf); got != msg {
			t.Fatalf("echo of %d bytes came back as %d bytes", len(msg), len(got))
		}
	}
	snap, _ := p.Snapshot("ws")
	if s := snap.Versions["v"]; s.Requests != 1 || s.Status[1] != 1 {
		t.Errorf("recorded %+v, want the handshake once as 1xx", s)
	}
	if got := b.last.Load().Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("backend X-Forwarded-For %q, want 127.0.0.1", got)
	}
}

// TestUpgradeStripsHopHeadersInAnyCase sends an upgrade handshake whose
// hop-by-hop fields are in lower case: they must not reach the endpoint,
// while Connection and Upgrade, the point of the request, must.
func TestUpgradeStripsHopHeadersInAnyCase(t *testing.T) {
	b := newBackend(t, "up", func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
	})
	_, base := startProxy(t, Config{Routes: []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}}}, Options{})
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nconnection: Upgrade\r\nupgrade: test\r\n"+
		"keep-alive: 5\r\nproxy-authorization: secret\r\nte: trailers\r\nproxy-connection: x\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 101") {
		t.Fatalf("answer %q, %v; want 101", line, err)
	}
	h := b.last.Load().Header
	for _, k := range []string{"Keep-Alive", "Proxy-Authorization", "Te", "Proxy-Connection"} {
		if v := h.Values(k); len(v) > 0 {
			t.Errorf("endpoint got %s: %q", k, v)
		}
	}
	if h.Get("Upgrade") != "test" || !strings.EqualFold(h.Get("Connection"), "upgrade") {
		t.Errorf("endpoint got Upgrade %q Connection %q, want both kept", h.Get("Upgrade"), h.Get("Connection"))
	}
}

// TestHTTP1OverTLSUsesTheLane sends HTTP/1.1 over TLS: plain requests are
// served by the lane, a chunked one hands the connection to fasthttp, and
// both say X-Forwarded-Proto https; the connection carries on after the
// hand-off.
func TestHTTP1OverTLSUsesTheLane(t *testing.T) {
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %d", r.Header.Get("X-Forwarded-Proto"), r.Method, len(body))
	})
	p, base, pool := startTLSProxy(t, Config{Routes: []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}}})
	c, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	roundTrip := func(req string) string {
		t.Helper()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body)
	}
	if got := roundTrip("GET / HTTP/1.1\r\nHost: x\r\n\r\n"); got != "https GET 0" {
		t.Fatalf("lane over TLS: %q, want \"https GET 0\"", got)
	}
	p.lane.mu.Lock()
	onLane := len(p.lane.conns)
	p.lane.mu.Unlock()
	if onLane != 1 {
		t.Fatalf("%d connections on the lane, want the TLS one", onLane)
	}
	if got := roundTrip("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"); got != "https POST 5" {
		t.Fatalf("handed off over TLS: %q, want \"https POST 5\"", got)
	}
	if got := roundTrip("GET / HTTP/1.1\r\nHost: x\r\n\r\n"); got != "https GET 0" {
		t.Fatalf("after the hand-off: %q, want \"https GET 0\"", got)
	}
}

// h2cOnlyBackend serves HTTP/2 with prior knowledge and nothing else.
func h2cOnlyBackend(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "h2c://" + ln.Addr().String()
}

func TestH2CEndpointServesBothClientProtocols(t *testing.T) {
	ep := h2cOnlyBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Upstream-Proto", r.Proto)
		io.WriteString(w, r.Method+" "+r.Host+" "+string(b))
	})
	p, base := startProxy(t, Config{Routes: []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{ep}}}}}}, Options{})
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	for _, tc := range []struct {
		name string
		c    *http.Client
	}{{"http/1.1 client", newClient()}, {"h2c client", &http.Client{Transport: &http.Transport{Protocols: &protos}}}} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", base+"/x", strings.NewReader("payload"))
			req.Host = "shop.example"
			resp, err := tc.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "POST shop.example payload" || resp.Header.Get("X-Upstream-Proto") != "HTTP/2.0" {
				t.Fatalf("got %d %q (upstream %s), want 200 \"POST shop.example payload\" over HTTP/2", resp.StatusCode, b, resp.Header.Get("X-Upstream-Proto"))
			}
		})
	}
	snap, _ := p.Snapshot("r")
	if n := snap.Versions["v"].Requests; n != 2 {
		t.Errorf("recorded %d, want 2", n)
	}
}

func TestStreamedResponseArrivesBeforeItEnds(t *testing.T) {
	release := make(chan struct{})
	b := newBackend(t, "sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "data: second\n\n")
	})
	cfg := Config{Routes: []Route{{Name: "r", StreamResponseBody: true, Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}}}
	_, base := startProxy(t, cfg, Options{})
	resp, err := newClient().Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, len("data: first\n\n"))
	got := make(chan string, 1)
	go func() {
		n, _ := io.ReadFull(resp.Body, buf)
		got <- string(buf[:n])
	}()
	select {
	case s := <-got:
		if s != "data: first\n\n" {
			t.Fatalf("first event %q", s)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("first event did not arrive while the backend held the stream open")
	}
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "data: second\n\n" {
		t.Errorf("rest of stream %q", rest)
	}
}

func TestListenAndServeWithTLSFiles(t *testing.T) {
	b := newBackend(t, "b", nil)
	tc, pool := selfSigned(t)
	dir := t.TempDir()
	certFile, keyFile := dir+"/cert.pem", dir+"/key.pem"
	keyDER, err := x509.MarshalPKCS8PrivateKey(tc.Certificates[0].PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, certFile, "CERTIFICATE", tc.Certificates[0].Certificate[0])
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	cfg := Config{
		Listeners: []Listener{{Addr: "127.0.0.1:0"}, {Addr: "127.0.0.1:0", TLS: &TLS{CertFile: certFile, KeyFile: keyFile}}},
		Routes:    []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}},
	}
	p, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.ListenAndServe() }()
	deadline := time.Now().Add(5 * time.Second)
	for len(p.Addrs()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("listeners not up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}, Timeout: 5 * time.Second}
	var plain, secure int
	for _, a := range p.Addrs() {
		for _, scheme := range []string{"http", "https"} {
			resp, err := c.Get(scheme + "://" + a.String() + "/")
			if err != nil {
				continue
			}
			resp.Body.Close()
			if scheme == "http" {
				plain++
			} else if resp.ProtoMajor == 2 {
				secure++
			}
		}
	}
	if plain != 1 || secure != 1 {
		t.Errorf("answers: %d plain listeners, %d TLS h2 listeners; want 1 and 1", plain, secure)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != http.ErrServerClosed {
		t.Errorf("ListenAndServe returned %v, want http.ErrServerClosed", err)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestH2StreamBrokenMidBodyIsRecorded(t *testing.T) {
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the backend dies mid-body
	})
	p, base := startProxy(t, Config{Routes: []Route{{Name: "r", Versions: []Version{{Name: "v", Endpoints: []string{b.url()}}}}}}, Options{})
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 10 * time.Second}
	resp, err := c.Get(base + "/")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("client read a complete body from a backend that died mid-body")
	}
	rec, _ := p.Recorder("r")
	waitUntil(t, func() bool { return rec.Kinds(0)[record.Reset] == 1 }, "the broken stream recorded as a reset")
	snap, _ := p.Snapshot("r")
	if s := snap.Versions["v"]; s.Requests != 1 || s.Errors != 1 {
		t.Errorf("recorded %d requests %d errors, want 1 and 1", s.Requests, s.Errors)
	}
}

// Package admin is the data plane's HTTP API: traffic weights, per-version
// statistics, health and readiness, and Prometheus metrics. The rollout
// driver mounts its own /api/v1/rollouts endpoints on the same server with
// Handle.
//
// Security by default: the server listens on loopback unless told otherwise
// and refuses any other address without a bearer token. With a token, every
// request except /healthz and /readyz must carry "Authorization: Bearer
// TOKEN" (including /metrics: Prometheus sends it with `authorization:
// {credentials: TOKEN}` in the scrape config).
package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/deployment-guardian/guardian/rollout"
)

// DefaultAddr is where the admin API listens when Config.Addr is empty.
const DefaultAddr = "127.0.0.1:9090"

// DataPlane is what the admin API reads and changes. The proxy implements it.
type DataPlane interface {
	// Routes lists the route names.
	Routes() []string
	// Weights returns a route's current weights, every version named.
	Weights(route string) (rollout.Weights, bool)
	// SetWeights replaces a route's weights (every version named, summing
	// to 100).
	SetWeights(route string, w rollout.Weights) error
	// Snapshot returns a route's cumulative per-version numbers.
	Snapshot(route string) (rollout.Snapshot, error)
	// Ready returns nil when the data plane can serve traffic, or why not.
	Ready() error
}

// Config configures the admin server. The zero value serves on DefaultAddr
// without /metrics.
type Config struct {
	// Addr to listen on (host:port). Empty means DefaultAddr. Any address
	// that is not loopback requires Token.
	Addr string
	// Token, when set, is required as a bearer token on every request but
	// /healthz and /readyz. It is compared in constant time and never logged.
	Token string
	// Gatherer is exposed on /metrics; nil means no /metrics endpoint.
	Gatherer prometheus.Gatherer
	// Registerer, when set, gets the guardian_version_weight collector
	// reading the data plane's weights at scrape time.
	Registerer prometheus.Registerer
	// Logger receives refused requests and server errors. Nil means
	// slog.Default().
	Logger *slog.Logger
	// ReadyDetail, when set, adds its fields to /readyz's body, ready or
	// not (for example "xds": the control-plane connection of a fleet
	// proxy, which stays ready while it serves its last weights).
	ReadyDetail func() map[string]any
}

// Server is the admin HTTP server.
type Server struct {
	cfg Config
	dp  DataPlane
	log *slog.Logger
	mux *http.ServeMux
	srv *http.Server

	mu sync.Mutex
	ln net.Listener
}

// New validates cfg and returns a server that is not yet listening.
func New(cfg Config, dp DataPlane) (*Server, error) {
	if dp == nil {
		return nil, errors.New("admin: the data plane is nil")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: Addr %q: %v", cfg.Addr, err)
	}
	if cfg.Token == "" && !isLoopbackHost(host) {
		return nil, fmt.Errorf("admin: Addr %q is not a loopback address: set a Token (bearer) to serve the admin API on it", cfg.Addr)
	}
	if strings.ContainsAny(cfg.Token, " \t\r\n") {
		return nil, errors.New("admin: Token contains whitespace")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, dp: dp, log: cfg.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /api/v1/weights", s.getWeights)
	s.mux.HandleFunc("PUT /api/v1/weights", s.putWeights)
	s.mux.HandleFunc("GET /api/v1/stats", s.stats)
	for path, allow := range map[string]string{"/api/v1/weights": "GET, PUT", "/api/v1/stats": "GET"} {
		s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, path, allow))
		})
	}
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path))
	})
	if cfg.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogPrinter{cfg.Logger}}))
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(NewWeightsCollector(dp)); err != nil {
			return nil, fmt.Errorf("admin: registering guardian_version_weight: %w", err)
		}
	}
	s.srv = &http.Server{
		Handler:           s.authorize(s.mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Handle mounts h on the server's mux (Go 1.22 patterns, "POST
// /api/v1/rollouts/{name}/promote"). The token check applies to it.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the server's complete handler, token check included, for
// tests and for embedding in another server.
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// Serve serves on ln until Shutdown. Without a Token it refuses a listener
// that is not on loopback.
func (s *Server) Serve(ln net.Listener) error {
	if s.cfg.Token == "" {
		if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
			return fmt.Errorf("admin: listener %s is not on loopback: set a Token to serve the admin API on it", ta)
		}
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	err := s.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenAndServe listens on Config.Addr and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return s.Serve(ln)
}

// Addr returns the address the server listens on once serving (with the
// real port when Config.Addr asked for port 0), Config.Addr before.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Addr
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// authorize enforces the bearer token on everything but the health probes.
func (s *Server) authorize(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	want := []byte(s.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
			s.log.Warn("admin: refused request without a valid bearer token",
				"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="guardian"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	code, body := http.StatusOK, map[string]any{"status": "ready"}
	if err := s.dp.Ready(); err != nil {
		code, body = http.StatusServiceUnavailable, map[string]any{"error": "not ready: " + err.Error()}
	}
	if s.cfg.ReadyDetail != nil {
		for k, v := range s.cfg.ReadyDetail() {
			if _, taken := body[k]; !taken {
				body[k] = v
			}
		}
	}
	writeJSON(w, code, body)
}

type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.l.Error("admin: metrics: " + fmt.Sprint(v...)) }

var _ promhttp.Logger = slogPrinter{}

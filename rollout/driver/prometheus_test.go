package driver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// exporter is a test application exposing Prometheus gauges whose values
// the test sets; a series that is not set is not exposed at all.
type exporter struct {
	mu     sync.Mutex
	series map[string]float64 // `name{labels}` → value
	srv    *httptest.Server
}

func newExporter(t *testing.T) *exporter {
	e := &exporter{series: map[string]float64{}}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		e.mu.Lock()
		defer e.mu.Unlock()
		keys := make([]string, 0, len(e.series))
		for k := range e.series {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		typed := map[string]bool{}
		for _, k := range keys {
			name := k[:strings.IndexByte(k+"{", '{')]
			if !typed[name] {
				fmt.Fprintf(w, "# TYPE %s gauge\n", name)
				typed[name] = true
			}
			fmt.Fprintf(w, "%s %g\n", k, e.series[k])
		}
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *exporter) set(series string, v float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.series[series] = v
}

func (e *exporter) unset(series string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.series, series)
}

// startPrometheus runs a real Prometheus server scraping target every
// second, with its data in a temporary directory, and returns its URL. It
// skips the test when the binary is missing, except on CI.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("prometheus binary not found (CI installs Debian's prometheus package): %v", err)
		}
		t.Skipf("prometheus binary not found: %v", err)
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: app
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_configs:
      - targets: [%q]
`, u.Host)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited: %v\n%s", err, logs.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/-/ready", nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 30s: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// waitForQuery waits until Prometheus answers query with want (it has
// scraped the exporter's latest values).
func waitForQuery(t *testing.T, prom, query string, want float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got float64
	var ok bool
	var err error
	for time.Now().Before(deadline) {
		got, ok, err = Prometheus{}.Query(context.Background(), prom, query)
		if err == nil && ok && got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("prometheus query %s: got %v (ok %v, err %v), want %v", query, got, ok, err, want)
}

// waitForNoData waits until Prometheus answers query with no sample.
func waitForNoData(t *testing.T, prom, query string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		_, ok, err := Prometheus{}.Query(context.Background(), prom, query)
		if err == nil && !ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("prometheus query %s still returns data", query)
}

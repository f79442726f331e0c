package driver

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
)

// A smoke gate before the first setWeight runs the suite against the canary
// URL; a failing test must stop the rollout before any user reaches the
// canary, and the history must name the failed test.
func TestSmokeGateBlocksFirstTrafficShift(t *testing.T) {
	for _, tc := range []struct {
		name    string
		healthy bool
	}{{"failing canary", false}, {"healthy canary", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int64
			canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				if r.URL.Path == "/orders/42" && !tc.healthy {
					http.Error(w, "boom", http.StatusInternalServerError)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"id": 42, "status": "ok"}`)
			}))
			defer canary.Close()
			suite := filepath.Join(t.TempDir(), "smoke.yaml")
			if err := os.WriteFile(suite, []byte(`apiVersion: guardian.dev/v1alpha1
kind: SmokeSuite
metadata: {name: checkout}
defaults: {timeout: 2s, retries: 0}
tests:
  - name: GET /orders/{id}
    http: {method: GET, path: /orders/42}
    expect: {status: 200}
  - name: health
    http: {path: /health}
    expect: {status: 200}
`), 0o644); err != nil {
				t.Fatal(err)
			}
			spec := fmt.Sprintf(`apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: 127.0.0.1:1
  stable: {url: http://127.0.0.1:1}
  canary: {url: %s}
  strategy:
    canary:
      steps:
        - smoke: {file: %s}
        - setWeight: 10
        - pause: {}
  analysis:
    interval: 50ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
`, canary.URL, suite)
			src := newTrafficSource(profile{Requests: 100, LatencyMs: 5, Jitter: 0.2}, profile{Requests: 100, LatencyMs: 5, Jitter: 0.2})
			h := startDriver(t, spec, src, Config{})
			if tc.healthy {
				h.waitFor("canary at 10% after the smoke gate", 20*time.Second, func(s rollout.State) bool { return s.Weights["canary"] == 10 })
				if hits.Load() < 2 {
					t.Errorf("canary served %d smoke requests, want the suite's 2", hits.Load())
				}
				return
			}
			st := h.waitEnd(20 * time.Second)
			if !st.Phase.Done() || st.Phase == rollout.Promoted {
				t.Fatalf("phase %s, want the rollout stopped by the smoke gate", st.Phase)
			}
			if m := h.router.maxCanary(); m != 0 {
				t.Errorf("canary weight reached %d%% although the smoke gate failed", m)
			}
			var named bool
			for _, e := range h.events() {
				named = named || strings.Contains(e.Message, "GET /orders/{id}")
			}
			if !named {
				t.Errorf("no event names the failed smoke test; history: %+v", h.events())
			}
		})
	}
}

package driver

import (
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
)

// `analysis: {metrics: []}` turns analysis off: the rollout walks its timed
// steps on the plan alone instead of failing to start.
func TestRolloutWithoutAnalysisMetrics(t *testing.T) {
	spec := `apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: 127.0.0.1:1
  stable: {url: http://127.0.0.1:1}
  canary: {url: http://127.0.0.1:2}
  strategy:
    canary:
      steps:
        - setWeight: 20
        - pause: {duration: 200ms}
        - setWeight: 100
  analysis:
    interval: 50ms
    metrics: []
`
	src := newTrafficSource(profile{Requests: 50, LatencyMs: 5}, profile{Requests: 50, LatencyMs: 5})
	h := startDriver(t, spec, src, Config{})
	st := h.waitEnd(20 * time.Second)
	if st.Phase != rollout.Promoted {
		t.Fatalf("phase %s (%s), want Promoted", st.Phase, st.Message)
	}
	if got := h.router.weights(); len(got) < 3 || got[len(got)-1] != 100 {
		t.Errorf("canary weights applied %v, want 0 → 20 → 100", got)
	}
}

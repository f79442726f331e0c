package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
)

// approverCall is one webhook request as the approver saw it.
type approverCall struct {
	Type string
	// Canary is the weight the router had applied when the call arrived.
	Canary  int
	Payload map[string]any
}

// approver is a Flagger-style webhook receiver whose answer per call the
// test decides.
type approver struct {
	mu     sync.Mutex
	calls  []approverCall
	answer func(typ string, nth int) int
	canary func() int
	srv    *httptest.Server
}

func newApprover(t *testing.T, router *recordingRouter, answer func(typ string, nth int) int) *approver {
	a := &approver{answer: answer, canary: router.canary}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Type    string         `json:"type"`
			Payload map[string]any `json:"payload"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if h := r.Header.Get("X-Guardian-Approval"); h != body.Type {
			http.Error(w, "header/type mismatch", http.StatusBadRequest)
			return
		}
		a.mu.Lock()
		nth := 0
		for _, c := range a.calls {
			if c.Type == body.Type {
				nth++
			}
		}
		a.calls = append(a.calls, approverCall{Type: body.Type, Canary: a.canary(), Payload: body.Payload})
		a.mu.Unlock()
		code := a.answer(body.Type, nth)
		w.WriteHeader(code)
		if code >= 300 {
			fmt.Fprintf(w, "%s says no", body.Type)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *approver) log() []approverCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]approverCall(nil), a.calls...)
}

func (a *approver) types() string {
	var out []string
	for _, c := range a.log() {
		out = append(out, fmt.Sprintf("%s@%d", c.Type, c.Canary))
	}
	return strings.Join(out, " ")
}

func webhookSpec(name, url, confirmPromotionPolicy string) string {
	return fmt.Sprintf(`
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: %s}
spec:
  listen: 127.0.0.1:0
  stable: {url: http://127.0.0.1:9101}
  canary: {url: http://127.0.0.1:9102}
  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: 300ms}
        - setWeight: 50
        - pause: {duration: 300ms}
  analysis:
    interval: 100ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
  webhooks:
    - {type: confirm-rollout, url: %[2]s/confirm}
    - {type: pre-rollout, url: %[2]s/pre}
    - {type: confirm-traffic-increase, url: %[2]s/increase}
    - {type: confirm-promotion, url: %[2]s/promote, failurePolicy: %[3]s}
    - {type: post-rollout, url: %[2]s/done}
    - {type: rollback, url: %[2]s/rolled-back}
`, name, url, confirmPromotionPolicy)
}

// TestWebhooksThroughDriver drives the Flagger-style webhooks with a real
// HTTP approver: 2xx advances; a refusal holds (failurePolicy hold) or
// rolls back (fail); post-rollout and rollback are told afterwards.
func TestWebhooksThroughDriver(t *testing.T) {
	t.Parallel()
	t.Run("approved", func(t *testing.T) {
		t.Parallel()
		r := &recordingRouter{}
		a := newApprover(t, r, func(string, int) int { return http.StatusOK })
		h := startDriverRouter(t, webhookSpec("hooks-ok", a.srv.URL, "hold"), healthyTraffic(), Config{}, r)
		if st := h.waitEnd(30 * time.Second); st.Phase != rollout.Promoted {
			t.Fatalf("phase %s (%s), want Promoted", st.Phase, st.Message)
		}
		// Each gate is asked before the traffic it guards; post-rollout
		// after the promotion.
		want := "confirm-rollout@0 pre-rollout@0 confirm-traffic-increase@0 confirm-traffic-increase@10 confirm-promotion@50 post-rollout@100"
		deadline := time.Now().Add(10 * time.Second)
		for a.types() != want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // post-rollout runs in the background
		}
		if got := a.types(); got != want {
			t.Errorf("webhook calls:\n got %s\nwant %s", got, want)
		}
		for _, c := range a.log() {
			if c.Payload["rollout"] != "hooks-ok" {
				t.Errorf("%s payload %v: want the rollout's name", c.Type, c.Payload)
			}
		}
	})

	t.Run("hold then approve", func(t *testing.T) {
		t.Parallel()
		// The second confirm-traffic-increase (10% → 50%) is refused once;
		// failurePolicy hold (the default) asks again after 10s.
		r := &recordingRouter{}
		a := newApprover(t, r, func(typ string, nth int) int {
			if typ == "confirm-traffic-increase" && nth == 1 {
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		})
		h := startDriverRouter(t, webhookSpec("hooks-hold", a.srv.URL, "hold"), healthyTraffic(), Config{}, r)
		st := h.waitFor("the refusal recorded", 30*time.Second, func(s rollout.State) bool {
			return strings.Contains(s.Message, "confirm-traffic-increase says no")
		})
		if st.Phase != rollout.Progressing || h.router.canary() != 10 {
			t.Fatalf("after a refusal with failurePolicy hold: phase %s canary %d%%, want Progressing at 10%%", st.Phase, h.router.canary())
		}
		if st := h.waitEnd(60 * time.Second); st.Phase != rollout.Promoted {
			t.Fatalf("phase %s (%s), want Promoted after the approval", st.Phase, st.Message)
		}
		n := strings.Count(a.types(), "confirm-traffic-increase")
		if n != 3 {
			t.Errorf("confirm-traffic-increase asked %d times, want 3 (one refusal, one retry): %s", n, a.types())
		}
	})

	t.Run("fail policy rolls back", func(t *testing.T) {
		t.Parallel()
		r := &recordingRouter{}
		a := newApprover(t, r, func(typ string, _ int) int {
			if typ == "confirm-promotion" {
				return http.StatusForbidden
			}
			return http.StatusOK
		})
		h := startDriverRouter(t, webhookSpec("hooks-fail", a.srv.URL, "fail"), healthyTraffic(), Config{}, r)
		st := h.waitEnd(30 * time.Second)
		if st.Phase != rollout.RolledBack || !strings.Contains(st.Message, "webhook confirm-promotion failed") {
			t.Fatalf("phase %s (%s), want RolledBack by the confirm-promotion webhook", st.Phase, st.Message)
		}
		if got := h.router.maxCanary(); got != 50 {
			t.Errorf("canary reached %d%%, want 50%% (never promoted)", got)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(a.types(), "rollback@0") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		var rb *approverCall
		for _, c := range a.log() {
			if c.Type == "rollback" {
				rb = &c
			}
		}
		if rb == nil || rb.Canary != 0 {
			t.Fatalf("rollback webhook: %v; want it called after the canary is at 0: %s", rb, a.types())
		}
		if r, _ := rb.Payload["reason"].(string); !strings.Contains(r, "confirm-promotion") {
			t.Errorf("rollback payload reason %q: want the failed webhook", r)
		}
		if strings.Contains(a.types(), "post-rollout") {
			t.Errorf("post-rollout called on a rollback: %s", a.types())
		}
	})

	t.Run("unanswered pre-rollout fails", func(t *testing.T) {
		t.Parallel()
		// pre-rollout defaults to failurePolicy fail: a check that cannot be
		// reached stops the rollout before any traffic moves.
		spec := fmt.Sprintf(`
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: hooks-dead}
spec:
  listen: 127.0.0.1:0
  stable: {url: http://127.0.0.1:9101}
  canary: {url: http://127.0.0.1:9102}
  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: 10m}
  analysis:
    interval: 100ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
  webhooks:
    - {type: pre-rollout, url: http://%s/load-test, timeout: 2s}
`, freeAddr(t))
		h := startDriver(t, spec, healthyTraffic(), Config{})
		st := h.waitEnd(30 * time.Second)
		if st.Phase != rollout.RolledBack || !strings.Contains(st.Message, "pre-rollout webhook did not answer") {
			t.Fatalf("phase %s (%s), want RolledBack because pre-rollout did not answer", st.Phase, st.Message)
		}
		if got := h.router.maxCanary(); got != 0 {
			t.Errorf("canary reached %d%%, want 0", got)
		}
	})

	t.Run("approval step", func(t *testing.T) {
		t.Parallel()
		// `approval: {}` waits for a person (guardian promote); an approval
		// with a webhook waits for a 2xx.
		r := &recordingRouter{}
		a := newApprover(t, r, func(string, int) int { return http.StatusOK })
		spec := fmt.Sprintf(`
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: approvals}
spec:
  listen: 127.0.0.1:0
  stable: {url: http://127.0.0.1:9101}
  canary: {url: http://127.0.0.1:9102}
  strategy:
    canary:
      steps:
        - setWeight: 10
        - approval: {}
        - setWeight: 30
        - approval: {webhook: %s/approve}
        - setWeight: 100
  analysis:
    interval: 100ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
`, a.srv.URL)
		h := startDriverRouter(t, spec, healthyTraffic(), Config{}, r)
		st := h.waitFor("paused for approval", 10*time.Second, func(s rollout.State) bool { return s.Phase == rollout.Paused })
		if st.PausedBy != rollout.PausedByApproval || h.router.canary() != 10 {
			t.Fatalf("paused by %q at %d%%, want by approval at 10%%", st.PausedBy, h.router.canary())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.drv.Command(ctx, rollout.Command{Kind: rollout.CmdPromote, By: "test"}); err != nil {
			t.Fatalf("promote: %v", err)
		}
		if st := h.waitEnd(30 * time.Second); st.Phase != rollout.Promoted {
			t.Fatalf("phase %s (%s), want Promoted", st.Phase, st.Message)
		}
		if got, want := fmt.Sprint(h.router.weights()), "[0 10 30 100]"; got != want {
			t.Errorf("canary weights %s, want %s", got, want)
		}
		if n := len(a.log()); n != 1 {
			t.Errorf("approval webhook called %d times, want 1", n)
		}
	})
}

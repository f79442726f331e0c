package driver

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/notify"
)

// receiver is a notification endpoint that keeps what it was sent.
type receiver struct {
	mu     sync.Mutex
	bodies [][]byte
	sigs   []string
	srv    *httptest.Server
}

// newReceiver records every request; inner, when set, answers it.
func newReceiver(t *testing.T, inner http.Handler) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.bodies = append(r.bodies, body)
		r.sigs = append(r.sigs, req.Header.Get(notify.SignatureHeader))
		r.mu.Unlock()
		if inner != nil {
			req.Body = io.NopCloser(bytes.NewReader(body))
			inner.ServeHTTP(w, req)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) received() ([][]byte, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.bodies), slices.Clone(r.sigs)
}

// guardianEvents is the receiver shown in docs/state-and-notifications.md:
// it checks the signature before parsing, rejects stale replays, and
// deduplicates retries by delivery id.
func guardianEvents(secret []byte, handle func(rollout, typ, message string)) http.Handler {
	var seen sync.Map // delivery ids: a retry repeats its id
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || !notify.Verify(secret, body, r.Header.Get(notify.SignatureHeader)) {
			http.Error(w, "bad signature", http.StatusUnauthorized) // 4xx: not retried
			return
		}
		var ev struct {
			ID      string    `json:"id"`
			SentAt  time.Time `json:"sent_at"`
			Rollout string    `json:"rollout"`
			Type    string    `json:"type"`
			Message string    `json:"message"`
		}
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if time.Since(ev.SentAt).Abs() > 5*time.Minute {
			http.Error(w, "stale or replayed", http.StatusBadRequest)
			return
		}
		if _, dup := seen.LoadOrStore(ev.ID, true); !dup {
			handle(ev.Rollout, ev.Type, ev.Message)
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// jsonEvent is the receiver's view of a JSON notification.
type jsonEvent struct {
	ID       string            `json:"id"`
	SentAt   time.Time         `json:"sent_at"`
	Rollout  string            `json:"rollout"`
	Type     string            `json:"type"`
	Message  string            `json:"message"`
	Phase    string            `json:"phase"`
	Weights  map[string]int    `json:"weights"`
	Metrics  []json.RawMessage `json:"metrics"`
	Decision string            `json:"decision"`
}

// TestNotificationsEndToEnd runs a rollout that reaches 50% and then rolls
// back on a failing canary, with a signed JSON receiver and a Slack-kind
// receiver; both are real HTTP servers.
func TestNotificationsEndToEnd(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-for-hmac"
	var handledMu sync.Mutex
	var handled []string
	jsonRecv := newReceiver(t, guardianEvents([]byte(secret), func(rollout, typ, message string) {
		handledMu.Lock()
		defer handledMu.Unlock()
		handled = append(handled, rollout+"/"+typ)
	}))
	slackRecv := newReceiver(t, nil)
	spec := fmt.Sprintf(`
apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: notified}
spec:
  listen: 127.0.0.1:0
  stable: {url: http://127.0.0.1:9101}
  canary: {url: http://127.0.0.1:9102}
  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: 1s}
        - setWeight: 50
        - pause: {duration: 10m}
        - setWeight: 100
  analysis:
    interval: 100ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
  notifications:
    - {url: %s, kind: json, secretEnv: TEST_NOTIFY_SECRET}
    - {url: %s, kind: slack}
`, jsonRecv.srv.URL, slackRecv.srv.URL)
	src := healthyTraffic()
	env := func(k string) string {
		if k == "TEST_NOTIFY_SECRET" {
			return secret
		}
		return ""
	}
	h := startDriver(t, spec, src, Config{Env: env})
	h.waitFor("canary at 50%", 30*time.Second, func(s rollout.State) bool { return s.Weights["canary"] == 50 })
	src.set("canary", profile{Requests: 4000, ErrorRate: 0.30, LatencyMs: 20, Jitter: 0.2})
	if st := h.waitEnd(30 * time.Second); st.Phase != rollout.RolledBack {
		t.Fatalf("phase %s (%s), want RolledBack", st.Phase, st.Message)
	}

	var events []jsonEvent
	deadline := time.Now().Add(15 * time.Second)
	for {
		bodies, sigs := jsonRecv.received()
		events = events[:0]
		for i, body := range bodies {
			if !notify.Verify([]byte(secret), body, sigs[i]) {
				t.Fatalf("notification %d: signature %q does not verify with the shared secret", i, sigs[i])
			}
			if notify.Verify([]byte("wrong secret"), body, sigs[i]) {
				t.Fatalf("notification %d verifies with a wrong secret", i)
			}
			// An independent HMAC-SHA256, as a receiver in another language
			// would compute it.
			m := hmac.New(sha256.New, []byte(secret))
			m.Write(body)
			if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); sigs[i] != want {
				t.Fatalf("notification %d: signature %q, independent HMAC %q", i, sigs[i], want)
			}
			var e jsonEvent
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("notification %d: %v: %s", i, err, body)
			}
			events = append(events, e)
		}
		if slices.ContainsFunc(events, func(e jsonEvent) bool { return e.Type == notify.TypeRollback }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rollback notification within 15s; got %d events", len(events))
		}
		time.Sleep(50 * time.Millisecond)
	}
	types := map[string]int{}
	for _, e := range events {
		types[e.Type]++
		if e.Rollout != "notified" || e.ID == "" || e.SentAt.IsZero() {
			t.Errorf("event %+v: want rollout, id and sent_at set", e)
		}
	}
	for _, want := range []string{notify.TypeStart, notify.TypeStep, notify.TypeRollback} {
		if types[want] == 0 {
			t.Errorf("no %q notification; got types %v", want, types)
		}
	}
	i := slices.IndexFunc(events, func(e jsonEvent) bool { return e.Type == notify.TypeRollback })
	rb := events[i]
	if rb.Weights["canary"] != 0 || rb.Weights["stable"] != 100 || rb.Decision != "ROLLED BACK" || rb.Phase != string(rollout.RolledBack) {
		t.Errorf("rollback notification: weights %v decision %q phase %q; want canary 0, stable 100, ROLLED BACK, RolledBack", rb.Weights, rb.Decision, rb.Phase)
	}
	if !strings.Contains(rb.Message, "error_rate") {
		t.Errorf("rollback message %q: want it to name error_rate", rb.Message)
	}
	var rows []struct{ Name, Baseline, Current, Status string }
	for _, raw := range rb.Metrics {
		var r struct{ Name, Baseline, Current, Status string }
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 || rows[0].Name != "Error Rate" || rows[0].Current == rows[0].Baseline {
		t.Errorf("rollback dashboard rows %+v: want an Error Rate row with the canary's rate against stable's", rows)
	}

	// The documented receiver accepted every signed event once, and refuses
	// a body altered after signing.
	handledAll := func() ([]string, bool) {
		handledMu.Lock()
		defer handledMu.Unlock()
		return slices.Clone(handled), len(handled) == len(events) && slices.Contains(handled, "notified/rollback")
	}
	deadline = time.Now().Add(5 * time.Second)
	for got, ok := handledAll(); !ok; got, ok = handledAll() {
		if time.Now().After(deadline) {
			t.Fatalf("documented receiver handled %v; want all %d events including notified/rollback", got, len(events))
		}
		time.Sleep(20 * time.Millisecond)
	}
	bodies, sigs := jsonRecv.received()
	forged := bytes.Replace(bodies[0], []byte(`"rollout":"notified"`), []byte(`"rollout":"forged"`), 1)
	req, _ := http.NewRequest(http.MethodPost, jsonRecv.srv.URL, bytes.NewReader(forged))
	req.Header.Set(notify.SignatureHeader, sigs[0])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged body: HTTP %d, want 401", resp.StatusCode)
	}

	// The Slack receiver gets the seed's dashboard as text, unsigned.
	deadline = time.Now().Add(15 * time.Second)
	for {
		bodies, sigs := slackRecv.received()
		var rollback string
		for i, b := range bodies {
			if sigs[i] != "" {
				t.Fatalf("slack message %d is signed without a secret: %q", i, sigs[i])
			}
			var m struct{ Text string }
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("slack message %d: %v: %s", i, err, b)
			}
			if strings.HasPrefix(m.Text, "🚨 *notified* rollback") {
				rollback = m.Text
			}
		}
		if rollback != "" {
			for _, want := range []string{"Deployment Status Dashboard", "| Metric", "Error Rate", "Decision: ROLLED BACK", "canary 0%"} {
				if !strings.Contains(strings.ToLower(rollback), strings.ToLower(want)) {
					t.Errorf("slack rollback text lacks %q:\n%s", want, rollback)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slack rollback message within 15s (%d messages)", len(bodies))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDeadNotifierDoesNotDelayRollback times a critical trip to the canary
// weight reaching 0, without notifications and with receivers that hang or
// refuse connections.
func TestDeadNotifierDoesNotDelayRollback(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hanging.Close)
	t.Cleanup(func() { close(release) })
	refused := "http://" + freeAddr(t)

	plan := `
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
        - pause: {duration: 10m}
        - setWeight: 100
  analysis:
    interval: 100ms
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
%s`
	dead := fmt.Sprintf(`  notifications:
    - {url: %s, kind: json}
    - {url: %s, kind: slack}
    - {url: %s, kind: json}
`, hanging.URL, refused, hanging.URL+"/second")

	measure := func(name, extra string) time.Duration {
		h := startDriver(t, fmt.Sprintf(plan, name, extra), healthyTraffic(), Config{})
		h.waitFor("canary at 10%", 30*time.Second, func(s rollout.State) bool { return s.Weights["canary"] == 10 })
		// Let a few intervals pass so the notifier's queues hold events and
		// its workers are stuck on the dead receivers.
		time.Sleep(500 * time.Millisecond)
		tripped := time.Now()
		h.drv.Trip(rollout.Trip{Trigger: "error_rate > 5%", Reason: "test trip"})
		st := h.waitEnd(30 * time.Second)
		if st.Phase != rollout.RolledBack {
			t.Fatalf("%s: phase %s (%s), want RolledBack", name, st.Phase, st.Message)
		}
		zeroed := h.router.zeroedAfter(tripped)
		if zeroed.IsZero() {
			t.Fatalf("%s: canary weight never set to 0 after the trip", name)
		}
		return zeroed.Sub(tripped)
	}
	quiet := measure("quiet", "")
	noisy := measure("dead-notifier", dead)
	t.Logf("trip → canary 0%%: %s without notifications, %s with hanging and refusing receivers", quiet, noisy)
	// The rollback must not wait for a notification attempt (5s timeout
	// each, with retries): a loose bound for a loaded CI machine.
	if noisy > time.Second || noisy > quiet+500*time.Millisecond {
		t.Errorf("rollback took %s with dead notifiers (%s without); want it not delayed", noisy, quiet)
	}
}

// TestNotifyEventBusinessRows checks that a business gate's answer shows
// in the notification's dashboard as business rows.
func TestNotifyEventBusinessRows(t *testing.T) {
	data, err := json.Marshal(map[string]any{"gate": "business-2", "kind": rollout.GateBusiness, "outcome": analysis.Fail, "verdicts": []analysis.Verdict{
		{Metric: "conversion_rate", Threshold: ">= 3%", Outcome: analysis.Fail, Canary: 0.029},
		{Metric: "conversion_vs_stable", Threshold: "conversion_rate_drop > 10%", Outcome: analysis.Pass, Canary: 0.029, Baseline: 0.03},
		{Metric: "aov", Threshold: ">= 40", Outcome: analysis.NoData},
	}})
	if err != nil {
		t.Fatal(err)
	}
	st := rollout.State{Phase: rollout.Progressing, Step: 2, Weights: rollout.Weights{"canary": 10, "stable": 90}}
	ev := NotifyEvent("checkout", st, rollout.Event{Type: rollout.EventGate, Message: "gate business-2: Fail", Data: data}, nil)
	var got []string
	for _, r := range ev.Metrics {
		got = append(got, strings.Join([]string{r.Name, r.Baseline, r.Current, string(r.Status)}, "|"))
	}
	want := []string{"business conversion_rate|-|2.90%|fail", "business conversion_vs_stable|0.03|0.029|ok", "business aov|-|-|inconclusive"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if text := notify.SlackText(ev); !strings.Contains(text, "business conversion_rate") || !strings.Contains(text, "2.90%") {
		t.Errorf("slack text lacks the business row:\n%s", text)
	}
	// Other gates add no business rows.
	other, _ := json.Marshal(map[string]any{"gate": "smoke-1", "kind": rollout.GateSmoke})
	if ev := NotifyEvent("checkout", st, rollout.Event{Type: rollout.EventGate, Data: other}, nil); len(ev.Metrics) != 0 {
		t.Errorf("smoke gate rows %v, want none", ev.Metrics)
	}
}

package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/report"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var secret = []byte("s3cr3t-shared-key")

func rollbackEvent(i int) Event {
	return Event{
		Rollout: "checkout", Type: TypeRollback, Message: "error_rate > 5% #" + strconv.Itoa(i),
		Time: time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC), Phase: "RolledBack", Step: 3,
		Weights: rollout.Weights{"stable": 100, "canary": 0},
		Metrics: []MetricRow{
			{Name: "Error Rate", Baseline: "0.1%", Current: "38%", Status: report.StatusFail},
			{Name: "P99 Latency", Baseline: "230ms", Current: "245ms", Status: report.StatusOK},
		},
		Decision: "ROLL BACK",
		Data:     json.RawMessage(`{"lower_bound":0.31}`),
	}
}

// receiver records what arrives and answers with the status script returns.
type receiver struct {
	mu     sync.Mutex
	bodies [][]byte
	heads  []http.Header
	status func(call int) int
	calls  atomic.Int32
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	call := int(rc.calls.Add(1))
	rc.mu.Lock()
	rc.bodies = append(rc.bodies, b)
	rc.heads = append(rc.heads, r.Header.Clone())
	rc.mu.Unlock()
	code := http.StatusOK
	if rc.status != nil {
		code = rc.status(call)
	}
	w.WriteHeader(code)
}

func (rc *receiver) got() ([][]byte, []http.Header) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([][]byte(nil), rc.bodies...), append([]http.Header(nil), rc.heads...)
}

func closeWithin(t *testing.T, n *Notifier, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestSignedJSONVerifiesOnReceiver(t *testing.T) {
	var verified, forged atomic.Int32
	var mu sync.Mutex
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sig := r.Header.Get(SignatureHeader)
		// Checked independently of Verify, as a receiver in another
		// language would.
		m := hmac.New(sha256.New, secret)
		m.Write(b)
		if sig == "sha256="+hex.EncodeToString(m.Sum(nil)) && Verify(secret, b, sig) {
			verified.Add(1)
		}
		if Verify([]byte("wrong-key"), b, sig) || Verify(secret, append(b, ' '), sig) {
			forged.Add(1)
		}
		mu.Lock()
		body = b
		mu.Unlock()
	}))
	defer srv.Close()

	now := time.Date(2026, 11, 25, 21, 0, 5, 0, time.UTC)
	n, err := New([]Target{{URL: srv.URL, Kind: KindJSON, Secret: secret}}, WithLogger(quiet), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	n.Send(rollbackEvent(1))
	closeWithin(t, n, 10*time.Second)

	if verified.Load() != 1 || forged.Load() != 0 {
		t.Fatalf("verified %d, forged %d; want 1, 0", verified.Load(), forged.Load())
	}
	var got struct {
		ID      string          `json:"id"`
		SentAt  time.Time       `json:"sent_at"`
		Rollout string          `json:"rollout"`
		Type    string          `json:"type"`
		Weights rollout.Weights `json:"weights"`
		Metrics []MetricRow     `json:"metrics"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(got.ID) != 24 || !got.SentAt.Equal(now) || got.Rollout != "checkout" || got.Type != "rollback" ||
		got.Weights["stable"] != 100 || len(got.Metrics) != 2 || got.Metrics[0].Status != report.StatusFail || string(got.Data) != `{"lower_bound":0.31}` {
		t.Fatalf("body = %s", body)
	}
	if s := n.Stats(); s.Delivered != 1 || s.Failed != 0 || s.Dropped != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

// TestSignatureShellOneLiner checks the verification command the docs give.
func TestSignatureShellOneLiner(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	body, err := Render(KindJSON, rollbackEvent(1), "abc", time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `printf 'sha256=%s\n' "$(openssl dgst -sha256 -hmac "$SECRET" < "$BODY" | sed 's/^.* //')"`)
	cmd.Env = append(os.Environ(), "SECRET="+string(secret), "BODY="+path)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), Sign(secret, body); got != want {
		t.Fatalf("openssl one-liner = %s, Sign = %s", got, want)
	}
}

func TestRetriesThenSuccess(t *testing.T) {
	rc := &receiver{status: func(call int) int {
		if call <= 2 {
			return http.StatusBadGateway
		}
		return http.StatusNoContent
	}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	n, err := New([]Target{{URL: srv.URL, Kind: KindJSON, Secret: secret, Retries: 3, Backoff: time.Millisecond}}, WithLogger(quiet), WithMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	n.Send(rollbackEvent(1))
	closeWithin(t, n, 10*time.Second)

	bodies, heads := rc.got()
	if len(bodies) != 3 {
		t.Fatalf("receiver got %d attempts, want 3", len(bodies))
	}
	// One delivery id across retries, so receivers can deduplicate; each
	// attempt is signed on its own.
	for i, h := range heads {
		if h.Get("X-Guardian-Delivery") != heads[0].Get("X-Guardian-Delivery") {
			t.Errorf("attempt %d has delivery id %q, first had %q", i, h.Get("X-Guardian-Delivery"), heads[0].Get("X-Guardian-Delivery"))
		}
		if !Verify(secret, bodies[i], h.Get(SignatureHeader)) || h.Get("X-Guardian-Timestamp") == "" || h.Get("X-Guardian-Event") != "rollback" {
			t.Errorf("attempt %d headers = %v", i, h)
		}
	}
	if s := n.Stats(); s.Delivered != 1 || s.Failed != 0 {
		t.Fatalf("stats = %+v, want 1 delivered", s)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP guardian_notify_delivered_total Notifications a receiver accepted with a 2xx answer.
# TYPE guardian_notify_delivered_total counter
guardian_notify_delivered_total{kind="json"} 1
`), "guardian_notify_delivered_total"); err != nil {
		t.Fatal(err)
	}
}

func TestClientErrorIsNotRetried(t *testing.T) {
	rc := &receiver{status: func(int) int { return http.StatusForbidden }}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	n, _ := New([]Target{{URL: srv.URL, Kind: KindSlack, Retries: 5, Backoff: time.Millisecond}}, WithLogger(quiet))
	n.Send(rollbackEvent(1))
	closeWithin(t, n, 10*time.Second)
	if c := rc.calls.Load(); c != 1 {
		t.Fatalf("a 403 was tried %d times, want 1", c)
	}
	if s := n.Stats(); s.Failed != 1 || s.Delivered != 0 {
		t.Fatalf("stats = %+v, want 1 failed", s)
	}
}

func TestSlackTextHasDashboardTable(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	n, _ := New([]Target{{URL: srv.URL, Kind: KindSlack}}, WithLogger(quiet))
	e := rollbackEvent(1)
	e.Message = "error_rate > 5% <@here>"
	n.Send(e)
	closeWithin(t, n, 10*time.Second)
	bodies, _ := rc.got()
	if len(bodies) != 1 {
		t.Fatalf("got %d bodies", len(bodies))
	}
	var msg map[string]string
	if err := json.Unmarshal(bodies[0], &msg); err != nil || len(msg) != 1 {
		t.Fatalf("Slack body %s is not {\"text\": ...}: %v", bodies[0], err)
	}
	text := msg["text"]
	for _, want := range []string{
		"🚨 *checkout* rollback: error_rate &gt; 5% &lt;@here&gt;",
		"### Current Stage: Canary 0% (step 3)",
		"⚖️ Weights: stable 100% · canary 0%",
		"| Metric      | Baseline | Current | Status |",
		"| Error Rate  | 0.1%     | 38%     | ❌     |",
		"| P99 Latency | 230ms    | 245ms   | ✅     |",
		"### Decision: ROLL BACK",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Slack text lacks %q:\n%s", want, text)
		}
	}
	if !strings.Contains(text, "\n```\n") || !strings.HasSuffix(text, "```") {
		t.Errorf("table is not in a code block:\n%s", text)
	}
}

// TestDeadNotifierDoesNotBlockSend is the rollback path's property: Send
// returns at once whatever the receivers do.
func TestDeadNotifierDoesNotBlockSend(t *testing.T) {
	hang := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer hanging.Close()
	defer close(hang)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := "http://" + ln.Addr().String()
	ln.Close()

	n, err := New([]Target{
		{URL: hanging.URL, Kind: KindJSON, Timeout: time.Minute, Retries: 10},
		{URL: closedPort, Kind: KindSlack, Retries: 10, Backoff: time.Millisecond},
	}, WithLogger(quiet), WithQueueSize(16))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < 100; i++ {
		n.Send(rollbackEvent(i))
	}
	// A Send that waited on either receiver would take at least the hanging
	// target's one-minute timeout, or the closed port's retry backoff (about
	// a second per event). The bound is loose because a loaded 2-core CI
	// machine under -race can deschedule the test for a while; unloaded,
	// the 100 Sends take about a millisecond.
	el := time.Since(start)
	t.Logf("100 Sends to dead receivers took %v", el)
	if el > time.Second {
		t.Fatalf("100 Sends to dead receivers took %v, want well under 1s", el)
	}

	// Close with a deadline gives up on the hanging receiver promptly and
	// says so.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = n.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "dropped") {
		t.Fatalf("Close = %v, want a deadline error counting drops", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("Close took %v after its deadline", el)
	}
	s := n.Stats()
	if s.Delivered != 0 || s.Dropped+s.Failed != 200 {
		t.Fatalf("stats = %+v; want every one of 2×100 events accounted dropped or failed", s)
	}
	n.Send(rollbackEvent(0))
	if n.Stats().Dropped != s.Dropped+2 {
		t.Fatalf("Send after Close was not counted as dropped")
	}
}

func TestFullQueueDropsOldest(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var msgs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		var e Event
		json.NewDecoder(r.Body).Decode(&e)
		mu.Lock()
		msgs = append(msgs, e.Message)
		mu.Unlock()
	}))
	defer srv.Close()
	n, _ := New([]Target{{URL: srv.URL, Kind: KindJSON}}, WithLogger(quiet), WithQueueSize(4))
	for i := 0; i < 100; i++ {
		n.Send(rollbackEvent(i))
	}
	dropped := n.Stats().Dropped
	close(release)
	closeWithin(t, n, 10*time.Second)

	// One event may already be in flight when the queue fills, so 95 or 96
	// are dropped; the four newest always survive.
	if dropped != 95 && dropped != 96 {
		t.Fatalf("dropped %d of 100 with a queue of 4, want 95 or 96", dropped)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(msgs) != int(100-dropped) {
		t.Fatalf("received %d, want %d: %v", len(msgs), 100-dropped, msgs)
	}
	tail := msgs[len(msgs)-4:]
	for i, m := range tail {
		if want := "error_rate > 5% #" + strconv.Itoa(96+i); m != want {
			t.Fatalf("received %v, want the newest four (#96..#99) last", msgs)
		}
	}
}

func TestCloseFlushesQueue(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	n, _ := New([]Target{{URL: srv.URL, Kind: KindJSON}, {URL: srv.URL + "/slack", Kind: KindSlack}}, WithLogger(quiet))
	for i := 0; i < 20; i++ {
		n.Send(rollbackEvent(i))
	}
	closeWithin(t, n, 20*time.Second)
	if c := rc.calls.Load(); c != 40 {
		t.Fatalf("receiver got %d, want 40 (20 events × 2 targets) by the time Close returned", c)
	}
}

func TestSendCopiesCallerData(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	release := make(chan struct{})
	n, _ := New([]Target{{URL: srv.URL, Kind: KindJSON}}, WithLogger(quiet), WithClient(&http.Client{Transport: gate{release}}))
	e := rollbackEvent(1)
	n.Send(e)
	e.Weights["canary"] = 99
	e.Metrics[0].Current = "changed"
	close(release)
	closeWithin(t, n, 10*time.Second)
	bodies, _ := rc.got()
	if len(bodies) != 1 || bytes.Contains(bodies[0], []byte("changed")) || bytes.Contains(bodies[0], []byte(`"canary":99`)) {
		t.Fatalf("body reflects changes made after Send: %s", bodies)
	}
}

// gate holds requests until released.
type gate struct{ release chan struct{} }

func (g gate) RoundTrip(r *http.Request) (*http.Response, error) {
	<-g.release
	return http.DefaultTransport.RoundTrip(r)
}

func TestNewRejectsBadTargets(t *testing.T) {
	cases := []struct {
		t    Target
		want string
	}{
		{Target{URL: "hooks.slack.com/services/T0/B0/XYZ", Kind: KindSlack}, "not an http(s) URL"},
		{Target{URL: "https://hooks.slack.com/services/T0/B0/XYZ", Kind: "teams"}, `kind "teams"`},
		{Target{URL: "https://x.example", Kind: KindJSON, Timeout: -1}, "negative"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			_, err := New([]Target{{URL: "https://ok.example", Kind: KindJSON}, c.t})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "targets[1]") {
				t.Fatalf("New = %v, want targets[1] error with %q", err, c.want)
			}
			if strings.Contains(err.Error(), "XYZ") {
				t.Fatalf("error leaks the webhook path: %v", err)
			}
		})
	}
}

func TestAsk(t *testing.T) {
	var gotType, gotSig string
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotType = r.Header.Get("X-Guardian-Approval")
		gotSig = r.Header.Get(SignatureHeader)
		gotBody, _ = io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/approve":
			io.WriteString(w, "go ahead")
		case "/deny":
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, "change freeze until Monday\n")
		case "/deny-empty":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/hang":
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	payload := map[string]any{"rollout": "checkout", "weight": 25}

	res, err := Ask(ctx, Approval{Type: ConfirmTrafficIncrease, URL: srv.URL + "/approve", Secret: secret}, payload)
	if err != nil || !res.Approved || res.Status != 200 || res.Reason != "go ahead" {
		t.Fatalf("approve: %+v, %v", res, err)
	}
	if gotType != ConfirmTrafficIncrease || !Verify(secret, gotBody, gotSig) {
		t.Fatalf("request type %q, signature ok %v", gotType, Verify(secret, gotBody, gotSig))
	}
	var body struct {
		Type    string         `json:"type"`
		Payload map[string]any `json:"payload"`
	}
	if err := json.Unmarshal(gotBody, &body); err != nil || body.Type != ConfirmTrafficIncrease || body.Payload["rollout"] != "checkout" {
		t.Fatalf("approval body = %s (%v)", gotBody, err)
	}

	res, err = Ask(ctx, Approval{Type: ConfirmPromotion, URL: srv.URL + "/deny"}, payload)
	if err != nil || res.Approved || res.Status != 403 || res.Reason != "HTTP 403: change freeze until Monday" {
		t.Fatalf("deny: %+v, %v", res, err)
	}
	res, err = Ask(ctx, Approval{Type: PreRollout, URL: srv.URL + "/deny-empty"}, payload)
	if err != nil || res.Approved || res.Reason != "HTTP 503: Service Unavailable" {
		t.Fatalf("deny without body: %+v, %v", res, err)
	}
	res, err = Ask(ctx, Approval{Type: Rollback, URL: srv.URL + "/hang", Timeout: 100 * time.Millisecond}, payload)
	if err == nil || res.Approved || !strings.Contains(res.Reason, "no answer within 100ms") {
		t.Fatalf("hang: %+v, %v; want a timeout error", res, err)
	}
	if _, err := Ask(ctx, Approval{Type: "confirm-everything", URL: srv.URL}, payload); err == nil || !strings.Contains(err.Error(), "confirm-rollout") {
		t.Fatalf("unknown type: %v", err)
	}
}

// BenchmarkSend measures the caller's cost of Send with two targets whose
// receivers never answer (queues full, dropping), against a baseline of a
// plain mutex-guarded slice append of the same event: the ratio is what the
// rollback path pays for notifications.
func BenchmarkSend(b *testing.B) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	e := rollbackEvent(1)
	b.Run("send", func(b *testing.B) {
		n, err := New([]Target{{URL: srv.URL, Kind: KindJSON, Timeout: time.Minute}, {URL: srv.URL, Kind: KindSlack, Timeout: time.Minute}}, WithLogger(quiet), WithQueueSize(64))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			n.Send(e)
		}
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		n.Close(ctx)
	})
	b.Run("append-baseline", func(b *testing.B) {
		var mu sync.Mutex
		q := make([]Event, 0, 64)
		b.ReportAllocs()
		for b.Loop() {
			mu.Lock()
			if len(q) == cap(q) {
				q = q[:0]
			}
			q = append(q, e)
			mu.Unlock()
		}
	})
}

// TestEveryEventAccountedForWhenSendRacesClose: whatever the interleaving,
// each event sent is delivered, failed or counted dropped, never lost.
func TestEveryEventAccountedForWhenSendRacesClose(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	n, _ := New([]Target{{URL: srv.URL, Kind: KindJSON}, {URL: srv.URL, Kind: KindSlack}}, WithLogger(quiet), WithQueueSize(8))
	const senders, each = 4, 200
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				n.Send(rollbackEvent(i))
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	closeErr := n.Close(ctx)
	wg.Wait()
	s := n.Stats()
	if total := s.Delivered + s.Failed + s.Dropped; total != 2*senders*each {
		t.Fatalf("stats %+v account for %d events, want %d (Close: %v)", s, total, 2*senders*each, closeErr)
	}
	if closeErr != nil {
		t.Fatalf("Close: %v", closeErr)
	}
	if got := uint64(rc.calls.Load()); got != s.Delivered {
		t.Fatalf("receiver got %d, stats say %d delivered", got, s.Delivered)
	}
}

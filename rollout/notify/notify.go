// Package notify tells people and systems what a rollout is doing:
// webhooks on start, each step, pause, gate result, promote and rollback, as
// a Slack-compatible message or a signed JSON event. Sending never blocks the
// caller, because the caller may be a rollback: events go to a bounded queue
// per target, drained in the background with retries, and the oldest are
// dropped (and counted) when a target cannot keep up.
//
// The package also asks Flagger-style approval webhooks (see Ask).
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/report"
	"github.com/prometheus/client_golang/prometheus"
)

// MetricRow is a metric as the dashboard shows it: baseline, current and a
// status rendered ✅/⚠️/❌.
type MetricRow = report.MetricRow

// Event types the driver sends; receivers should accept unknown ones.
const (
	TypeStart    = "start"
	TypeStep     = "step"
	TypePause    = "pause"
	TypeGate     = "gate"
	TypePromote  = "promote"
	TypeRollback = "rollback"
	TypeAbort    = "abort"
)

// Event is one notification.
type Event struct {
	Rollout string    `json:"rollout"`
	Type    string    `json:"type"`
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
	Phase   string    `json:"phase,omitempty"`
	Step    int       `json:"step"`
	Stage   string    `json:"stage,omitempty"` // "Canary 25%"; derived from Weights when empty
	// Elapsed is the time spent in the current stage so far.
	Elapsed time.Duration   `json:"-"` // elapsed_s on the wire
	Weights rollout.Weights `json:"weights,omitempty"`
	Metrics []MetricRow     `json:"metrics,omitempty"`
	// Decision is the dashboard's headline ("PROCEED TO NEXT STAGE");
	// the upper-cased Type when empty.
	Decision string          `json:"decision,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
}

// Target kinds.
const (
	KindSlack = "slack"
	KindJSON  = "json"
)

// Defaults for zero Target fields.
const (
	DefaultTimeout   = 5 * time.Second
	DefaultRetries   = 3
	DefaultBackoff   = 500 * time.Millisecond
	MaxBackoff       = 30 * time.Second
	DefaultQueueSize = 256
)

// Target is one webhook receiver.
type Target struct {
	URL  string
	Kind string // KindSlack or KindJSON
	// Secret is the HMAC-SHA256 key for the X-Guardian-Signature header; no
	// header when empty. It is never logged.
	Secret  []byte
	Timeout time.Duration // per attempt; DefaultTimeout when zero
	// Retries after a failed attempt: DefaultRetries when zero, none when
	// negative.
	Retries int
	Backoff time.Duration // first wait, doubled per retry; DefaultBackoff when zero
}

// Validate reports a Target that cannot be sent to.
func (t Target) Validate() error {
	u, err := url.Parse(t.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("notify: target %q is not an http(s) URL", redactURL(t.URL))
	}
	if t.Kind != KindSlack && t.Kind != KindJSON {
		return fmt.Errorf("notify: target %s: kind %q is not %q or %q", redactURL(t.URL), t.Kind, KindSlack, KindJSON)
	}
	if t.Timeout < 0 || t.Backoff < 0 {
		return fmt.Errorf("notify: target %s: negative timeout or backoff", redactURL(t.URL))
	}
	return nil
}

// Option configures a Notifier.
type Option func(*Notifier)

// WithQueueSize bounds each target's queue (DefaultQueueSize by default).
func WithQueueSize(n int) Option { return func(nt *Notifier) { nt.queueSize = max(n, 1) } }

// WithClient sets the HTTP client (its own Timeout, if any, also applies).
func WithClient(c *http.Client) Option { return func(nt *Notifier) { nt.client = c } }

// WithLogger sets where delivery failures are logged (slog.Default by
// default). Logs name the target by host only.
func WithLogger(l *slog.Logger) Option { return func(nt *Notifier) { nt.log = l } }

// WithClock sets the clock used for the sent_at timestamp.
func WithClock(now func() time.Time) Option { return func(nt *Notifier) { nt.now = now } }

// WithMetrics registers the notifier's counters with reg.
func WithMetrics(reg prometheus.Registerer) Option { return func(nt *Notifier) { nt.reg = reg } }

// Stats counts what happened to sent events, summed over targets.
type Stats struct {
	Delivered uint64 // a receiver answered 2xx
	Failed    uint64 // every attempt failed
	Dropped   uint64 // pushed out of a full queue, sent after Close, or abandoned at Close's deadline
}

// Notifier delivers events to its targets in the background.
type Notifier struct {
	queueSize int
	client    *http.Client
	log       *slog.Logger
	now       func() time.Time
	reg       prometheus.Registerer

	workers []*worker
	wg      sync.WaitGroup

	closeOnce sync.Once
	closed    atomic.Bool
	closing   chan struct{} // closed by Close: drain, then stop
	abort     context.CancelFunc
	ctx       context.Context // canceled when Close's deadline passes

	delivered, failed, dropped atomic.Uint64
	mDelivered, mFailed        *prometheus.CounterVec
	mDropped                   *prometheus.CounterVec
}

type worker struct {
	nt     *Notifier
	target Target
	host   string

	mu   sync.Mutex
	ring []Event // bounded FIFO: head is the oldest, n are queued
	head int
	n    int
	// stopped is set, under mu, when the worker has returned: a Send racing
	// with Close must count its event as dropped, not leave it in the ring.
	stopped bool
	signal  chan struct{}
}

// New starts a notifier with one background worker per target.
func New(targets []Target, opts ...Option) (*Notifier, error) {
	n := &Notifier{
		queueSize: DefaultQueueSize,
		client:    &http.Client{},
		log:       slog.Default(),
		now:       time.Now,
		closing:   make(chan struct{}),
	}
	for _, o := range opts {
		o(n)
	}
	for i, t := range targets {
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
	}
	if n.reg != nil {
		n.mDelivered = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "guardian", Subsystem: "notify", Name: "delivered_total",
			Help: "Notifications a receiver accepted with a 2xx answer.",
		}, []string{"kind"})
		n.mFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "guardian", Subsystem: "notify", Name: "failed_total",
			Help: "Notifications given up on after every retry failed.",
		}, []string{"kind"})
		n.mDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "guardian", Subsystem: "notify", Name: "dropped_total",
			Help: "Notifications dropped because a target's queue was full or the notifier closed.",
		}, []string{"kind"})
		for _, c := range []prometheus.Collector{n.mDelivered, n.mFailed, n.mDropped} {
			if err := n.reg.Register(c); err != nil {
				return nil, fmt.Errorf("notify: register metrics: %w", err)
			}
		}
	}
	n.ctx, n.abort = context.WithCancel(context.Background())
	for _, t := range targets {
		if t.Timeout == 0 {
			t.Timeout = DefaultTimeout
		}
		if t.Retries == 0 {
			t.Retries = DefaultRetries
		} else if t.Retries < 0 {
			t.Retries = 0
		}
		if t.Backoff == 0 {
			t.Backoff = DefaultBackoff
		}
		u, _ := url.Parse(t.URL)
		w := &worker{nt: n, target: t, host: u.Host, ring: make([]Event, n.queueSize), signal: make(chan struct{}, 1)}
		n.workers = append(n.workers, w)
		n.wg.Add(1)
		go w.run()
	}
	return n, nil
}

// Send queues e for every target and returns at once. It never blocks on a
// receiver: a full queue drops its oldest event.
func (n *Notifier) Send(e Event) {
	if n.closed.Load() {
		for _, w := range n.workers {
			n.countDropped(w.target.Kind, 1)
		}
		return
	}
	// The caller may reuse its map and slices after Send returns.
	if e.Weights != nil {
		w := make(rollout.Weights, len(e.Weights))
		for k, v := range e.Weights {
			w[k] = v
		}
		e.Weights = w
	}
	e.Metrics = append([]MetricRow(nil), e.Metrics...)
	e.Data = append(json.RawMessage(nil), e.Data...)
	for _, w := range n.workers {
		w.push(e)
	}
}

// Stats returns the notifier's counters.
func (n *Notifier) Stats() Stats {
	return Stats{Delivered: n.delivered.Load(), Failed: n.failed.Load(), Dropped: n.dropped.Load()}
}

// Close stops accepting events and waits until the queued ones are
// delivered or ctx ends; then it abandons what is left (counted as dropped)
// and returns an error saying how many.
func (n *Notifier) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		n.closed.Store(true)
		close(n.closing)
	})
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
		n.abort()
		return nil
	case <-ctx.Done():
	}
	before := n.dropped.Load()
	n.abort()
	<-done // workers return promptly once aborted
	return fmt.Errorf("notify: closed before delivering everything (%d dropped): %w", n.dropped.Load()-before, ctx.Err())
}

func (n *Notifier) countDropped(kind string, k int) {
	n.dropped.Add(uint64(k))
	if n.mDropped != nil {
		n.mDropped.WithLabelValues(kind).Add(float64(k))
	}
}

func (w *worker) push(e Event) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		w.nt.countDropped(w.target.Kind, 1)
		return
	}
	if w.n == len(w.ring) {
		// Drop the oldest: the newest event says where the rollout is now.
		w.ring[w.head] = Event{}
		w.head = (w.head + 1) % len(w.ring)
		w.n--
		w.nt.countDropped(w.target.Kind, 1)
	}
	w.ring[(w.head+w.n)%len(w.ring)] = e
	w.n++
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *worker) pop() (Event, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == 0 {
		return Event{}, false
	}
	e := w.ring[w.head]
	w.ring[w.head] = Event{}
	w.head = (w.head + 1) % len(w.ring)
	w.n--
	return e, true
}

func (w *worker) stopIfEmpty() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = w.n == 0
	return w.stopped
}

func (w *worker) run() {
	defer w.nt.wg.Done()
	for {
		if w.nt.ctx.Err() != nil {
			w.mu.Lock()
			left := w.n
			clear(w.ring)
			w.n = 0
			w.stopped = true
			w.mu.Unlock()
			w.nt.countDropped(w.target.Kind, left)
			return
		}
		if e, ok := w.pop(); ok {
			w.deliver(e)
			continue
		}
		select {
		case <-w.signal:
		case <-w.nt.closing:
			if w.stopIfEmpty() {
				return
			}
		case <-w.nt.ctx.Done():
		}
	}
}

func (w *worker) deliver(e Event) {
	n, t := w.nt, w.target
	id := newID()
	wait := t.Backoff
	var lastErr string
	for attempt := 1; attempt <= t.Retries+1; attempt++ {
		if attempt > 1 {
			timer := time.NewTimer(wait)
			select {
			case <-n.ctx.Done():
				timer.Stop()
				n.countDropped(t.Kind, 1)
				return
			case <-timer.C:
			}
			wait = min(wait*2, MaxBackoff)
		}
		retry, err := w.attempt(e, id)
		if err == nil {
			n.delivered.Add(1)
			if n.mDelivered != nil {
				n.mDelivered.WithLabelValues(t.Kind).Inc()
			}
			return
		}
		lastErr = err.Error()
		if n.ctx.Err() != nil {
			n.countDropped(t.Kind, 1)
			return
		}
		if !retry {
			break
		}
	}
	n.failed.Add(1)
	if n.mFailed != nil {
		n.mFailed.WithLabelValues(t.Kind).Inc()
	}
	n.log.Warn("notification not delivered", "target", w.host, "kind", t.Kind, "rollout", e.Rollout, "type", e.Type, "error", lastErr)
}

// attempt sends once; retry says whether a failure may succeed later.
func (w *worker) attempt(e Event, id string) (retry bool, err error) {
	t := w.target
	sentAt := w.nt.now()
	body, err := Render(t.Kind, e, id, sentAt)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(w.nt.ctx, t.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return false, errors.New("bad request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "guardian-notify")
	req.Header.Set("X-Guardian-Delivery", id)
	req.Header.Set("X-Guardian-Event", e.Type)
	req.Header.Set("X-Guardian-Timestamp", strconv.FormatInt(sentAt.Unix(), 10))
	if len(t.Secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(t.Secret, body))
	}
	resp, err := w.nt.client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded && w.nt.ctx.Err() == nil {
			return true, fmt.Errorf("timed out after %v", t.Timeout)
		}
		// Error strings quote the URL, which may hold a token.
		return true, errors.New(strings.ReplaceAll(err.Error(), t.URL, redactURL(t.URL)))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, nil
	}
	// Other client errors will not change on retry.
	retry = resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests
	return retry, fmt.Errorf("HTTP %d", resp.StatusCode)
}

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body.
const SignatureHeader = "X-Guardian-Signature"

// Sign returns the SignatureHeader value for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether header (the SignatureHeader value) is body's
// signature under secret, in constant time. Receivers should also reject a
// body whose sent_at is too old, since the signature covers it.
func Verify(secret, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok || len(secret) == 0 {
		return false
	}
	mac, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(mac, m.Sum(nil))
}

// jsonBody is the KindJSON wire form: the event plus delivery fields.
type jsonBody struct {
	ID     string    `json:"id"`      // the same for every retry of one event
	SentAt time.Time `json:"sent_at"` // this attempt; covered by the signature
	Event
	ElapsedS float64 `json:"elapsed_s,omitempty"`
}

// Render returns the request body for a target kind.
func Render(kind string, e Event, id string, sentAt time.Time) ([]byte, error) {
	switch kind {
	case KindJSON:
		return json.Marshal(jsonBody{ID: id, SentAt: sentAt.UTC(), Event: e, ElapsedS: e.Elapsed.Seconds()})
	case KindSlack:
		return json.Marshal(struct {
			Text string `json:"text"`
		}{SlackText(e)})
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

// SlackText renders an event as Slack message text: a headline, then the
// seed's dashboard in a code block so the table keeps its columns.
func SlackText(e Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s *%s* %s", typeIcon(e.Type), slackEscape(e.Rollout), slackEscape(e.Type))
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", slackEscape(e.Message))
	}
	b.WriteString("\n```\n")
	d := report.DashboardData{
		Name: e.Rollout, Stage: e.Stage, Phase: e.Phase, Duration: e.Elapsed, Weights: e.Weights,
		Health: e.Metrics, Decision: e.Decision, // the message is already the headline
	}
	if d.Stage == "" {
		d.Stage = stageFromWeights(e.Step, e.Weights)
	}
	if d.Decision == "" {
		d.Decision = strings.ToUpper(e.Type)
	}
	b.WriteString(strings.ReplaceAll(report.Dashboard(d), "```", "'''"))
	b.WriteString("```")
	return b.String()
}

func stageFromWeights(step int, w rollout.Weights) string {
	if c, ok := w["canary"]; ok {
		return fmt.Sprintf("Canary %d%% (step %d)", c, step)
	}
	return fmt.Sprintf("Step %d", step)
}

func typeIcon(t string) string {
	switch t {
	case TypeRollback, TypeAbort:
		return "🚨"
	case TypePromote:
		return "🚀"
	case TypePause:
		return "⏸"
	case TypeGate:
		return "🚦"
	}
	return "🐤"
}

// slackEscape escapes the three characters Slack's mrkdwn treats as control.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// redactURL keeps scheme and host: webhook paths (Slack's) and queries are
// credentials.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "<invalid URL>"
	}
	return u.Scheme + "://" + u.Host + "/…"
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

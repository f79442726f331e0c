// Package driver runs a rollout: it is the thin loop around the pure
// rollout.Engine that owns the clock, the store, the traffic routers, the
// metric source and the analysis Monitor, and carries out the engine's
// actions in the order the engine documents.
package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/hook"
	"github.com/deployment-guardian/guardian/rollout/notify"
	"github.com/deployment-guardian/guardian/rollout/smoke"
	"github.com/deployment-guardian/guardian/rollout/store"
)

// RouteSetter is implemented by routers that can pin requests to a version
// by match rules (cohorts, A/B header routes).
type RouteSetter interface {
	SetRoutes(rollout string, routes []rollout.Route) error
}

// MirrorSetter is implemented by routers that can shadow a share of traffic
// to the canary.
type MirrorSetter interface {
	SetMirror(rollout string, percent int) error
}

// Acknowledger is implemented by routers that drive a fleet: it reports
// when every member has applied the latest change, so a rollback is known to
// be complete fleet-wide, not just published.
type Acknowledger interface {
	AwaitApplied(ctx context.Context) (time.Duration, error)
}

// PreviewHeader steers a request to a blue-green rollout's green version
// on Guardian's proxy before the switch (any value); the validate stage's
// smoke tests carry it.
const PreviewHeader = "X-Guardian-Preview"

// EventFleetAcknowledged records the time the fleet took to apply a rollback.
const EventFleetAcknowledged = "FleetAcknowledged"

// BusinessSource answers business-metric gates and triggers: it evaluates a
// PromQL query for the canary and, where the condition compares, for stable.
type BusinessSource interface {
	Query(ctx context.Context, url, query string) (float64, bool, error)
}

// Config wires one rollout to the world. Store, Source and at least one
// Router are required.
type Config struct {
	Spec    rollout.Spec
	Store   *store.Store
	Routers []rollout.TrafficRouter
	Source  rollout.MetricSource
	// Notifier sends the rollout's notifications; nil builds one from
	// spec.notifications (secrets from the environment).
	Notifier *notify.Notifier
	// Business evaluates business-metric queries; nil means gates and
	// triggers on business metrics stay Inconclusive with that reason.
	Business BusinessSource
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger: nil means slog.Default().
	Logger *slog.Logger
	// HTTPClient for smoke tests and webhooks; nil means defaults.
	HTTPClient *http.Client
	// Env resolves secrets (notification HMAC keys, smoke DSNs); nil means
	// the process environment.
	Env func(string) string
	// Metrics, when set, is told about decisions.
	Metrics *Metrics
}

// persisted is what the store keeps for one rollout: the engine's state
// and the e-processes, so a restart resumes both.
type persisted struct {
	Engine  rollout.State           `json:"engine"`
	Monitor *analysis.MonitorState  `json:"monitor,omitempty"`
	Spec    json.RawMessage         `json:"spec,omitempty"`
	Last    map[string]lastInterval `json:"last,omitempty"`
}

// lastInterval keeps the latest interval's point values for status and
// reports (they are not part of the engine's state).
type lastInterval struct {
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
}

// Driver runs one rollout. Its loop (Run) is the only writer of the state;
// readers get copies.
type Driver struct {
	cfg    Config
	name   string
	engine *rollout.Engine
	log    *slog.Logger
	now    func() time.Time

	monitor  *analysis.Monitor
	notifier *notify.Notifier
	ownsNote bool

	state    atomic.Pointer[rollout.State]
	last     atomic.Pointer[map[string]lastInterval]
	business atomic.Pointer[businessPoll]

	// scorer feeds adaptive progression; nil when it is off.
	scorer *scorer

	cmds  chan cmdRequest
	trips chan rollout.Trip
	gates chan rollout.GateResult
	done  chan struct{}

	prev     rollout.Snapshot
	havePrev bool

	bg     sync.WaitGroup
	cancel context.CancelFunc
	runCtx context.Context
	// followCtx is for the work a decision sets off (rollback and
	// post-rollout hooks, the fleet's acknowledgement): it outlives the
	// loop when the rollout ends, and only Run's own ctx (a shutdown)
	// cancels it.
	followCtx    context.Context
	cancelFollow context.CancelFunc

	// applied is the canary weight last applied to the routers.
	applied int

	// tickAt is when the latest observation (or trip) was taken: a rollback
	// it causes is timed from there,
	// for the time-to-rollback metric.
	tickAt time.Time
}

type cmdRequest struct {
	cmd   rollout.Command
	reply chan error
}

// New restores the rollout from the store (or starts it) and applies its
// traffic before returning, so a proxy started afterwards never serves
// weights ahead of the stored state.
func New(cfg Config) (*Driver, error) {
	if cfg.Store == nil || cfg.Source == nil || len(cfg.Routers) == 0 {
		return nil, errors.New("driver: Store, Source and a Router are required")
	}
	eng, err := rollout.NewEngine(cfg.Spec)
	if err != nil {
		return nil, err
	}
	d := &Driver{
		cfg:    cfg,
		name:   cfg.Spec.Name,
		engine: eng,
		log:    cfg.Logger,
		now:    cfg.Now,
		cmds:   make(chan cmdRequest),
		trips:  make(chan rollout.Trip, 16),
		gates:  make(chan rollout.GateResult, 16),
		done:   make(chan struct{}),
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.log = d.log.With("rollout", d.name)
	if d.now == nil {
		d.now = time.Now
	}
	if d.cfg.Env == nil {
		d.cfg.Env = envLookup
	}
	d.runCtx, d.cancel = context.WithCancel(context.Background())
	d.followCtx, d.cancelFollow = context.WithCancel(context.Background())
	if cfg.Notifier != nil {
		d.notifier = cfg.Notifier
	} else if len(cfg.Spec.Notifications) > 0 {
		targets := make([]notify.Target, len(cfg.Spec.Notifications))
		for i, n := range cfg.Spec.Notifications {
			targets[i] = notify.Target{URL: n.URL, Kind: n.Kind}
			if n.SecretEnv != "" {
				targets[i].Secret = []byte(d.cfg.Env(n.SecretEnv))
			}
		}
		if d.notifier, err = notify.New(targets, notify.WithLogger(d.log)); err != nil {
			return nil, fmt.Errorf("rollout %s: notifications: %w", d.name, err)
		}
		d.ownsNote = true
	}

	raw, ok, err := cfg.Store.Load(d.name)
	if err != nil {
		return nil, err
	}
	now := d.now()
	var st rollout.State
	var acts []rollout.Action
	if ok {
		var p persisted
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("rollout %s: stored state: %w", d.name, err)
		}
		if p.Monitor != nil {
			if m, err := analysis.RestoreMonitor(*p.Monitor); err == nil {
				d.monitor = m
			} else {
				d.log.Warn("analysis state not restored; e-processes start over", "err", err)
			}
		}
		if p.Last != nil {
			d.last.Store(&p.Last)
		}
		st, acts = eng.Restore(p.Engine, now)
	} else {
		st, acts = eng.Init(now)
	}
	if d.monitor == nil && len(cfg.Spec.Analysis.Metrics) > 0 {
		if d.monitor, err = newMonitor(cfg.Spec); err != nil {
			return nil, fmt.Errorf("rollout %s: analysis: %w", d.name, err)
		}
	}
	d.scorer = newScorer(cfg.Spec)
	d.state.Store(&st)
	if err := d.execute(st, acts); err != nil {
		return nil, err
	}
	return d, nil
}

// newMonitor builds the spec's Monitor; `analysis: {metrics: []}` turns
// analysis off, and the driver then runs without one (d.monitor nil).
func newMonitor(spec rollout.Spec) (*analysis.Monitor, error) {
	return analysis.NewMonitor(spec.MonitorMetrics(), spec.Analysis.Confidence, spec.MonitorOptions())
}

// Name is the rollout's name.
func (d *Driver) Name() string { return d.name }

// Spec is the rollout's spec.
func (d *Driver) Spec() rollout.Spec { return d.cfg.Spec }

// Engine is the rollout's engine (for plan descriptions).
func (d *Driver) Engine() *rollout.Engine { return d.engine }

// State is a copy of the current state.
func (d *Driver) State() rollout.State { return *d.state.Load() }

// Done is closed when the rollout has ended and its loop returned.
func (d *Driver) Done() <-chan struct{} { return d.done }

// Trip hands the engine a critical trigger fired in the request path. The
// proxy's guard has already zeroed the canary in process; this records the
// decision and runs the rollback actions. It never blocks the caller.
func (d *Driver) Trip(t rollout.Trip) {
	select {
	case d.trips <- t:
	default:
		d.log.Warn("trip dropped: a rollback is already pending", "trigger", t.Trigger)
	}
}

// ErrEnded is returned for commands to a rollout that has ended.
var ErrEnded = errors.New("rollout has ended")

// Command runs an operator's command through the engine and returns once
// the resulting state is persisted.
func (d *Driver) Command(ctx context.Context, c rollout.Command) error {
	st := d.State()
	if st.Phase.Done() {
		return fmt.Errorf("%s: %w (%s)", d.name, ErrEnded, st.Phase)
	}
	if err := d.engine.CheckCommand(st, c); err != nil {
		return err
	}
	req := cmdRequest{cmd: c, reply: make(chan error, 1)}
	select {
	case d.cmds <- req:
	case <-d.done:
		return fmt.Errorf("%s: %w", d.name, ErrEnded)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run drives the rollout until it ends or ctx is cancelled. Background work
// is waited for before Run returns: gates in flight are cancelled, while
// the hooks of the decision that ended the rollout run to completion (each
// bounded by its timeout) unless ctx is cancelled.
func (d *Driver) Run(ctx context.Context) error {
	defer close(d.done)
	defer d.cancelFollow()
	defer context.AfterFunc(ctx, d.cancelFollow)()
	defer d.bg.Wait()
	defer d.cancel()
	if d.ownsNote {
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = d.notifier.Close(cctx)
		}()
	}
	if d.State().Phase.Done() {
		return nil
	}
	interval := d.cfg.Spec.Analysis.Interval
	if interval <= 0 {
		interval = time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	d.background(func(ctx context.Context) { d.pollBusiness(ctx, interval) })
	for {
		var obs rollout.Observation
		var reply chan error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			obs = d.observe()
		case t := <-d.trips:
			obs.Trips = append(obs.Trips, t)
			d.tickAt = d.now()
		case g := <-d.gates:
			obs.GateResults = append(obs.GateResults, g)
		case req := <-d.cmds:
			c := req.cmd
			obs.Command = &c
			reply = req.reply
		}
		// Gather whatever else is already waiting so one Step sees it all.
		for drained := false; !drained; {
			select {
			case t := <-d.trips:
				obs.Trips = append(obs.Trips, t)
			case g := <-d.gates:
				obs.GateResults = append(obs.GateResults, g)
			default:
				drained = true
			}
		}
		st, acts := d.engine.Step(d.State(), obs, d.now())
		d.state.Store(&st)
		err := d.execute(st, acts)
		if reply != nil {
			reply <- err
		}
		if err != nil {
			// The store refused the state: nothing after Persist ran, so the
			// traffic is still at the last durable decision. Keep looping;
			// the next Step asks again.
			d.log.Error("carrying out the engine's actions failed", "err", err)
		}
		if st.Phase.Done() {
			d.log.Info("rollout ended", "phase", st.Phase, "message", st.Message)
			return nil
		}
	}
}

// observe turns the interval's traffic into the engine's observation.
func (d *Driver) observe() rollout.Observation {
	d.tickAt = d.now()
	var obs rollout.Observation
	snap, err := d.cfg.Source.Snapshot(d.name)
	if err != nil {
		d.log.Warn("metric source", "err", err)
		return obs
	}
	if !d.havePrev {
		d.prev, d.havePrev = snap, true
		return obs
	}
	win := snap.Sub(d.prev)
	d.prev = snap
	st := d.State()
	c, b := win.Versions["canary"], win.Versions["stable"]

	last := map[string]lastInterval{"canary": point(c), "stable": point(b)}
	d.last.Store(&last)

	obs.Values = map[string]float64{}
	values(obs.Values, "", c)
	values(obs.Values, "baseline:", b)
	d.addBusiness(obs.Values, d.cfg.Spec.Analysis.Interval)

	if c.Requests == 0 && b.Requests == 0 {
		return obs
	}
	// ρ is the routing probability only for plain weighted traffic; with
	// header routes or cohorts pinning requests, let the Monitor use the
	// observed share.
	rho := 0.0
	wc, ws := st.Weights["canary"], st.Weights["stable"]
	if len(st.Routes) == 0 && wc > 0 && ws > 0 {
		rho = float64(wc) / float64(wc+ws)
	}
	batch := analysis.Batch{
		CanaryRequests: c.Requests, CanaryErrors: c.Errors,
		BaselineRequests: b.Requests, BaselineErrors: b.Errors,
		CanaryLatency: c.Latency, BaselineLatency: b.Latency,
		CanaryShare: rho,
	}
	if d.monitor == nil {
		return obs
	}
	verdicts, err := d.monitor.Observe(batch)
	if err != nil {
		d.log.Warn("analysis", "err", err)
		return obs
	}
	obs.Verdicts = verdicts
	if d.scorer != nil {
		score, err := d.scorer.observe(fmt.Sprintf("%d/%d", st.Step, wc), c, b, verdicts)
		if err != nil {
			d.log.Warn("adaptive score", "err", err)
		} else {
			obs.Score = &score
		}
	}
	return obs
}

func point(s rollout.VersionStats) lastInterval {
	li := lastInterval{Requests: s.Requests, Errors: s.Errors}
	if s.Latency != nil && s.Latency.TotalCount() > 0 {
		li.P50 = float64(s.Latency.ValueAtQuantile(50)) / 1000
		li.P99 = float64(s.Latency.ValueAtQuantile(99)) / 1000
	}
	return li
}

// values fills the sustained triggers' inputs: rates as fractions, latency
// quantiles in milliseconds. An idle interval sets nothing, so a hold is
// neither broken nor extended by silence.
func values(m map[string]float64, prefix string, s rollout.VersionStats) {
	if s.Requests == 0 {
		return
	}
	rate := float64(s.Errors) / float64(s.Requests)
	m[prefix+"error_rate"] = rate
	m[prefix+"success_rate"] = 1 - rate
	if s.Latency == nil || s.Latency.TotalCount() == 0 {
		return
	}
	for name, q := range map[string]float64{"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9} {
		m[prefix+name+"_latency"] = float64(s.Latency.ValueAtQuantile(q)) / 1000
	}
}

// execute carries out actions in the engine's order. It stops at a failed
// Persist: nothing recorded may take effect unrecorded.
func (d *Driver) execute(st rollout.State, acts []rollout.Action) error {
	for _, a := range acts {
		switch a.Kind {
		case rollout.ActSetWeights:
			d.setWeights(a.Weights)
		case rollout.ActSetRoutes:
			for _, r := range d.cfg.Routers {
				if rs, ok := r.(RouteSetter); ok {
					if err := rs.SetRoutes(d.name, a.Routes); err != nil {
						d.log.Error("set routes", "err", err)
					}
				}
			}
		case rollout.ActSetMirror:
			for _, r := range d.cfg.Routers {
				if ms, ok := r.(MirrorSetter); ok {
					if err := ms.SetMirror(d.name, a.Mirror); err != nil {
						d.log.Error("set mirror", "err", err)
					}
				}
			}
		case rollout.ActPersist:
			if err := d.persist(st, a.Events); err != nil {
				return err
			}
			d.logEvents(a.Events)
		case rollout.ActResetAnalysis:
			if d.monitor != nil {
				d.monitor.ResetWindow()
			}
		case rollout.ActRunGate:
			if a.Gate != nil {
				d.runGate(*a.Gate)
			}
		case rollout.ActRunHooks:
			d.runHooks(a.Hooks, a.Reason, st)
		case rollout.ActNotify:
			d.notify(st, a.Events)
		}
	}
	if d.cfg.Metrics != nil {
		d.cfg.Metrics.observe(d.name, st)
	}
	return nil
}

func (d *Driver) setWeights(w rollout.Weights) {
	wasServing := d.applied > 0
	d.applied = w["canary"]
	for _, r := range d.cfg.Routers {
		if err := r.SetWeights(d.name, maps.Clone(w)); err != nil {
			d.log.Error("set weights", "weights", w, "err", err)
		}
	}
	if w["canary"] != 0 || !wasServing {
		return
	}
	if !d.tickAt.IsZero() && d.cfg.Metrics != nil {
		d.cfg.Metrics.rollbackLatency(d.name, d.now().Sub(d.tickAt))
	}
	for _, r := range d.cfg.Routers {
		ack, ok := r.(Acknowledger)
		if !ok {
			continue
		}
		d.followUp(func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			took, err := ack.AwaitApplied(ctx)
			ev := rollout.Event{Time: d.now(), Type: EventFleetAcknowledged,
				Message: fmt.Sprintf("every fleet node applied canary weight 0 after %s", took.Round(time.Microsecond))}
			if err != nil {
				ev.Type, ev.Message = "FleetNotAcknowledged", fmt.Sprintf("the fleet did not confirm canary weight 0: %v", err)
			}
			if err := d.cfg.Store.Commit(d.name, nil, []rollout.Event{ev}); err != nil {
				d.log.Error("recording fleet acknowledgement", "err", err)
			}
			d.log.Info(ev.Message, "event", ev.Type)
		})
	}
}

func (d *Driver) persist(st rollout.State, events []rollout.Event) error {
	p := persisted{Engine: st}
	if d.monitor != nil {
		ms := d.monitor.State()
		p.Monitor = &ms
	}
	if l := d.last.Load(); l != nil {
		p.Last = *l
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("rollout %s: encoding state: %w", d.name, err)
	}
	return d.cfg.Store.Commit(d.name, raw, events)
}

func (d *Driver) logEvents(evs []rollout.Event) {
	for _, e := range evs {
		d.log.Info(e.Message, "event", e.Type)
	}
}

// gateResult hands a background gate's answer to the loop, unless the
// driver has stopped.
func (d *Driver) gateResult(r rollout.GateResult) {
	select {
	case d.gates <- r:
	case <-d.runCtx.Done():
	}
}

func (d *Driver) runGate(g rollout.Gate) {
	switch g.Kind {
	case rollout.GateAnalysis:
		// The window's verdict is computed here, in the loop, from the
		// Monitor this loop owns; the answer is queued for the next Step.
		var vs []analysis.Verdict
		if d.monitor != nil {
			vs = d.monitor.Evaluate()
		}
		if len(g.Metrics) > 0 {
			keep := vs[:0:0]
			for _, v := range vs {
				for _, m := range g.Metrics {
					if v.Metric == m {
						keep = append(keep, v)
					}
				}
			}
			vs = keep
		}
		res := rollout.GateResult{ID: g.ID, Outcome: combine(vs), Verdicts: vs, Message: summarize(vs)}
		d.bg.Add(1)
		go func() { defer d.bg.Done(); d.gateResult(res) }()
	case rollout.GateSmoke:
		d.background(func(ctx context.Context) { d.gateResult(d.smokeGate(ctx, g)) })
	case rollout.GateWebhook, rollout.GateApproval:
		d.background(func(ctx context.Context) { d.gateResult(d.webhookGate(ctx, g)) })
	case rollout.GateBusiness:
		d.background(func(ctx context.Context) { d.gateResult(d.businessGate(ctx, g)) })
	default:
		d.log.Error("unknown gate kind", "kind", g.Kind, "id", g.ID)
	}
}

func (d *Driver) background(f func(ctx context.Context)) {
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		f(d.runCtx)
	}()
}

// followUp runs f in the background with the follow-up context (see
// Driver.followCtx).
func (d *Driver) followUp(f func(ctx context.Context)) {
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		f(d.followCtx)
	}()
}

// combine folds per-metric verdicts into a gate's outcome: any Fail fails,
// all Pass passes, otherwise the gate waits.
func combine(vs []analysis.Verdict) analysis.Outcome {
	if len(vs) == 0 {
		return analysis.NoData
	}
	all := true
	for _, v := range vs {
		if v.Outcome == analysis.Fail {
			return analysis.Fail
		}
		all = all && v.Outcome == analysis.Pass
	}
	if all {
		return analysis.Pass
	}
	return analysis.Inconclusive
}

func summarize(vs []analysis.Verdict) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf("%s %s: %s", v.Metric, v.Outcome, v.Reason)
	}
	return strings.Join(parts, "; ")
}

func (d *Driver) targetURL(target string) string {
	spec := d.cfg.Spec
	if target == "preview" && spec.Strategy.BlueGreen != nil && spec.Strategy.BlueGreen.PreviewURL != "" {
		return spec.Strategy.BlueGreen.PreviewURL
	}
	if spec.Canary.URL != "" {
		return spec.Canary.URL
	}
	if len(spec.Canary.Endpoints) > 0 {
		return "http://" + spec.Canary.Endpoints[0]
	}
	return ""
}

func (d *Driver) smokeGate(ctx context.Context, g rollout.Gate) rollout.GateResult {
	file := g.File
	if !filepath.IsAbs(file) && d.cfg.Spec.File != "" {
		file = filepath.Join(filepath.Dir(d.cfg.Spec.File), file)
	}
	suite, err := smoke.Load(file)
	if err != nil {
		return rollout.GateResult{ID: g.ID, Outcome: analysis.Fail, Message: "smoke suite: " + err.Error()}
	}
	target := d.targetURL(g.Target)
	opts := smoke.Options{Target: target, HTTPClient: d.cfg.HTTPClient, Env: d.cfg.Env}
	if g.Target == "preview" {
		// Harmless on green itself; on Guardian's proxy it picks green.
		opts.Header = http.Header{PreviewHeader: {"1"}}
	}
	res := smoke.Run(ctx, suite, opts)
	data, _ := res.JSON()
	out := rollout.GateResult{ID: g.ID, Outcome: analysis.Pass, Message: res.Summary(), Data: data}
	if !res.Passed {
		out.Outcome = analysis.Fail
		var failed []string
		for _, t := range res.Failed() {
			failed = append(failed, fmt.Sprintf("%s (%s)", t.Name, t.Reason))
		}
		out.Message = fmt.Sprintf("%s (against %s)", strings.Join(failed, "; "), target)
	}
	return out
}

func (d *Driver) webhookGate(ctx context.Context, g rollout.Gate) rollout.GateResult {
	st := d.State()
	typ := g.WebhookType
	if typ == "" {
		// An `approval: {webhook: URL}` step answers the question
		// `guardian promote` answers by hand: may the rollout go past here.
		typ = notify.ConfirmPromotion
	}
	label := typ
	if g.Kind == rollout.GateApproval {
		label = "approval"
	}
	payload := map[string]any{"rollout": d.name, "type": typ, "gate": g.ID, "phase": st.Phase, "step": st.Step, "weights": st.Weights}
	res, err := notify.Ask(ctx, notify.Approval{Type: typ, URL: g.URL, Timeout: g.Timeout, Client: d.cfg.HTTPClient}, payload)
	if err != nil {
		// No answer is a "no": the engine applies the webhook's
		// failurePolicy (hold asks again, fail rolls back), so a dead
		// pre-rollout check cannot keep a rollout waiting forever.
		return rollout.GateResult{ID: g.ID, Outcome: analysis.Fail, Message: fmt.Sprintf("%s webhook did not answer: %v", label, err)}
	}
	if res.Approved {
		return rollout.GateResult{ID: g.ID, Outcome: analysis.Pass, Message: fmt.Sprintf("%s approved (HTTP %d)", label, res.Status)}
	}
	return rollout.GateResult{ID: g.ID, Outcome: analysis.Fail, Message: fmt.Sprintf("%s denied: %s", label, res.Reason)}
}

func (d *Driver) runHooks(which, reason string, st rollout.State) {
	spec := d.cfg.Spec
	var hooks []rollout.Hook
	switch which {
	case "rollback":
		hooks = spec.Hooks.Rollback
	case "cleanup":
		hooks = spec.Hooks.Cleanup
	}
	var webhooks []rollout.Webhook
	for _, w := range spec.Webhooks {
		if w.Type == which {
			webhooks = append(webhooks, w)
		}
	}
	var incident uint64
	if which == "rollback" {
		evidence, _ := json.Marshal(st.Verdicts)
		seq, err := d.cfg.Store.Incident(d.name, store.Incident{Time: d.now(), Reason: reason, Weights: st.Weights, Evidence: evidence})
		if err != nil {
			d.log.Error("recording the incident", "err", err)
		}
		incident = seq
	}
	if len(hooks) == 0 && len(webhooks) == 0 {
		return
	}
	payload := map[string]any{"rollout": d.name, "hook": which, "reason": reason, "phase": st.Phase, "weights": st.Weights}
	d.followUp(func(ctx context.Context) {
		var all []hook.Outcome
		for i, h := range hooks {
			a := hook.Action{Name: fmt.Sprintf("%s[%d]", which, i), Exec: h.Exec, Webhook: h.Webhook, Timeout: h.Timeout, Retries: h.Retries, Client: d.cfg.HTTPClient}
			out := hook.Run(ctx, a, payload)
			all = append(all, out...)
			if hook.Succeeded(out) {
				d.log.Info("hook succeeded", "hook", a.Name, "attempts", len(out))
			} else {
				d.log.Error("hook failed", "hook", a.Name, "attempts", len(out), "err", out[len(out)-1].Err)
			}
		}
		for _, w := range webhooks {
			res, err := notify.Ask(ctx, notify.Approval{Type: w.Type, URL: w.URL, Timeout: w.Timeout, Client: d.cfg.HTTPClient}, payload)
			o := hook.Outcome{Action: w.Type + " webhook", Attempt: 1, OK: err == nil && res.Approved, HTTPStatus: res.Status, Duration: res.Duration}
			if err != nil {
				o.Err = err.Error()
			} else if !res.Approved {
				o.Err = res.Reason
			}
			all = append(all, o)
		}
		if incident > 0 {
			raw, _ := json.Marshal(all)
			if err := d.cfg.Store.SetIncidentActions(d.name, incident, raw); err != nil {
				d.log.Error("recording hook outcomes", "err", err)
			}
		}
	})
}

func (d *Driver) notify(st rollout.State, events []rollout.Event) {
	if d.notifier == nil {
		return
	}
	for _, e := range events {
		d.notifier.Send(NotifyEvent(d.name, st, e, d.lastIntervals()))
	}
}

func (d *Driver) lastIntervals() map[string]lastInterval {
	if l := d.last.Load(); l != nil {
		return *l
	}
	return nil
}

func envLookup(k string) string { return os.Getenv(k) }

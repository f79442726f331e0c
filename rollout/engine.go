package rollout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
)

// Phase is where a rollout stands. The five values are the user-facing
// contract (status, admin API, `guardian wait`).
type Phase string

const (
	Progressing Phase = "Progressing"
	Paused      Phase = "Paused"
	Promoted    Phase = "Promoted"
	RolledBack  Phase = "RolledBack"
	Aborted     Phase = "Aborted"
)

// Done reports whether the rollout has ended.
func (p Phase) Done() bool { return p == Promoted || p == RolledBack || p == Aborted }

// Why a rollout is Paused (State.PausedBy).
const (
	PausedByStep     = "step"     // a `pause: {}` step: waits for promote/resume
	PausedByOperator = "operator" // `guardian pause` or `set-weight`
	PausedByApproval = "approval" // an approval step without webhook
)

// Tuning of the engine's bookkeeping.
const (
	// PersistEvery bounds how much elapsed pause time a crash can lose: the
	// engine asks for a Persist at least this often while time passes, even
	// when nothing else changes. What is lost makes a pause longer, never
	// shorter.
	PersistEvery = time.Second
	// GateRetry is how long the engine waits before asking again for a
	// webhook gate that answered "hold".
	GateRetry = 10 * time.Second
)

// State is everything the engine knows about one rollout. It is plain data,
// JSON-serializable, and the driver persists it (Action Persist) before the
// decisions it records take effect. Durations that pauses and deadlines
// count are accumulated observed time, not wall-clock start times, so a
// restored rollout resumes a pause with the time it had left.
type State struct {
	Rollout  string `json:"rollout"`
	Strategy string `json:"strategy"`
	Phase    Phase  `json:"phase"`
	// Message says why the rollout is where it is: what it waits for, or the
	// reason it was rolled back or aborted.
	Message  string `json:"message,omitempty"`
	WaitKey  string `json:"waitKey,omitempty"`
	PausedBy string `json:"pausedBy,omitempty"`

	// Step indexes the plan (canary steps; synthesized stages for blue-green
	// and feature flags); Steps is the plan's length and StepName describes
	// the current step.
	Step int `json:"step"`
	// Plan names every step; Compatible checks a stored state against a
	// (possibly reloaded) spec with it.
	Plan        []string `json:"plan"`
	Steps       int      `json:"steps"`
	StepName    string   `json:"stepName,omitempty"`
	StepEntered bool     `json:"stepEntered,omitempty"`

	Weights Weights `json:"weights"`
	Routes  []Route `json:"routes,omitempty"`
	Mirror  int     `json:"mirror,omitempty"`

	Started     time.Time `json:"started"`
	StepStarted time.Time `json:"stepStarted"`
	// StepElapsed is the observed time spent in the current step; pauses and
	// analysis windows count it. Remaining is what is left of a timed step.
	StepElapsed time.Duration `json:"stepElapsed"`
	Remaining   time.Duration `json:"remaining,omitempty"`
	// Stalled is the time spent waiting beyond what the plan asks (for
	// evidence, an inconclusive analysis, a gate); progressDeadline bounds it.
	Stalled time.Duration `json:"stalled,omitempty"`

	// LastTick is the `now` of the previous Step; the next one counts the
	// time in between. Restore resets it so downtime is not counted.
	LastTick     time.Time     `json:"lastTick"`
	SincePersist time.Duration `json:"sincePersist,omitempty"`

	// Verdicts are the latest continuous-analysis verdicts; Evidence names
	// the metrics that have passed at least once during the current step.
	Verdicts []analysis.Verdict `json:"verdicts,omitempty"`
	Evidence map[string]bool    `json:"evidence,omitempty"`
	// Holding maps a sustained or business trigger to how long its condition
	// has held so far.
	Holding map[string]time.Duration `json:"holding,omitempty"`
	// Gates are the current step's gates by id.
	Gates map[string]*GateState `json:"gates,omitempty"`
	// Score is the latest judge score (adaptive progression).
	Score *float64 `json:"score,omitempty"`
	// Events counts the events written so far.
	Events int `json:"events"`
	// Skip is set by promote (and by resume of a step that waits for it):
	// the current step completes at once, its gates and waits skipped.
	Skip bool `json:"skip,omitempty"`
}

// Route sends requests matching every rule to Version (cohorts and A/B).
type Route struct {
	Name    string      `json:"name"`
	Match   []MatchRule `json:"match"`
	Version string      `json:"version"`
}

// GateState tracks one gate of the current step.
type GateState struct {
	Kind GateKind `json:"kind"`
	// Status is "requested" (RunGate emitted, no answer yet), "pass",
	// "fail", or "retry" (answered inconclusive or hold: asked again after
	// a while).
	Status   string             `json:"status"`
	Attempts int                `json:"attempts"`
	Since    time.Duration      `json:"since"` // observed time since the last request
	Message  string             `json:"message,omitempty"`
	Verdicts []analysis.Verdict `json:"verdicts,omitempty"`
}

// GateKind says what a gate runs.
type GateKind string

const (
	GateSmoke    GateKind = "smoke"
	GateWebhook  GateKind = "webhook"
	GateApproval GateKind = "approval"
	GateAnalysis GateKind = "analysis"
	GateBusiness GateKind = "business"
)

// Gate is a check the driver runs for the engine (action RunGate); it
// answers with a GateResult carrying the same ID in a later Observation.
type Gate struct {
	ID   string   `json:"id"`
	Kind GateKind `json:"kind"`
	Step int      `json:"step"`
	// Target is "canary", or "preview" for blue-green validation.
	Target string `json:"target,omitempty"`
	// File is the smoke suite.
	File string `json:"file,omitempty"`
	// URL and WebhookType for webhook gates (approval with a webhook too).
	URL         string        `json:"url,omitempty"`
	WebhookType string        `json:"webhookType,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	// Window and Metrics for analysis gates: judge the window that began at
	// the last ResetAnalysisWindow (Window long) over Metrics (all when empty)
	// with the metrics' fixed-horizon tests.
	Window  time.Duration `json:"window,omitempty"`
	Metrics []string      `json:"metrics,omitempty"`
	// failurePolicy of a webhook gate: "hold" retries, "fail" rolls back.
	FailurePolicy string `json:"failurePolicy,omitempty"`
}

// GateResult answers a RunGate. Outcome uses analysis's outcomes: Pass
// advances, Fail rolls back (a webhook with failurePolicy hold retries
// instead), Inconclusive and NoData wait and ask again.
type GateResult struct {
	ID       string             `json:"id"`
	Outcome  analysis.Outcome   `json:"outcome"`
	Message  string             `json:"message,omitempty"`
	Verdicts []analysis.Verdict `json:"verdicts,omitempty"`
	Data     json.RawMessage    `json:"data,omitempty"`
}

// Trip is a critical trigger fired in the request path by the proxy's guard,
// which has already zeroed the canary's weight in process.
type Trip struct {
	Trigger string          `json:"trigger"` // the condition, e.g. "error_rate > 5%"
	Reason  string          `json:"reason"`
	Data    json.RawMessage `json:"data,omitempty"` // the guard's evidence
}

// CommandKind is a manual command.
type CommandKind string

const (
	CmdPromote   CommandKind = "promote"
	CmdAbort     CommandKind = "abort"
	CmdPause     CommandKind = "pause"
	CmdResume    CommandKind = "resume"
	CmdSetWeight CommandKind = "set-weight"
	CmdJump      CommandKind = "jump"
)

// Command is an operator's command, valid at any moment of a running
// rollout.
type Command struct {
	Kind   CommandKind `json:"kind"`
	Full   bool        `json:"full,omitempty"`   // promote --full
	Weight int         `json:"weight,omitempty"` // set-weight
	Step   int         `json:"step,omitempty"`   // jump
	By     string      `json:"by,omitempty"`     // who, for the history
	Reason string      `json:"reason,omitempty"`
}

// Observation is what the driver saw since the previous Step.
type Observation struct {
	// Verdicts are the continuous analysis's verdicts this interval.
	Verdicts []analysis.Verdict
	// Trips are critical triggers fired in the request path.
	Trips []Trip
	// Values feed sustained triggers, keyed by condition metric
	// (error_rate as a fraction, p99_latency in ms, ...), with
	// BaselineKey(metric) for the baseline's value; BusinessKey(i) and
	// BusinessKey(i)+":stable" carry business trigger query values.
	// A missing key leaves a trigger's hold unchanged.
	Values map[string]float64
	// GateResults answer earlier RunGate actions.
	GateResults []GateResult
	// Command is a manual command.
	Command *Command
	// Score is the judge's 0..1 performance score, for adaptive progression.
	Score *float64
}

// BusinessKey is the Observation.Values key of business trigger i.
func BusinessKey(i int) string { return fmt.Sprintf("business[%d]", i) }

// ActionKind names an action.
type ActionKind string

const (
	ActSetWeights    ActionKind = "SetWeights"
	ActSetRoutes     ActionKind = "SetRoutes"
	ActSetMirror     ActionKind = "SetMirror"
	ActPersist       ActionKind = "Persist"
	ActResetAnalysis ActionKind = "ResetAnalysisWindow"
	ActRunGate       ActionKind = "RunGate"
	ActNotify        ActionKind = "Notify"
	ActRunHooks      ActionKind = "RunHooks"
)

// Action is one thing the driver must do. Step returns actions in the order
// the driver must carry them out, one after the other:
//
//   - When the batch takes traffic away from the canary (rollback, abort),
//     SetWeights/SetRoutes/SetMirror come first: stopping harm must not
//     wait for a disk write, and the proxy's guard may already have done it.
//   - Persist: write the returned State and append Events to the history,
//     durably, before anything after it. Every other traffic change (weight
//     increases, routes) comes after Persist, so a crash never leaves
//     traffic ahead of the stored state: on restart weights never jump up.
//   - Then traffic changes, ResetAnalysisWindow, RunGate (asynchronous: the
//     answer comes back as a GateResult), RunHooks, Notify. Notifications
//     and hooks must not block the next Step.
type Action struct {
	Kind    ActionKind `json:"kind"`
	Weights Weights    `json:"weights,omitempty"`
	Routes  []Route    `json:"routes,omitempty"`
	Mirror  int        `json:"mirror,omitempty"`
	// Events: for Persist, the new events to append; for Notify, the one
	// event to send.
	Events []Event `json:"events,omitempty"`
	Gate   *Gate   `json:"gate,omitempty"`
	// Hooks is "rollback", "cleanup" or "post-rollout": run spec.hooks of
	// that name and the webhooks of that type.
	Hooks  string `json:"hooks,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Event types written by the engine.
const (
	EventStarted        = "Started"
	EventStep           = "Step"
	EventWeights        = "Weights"
	EventWaiting        = "Waiting"
	EventAnalysis       = "Analysis"
	EventGate           = "Gate"
	EventProceed        = "Proceed"
	EventPaused         = "Paused"
	EventResumed        = "Resumed"
	EventCommand        = "Command"
	EventCommandRefused = "CommandRefused"
	EventAdaptive       = "Adaptive"
	EventRestored       = "Restored"
	EventPromoted       = "Promoted"
	EventRolledBack     = "RolledBack"
	EventAborted        = "Aborted"
)

// planStep is one step of the engine's plan; every strategy compiles to a
// plan, so one state machine runs them all.
type planStep struct {
	kind     string // setWeight, pause, analysis, smoke, route, mirror, approval
	weight   int
	duration time.Duration // pause (0 = wait for promote) and analysis
	metrics  []string
	file     string
	route    *Route // nil Match clears routes named Name
	mirror   int
	webhook  string
	target   string
	label    string
}

// Engine is the pure rollout state machine of one spec: no goroutines, no
// clock, no I/O. It is safe for concurrent use because it never changes
// after NewEngine; State values are owned by the caller.
type Engine struct {
	spec Spec
	plan []planStep
}

// NewEngine builds the engine of a spec that Parse (or Defaults and
// Validate) accepted.
func NewEngine(spec Spec) (*Engine, error) {
	spec.Defaults()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{spec: spec}
	switch {
	case spec.Strategy.Canary != nil:
		for _, st := range spec.Strategy.Canary.Steps {
			e.plan = append(e.plan, canaryStep(st))
		}
	case spec.Strategy.BlueGreen != nil:
		bg := spec.Strategy.BlueGreen
		if bg.Validate.Smoke != "" {
			e.plan = append(e.plan, planStep{kind: "smoke", file: bg.Validate.Smoke, target: "preview", label: "validate: smoke " + bg.Validate.Smoke})
		}
		if bg.Validate.Analysis > 0 {
			e.plan = append(e.plan, planStep{kind: "analysis", duration: bg.Validate.Analysis, target: "preview", label: "validate: analysis " + fmtDur(bg.Validate.Analysis)})
		}
		if !bg.AutoPromotion {
			e.plan = append(e.plan, planStep{kind: "approval", label: "wait for promote before the switch"})
		}
		e.plan = append(e.plan,
			planStep{kind: "setWeight", weight: 100, label: "switch: 100% to green"},
			planStep{kind: "pause", duration: bg.Monitor, label: "monitor " + fmtDur(bg.Monitor)})
	case spec.Strategy.FeatureFlag != nil:
		ff := spec.Strategy.FeatureFlag
		for _, st := range ff.Stages {
			if st.Cohort != "" {
				i := slices.IndexFunc(ff.Cohorts, func(c Cohort) bool { return c.Name == st.Cohort })
				c := ff.Cohorts[i]
				e.plan = append(e.plan, planStep{kind: "route", route: &Route{Name: c.Name, Match: c.Match, Version: "canary"}, label: "enable cohort " + c.Name})
			} else {
				e.plan = append(e.plan, planStep{kind: "setWeight", weight: *st.Percent, label: fmt.Sprintf("enable for %d%% of users", *st.Percent)})
			}
			if st.Pause != nil {
				e.plan = append(e.plan, pauseStep(st.Pause.Duration))
			}
		}
	}
	return e, nil
}

func fmtDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func pauseStep(d time.Duration) planStep {
	if d == 0 {
		return planStep{kind: "pause", label: "pause until promote"}
	}
	return planStep{kind: "pause", duration: d, label: "pause " + fmtDur(d)}
}

func canaryStep(st Step) planStep {
	switch {
	case st.SetWeight != nil:
		return planStep{kind: "setWeight", weight: *st.SetWeight, label: fmt.Sprintf("setWeight %d", *st.SetWeight)}
	case st.Pause != nil:
		return pauseStep(st.Pause.Duration)
	case st.Analysis != nil:
		return planStep{kind: "analysis", duration: st.Analysis.Duration, metrics: st.Analysis.Metrics, target: "canary", label: "analysis " + fmtDur(st.Analysis.Duration)}
	case st.Smoke != nil:
		return planStep{kind: "smoke", file: st.Smoke.File, target: "canary", label: "smoke " + st.Smoke.File}
	case st.SetHeaderRoute != nil:
		name := st.SetHeaderRoute.Name
		if name == "" {
			name = "header-route"
		}
		r := &Route{Name: name, Match: st.SetHeaderRoute.Match, Version: "canary"}
		label := "setHeaderRoute " + name
		if len(r.Match) == 0 {
			label = "clear header route " + name
		}
		return planStep{kind: "route", route: r, label: label}
	case st.SetMirror != nil:
		return planStep{kind: "mirror", mirror: st.SetMirror.Percent, label: fmt.Sprintf("setMirror %d%%", st.SetMirror.Percent)}
	case st.Approval != nil:
		return planStep{kind: "approval", webhook: st.Approval.Webhook, label: "approval"}
	}
	return planStep{kind: "pause", label: "empty"}
}

// Spec returns the engine's (defaulted) spec.
func (e *Engine) Spec() Spec { return e.spec }

// StepNames describes every step of the plan, for status and reports.
func (e *Engine) StepNames() []string {
	out := make([]string, len(e.plan))
	for i, p := range e.plan {
		out[i] = p.label
	}
	return out
}

func split(canary int) Weights { return Weights{"stable": 100 - canary, "canary": canary} }

// Init starts a rollout at now: all traffic on stable, then the first
// steps. It is Step on a zero State.
func (e *Engine) Init(now time.Time) (State, []Action) {
	return e.Step(State{}, Observation{}, now)
}

// stepper is one Step in progress.
type stepper struct {
	e       *Engine
	s       *State
	now     time.Time
	dt      time.Duration
	urgent  []Action // traffic taken from the canary: before Persist
	after   []Action // after Persist
	traffic []Action // traffic increases etc.: right after Persist
	events  []Event
	dirty   bool
}

// Step advances the rollout given what was observed since the last Step
// and the current time. It never mutates s; the returned State replaces it.
func (e *Engine) Step(s State, obs Observation, now time.Time) (State, []Action) {
	s = cloneState(s)
	st := &stepper{e: e, s: &s, now: now}
	if s.Phase == "" {
		st.start()
	} else if !s.LastTick.IsZero() && now.After(s.LastTick) {
		st.dt = now.Sub(s.LastTick)
	}
	s.LastTick = now
	s.SincePersist += st.dt

	if !s.Phase.Done() {
		st.record(obs)
		st.protect(obs)
	}
	if obs.Command != nil {
		st.command(*obs.Command)
	}
	if s.Phase == Progressing {
		s.StepElapsed += st.dt
		st.advance()
	}
	st.remaining()
	return s, st.finish()
}

// Restore continues a rollout loaded from storage after a restart. The time
// the process was down is not counted (a pause keeps its remaining time),
// the stored traffic is asserted again without advancing (weights never
// jump up), gates in flight are asked again, and an analysis step's window
// starts over because the recorder's data died with the process.
func (e *Engine) Restore(s State, now time.Time) (State, []Action) {
	s = cloneState(s)
	st := &stepper{e: e, s: &s, now: now}
	s.LastTick = now
	// Assert the stored traffic again, ended rollouts included (a restarted
	// proxy may start from its own configuration); nothing here raises it.
	assert := []Action{
		{Kind: ActSetWeights, Weights: maps.Clone(s.Weights)},
		{Kind: ActSetRoutes, Routes: slices.Clone(s.Routes)},
		{Kind: ActSetMirror, Mirror: s.Mirror},
	}
	if s.Phase.Done() {
		return s, assert
	}
	st.traffic = append(st.traffic, assert...)
	for id, g := range s.Gates {
		if g.Status == "requested" {
			delete(s.Gates, id) // re-issued by advance
		}
	}
	where := fmt.Sprintf("step %d/%d (%s)", s.Step+1, len(e.plan), s.StepName)
	if s.Step >= len(e.plan) {
		where = "promotion"
	}
	msg := fmt.Sprintf("restored at %s with weights %s", where, fmtWeights(s.Weights))
	if s.Step < len(e.plan) {
		p := e.plan[s.Step]
		if p.kind == "pause" && p.duration > 0 {
			msg += fmt.Sprintf(", %s of the pause left", fmtDur(max(p.duration-s.StepElapsed, 0)))
		}
		if p.kind == "analysis" && s.StepEntered {
			s.StepElapsed = 0
			st.after = append(st.after, Action{Kind: ActResetAnalysis, Reason: "analysis window restarted after restore"})
		}
	}
	st.event(EventRestored, msg, nil)
	if s.Phase == Progressing {
		st.advance()
	}
	st.remaining()
	return s, st.finish()
}

func cloneState(s State) State {
	s.Weights = maps.Clone(s.Weights)
	s.Routes = slices.Clone(s.Routes)
	s.Plan = slices.Clone(s.Plan)
	s.Verdicts = slices.Clone(s.Verdicts)
	s.Evidence = maps.Clone(s.Evidence)
	s.Holding = maps.Clone(s.Holding)
	if s.Gates != nil {
		g := make(map[string]*GateState, len(s.Gates))
		for k, v := range s.Gates {
			c := *v
			g[k] = &c
		}
		s.Gates = g
	}
	if s.Score != nil {
		v := *s.Score
		s.Score = &v
	}
	return s
}

func (st *stepper) start() {
	s, e := st.s, st.e
	*s = State{
		Rollout:     e.spec.Name,
		Strategy:    e.spec.Strategy.Name(),
		Phase:       Progressing,
		Steps:       len(e.plan),
		Plan:        e.StepNames(),
		Weights:     split(0),
		Started:     st.now,
		StepStarted: st.now,
	}
	st.event(EventStarted, fmt.Sprintf("%s rollout of %s started: %d steps", s.Strategy, s.Rollout, len(e.plan)), map[string]any{"steps": e.StepNames()})
	// Assert all traffic on stable: the data plane may hold stale weights.
	s.Weights = nil
	st.setTraffic(split(0), nil, 0, true)
}

func (st *stepper) event(typ, msg string, data any) {
	ev := Event{Time: st.now, Type: typ, Message: msg}
	if data != nil {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // evidence reads "n < minSamples", not "\u003c"
		if enc.Encode(data) == nil {
			ev.Data = bytes.TrimSpace(b.Bytes())
		}
	}
	st.events = append(st.events, ev)
	st.s.Events++
	st.dirty = true
}

// wait records why the rollout cannot move yet; an event is written only
// when the reason changes, so the history says why without repeating it.
//
// key identifies the kind of wait; a message whose details (sample counts)
// change every interval keeps its key and does not flood the history.
//
// overdue is how long the step has run beyond its planned time; only that
// part of the elapsed interval counts as stalled (nil: not stalled).
func (st *stepper) wait(key, msg string, overdue *time.Duration) {
	if overdue != nil && st.stall(*overdue, msg) {
		return
	}
	st.s.Message = msg
	if st.s.WaitKey != key {
		st.s.WaitKey = key
		st.event(EventWaiting, msg, nil)
	}
}

// stall counts the part of the elapsed interval beyond the step's planned
// time against the progress deadline, and aborts the rollout when the
// deadline is exceeded. It reports whether it aborted.
func (st *stepper) stall(overdue time.Duration, msg string) bool {
	s := st.s
	s.Stalled += max(min(st.dt, overdue), 0)
	dl := st.e.spec.ProgressDeadline
	if s.Stalled < dl {
		return false
	}
	data := map[string]any{"waiting": msg, "stalled": s.Stalled.String(), "verdicts": s.Verdicts}
	if len(s.Gates) > 0 {
		data["gates"] = s.Gates
	}
	st.end(Aborted, fmt.Sprintf("progress deadline %s exceeded: %s", fmtDur(dl), msg), data)
	return true
}

func fmtWeights(w Weights) string {
	keys := slices.Sorted(maps.Keys(w))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, w[k])
	}
	return strings.Join(parts, " ")
}

// setTraffic changes the traffic state and emits the actions. Traffic taken
// from the canary goes before Persist (urgent); anything else after.
// force emits SetWeights even when unchanged (a rollback asserts weight 0
// although the guard may already have set it).
func (st *stepper) setTraffic(w Weights, routes []Route, mirror int, force bool) {
	s := st.s
	urgent := w["canary"] < s.Weights["canary"] || (force && w["canary"] == 0)
	if force || !maps.Equal(w, s.Weights) {
		a := Action{Kind: ActSetWeights, Weights: maps.Clone(w)}
		if urgent {
			st.urgent = append(st.urgent, a)
		} else {
			st.traffic = append(st.traffic, a)
		}
		if !maps.Equal(w, s.Weights) {
			st.dirty = true
		}
		s.Weights = maps.Clone(w)
	}
	if !slices.EqualFunc(routes, s.Routes, routeEqual) {
		a := Action{Kind: ActSetRoutes, Routes: slices.Clone(routes)}
		if len(routes) < len(s.Routes) && w["canary"] < 100 {
			st.urgent = append(st.urgent, a)
		} else {
			st.traffic = append(st.traffic, a)
		}
		st.dirty = true
		s.Routes = slices.Clone(routes)
	}
	if mirror != s.Mirror {
		a := Action{Kind: ActSetMirror, Mirror: mirror}
		if mirror < s.Mirror {
			st.urgent = append(st.urgent, a)
		} else {
			st.traffic = append(st.traffic, a)
		}
		st.dirty = true
		s.Mirror = mirror
	}
}

func routeEqual(a, b Route) bool {
	return a.Name == b.Name && a.Version == b.Version && slices.Equal(a.Match, b.Match)
}

func (st *stepper) finish() []Action {
	var out []Action
	out = append(out, st.urgent...)
	if st.dirty || len(st.events) > 0 || (st.s.SincePersist >= PersistEvery && !st.s.Phase.Done()) {
		st.s.SincePersist = 0
		out = append(out, Action{Kind: ActPersist, Events: st.events})
	}
	out = append(out, st.traffic...)
	out = append(out, st.after...)
	if len(st.e.spec.Notifications) > 0 {
		for _, ev := range st.events {
			if ev.Type == EventWaiting && st.s.Phase == Progressing && st.s.Stalled == 0 {
				continue // a timed step waiting for its time is not news
			}
			out = append(out, Action{Kind: ActNotify, Events: []Event{ev}})
		}
	}
	return out
}

// record takes in verdicts, the score and gate answers.
func (st *stepper) record(obs Observation) {
	s := st.s
	if obs.Score != nil {
		v := *obs.Score
		s.Score = &v
	}
	if len(obs.Verdicts) > 0 {
		if summary(obs.Verdicts) != summary(s.Verdicts) {
			st.event(EventAnalysis, "analysis: "+summary(obs.Verdicts), map[string]any{"verdicts": obs.Verdicts})
		}
		s.Verdicts = slices.Clone(obs.Verdicts)
		for _, v := range obs.Verdicts {
			if v.Outcome == analysis.Pass {
				if s.Evidence == nil {
					s.Evidence = map[string]bool{}
				}
				if !s.Evidence[v.Metric] {
					s.Evidence[v.Metric] = true
					st.dirty = true
				}
			}
		}
	}
	for _, r := range obs.GateResults {
		g, ok := s.Gates[r.ID]
		if !ok || g.Status != "requested" {
			continue // an answer to a gate of an earlier step, or a duplicate
		}
		g.Message, g.Verdicts = r.Message, r.Verdicts
		switch r.Outcome {
		case analysis.Pass:
			g.Status = "pass"
		case analysis.Fail:
			g.Status = "fail"
		default:
			g.Status = "retry"
		}
		g.Since = 0
		data := map[string]any{"gate": r.ID, "kind": g.Kind, "outcome": r.Outcome, "attempt": g.Attempts}
		if len(r.Verdicts) > 0 {
			data["verdicts"] = r.Verdicts
		}
		if len(r.Data) > 0 {
			data["evidence"] = r.Data
		}
		msg := fmt.Sprintf("gate %s: %s", r.ID, r.Outcome)
		if r.Message != "" {
			msg += ": " + r.Message
		}
		st.event(EventGate, msg, data)
	}
}

func summary(vs []analysis.Verdict) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.Metric + "=" + string(v.Outcome)
	}
	return strings.Join(parts, " ")
}

// protect applies the rollback rules, which hold in every running phase,
// paused included: a critical trip, a Fail verdict, a sustained trigger.
func (st *stepper) protect(obs Observation) {
	s, spec := st.s, st.e.spec
	if len(obs.Trips) > 0 {
		t := obs.Trips[0]
		st.end(RolledBack, fmt.Sprintf("critical trigger %s fired in the request path: %s", t.Trigger, t.Reason), map[string]any{"trigger": t.Trigger, "reason": t.Reason, "evidence": t.Data, "trips": obs.Trips})
		return
	}
	var failed []analysis.Verdict
	for _, v := range obs.Verdicts {
		if v.Outcome == analysis.Fail {
			failed = append(failed, v)
		}
	}
	if len(failed) > 0 {
		names := make([]string, len(failed))
		for i, v := range failed {
			names[i] = v.Metric
			if v.Reason != "" {
				names[i] += " (" + v.Reason + ")"
			}
		}
		st.end(RolledBack, "analysis failed: "+strings.Join(names, "; "), map[string]any{"verdicts": failed})
		return
	}
	for i, t := range spec.RollbackTriggers.Sustained {
		key := "sustained:" + t.Condition.Raw
		v, ok := obs.Values[t.Condition.Metric]
		if !ok {
			continue
		}
		base, haveBase := obs.Values[BaselineKey(t.Condition.Metric)]
		if t.Condition.Baseline != "" && !haveBase {
			continue // a relative condition without the baseline's value says nothing
		}
		if !t.Condition.Holds(v, base) {
			if _, was := s.Holding[key]; was {
				delete(s.Holding, key)
				st.dirty = true
			}
			continue
		}
		if st.hold(key, t.For) {
			st.end(RolledBack, fmt.Sprintf("sustained trigger %q held for %s", t.Condition.Raw, fmtDur(t.For)),
				map[string]any{"trigger": fmt.Sprintf("sustained[%d]", i), "condition": t.Condition.Raw, "for": t.For.String(), "value": v, "baseline": base, "threshold": t.Condition.Threshold()})
			return
		}
	}
	for i, t := range spec.RollbackTriggers.Business {
		key := "business:" + BusinessKey(i)
		v, ok := obs.Values[BusinessKey(i)]
		if !ok {
			continue
		}
		stable := obs.Values[BusinessKey(i)+":stable"]
		if !t.Condition.Holds(v, stable) {
			if _, was := s.Holding[key]; was {
				delete(s.Holding, key)
				st.dirty = true
			}
			continue
		}
		if st.hold(key, t.For) {
			st.end(RolledBack, fmt.Sprintf("business trigger %q held for %s (query %s)", t.Condition.Raw, fmtDur(t.For), t.Query),
				map[string]any{"trigger": fmt.Sprintf("business[%d]", i), "query": t.Query, "condition": t.Condition.Raw, "value": v, "stable": stable, "threshold": t.Condition.Threshold(), "for": t.For.String()})
			return
		}
	}
}

// hold extends a trigger's hold by the elapsed time and reports whether it
// has held long enough.
func (st *stepper) hold(key string, d time.Duration) bool {
	s := st.s
	if s.Holding == nil {
		s.Holding = map[string]time.Duration{}
	}
	held, was := s.Holding[key]
	if was {
		held += st.dt
	} else {
		st.dirty = true
	}
	s.Holding[key] = held
	return held >= d
}

// end finishes the rollout. RolledBack and Aborted take all traffic back to
// stable before anything is written, then run the rollback hooks.
func (st *stepper) end(phase Phase, reason string, data map[string]any) {
	s := st.s
	if s.Phase.Done() {
		return
	}
	if data == nil {
		data = map[string]any{}
	}
	data["reason"] = reason
	data["step"] = s.Step
	data["weights_before"] = maps.Clone(s.Weights)
	s.Phase, s.Message, s.PausedBy, s.Skip = phase, reason, "", false
	switch phase {
	case RolledBack, Aborted:
		st.setTraffic(split(0), nil, 0, true)
		typ := EventRolledBack
		if phase == Aborted {
			typ = EventAborted
		}
		st.event(typ, reason, data)
		st.after = append(st.after, Action{Kind: ActRunHooks, Hooks: "rollback", Reason: reason})
	case Promoted:
		st.setTraffic(split(100), nil, 0, false)
		st.event(EventPromoted, reason, data)
		st.after = append(st.after,
			Action{Kind: ActRunHooks, Hooks: "post-rollout", Reason: reason},
			Action{Kind: ActRunHooks, Hooks: "cleanup", Reason: reason})
	}
	s.Gates = nil
}

// command applies a manual command; refused ones are recorded, not applied.
func (st *stepper) command(c Command) {
	s := st.s
	if err := st.e.CheckCommand(*s, c); err != nil {
		st.event(EventCommandRefused, err.Error(), c)
		return
	}
	by := c.By
	if by == "" {
		by = "operator"
	}
	desc := string(c.Kind)
	switch c.Kind {
	case CmdPromote:
		if c.Full {
			desc += " --full"
		}
	case CmdSetWeight:
		desc += fmt.Sprintf(" %d", c.Weight)
	case CmdJump:
		// People count steps from 1, as status shows them ("step 2/6").
		desc += fmt.Sprintf(" to step %d", c.Step+1)
	}
	st.event(EventCommand, fmt.Sprintf("%s by %s", desc, by), c)
	switch c.Kind {
	case CmdAbort:
		reason := "aborted by " + by
		if c.Reason != "" {
			reason += ": " + c.Reason
		}
		st.end(Aborted, reason, map[string]any{"command": c})
	case CmdPromote:
		if c.Full {
			st.end(Promoted, "promoted to 100% by "+by+" (--full: remaining steps and gates skipped)", map[string]any{"command": c, "verdicts": s.Verdicts})
			return
		}
		s.Phase, s.PausedBy, s.Skip = Progressing, "", true
	case CmdPause:
		s.Phase, s.PausedBy = Paused, PausedByOperator
		s.Message = "paused by " + by
		st.event(EventPaused, s.Message, nil)
	case CmdResume:
		if s.PausedBy != PausedByOperator {
			s.Skip = true // the step was waiting for exactly this
		}
		s.Phase, s.PausedBy = Progressing, ""
		st.event(EventResumed, "resumed by "+by, nil)
	case CmdSetWeight:
		st.setTraffic(split(c.Weight), s.Routes, s.Mirror, false)
		s.Evidence = nil // evidence at another weight does not carry over
		s.Phase, s.PausedBy = Paused, PausedByOperator
		s.Message = fmt.Sprintf("weight set to %d by %s; paused until resume or promote", c.Weight, by)
		st.event(EventPaused, s.Message, nil)
	case CmdJump:
		w, routes, mirror := st.e.trafficBefore(c.Step)
		st.setTraffic(w, routes, mirror, false)
		s.Phase, s.PausedBy = Progressing, ""
		st.enter(c.Step)
	}
}

// Compatible reports whether a stored state can continue under this
// engine: same rollout, strategy and steps. A reloaded spec that changes the
// plan of a running rollout must not silently move it (a shorter plan would
// otherwise read as "all steps done").
func (e *Engine) Compatible(s State) error {
	if s.Rollout != e.spec.Name || s.Strategy != e.spec.Strategy.Name() {
		return fmt.Errorf("state of %s (%s) does not belong to rollout %s (%s)", s.Rollout, s.Strategy, e.spec.Name, e.spec.Strategy.Name())
	}
	if !slices.Equal(s.Plan, e.StepNames()) {
		return fmt.Errorf("rollout %s: the steps changed while it was running (was %q, now %q); abort it or restore the spec", s.Rollout, s.Plan, e.StepNames())
	}
	return nil
}

// CheckCommand reports whether c can apply to s, so a driver can answer an
// operator before stepping.
func (e *Engine) CheckCommand(s State, c Command) error {
	if s.Phase.Done() {
		return fmt.Errorf("%s: rollout %s has already ended (%s)", c.Kind, s.Rollout, s.Phase)
	}
	switch c.Kind {
	case CmdAbort, CmdPromote:
	case CmdPause:
		if s.Phase == Paused {
			return fmt.Errorf("pause: rollout %s is already paused", s.Rollout)
		}
	case CmdResume:
		if s.Phase != Paused {
			return fmt.Errorf("resume: rollout %s is not paused", s.Rollout)
		}
	case CmdSetWeight:
		if c.Weight < 0 || c.Weight > 100 {
			return fmt.Errorf("set-weight: %d is not between 0 and 100", c.Weight)
		}
	case CmdJump:
		if c.Step < 0 || c.Step >= len(e.plan) {
			return fmt.Errorf("jump: step %d is not between 1 and %d", c.Step+1, len(e.plan))
		}
	default:
		return fmt.Errorf("unknown command %q", c.Kind)
	}
	return nil
}

// trafficBefore replays the plan's traffic steps before step n.
func (e *Engine) trafficBefore(n int) (Weights, []Route, int) {
	w, mirror := 0, 0
	var routes []Route
	for _, p := range e.plan[:n] {
		switch p.kind {
		case "setWeight":
			w = p.weight
		case "mirror":
			mirror = p.mirror
		case "route":
			routes = applyRoute(routes, *p.route)
		}
	}
	return split(w), routes, mirror
}

func applyRoute(routes []Route, r Route) []Route {
	routes = slices.DeleteFunc(slices.Clone(routes), func(x Route) bool { return x.Name == r.Name })
	if len(r.Match) > 0 {
		routes = append(routes, r)
	}
	return routes
}

// enter makes step n current.
func (st *stepper) enter(n int) {
	s := st.s
	s.Step, s.StepEntered = n, false
	s.StepElapsed, s.Stalled = 0, 0
	s.StepStarted = st.now
	// Verdicts and evidence were about the previous step's traffic.
	s.Evidence, s.Gates, s.Verdicts = nil, nil, nil
	s.Message, s.WaitKey = "", ""
	st.dirty = true
}

// next completes the current step.
func (st *stepper) next() {
	st.s.Skip = false
	st.enter(st.s.Step + 1)
}

// advance runs the plan from the current step as far as it can go now.
func (st *stepper) advance() {
	s, e := st.s, st.e
	for range len(e.plan) + 2 {
		if s.Phase != Progressing {
			return
		}
		if s.Step >= len(e.plan) {
			s.Steps, s.StepName = len(e.plan), "promotion"
			if s.Skip {
				st.end(Promoted, fmt.Sprintf("all %d steps completed; promotion confirmed by operator", len(e.plan)), map[string]any{"verdicts": s.Verdicts})
				return
			}
			st.promote()
			return
		}
		p := e.plan[s.Step]
		s.Steps, s.StepName = len(e.plan), p.label
		if !s.StepEntered {
			s.StepEntered = true
			st.event(EventStep, fmt.Sprintf("step %d/%d: %s", s.Step+1, len(e.plan), p.label), nil)
			if p.kind == "analysis" {
				st.after = append(st.after, Action{Kind: ActResetAnalysis, Reason: "analysis step " + p.label})
			}
		}
		if s.Skip {
			st.event(EventProceed, fmt.Sprintf("step %d/%d (%s) completed by operator", s.Step+1, len(e.plan), p.label), nil)
			if p.kind == "setWeight" {
				st.setWeight(p.weight)
			}
			st.applyStatic(p)
			st.next()
			continue
		}
		if !st.preGates(p) {
			return
		}
		switch p.kind {
		case "setWeight":
			st.setWeight(p.weight)
			st.next()
		case "route", "mirror":
			st.applyStatic(p)
			st.next()
		case "pause":
			if !st.pause(p) {
				return
			}
		case "analysis":
			if s.StepElapsed < p.duration {
				st.wait("window", fmt.Sprintf("analysis window of %s at %s", fmtDur(p.duration), trafficText(s)), nil)
				return
			}
			id := fmt.Sprintf("analysis-%d", s.Step)
			g := Gate{Kind: GateAnalysis, Target: p.target, Window: s.StepElapsed, Metrics: p.metrics}
			switch st.gate(id, g, st.e.spec.Analysis.Interval, p.duration) {
			case "pass":
				gs := s.Gates[id]
				st.event(EventProceed, fmt.Sprintf("%s passed: %s", p.label, summary(gs.Verdicts)), map[string]any{"gate": id, "verdicts": gs.Verdicts, "message": gs.Message})
				st.next()
			case "fail":
				gs := s.Gates[id]
				st.end(RolledBack, "analysis step failed: "+gateReason(gs), map[string]any{"gate": id, "verdicts": gs.Verdicts})
				return
			default:
				return
			}
		case "smoke":
			id := fmt.Sprintf("smoke-%d", s.Step)
			switch st.gate(id, Gate{Kind: GateSmoke, File: p.file, Target: p.target}, GateRetry, 0) {
			case "pass":
				st.next()
			case "fail":
				st.end(RolledBack, "smoke tests failed: "+gateReason(s.Gates[id]), map[string]any{"gate": id, "result": s.Gates[id]})
				return
			default:
				return
			}
		case "approval":
			if p.webhook == "" {
				s.Phase, s.PausedBy = Paused, PausedByApproval
				s.Message = fmt.Sprintf("waiting for approval: guardian promote %s", s.Rollout)
				st.event(EventPaused, s.Message, nil)
				return
			}
			id := fmt.Sprintf("approval-%d", s.Step)
			switch st.gate(id, Gate{Kind: GateApproval, URL: p.webhook, Timeout: DefaultWebhookTimeout, FailurePolicy: "hold"}, GateRetry, 0) {
			case "pass":
				st.next()
			default:
				return
			}
		}
	}
}

func gateReason(g *GateState) string {
	if g == nil {
		return ""
	}
	if g.Message != "" {
		return g.Message
	}
	var failed []string
	for _, v := range g.Verdicts {
		if v.Outcome == analysis.Fail {
			failed = append(failed, v.Metric)
		}
	}
	return strings.Join(failed, ", ")
}

func (st *stepper) applyStatic(p planStep) {
	s := st.s
	switch p.kind {
	case "route":
		st.setTraffic(s.Weights, applyRoute(s.Routes, *p.route), s.Mirror, false)
	case "mirror":
		st.setTraffic(s.Weights, s.Routes, p.mirror, false)
	}
}

func (st *stepper) setWeight(w int) {
	s := st.s
	if s.Weights["canary"] == w {
		return
	}
	from := s.Weights["canary"]
	st.setTraffic(split(w), s.Routes, s.Mirror, false)
	st.event(EventWeights, fmt.Sprintf("canary weight %d%% → %d%%", from, w), map[string]any{"from": from, "to": w})
}

// preGates runs the webhooks that guard entering a step: confirm-rollout
// and pre-rollout before the first, confirm-traffic-increase before a
// weight increase. It reports whether the step may run.
func (st *stepper) preGates(p planStep) bool {
	s := st.s
	var types []string
	if s.Step == 0 {
		types = append(types, WebhookConfirmRollout, WebhookPreRollout)
	}
	if p.kind == "setWeight" && p.weight > s.Weights["canary"] {
		types = append(types, WebhookConfirmTrafficIncrease)
		if !st.businessGate(s.Step) {
			return false
		}
	}
	return st.webhookGates(types, s.Step)
}

// businessGate asks the driver to evaluate spec.businessMetrics before the
// canary gets more traffic. With no canary traffic yet there is nothing to
// measure, so the first increase is not gated. Inconclusive (a query that
// returned nothing) waits, bounded by the progress deadline; it never
// passes silently.
func (st *stepper) businessGate(step int) bool {
	s, b := st.s, st.e.spec.BusinessMetrics
	if b == nil || len(b.Metrics) == 0 || s.Weights["canary"] == 0 {
		return true
	}
	names := make([]string, len(b.Metrics))
	for i, m := range b.Metrics {
		names[i] = m.Name
	}
	id := fmt.Sprintf("business-%d", step)
	switch st.gate(id, Gate{Kind: GateBusiness, URL: b.Prometheus, Metrics: names, Target: "canary"}, max(st.e.spec.Analysis.Interval, GateRetry), 0) {
	case "pass":
		return true
	case "fail":
		st.end(RolledBack, "business metrics failed: "+gateReason(s.Gates[id]), map[string]any{"gate": id, "result": s.Gates[id]})
	}
	return false
}

func (st *stepper) webhookGates(types []string, step int) bool {
	s := st.s
	for _, typ := range types {
		for j, w := range st.e.spec.Webhooks {
			if w.Type != typ {
				continue
			}
			id := fmt.Sprintf("%s-%d-%d", typ, j, step)
			g := Gate{Kind: GateWebhook, URL: w.URL, WebhookType: w.Type, Timeout: w.Timeout, FailurePolicy: w.FailurePolicy}
			switch st.gate(id, g, GateRetry, 0) {
			case "pass":
				continue
			case "fail":
				st.end(RolledBack, fmt.Sprintf("webhook %s failed: %s", typ, gateReason(s.Gates[id])), map[string]any{"gate": id, "url": w.URL, "result": s.Gates[id]})
				return false
			default:
				return false
			}
		}
	}
	return true
}

// gate asks for a gate once and returns "pass", "fail" or "pending".
// Inconclusive answers (and webhook holds) are asked again after retry;
// the wait counts against the progress deadline.
//
// planned is the part of the step's time the plan itself asks for (an
// analysis window); waiting beyond it counts as stalled.
//
// Only analysis and business gates stall (they wait for evidence); webhooks, approvals
// and smoke suites wait for a decision or bound themselves with timeouts,
// like a `pause: {}`, and their wait is shown in the message.
func (st *stepper) gate(id string, g Gate, retry, planned time.Duration) string {
	s := st.s
	if s.Gates == nil {
		s.Gates = map[string]*GateState{}
	}
	gs, ok := s.Gates[id]
	if ok && gs.Status == "fail" && g.FailurePolicy == "hold" {
		gs.Status = "retry"
	}
	switch {
	case ok && gs.Status == "pass":
		return "pass"
	case ok && gs.Status == "fail":
		return "fail"
	case ok:
		gs.Since += st.dt
	}
	describe := func() (key, msg string) {
		msg = fmt.Sprintf("waiting for gate %s (%s)", id, g.Kind)
		key = "gate:" + id
		if gs == nil {
			return key, msg
		}
		if gs.Attempts > 1 {
			key += ":retry"
			msg += fmt.Sprintf(", attempt %d", gs.Attempts)
		}
		if gs.Message != "" {
			msg += ": last answer: " + gs.Message
		} else if len(gs.Verdicts) > 0 {
			msg += ": " + whyNot(gs.Verdicts)
		}
		return key, msg
	}
	// The deadline is checked before asking again, so an aborted rollout
	// does not start one more check.
	if _, msg := describe(); (g.Kind == GateAnalysis || g.Kind == GateBusiness) && st.stall(s.StepElapsed-planned, msg) {
		return "pending"
	}
	if !ok || (gs.Status == "retry" && gs.Since >= retry) {
		if !ok {
			gs = &GateState{Kind: g.Kind}
			s.Gates[id] = gs
		}
		gs.Status, gs.Since = "requested", 0
		gs.Attempts++
		g.ID, g.Step = id, s.Step
		st.after = append(st.after, Action{Kind: ActRunGate, Gate: &g})
		st.dirty = true
	}
	key, msg := describe()
	st.wait(key, msg, nil)
	return "pending"
}

// whyNot lists the metrics that have not passed and why.
func whyNot(vs []analysis.Verdict) string {
	var parts []string
	for _, v := range vs {
		if v.Outcome == analysis.Pass {
			continue
		}
		p := v.Metric + " " + string(v.Outcome)
		if v.Reason != "" {
			p += " (" + v.Reason + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

// pause runs a pause step and reports whether it completed.
//
// A timed pause completes when its time is up and, while both versions take
// traffic, every analysis metric has passed at least once during the step:
// a rollout never moves on because nothing was seen. Without that evidence
// it waits, says which metrics lack it and why, and the progress deadline
// bounds the wait.
func (st *stepper) pause(p planStep) bool {
	s := st.s
	if p.duration == 0 {
		s.Phase, s.PausedBy = Paused, PausedByStep
		s.Message = fmt.Sprintf("paused until promote: guardian promote %s", s.Rollout)
		st.event(EventPaused, s.Message, nil)
		return false
	}
	if s.StepElapsed < p.duration {
		st.wait("pause", fmt.Sprintf("%s at %s", p.label, trafficText(s)), nil)
		return false
	}
	if missing, key := st.missingEvidence(); missing != "" {
		overdue := s.StepElapsed - p.duration
		st.wait("evidence:"+key, "pause time is up; waiting for evidence: "+missing, &overdue)
		return false
	}
	if st.adapt() {
		return true
	}
	st.event(EventProceed, fmt.Sprintf("%s completed at %s: %s", p.label, trafficText(s), evidenceText(s)), map[string]any{"verdicts": s.Verdicts})
	st.next()
	return true
}

// trafficText describes what the canary receives.
func trafficText(s *State) string {
	t := fmt.Sprintf("canary %d%%", s.Weights["canary"])
	if len(s.Routes) > 0 {
		names := make([]string, len(s.Routes))
		for i, r := range s.Routes {
			names[i] = r.Name
		}
		t += " + routes " + strings.Join(names, ",")
	}
	if s.Mirror > 0 {
		t += fmt.Sprintf(" + mirror %d%%", s.Mirror)
	}
	return t
}

func evidenceText(s *State) string {
	if !s.comparable() {
		return "no trigger fired (one version takes all user traffic, so there is no comparison to wait for)"
	}
	if len(s.Verdicts) == 0 {
		return "no analysis metrics to wait for"
	}
	return summary(s.Verdicts)
}

// comparable reports whether both versions take user traffic, so that the
// analysis can compare them.
func (s *State) comparable() bool {
	canary := s.Weights["canary"] > 0 || len(s.Routes) > 0
	return canary && s.Weights["stable"] > 0
}

func (st *stepper) missingEvidence() (msg, key string) {
	s := st.s
	if !s.comparable() {
		return "", ""
	}
	var parts, names []string
	for _, m := range st.e.spec.Analysis.Metrics {
		if s.Evidence[m.Name] {
			continue
		}
		p := m.Name + " has not passed"
		for _, v := range s.Verdicts {
			if v.Metric == m.Name {
				p = m.Name + " " + string(v.Outcome)
				if v.Reason != "" {
					p += " (" + v.Reason + ")"
				}
			}
		}
		if !slices.ContainsFunc(s.Verdicts, func(v analysis.Verdict) bool { return v.Metric == m.Name }) {
			p = m.Name + " has no verdict yet"
		}
		parts = append(parts, p)
		names = append(names, m.Name)
	}
	return strings.Join(parts, "; "), strings.Join(names, ",")
}

// adapt applies the seed's adaptive progression at the end of a healthy
// timed pause: score > 0.95 doubles the weight, > 0.90 takes the next
// planned step, anything lower adds one point; bounded by maxWeight and
// maxStepWeight. It reports whether it moved the rollout itself.
func (st *stepper) adapt() bool {
	s, e := st.s, st.e
	c := e.spec.Strategy.Canary
	if c == nil || c.Adaptive == nil || !c.Adaptive.Enabled || s.Score == nil {
		return false
	}
	ad, score, cur := c.Adaptive, *s.Score, s.Weights["canary"]
	planned := 100 // the next planned weight
	for _, p := range e.plan[s.Step+1:] {
		if p.kind == "setWeight" && p.weight > cur {
			planned = p.weight
			break
		}
	}
	target := cur + 1
	rule := "score <= 0.90: add one point"
	switch {
	case score > 0.95:
		target, rule = max(cur*2, cur+1), "score > 0.95: double"
	case score > 0.90:
		return false // the standard progression: the plan's next step
	}
	target = min(target, cur+ad.MaxStepWeight, ad.MaxWeight, 100)
	if target <= cur {
		return false // at the adaptive ceiling the plan takes over
	}
	data := map[string]any{"score": score, "rule": rule, "from": cur, "to": target, "planned": planned, "verdicts": s.Verdicts}
	if target >= planned {
		// Skip the planned steps the target reaches: continue after the
		// last setWeight whose weight the target covers, at the target.
		j := -1
		for i := s.Step + 1; i < len(e.plan); i++ {
			if e.plan[i].kind == "setWeight" && e.plan[i].weight <= target && e.plan[i].weight > cur {
				j = i
			}
		}
		if j < 0 {
			return false
		}
		st.event(EventAdaptive, fmt.Sprintf("adaptive: score %.3f (%s): canary %d%% → %d%%, skipping to step %d/%d", score, rule, cur, target, j+2, len(e.plan)), data)
		st.setTraffic(split(target), s.Routes, s.Mirror, false)
		st.enter(j + 1)
		return true
	}
	st.event(EventAdaptive, fmt.Sprintf("adaptive: score %.3f (%s): canary %d%% → %d%%, then hold again", score, rule, cur, target), data)
	st.setTraffic(split(target), s.Routes, s.Mirror, false)
	step := s.Step
	st.enter(step)
	s.StepEntered = true
	return true
}

// promote ends the plan: confirm-promotion webhooks, then all traffic to
// the canary.
func (st *stepper) promote() {
	s := st.s
	if s.Weights["canary"] < 100 && !st.businessGate(len(st.e.plan)) {
		return
	}
	if !st.webhookGates([]string{WebhookConfirmPromotion}, len(st.e.plan)) {
		return
	}
	st.end(Promoted, fmt.Sprintf("all %d steps completed", len(st.e.plan)), map[string]any{"verdicts": s.Verdicts})
}

// remaining fills State.Remaining for display.
func (st *stepper) remaining() {
	s := st.s
	s.Remaining = 0
	if s.Phase.Done() || s.Step >= len(st.e.plan) {
		return
	}
	if p := st.e.plan[s.Step]; (p.kind == "pause" || p.kind == "analysis") && p.duration > s.StepElapsed {
		s.Remaining = p.duration - s.StepElapsed
	}
}

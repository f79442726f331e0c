package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/store"
)

// Manager holds the running rollouts of one process and serves them on the
// admin API.
type Manager struct {
	store  *store.Store
	mu     sync.RWMutex
	byName map[string]*Driver
	// started is the process start, for the report of a rollout restored
	// mid-way.
}

// NewManager returns an empty manager reading history from st.
func NewManager(st *store.Store) *Manager {
	return &Manager{store: st, byName: map[string]*Driver{}}
}

// Add registers a driver; a driver with the same name replaces the old one.
func (m *Manager) Add(d *Driver) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byName[d.Name()] = d
}

// Get returns the named driver.
func (m *Manager) Get(name string) (*Driver, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	d, ok := m.byName[name]
	return d, ok
}

// Names lists the rollouts in name order.
func (m *Manager) Names() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	names := make([]string, 0, len(m.byName))
	for n := range m.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Mux is where the manager mounts its handlers (the admin server).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Register mounts the rollout API:
//
//	GET  /api/v1/rollouts                    list (status without events)
//	GET  /api/v1/rollouts/{name}             status with analysis and events
//	POST /api/v1/rollouts/{name}/{command}   promote|abort|pause|resume|set-weight|jump
//	GET  /api/v1/rollouts/{name}/report      ?format=json|markdown
//	GET  /api/v1/rollouts/{name}/events      ?after=SEQ, the full history
func (m *Manager) Register(mux Mux) {
	mux.Handle("GET /api/v1/rollouts", http.HandlerFunc(m.list))
	mux.Handle("GET /api/v1/rollouts/{name}", http.HandlerFunc(m.status))
	mux.Handle("POST /api/v1/rollouts/{name}/{command}", http.HandlerFunc(m.command))
	mux.Handle("GET /api/v1/rollouts/{name}/report", http.HandlerFunc(m.report))
	mux.Handle("GET /api/v1/rollouts/{name}/events", http.HandlerFunc(m.events))
}

// Status is a rollout as the admin API and `guardian status -o json` show it.
type Status struct {
	Name        string             `json:"name"`
	Strategy    string             `json:"strategy"`
	Phase       rollout.Phase      `json:"phase"`
	Message     string             `json:"message,omitempty"`
	Step        int                `json:"step"`
	Steps       int                `json:"steps"`
	StepName    string             `json:"stepName,omitempty"`
	Plan        []string           `json:"plan,omitempty"`
	Weights     rollout.Weights    `json:"weights"`
	Routes      []rollout.Route    `json:"routes,omitempty"`
	Mirror      int                `json:"mirror,omitempty"`
	Started     time.Time          `json:"started"`
	StepStarted time.Time          `json:"stepStarted"`
	StepElapsed float64            `json:"stepElapsedSeconds"`
	Remaining   float64            `json:"remainingSeconds,omitempty"`
	Stalled     float64            `json:"stalledSeconds,omitempty"`
	Target      string             `json:"target,omitempty"`
	Analysis    []analysis.Verdict `json:"analysis"`
	// Business holds the current step's business-metric gate verdicts.
	Business []analysis.Verdict `json:"business,omitempty"`
	// Interval holds the latest analysis interval's raw numbers per
	// version, for the dashboard.
	Interval map[string]lastInterval `json:"interval,omitempty"`
	Events   []store.StoredEvent     `json:"events,omitempty"`
}

// Status describes the driver's rollout; events are the newest maxEvents
// (all when maxEvents < 0, none when 0).
func (d *Driver) Status(maxEvents int) (Status, error) {
	st := d.State()
	s := Status{
		Name: d.name, Strategy: st.Strategy, Phase: st.Phase, Message: st.Message,
		Step: st.Step, Steps: st.Steps, StepName: st.StepName, Plan: st.Plan,
		Weights: st.Weights, Routes: st.Routes, Mirror: st.Mirror,
		Started: st.Started, StepStarted: st.StepStarted,
		StepElapsed: st.StepElapsed.Seconds(), Remaining: st.Remaining.Seconds(), Stalled: st.Stalled.Seconds(),
		Target:   d.target(),
		Analysis: st.Verdicts,
		Interval: d.lastIntervals(),
	}
	if s.Analysis == nil {
		s.Analysis = []analysis.Verdict{}
	}
	for _, id := range slices.Sorted(maps.Keys(st.Gates)) {
		if g := st.Gates[id]; g.Kind == rollout.GateBusiness {
			s.Business = append(s.Business, g.Verdicts...)
		}
	}
	if maxEvents != 0 {
		evs, err := d.cfg.Store.Events(d.name, 0)
		if err != nil {
			return s, err
		}
		if maxEvents > 0 && len(evs) > maxEvents {
			evs = evs[len(evs)-maxEvents:]
		}
		s.Events = evs
	}
	return s, nil
}

func (d *Driver) target() string {
	spec := d.cfg.Spec
	if spec.Listen != "" {
		return spec.Listen + spec.Match.Host + spec.Match.PathPrefix
	}
	if spec.XDS != nil {
		return "xds:///" + spec.XDS.Service
	}
	return ""
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, a ...any) {
	writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, a...)})
}

func (m *Manager) list(w http.ResponseWriter, _ *http.Request) {
	out := []Status{}
	for _, n := range m.Names() {
		d, _ := m.Get(n)
		s, _ := d.Status(0)
		out = append(out, s)
	}
	writeJSON(w, http.StatusOK, out)
}

func (m *Manager) lookup(w http.ResponseWriter, r *http.Request) (*Driver, bool) {
	name := r.PathValue("name")
	d, ok := m.Get(name)
	if !ok {
		writeError(w, http.StatusNotFound, "rollout %q not found", name)
	}
	return d, ok
}

func (m *Manager) status(w http.ResponseWriter, r *http.Request) {
	d, ok := m.lookup(w, r)
	if !ok {
		return
	}
	n := 50
	if v := r.URL.Query().Get("events"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			writeError(w, http.StatusBadRequest, "events: %q is not a number", v)
			return
		}
	}
	s, err := d.Status(n)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// commandBody is the optional JSON body of a command.
type commandBody struct {
	Full   bool   `json:"full"`
	Weight *int   `json:"weight"`
	Step   *int   `json:"step"`
	Reason string `json:"reason"`
	By     string `json:"by"`
}

func (m *Manager) command(w http.ResponseWriter, r *http.Request) {
	d, ok := m.lookup(w, r)
	if !ok {
		return
	}
	var body commandBody
	if r.Body != nil {
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, "body: %v", err)
			return
		}
	}
	c := rollout.Command{Kind: rollout.CommandKind(r.PathValue("command")), Full: body.Full, Reason: body.Reason, By: body.By}
	switch c.Kind {
	case rollout.CmdPromote, rollout.CmdAbort, rollout.CmdPause, rollout.CmdResume:
	case rollout.CmdSetWeight:
		if body.Weight == nil {
			writeError(w, http.StatusBadRequest, "weight: set-weight needs {\"weight\": N}")
			return
		}
		c.Weight = *body.Weight
	case rollout.CmdJump:
		if body.Step == nil {
			writeError(w, http.StatusBadRequest, "step: jump needs {\"step\": N}")
			return
		}
		c.Step = *body.Step
	default:
		writeError(w, http.StatusNotFound, "command %q: want promote, abort, pause, resume, set-weight or jump", c.Kind)
		return
	}
	if c.By == "" {
		c.By = "admin-api"
	}
	if err := d.Command(r.Context(), c); err != nil {
		code := http.StatusConflict
		if errors.Is(err, r.Context().Err()) && r.Context().Err() != nil {
			code = http.StatusServiceUnavailable
		}
		writeError(w, code, "%v", err)
		return
	}
	s, _ := d.Status(10)
	writeJSON(w, http.StatusOK, s)
}

func (m *Manager) report(w http.ResponseWriter, r *http.Request) {
	d, ok := m.lookup(w, r)
	if !ok {
		return
	}
	rep, err := d.Report()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	switch f := r.URL.Query().Get("format"); f {
	case "", "json":
		b, err := rep.JSON()
		if err != nil {
			writeError(w, http.StatusInternalServerError, "%v", err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	case "markdown", "md":
		w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
		_, _ = io.WriteString(w, rep.Markdown())
	default:
		writeError(w, http.StatusBadRequest, "format %q: want json or markdown", f)
	}
}

func (m *Manager) events(w http.ResponseWriter, r *http.Request) {
	d, ok := m.lookup(w, r)
	if !ok {
		return
	}
	var after uint64
	if v := r.URL.Query().Get("after"); v != "" {
		var err error
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "after: %q is not a sequence number", v)
			return
		}
	}
	evs, err := m.store.Events(d.Name(), after)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if evs == nil {
		evs = []store.StoredEvent{}
	}
	writeJSON(w, http.StatusOK, evs)
}

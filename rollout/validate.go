package rollout

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults chosen to be safe rather than fast; docs/rollout-spec.md lists them.
const (
	DefaultInterval         = time.Second
	MinInterval             = 50 * time.Millisecond
	DefaultConfidence       = 0.95
	DefaultProgressDeadline = 10 * time.Minute
	DefaultAnalysisStep     = time.Minute
	DefaultMonitor          = 15 * time.Minute
	DefaultHookTimeout      = 30 * time.Second
	DefaultHookRetries      = 2
	DefaultWebhookTimeout   = 10 * time.Second
	DefaultMaxStepWeight    = 25
)

// Analysis metric names and the tests each accepts.
var metricTests = map[string][]string{
	"error_rate":   {"sequential", "two-proportion-z", "fisher"},
	"latency_p50":  {"sequential", "mann-whitney-u"},
	"latency_p90":  {"sequential", "mann-whitney-u"},
	"latency_p95":  {"sequential", "mann-whitney-u"},
	"latency_p99":  {"sequential", "mann-whitney-u"},
	"latency_p999": {"sequential", "mann-whitney-u"},
	"latency_mean": {"sequential", "mann-whitney-u", "welch"},
}

// AnalysisMetrics lists the metric names spec.analysis.metrics accepts.
func AnalysisMetrics() []string {
	names := make([]string, 0, len(metricTests))
	for n := range metricTests {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Defaults fills in every unset field with its documented default. It is
// idempotent and runs before Validate.
func (s *Spec) Defaults() {
	if s.Match.PathPrefix == "" {
		s.Match.PathPrefix = "/"
	}
	a := &s.Analysis
	if a.Interval == 0 {
		a.Interval = DefaultInterval
	}
	if a.Confidence == 0 {
		a.Confidence = DefaultConfidence
	}
	if a.Metrics == nil {
		// The seed's three metrics, judged with the anytime-valid tests so
		// that evaluating every interval stays valid.
		a.Metrics = []MetricSpec{
			{Name: "error_rate", Test: "sequential", MaxIncrease: 0.02, increaseUnit: "%"},
			{Name: "latency_p50", Test: "sequential", MaxRatio: 1.2},
			{Name: "latency_p99", Test: "sequential", MaxRatio: 1.5},
		}
	}
	for i := range a.Metrics {
		m := &a.Metrics[i]
		if m.Test == "" {
			m.Test = "sequential"
		}
		if m.MaxIncrease == 0 && m.MaxRatio == 0 {
			switch m.Name {
			case "error_rate":
				m.MaxIncrease, m.increaseUnit = 0.02, "%"
			case "latency_p50":
				m.MaxRatio = 1.2
			default:
				m.MaxRatio = 1.5
			}
		}
	}
	if s.ProgressDeadline == 0 {
		s.ProgressDeadline = DefaultProgressDeadline
	}
	if c := s.Strategy.Canary; c != nil {
		for i := range c.Steps {
			if st := c.Steps[i].Analysis; st != nil && st.Duration == 0 {
				st.Duration = DefaultAnalysisStep
			}
		}
		if ad := c.Adaptive; ad != nil && ad.Enabled {
			if ad.MaxWeight == 0 {
				ad.MaxWeight = 100
			}
			if ad.MaxStepWeight == 0 {
				ad.MaxStepWeight = DefaultMaxStepWeight
			}
		}
	}
	if bg := s.Strategy.BlueGreen; bg != nil && bg.Monitor == 0 {
		bg.Monitor = DefaultMonitor
	}
	for _, hs := range [][]Hook{s.Hooks.Rollback, s.Hooks.Cleanup} {
		for i := range hs {
			if hs[i].Timeout == 0 {
				hs[i].Timeout = DefaultHookTimeout
			}
			if hs[i].Retries < 0 {
				hs[i].Retries = DefaultHookRetries
			}
		}
	}
	for i := range s.Webhooks {
		w := &s.Webhooks[i]
		if w.Timeout == 0 {
			w.Timeout = DefaultWebhookTimeout
		}
		if w.FailurePolicy == "" {
			w.FailurePolicy = "hold"
			if w.Type == WebhookPreRollout {
				w.FailurePolicy = "fail"
			}
		}
	}
	for i := range s.Notifications {
		if s.Notifications[i].Kind == "" {
			s.Notifications[i].Kind = "json"
		}
	}
}

// Validate reports every problem of a defaulted spec, or nil.
func (s *Spec) Validate() error {
	if p := s.validate(); len(p) > 0 {
		return &ValidationError{Problems: p}
	}
	return nil
}

type validator struct {
	s     *Spec
	probs []Problem
}

// line finds the line of path, or of its nearest recorded parent (a
// defaulted field has no line of its own).
func (v *validator) line(path string) int {
	for p := path; p != ""; {
		if l, ok := v.s.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return v.s.Line
}

func (v *validator) errf(path, format string, a ...any) {
	for p := path; p != ""; {
		if v.s.bad[p] {
			return // already reported while decoding
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	v.probs = append(v.probs, Problem{File: v.s.File, Line: v.line(path), Field: path, Msg: fmt.Sprintf(format, a...)})
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
var envRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (s *Spec) validate() []Problem {
	v := &validator{s: s}
	if s.APIVersion != APIVersion {
		if s.APIVersion == "" {
			v.errf("apiVersion", "missing; want %s", APIVersion)
		} else {
			v.errf("apiVersion", "%q is not %s", s.APIVersion, APIVersion)
		}
	}
	if s.Kind != Kind {
		if s.Kind == "" {
			v.errf("kind", "missing; want %s", Kind)
		} else {
			v.errf("kind", "%q is not %s", s.Kind, Kind)
		}
	}
	switch {
	case s.Name == "":
		v.errf("metadata.name", "missing")
	case !nameRE.MatchString(s.Name):
		v.errf("metadata.name", "%q must be lower-case letters, digits and '-', at most 63 characters", s.Name)
	}
	if s.Listen == "" && s.XDS == nil {
		v.errf("spec.listen", "missing: set listen (Guardian's proxy) or xds (the fleet), or both")
	}
	if s.Listen != "" {
		v.hostPort("spec.listen", s.Listen)
	}
	if s.Match.PathPrefix != "" && !strings.HasPrefix(s.Match.PathPrefix, "/") {
		v.errf("spec.match.pathPrefix", "%q must start with /", s.Match.PathPrefix)
	}
	v.backend("spec.stable", s.Stable)
	v.backend("spec.canary", s.Canary)
	if s.XDS != nil && s.XDS.Service == "" {
		v.errf("spec.xds.service", "missing")
	}
	v.strategy()
	v.analysis()
	v.triggers()
	if s.ProgressDeadline < 0 {
		v.errf("spec.progressDeadline", "must be positive")
	}
	v.hooks("spec.hooks.rollback", s.Hooks.Rollback)
	v.hooks("spec.hooks.cleanup", s.Hooks.Cleanup)
	types := []string{WebhookConfirmRollout, WebhookPreRollout, WebhookConfirmTrafficIncrease, WebhookConfirmPromotion, WebhookPostRollout, WebhookRollback}
	for i, w := range s.Webhooks {
		p := fmt.Sprintf("spec.webhooks[%d]", i)
		if !slices.Contains(types, w.Type) {
			v.errf(p+".type", "%q is not one of %s", w.Type, strings.Join(types, ", "))
		}
		v.httpURL(p+".url", w.URL)
		if w.FailurePolicy != "hold" && w.FailurePolicy != "fail" {
			v.errf(p+".failurePolicy", "%q is not hold or fail", w.FailurePolicy)
		}
	}
	for i, n := range s.Notifications {
		p := fmt.Sprintf("spec.notifications[%d]", i)
		v.httpURL(p+".url", n.URL)
		if n.Kind != "slack" && n.Kind != "json" {
			v.errf(p+".kind", "%q is not slack or json", n.Kind)
		}
		if n.SecretEnv != "" && !envRE.MatchString(n.SecretEnv) {
			v.errf(p+".secretEnv", "%q is not an environment variable name", n.SecretEnv)
		}
	}
	if b := s.BusinessMetrics; b != nil {
		v.httpURL("spec.businessMetrics.prometheus", b.Prometheus)
		seen := map[string]bool{}
		for i, m := range b.Metrics {
			p := fmt.Sprintf("spec.businessMetrics.metrics[%d]", i)
			if m.Name == "" {
				v.errf(p+".name", "missing")
			} else if seen[m.Name] {
				v.errf(p+".name", "%q is listed twice", m.Name)
			}
			seen[m.Name] = true
			if strings.TrimSpace(m.Query) == "" {
				v.errf(p+".query", "missing PromQL query")
			}
			if m.Condition.Raw == "" {
				v.errf(p+".condition", "missing")
			}
		}
	}
	return v.probs
}

func (v *validator) hostPort(path, hp string) {
	i := strings.LastIndex(hp, ":")
	if i < 0 {
		v.errf(path, "%q is not host:port", hp)
		return
	}
	port, err := strconv.Atoi(hp[i+1:])
	if err != nil || port < 0 || port > 65535 {
		v.errf(path, "%q has no valid port", hp)
	}
}

func (v *validator) httpURL(path, raw string) {
	if raw == "" {
		v.errf(path, "missing URL")
		return
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.errf(path, "%q is not an http(s) URL", raw)
	}
}

func (v *validator) backend(path string, b Backend) {
	switch {
	case b.URL == "" && len(b.Endpoints) == 0:
		v.errf(path, "missing: set url or endpoints")
	case b.URL != "" && len(b.Endpoints) > 0:
		v.errf(path, "set url or endpoints, not both")
	case b.URL != "":
		v.httpURL(path+".url", b.URL)
	default:
		for i, ep := range b.Endpoints {
			v.hostPort(fmt.Sprintf("%s.endpoints[%d]", path, i), ep)
		}
	}
}

func (v *validator) hooks(path string, hs []Hook) {
	for i, h := range hs {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case len(h.Exec) == 0 && h.Webhook == "":
			v.errf(p, "set exec or webhook")
		case len(h.Exec) > 0 && h.Webhook != "":
			v.errf(p, "set exec or webhook, not both")
		case h.Webhook != "":
			v.httpURL(p+".webhook", h.Webhook)
		case h.Exec[0] == "":
			v.errf(p+".exec[0]", "empty program name")
		}
		if h.Retries < 0 || h.Retries > 10 {
			v.errf(p+".retries", "%d is not between 0 and 10", h.Retries)
		}
	}
}

func (v *validator) percent(path string, x int) {
	if x < 0 || x > 100 {
		v.errf(path, "%d is not between 0 and 100", x)
	}
}

func (v *validator) matchRules(path string, rules []MatchRule) {
	if len(rules) == 0 {
		v.errf(path, "needs at least one rule")
	}
	for i, r := range rules {
		if r.Source != "" && r.Name == "" {
			v.errf(fmt.Sprintf("%s[%d].%s", path, i, r.Source), "empty name")
		}
	}
}

func (v *validator) strategy() {
	st := v.s.Strategy
	n := 0
	for _, set := range []bool{st.Canary != nil, st.BlueGreen != nil, st.FeatureFlag != nil} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		v.errf("spec.strategy", "missing: set one of canary, blueGreen, featureFlag")
	case n > 1:
		v.errf("spec.strategy", "set only one of canary, blueGreen, featureFlag")
	}
	if c := st.Canary; c != nil {
		v.canary(c)
	}
	if bg := st.BlueGreen; bg != nil {
		if bg.PreviewURL != "" {
			v.httpURL("spec.strategy.blueGreen.previewURL", bg.PreviewURL)
		}
		if bg.Validate.Analysis > 0 && bg.Validate.Analysis < v.s.Analysis.Interval {
			v.errf("spec.strategy.blueGreen.validate.analysis.duration", "%s is shorter than the analysis interval %s", bg.Validate.Analysis, v.s.Analysis.Interval)
		}
	}
	if ff := st.FeatureFlag; ff != nil {
		v.featureFlag(ff)
	}
}

func (v *validator) canary(c *CanaryStrategy) {
	base := "spec.strategy.canary"
	if len(c.Steps) == 0 {
		v.errf(base+".steps", "needs at least one step")
	}
	for i, st := range c.Steps {
		p := fmt.Sprintf("%s.steps[%d]", base, i)
		switch {
		case st.SetWeight != nil:
			v.percent(p+".setWeight", *st.SetWeight)
		case st.Pause != nil:
		case st.Analysis != nil:
			if st.Analysis.Duration < v.s.Analysis.Interval {
				v.errf(p+".analysis.duration", "%s is shorter than the analysis interval %s", st.Analysis.Duration, v.s.Analysis.Interval)
			}
			for j, m := range st.Analysis.Metrics {
				if !slices.ContainsFunc(v.s.Analysis.Metrics, func(ms MetricSpec) bool { return ms.Name == m }) {
					v.errf(fmt.Sprintf("%s.analysis.metrics[%d]", p, j), "%q is not in spec.analysis.metrics", m)
				}
			}
		case st.Smoke != nil:
			if st.Smoke.File == "" {
				v.errf(p+".smoke.file", "missing")
			}
		case st.SetHeaderRoute != nil:
			if len(st.SetHeaderRoute.Match) > 0 {
				v.matchRules(p+".setHeaderRoute.match", st.SetHeaderRoute.Match)
			}
		case st.SetMirror != nil:
			v.percent(p+".setMirror.percent", st.SetMirror.Percent)
		case st.Approval != nil:
			if st.Approval.Webhook != "" {
				v.httpURL(p+".approval.webhook", st.Approval.Webhook)
			}
		default:
			if !v.s.bad[p] {
				v.errf(p, "empty step: set one of setWeight, pause, analysis, smoke, setHeaderRoute, setMirror, approval")
			}
		}
	}
	if a := c.Adaptive; a != nil && a.Enabled {
		v.percent(base+".adaptive.maxWeight", a.MaxWeight)
		if a.MaxWeight < 1 {
			v.errf(base+".adaptive.maxWeight", "must be at least 1")
		}
		if a.MaxStepWeight < 1 || a.MaxStepWeight > 100 {
			v.errf(base+".adaptive.maxStepWeight", "%d is not between 1 and 100", a.MaxStepWeight)
		}
	}
}

func (v *validator) featureFlag(ff *FeatureFlagStrategy) {
	base := "spec.strategy.featureFlag"
	switch {
	case ff.UserKey.Header == "" && ff.UserKey.Cookie == "":
		v.errf(base+".userKey", "missing: set header or cookie, so a user stays on one version as the percentage grows")
	case ff.UserKey.Header != "" && ff.UserKey.Cookie != "":
		v.errf(base+".userKey", "set header or cookie, not both")
	}
	names := map[string]bool{}
	for i, c := range ff.Cohorts {
		p := fmt.Sprintf("%s.cohorts[%d]", base, i)
		if c.Name == "" {
			v.errf(p+".name", "missing")
		} else if names[c.Name] {
			v.errf(p+".name", "%q is defined twice", c.Name)
		}
		names[c.Name] = true
		v.matchRules(p+".match", c.Match)
	}
	if len(ff.Stages) == 0 {
		v.errf(base+".stages", "needs at least one stage")
	}
	last := -1
	for i, st := range ff.Stages {
		p := fmt.Sprintf("%s.stages[%d]", base, i)
		switch {
		case st.Cohort != "" && st.Percent != nil:
			v.errf(p, "set cohort or percent, not both")
		case st.Cohort != "":
			if !names[st.Cohort] {
				v.errf(p+".cohort", "%q is not a cohort defined in %s.cohorts", st.Cohort, base)
			}
		case st.Percent != nil:
			v.percent(p+".percent", *st.Percent)
			if *st.Percent < last {
				v.errf(p+".percent", "%d is below the previous stage's %d: a feature-flag rollout only grows, so users who got the feature keep it", *st.Percent, last)
			}
			last = *st.Percent
		default:
			if !v.s.bad[p] {
				v.errf(p, "set cohort or percent")
			}
		}
	}
}

func (v *validator) analysis() {
	a := v.s.Analysis
	if a.Interval < MinInterval {
		v.errf("spec.analysis.interval", "%s is below the minimum %s", a.Interval, MinInterval)
	}
	if !(a.Confidence > 0.5 && a.Confidence < 1) {
		v.errf("spec.analysis.confidence", "%v is not between 0.5 and 1 (exclusive)", a.Confidence)
	}
	if a.MinSamples < 0 {
		v.errf("spec.analysis.minSamples", "%d is negative", a.MinSamples)
	}
	seen := map[string]bool{}
	for i, m := range a.Metrics {
		p := fmt.Sprintf("spec.analysis.metrics[%d]", i)
		tests, ok := metricTests[m.Name]
		switch {
		case m.Name == "":
			v.errf(p+".name", "missing (one of %s)", strings.Join(AnalysisMetrics(), ", "))
		case !ok:
			v.errf(p+".name", "%q is not one of %s", m.Name, strings.Join(AnalysisMetrics(), ", "))
		case seen[m.Name]:
			v.errf(p+".name", "%q is listed twice", m.Name)
		}
		seen[m.Name] = true
		if ok && !slices.Contains(tests, m.Test) {
			v.errf(p+".test", "%q cannot judge %s; use one of %s", m.Test, m.Name, strings.Join(tests, ", "))
		}
		if m.MaxIncrease < 0 {
			v.errf(p+".maxIncrease", "must not be negative")
		}
		if ok && m.Name == "error_rate" {
			if m.increaseUnit == "ms" {
				v.errf(p+".maxIncrease", "error_rate takes a percentage, e.g. 2%%")
			} else if m.MaxIncrease >= 1 {
				v.errf(p+".maxIncrease", "%v%% is not below 100%%", m.MaxIncrease*100)
			}
			if m.MaxRatio != 0 {
				v.errf(p+".maxRatio", "error_rate is judged by its absolute increase: use maxIncrease, e.g. 2%%")
			}
		}
		if ok && m.Name != "error_rate" && m.MaxIncrease != 0 {
			v.errf(p+".maxIncrease", "%s is judged by its ratio to the baseline: use maxRatio, e.g. 1.5", m.Name)
		}
		if m.MaxRatio != 0 && m.MaxRatio < 1 {
			v.errf(p+".maxRatio", "%v is below 1 (a ratio of canary to baseline)", m.MaxRatio)
		}
	}
}

func (v *validator) triggers() {
	t := v.s.RollbackTriggers
	for i, s := range t.Sustained {
		p := fmt.Sprintf("spec.rollbackTriggers.sustained[%d]", i)
		if s.Condition.Raw == "" {
			v.errf(p+".condition", "missing")
		}
		if s.For <= 0 {
			v.errf(p+".for", "missing: how long the condition must hold (e.g. 5m)")
		}
	}
	for i, b := range t.Business {
		p := fmt.Sprintf("spec.rollbackTriggers.business[%d]", i)
		if strings.TrimSpace(b.Query) == "" {
			v.errf(p+".query", "missing PromQL query")
		}
		if b.Condition.Raw == "" {
			v.errf(p+".condition", "missing")
		}
		if v.s.BusinessMetrics == nil || v.s.BusinessMetrics.Prometheus == "" {
			v.errf(p, "needs spec.businessMetrics.prometheus to know where to query")
		}
	}
}

// crossCheck reports conflicts between rollouts loaded together.
func crossCheck(specs []Spec) []Problem {
	var probs []Problem
	names := map[string]Spec{}
	routes := map[string]Spec{}
	for _, s := range specs {
		if s.Name == "" {
			continue
		}
		if o, dup := names[s.Name]; dup {
			probs = append(probs, Problem{File: s.File, Line: s.lineOf("metadata.name"), Field: "metadata.name",
				Msg: fmt.Sprintf("%q is already used at %s:%d", s.Name, o.File, o.lineOf("metadata.name"))})
			continue
		}
		names[s.Name] = s
		if s.Listen == "" {
			continue
		}
		key := s.Listen + " " + s.Match.Host + " " + s.Match.PathPrefix
		if o, dup := routes[key]; dup {
			probs = append(probs, Problem{File: s.File, Line: s.lineOf("spec.match"), Field: "spec.match",
				Msg: fmt.Sprintf("rollout %q shares listener %s with %q (%s:%d) and has the same match; give one a distinct host or pathPrefix", s.Name, s.Listen, o.Name, o.File, o.lineOf("spec.listen"))})
			continue
		}
		routes[key] = s
	}
	return probs
}

func (s *Spec) lineOf(path string) int {
	v := &validator{s: s}
	return v.line(path)
}

package rollout

import (
	"time"
)

// APIVersion and Kind identify a Rollout document.
const (
	APIVersion = "guardian.dev/v1alpha1"
	Kind       = "Rollout"
)

// Spec is one validated Rollout document. Specs come from Parse, ParseFile or
// LoadFiles, which decode strictly, fill in defaults and validate, in that
// order; a Spec built in code must go through Defaults and Validate too.
//
// Blue-green rollouts reuse Stable (blue) and Canary (green): the YAML may
// spell them `blue` and `green`, and the traffic weights always use the
// version names "stable" and "canary", so the data plane needs no
// strategy-specific knowledge.
type Spec struct {
	// File and Line locate the document (its first line) for messages.
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`

	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`

	Listen           string           `json:"listen,omitempty"`
	Match            Match            `json:"match"`
	Stable           Backend          `json:"stable"`
	Canary           Backend          `json:"canary"`
	XDS              *XDS             `json:"xds,omitempty"`
	Strategy         Strategy         `json:"strategy"`
	Analysis         AnalysisSpec     `json:"analysis"`
	RollbackTriggers RollbackTriggers `json:"rollbackTriggers"`
	ProgressDeadline time.Duration    `json:"progressDeadline"`
	Hooks            Hooks            `json:"hooks"`
	Webhooks         []Webhook        `json:"webhooks,omitempty"`
	Notifications    []Notification   `json:"notifications,omitempty"`
	BusinessMetrics  *BusinessMetrics `json:"businessMetrics,omitempty"`

	// lines maps field paths ("spec.strategy.canary.steps[2].setWeight") to
	// the line that set them, so validation after decoding can still point
	// at the file.
	lines map[string]int
	// bad holds paths that failed to decode; validation stays quiet about
	// them so each mistake is reported once.
	bad map[string]bool
}

// Match selects the requests of a listener that belong to this rollout, so
// several rollouts can share one listener.
type Match struct {
	Host       string `json:"host,omitempty"`
	PathPrefix string `json:"pathPrefix,omitempty"`
}

// Backend is one version's upstream: a URL, or a list of host:port endpoints.
type Backend struct {
	URL       string   `json:"url,omitempty"`
	Endpoints []string `json:"endpoints,omitempty"`
}

// XDS publishes the rollout to the xDS fleet under Service.
type XDS struct {
	Service string `json:"service"`
}

// Strategy holds exactly one of its members.
type Strategy struct {
	Canary      *CanaryStrategy      `json:"canary,omitempty"`
	BlueGreen   *BlueGreenStrategy   `json:"blueGreen,omitempty"`
	FeatureFlag *FeatureFlagStrategy `json:"featureFlag,omitempty"`
}

// Name is "canary", "blueGreen" or "featureFlag".
func (s Strategy) Name() string {
	switch {
	case s.Canary != nil:
		return "canary"
	case s.BlueGreen != nil:
		return "blueGreen"
	case s.FeatureFlag != nil:
		return "featureFlag"
	}
	return ""
}

// CanaryStrategy walks Steps in order (Argo Rollouts style).
type CanaryStrategy struct {
	Steps    []Step    `json:"steps"`
	Adaptive *Adaptive `json:"adaptive,omitempty"`
}

// Step is one canary step; exactly one member is set.
type Step struct {
	Line           int           `json:"-"`
	SetWeight      *int          `json:"setWeight,omitempty"`
	Pause          *PauseStep    `json:"pause,omitempty"`
	Analysis       *AnalysisStep `json:"analysis,omitempty"`
	Smoke          *SmokeStep    `json:"smoke,omitempty"`
	SetHeaderRoute *HeaderRoute  `json:"setHeaderRoute,omitempty"`
	SetMirror      *MirrorStep   `json:"setMirror,omitempty"`
	Approval       *ApprovalStep `json:"approval,omitempty"`
}

// PauseStep holds the current weights for Duration; a zero Duration
// (`pause: {}`) waits for `promote` or `resume`.
type PauseStep struct {
	Duration time.Duration `json:"duration,omitempty"`
}

// AnalysisStep is a gate: after Duration the driver evaluates the window
// since the step began with the fixed-horizon tests, over Metrics (all of
// spec.analysis.metrics when empty).
type AnalysisStep struct {
	Duration time.Duration `json:"duration"`
	Metrics  []string      `json:"metrics,omitempty"`
}

// SmokeStep runs a smoke suite against the canary before going on.
type SmokeStep struct {
	File string `json:"file"`
}

// HeaderRoute sends requests matching every rule to the canary (A/B). An
// empty Match removes the route.
type HeaderRoute struct {
	Name  string      `json:"name,omitempty"`
	Match []MatchRule `json:"match"`
}

// MatchRule matches one request attribute. Source is "header", "cookie" or
// "query"; Op is "exact", "prefix" or "regex".
type MatchRule struct {
	Source string `json:"source"`
	Name   string `json:"name"`
	Op     string `json:"op"`
	Value  string `json:"value"`
}

// MirrorStep shadows Percent of the traffic to the canary; responses are
// discarded. Zero stops mirroring.
type MirrorStep struct {
	Percent int `json:"percent"`
}

// ApprovalStep waits for a manual `promote`/`resume`, or for Webhook to
// answer 2xx when set.
type ApprovalStep struct {
	Webhook string `json:"webhook,omitempty"`
}

// Adaptive turns on the seed's score-driven progression.
type Adaptive struct {
	Enabled       bool `json:"enabled"`
	MaxWeight     int  `json:"maxWeight"`
	MaxStepWeight int  `json:"maxStepWeight"`
}

// BlueGreenStrategy: prepare → validate → switch → monitor → cleanup.
type BlueGreenStrategy struct {
	AutoPromotion bool          `json:"autoPromotion"`
	PreviewURL    string        `json:"previewURL,omitempty"`
	Validate      BGValidate    `json:"validate"`
	Monitor       time.Duration `json:"monitor"`
}

// BGValidate are the gates green must pass before it gets user traffic.
type BGValidate struct {
	Smoke    string        `json:"smoke,omitempty"`
	Analysis time.Duration `json:"analysis,omitempty"`
}

// FeatureFlagStrategy releases the canary to cohorts, then to a growing,
// sticky percentage of users identified by UserKey.
type FeatureFlagStrategy struct {
	UserKey UserKey  `json:"userKey"`
	Cohorts []Cohort `json:"cohorts,omitempty"`
	Stages  []Stage  `json:"stages"`
}

// UserKey names the header or cookie that identifies a user.
type UserKey struct {
	Header string `json:"header,omitempty"`
	Cookie string `json:"cookie,omitempty"`
}

// Cohort is a named set of match rules (all must match).
type Cohort struct {
	Name  string      `json:"name"`
	Match []MatchRule `json:"match"`
}

// Stage enables a cohort or sets the user percentage, then optionally
// pauses (a zero-duration pause waits for promote).
type Stage struct {
	Line    int        `json:"-"`
	Cohort  string     `json:"cohort,omitempty"`
	Percent *int       `json:"percent,omitempty"`
	Pause   *PauseStep `json:"pause,omitempty"`
}

// AnalysisSpec configures continuous analysis.
type AnalysisSpec struct {
	Interval   time.Duration `json:"interval"`
	Confidence float64       `json:"confidence"`
	MinSamples int64         `json:"minSamples,omitempty"`
	Metrics    []MetricSpec  `json:"metrics"`
}

// MetricSpec is one judged metric. MaxIncrease is an absolute increase: a
// rate (0.02 for `2%`) for error_rate, milliseconds for latencies.
// MaxRatio bounds canary/baseline. Zero means unset.
type MetricSpec struct {
	Name        string  `json:"name"`
	Test        string  `json:"test"`
	MaxIncrease float64 `json:"maxIncrease,omitempty"`
	MaxRatio    float64 `json:"maxRatio,omitempty"`
	Critical    bool    `json:"critical,omitempty"`

	increaseUnit string // "%" or "ms" as written, checked against Name
}

// RollbackTriggers end a rollout without waiting for analysis.
type RollbackTriggers struct {
	Critical  []Condition        `json:"critical,omitempty"`
	Sustained []SustainedTrigger `json:"sustained,omitempty"`
	Business  []BusinessTrigger  `json:"business,omitempty"`
}

// SustainedTrigger fires when Condition holds continuously for For.
type SustainedTrigger struct {
	Condition Condition     `json:"condition"`
	For       time.Duration `json:"for"`
}

// BusinessTrigger is a PromQL query with a condition on its value.
type BusinessTrigger struct {
	Query     string            `json:"query"`
	Condition BusinessCondition `json:"condition"`
	For       time.Duration     `json:"for,omitempty"`
}

// BusinessMetrics are gates on Prometheus queries.
type BusinessMetrics struct {
	Prometheus string           `json:"prometheus"`
	Metrics    []BusinessMetric `json:"metrics"`
}

// BusinessMetric is one gate. A query may use {{version}}, replaced by
// "stable" or "canary", for comparison conditions such as `drop > 10%`.
type BusinessMetric struct {
	Name      string            `json:"name"`
	Query     string            `json:"query"`
	Condition BusinessCondition `json:"condition"`
}

// Hooks are the actions run at the end of a rollout.
type Hooks struct {
	Rollback []Hook `json:"rollback,omitempty"`
	Cleanup  []Hook `json:"cleanup,omitempty"`
}

// Hook runs Exec (argv, no shell) or POSTs to Webhook.
type Hook struct {
	Exec    []string      `json:"exec,omitempty"`
	Webhook string        `json:"webhook,omitempty"`
	Timeout time.Duration `json:"timeout"`
	Retries int           `json:"retries"`
}

// Webhook types, at the points Flagger users know.
const (
	WebhookConfirmRollout         = "confirm-rollout"
	WebhookPreRollout             = "pre-rollout"
	WebhookConfirmTrafficIncrease = "confirm-traffic-increase"
	WebhookConfirmPromotion       = "confirm-promotion"
	WebhookPostRollout            = "post-rollout"
	WebhookRollback               = "rollback"
)

// Webhook is called at a rollout point; gates advance on a 2xx answer.
type Webhook struct {
	Type          string        `json:"type"`
	URL           string        `json:"url"`
	Timeout       time.Duration `json:"timeout"`
	FailurePolicy string        `json:"failurePolicy"` // "hold" or "fail"
}

// Notification sends events to URL; SecretEnv names the environment variable
// holding the HMAC-SHA256 key (the secret never appears in the file).
type Notification struct {
	URL       string `json:"url"`
	Kind      string `json:"kind"` // "slack" or "json"
	SecretEnv string `json:"secretEnv,omitempty"`
}

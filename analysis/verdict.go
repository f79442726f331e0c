package analysis

// Outcome is a metric's verdict in one evaluation.
type Outcome string

const (
	// Pass: the evidence bounds the canary within the allowed effect.
	Pass Outcome = "Pass"
	// Fail: the evidence shows the canary beyond the allowed effect.
	Fail Outcome = "Fail"
	// Inconclusive: there is data, but not yet enough to separate the canary
	// from the allowed effect either way. The rollout waits.
	Inconclusive Outcome = "Inconclusive"
	// NoData: one side has no samples at all.
	NoData Outcome = "NoData"
)

// Verdict is one metric's decision with the evidence behind it, as shown in
// status, events and reports. Optional numbers are pointers so that JSON
// never has to carry NaN.
type Verdict struct {
	Metric    string   `json:"metric"`
	Test      string   `json:"test"`
	Outcome   Outcome  `json:"outcome"`
	Critical  bool     `json:"critical,omitempty"`
	NCanary   int64    `json:"n_canary"`
	NBaseline int64    `json:"n_baseline"`
	Canary    float64  `json:"canary"`   // the canary's value (rate 0..1, or milliseconds)
	Baseline  float64  `json:"baseline"` // the baseline's value, same unit
	Threshold string   `json:"threshold"`
	Statistic *float64 `json:"statistic,omitempty"`
	PValue    *float64 `json:"p_value,omitempty"`
	EValue    *float64 `json:"e_value,omitempty"`
	// CI bounds the effect in the unit the threshold is written in (a rate
	// difference, or a canary/baseline ratio).
	CI     *[2]float64 `json:"ci,omitempty"`
	Reason string      `json:"reason"`
}

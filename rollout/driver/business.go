package driver

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
	"github.com/deployment-guardian/guardian/rollout"
	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// VersionPlaceholder in a business query is replaced by the version being
// measured ("canary" or "stable"), so one query serves both sides of a
// comparison, e.g. sum(rate(orders_total{version="{{version}}"}[5m])).
const VersionPlaceholder = "{{version}}"

// Prometheus evaluates PromQL instant queries against a Prometheus server.
// The zero value is ready to use.
type Prometheus struct {
	// Client sends the HTTP requests; nil means http.DefaultClient's
	// transport.
	Client *http.Client
	// Timeout bounds one query (default 10 s).
	Timeout time.Duration
}

// Query returns the query's single value. ok is false when the query
// returned no sample (or NaN/±Inf, e.g. a ratio over no traffic): business
// gates treat that as Inconclusive, never as a pass.
func (p Prometheus) Query(ctx context.Context, url, query string) (float64, bool, error) {
	cfg := promapi.Config{Address: url}
	if p.Client != nil {
		cfg.Client = p.Client
	}
	c, err := promapi.NewClient(cfg)
	if err != nil {
		return 0, false, fmt.Errorf("prometheus %s: %w", url, err)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	val, _, _, err := promv1.NewAPI(c).Query(ctx, query, time.Now(), promv1.WithTimeout(timeout))
	if err != nil {
		return 0, false, fmt.Errorf("query %q: %w", query, err)
	}
	switch v := val.(type) {
	case model.Vector:
		switch len(v) {
		case 0:
			return 0, false, nil
		case 1:
			return finite(float64(v[0].Value))
		}
		return 0, false, fmt.Errorf("query %q returned %d series; it must return one (aggregate it, e.g. with sum)", query, len(v))
	case *model.Scalar:
		return finite(float64(v.Value))
	}
	return 0, false, fmt.Errorf("query %q returned a %s; want an instant vector or scalar", query, val.Type())
}

func finite(v float64) (float64, bool, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false, nil
	}
	return v, true, nil
}

// businessValues evaluates a query for the canary and, for comparisons,
// for stable. When there is no value to judge, missing says why (no sample
// for a version, or stable at 0: a relative change from nothing says
// nothing).
func (d *Driver) businessValues(ctx context.Context, url, query string, cond rollout.BusinessCondition) (canary, stable float64, missing string, err error) {
	if cond.Compare != "" && !strings.Contains(query, VersionPlaceholder) {
		return 0, 0, "", fmt.Errorf("query %q: a %s comparison needs %s in the query to tell canary from stable", query, cond.Compare, VersionPlaceholder)
	}
	q := func(version string) (float64, bool, error) {
		return d.cfg.Business.Query(ctx, url, strings.ReplaceAll(query, VersionPlaceholder, version))
	}
	canary, ok, err := q("canary")
	if err != nil || !ok {
		return 0, 0, "the canary's query returned no data", err
	}
	if cond.Compare == "" {
		return canary, 0, "", nil
	}
	if stable, ok, err = q("stable"); err != nil || !ok {
		return canary, 0, "stable's query returned no data", err
	}
	if stable == 0 {
		return canary, 0, fmt.Sprintf("stable's value is 0, so there is no %s to measure", cond.Compare), nil
	}
	return canary, stable, "", nil
}

// IsBusinessLimit reports whether a business condition names harm, so that
// a gate fails when it holds: a name ending in _drop, _increase or _impact
// (or just drop, increase, impact) with > or >=, as the seed writes its
// triggers (`conversion_rate_drop > 10%`, `revenue_impact > 10000/hour`).
// Any other condition (`>= 3%`, `conversion_rate_drop <= 10%`) is a
// requirement: a gate passes when it holds. Triggers always roll back when
// their condition holds.
func IsBusinessLimit(c rollout.BusinessCondition) bool {
	if c.Op != ">" && c.Op != ">=" {
		return false
	}
	for _, w := range []string{"drop", "increase", "impact"} {
		if c.Subject == w || strings.HasSuffix(c.Subject, "_"+w) {
			return true
		}
	}
	return false
}

// businessGate judges spec.businessMetrics: every metric must meet its
// requirement (or stay within its limit) for a Pass; a query without data
// makes the gate Inconclusive, and the engine waits, bounded by the
// progress deadline.
func (d *Driver) businessGate(ctx context.Context, g rollout.Gate) rollout.GateResult {
	bm := d.cfg.Spec.BusinessMetrics
	if bm == nil || d.cfg.Business == nil {
		return rollout.GateResult{ID: g.ID, Outcome: analysis.Inconclusive, Message: "no Prometheus client configured for business metrics"}
	}
	var verdicts []analysis.Verdict
	for _, m := range bm.Metrics {
		v := analysis.Verdict{Metric: m.Name, Test: "promql", Threshold: m.Condition.Raw}
		canary, stable, missing, err := d.businessValues(ctx, bm.Prometheus, m.Query, m.Condition)
		v.Canary, v.Baseline = canary, stable
		limit := IsBusinessLimit(m.Condition)
		switch {
		case err != nil:
			v.Outcome, v.Reason = analysis.Inconclusive, err.Error()
		case missing != "":
			v.Outcome, v.Reason = analysis.NoData, m.Name+": "+missing
		case m.Condition.Holds(canary, stable) != limit:
			v.Outcome = analysis.Pass
			v.Reason = fmt.Sprintf("%s: %s %s %s", m.Name, businessValue(m.Condition, canary, stable), map[bool]string{true: "does not breach", false: "meets"}[limit], m.Condition.Raw)
		default:
			v.Outcome = analysis.Fail
			v.Reason = fmt.Sprintf("%s: %s breaches %s", m.Name, businessValue(m.Condition, canary, stable), m.Condition.Raw)
		}
		verdicts = append(verdicts, v)
	}
	out := combine(verdicts)
	if out == analysis.NoData {
		out = analysis.Inconclusive
	}
	return rollout.GateResult{ID: g.ID, Outcome: out, Verdicts: verdicts, Message: summarize(verdicts)}
}

// businessValue describes a measured value in the condition's terms.
func businessValue(c rollout.BusinessCondition, canary, stable float64) string {
	if c.Compare == "" {
		if c.Unit == "%" {
			return fmt.Sprintf("canary %.4g%%", 100*canary)
		}
		return fmt.Sprintf("canary %.6g", canary)
	}
	change := (canary - stable) / math.Abs(stable)
	if c.Compare == "drop" {
		change = -change
	}
	return fmt.Sprintf("canary %.6g vs stable %.6g (%s %.2f%%)", canary, stable, c.Compare, 100*change)
}

// businessPoll is one round of business trigger values and when it was
// taken.
type businessPoll struct {
	at     time.Time
	values map[string]float64
}

// businessEvery is how often business triggers are queried: every analysis
// interval, but not more than once a second (Prometheus scrapes far less
// often than that).
func businessEvery(interval time.Duration) time.Duration { return max(interval, time.Second) }

// pollBusiness refreshes business trigger values in the background,
// starting at once; observe hands the latest ones to the engine.
func (d *Driver) pollBusiness(ctx context.Context, interval time.Duration) {
	triggers := d.cfg.Spec.RollbackTriggers.Business
	if len(triggers) == 0 || d.cfg.Business == nil || d.cfg.Spec.BusinessMetrics == nil {
		return
	}
	url := d.cfg.Spec.BusinessMetrics.Prometheus
	t := time.NewTicker(businessEvery(interval))
	defer t.Stop()
	for {
		vals := map[string]float64{}
		for i, tr := range triggers {
			canary, stable, missing, err := d.businessValues(ctx, url, tr.Query, tr.Condition)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				d.log.Warn("business trigger query", "query", tr.Query, "err", err)
				continue
			}
			if missing == "" {
				vals[rollout.BusinessKey(i)] = canary
				vals[rollout.BusinessKey(i)+":stable"] = stable
			}
		}
		d.business.Store(&businessPoll{at: d.now(), values: vals})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// addBusiness copies the latest business trigger values into an
// observation. Values older than a few polls (Prometheus hangs, the
// queries time out) are left out: a trigger's hold must not grow on a value
// nobody has seen again.
func (d *Driver) addBusiness(into map[string]float64, interval time.Duration) {
	p := d.business.Load()
	if p == nil {
		return
	}
	if d.now().Sub(p.at) > 3*businessEvery(interval) {
		return
	}
	for k, v := range p.values {
		into[k] = v
	}
}

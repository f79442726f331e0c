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
type Prometheus struct {
	// Client sends the HTTP requests; nil means http.DefaultClient's
	// transport.
	Client *http.Client
	// Timeout bounds one query (default 10 s).
	Timeout time.Duration
}

// Query returns the query's single value. ok is false when the query
// returned no sample: business gates treat that as Inconclusive, never as
// a pass.
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
	val, _, _, err := promv1.NewAPI(c).Query(ctx, query, time.Now())
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
// for stable.
func (d *Driver) businessValues(ctx context.Context, url, query string, cond rollout.BusinessCondition) (canary, stable float64, ok bool, err error) {
	q := func(version string) (float64, bool, error) {
		return d.cfg.Business.Query(ctx, url, strings.ReplaceAll(query, VersionPlaceholder, version))
	}
	if canary, ok, err = q("canary"); err != nil || !ok {
		return 0, 0, ok, err
	}
	if cond.Compare == "" {
		return canary, 0, true, nil
	}
	if !strings.Contains(query, VersionPlaceholder) {
		return 0, 0, false, fmt.Errorf("query %q: a %s comparison needs %s in the query to tell canary from stable", query, cond.Compare, VersionPlaceholder)
	}
	stable, ok, err = q("stable")
	return canary, stable, ok, err
}

// businessGate judges spec.businessMetrics: every metric's condition must
// hold for a Pass; a query without data makes the gate Inconclusive.
func (d *Driver) businessGate(ctx context.Context, g rollout.Gate) rollout.GateResult {
	bm := d.cfg.Spec.BusinessMetrics
	if bm == nil || d.cfg.Business == nil {
		return rollout.GateResult{ID: g.ID, Outcome: analysis.Inconclusive, Message: "no Prometheus client configured for business metrics"}
	}
	var verdicts []analysis.Verdict
	for _, m := range bm.Metrics {
		v := analysis.Verdict{Metric: m.Name, Test: "promql", Threshold: m.Condition.Raw}
		canary, stable, ok, err := d.businessValues(ctx, bm.Prometheus, m.Query, m.Condition)
		switch {
		case err != nil:
			v.Outcome, v.Reason = analysis.Inconclusive, err.Error()
		case !ok:
			v.Outcome, v.Reason = analysis.NoData, fmt.Sprintf("query %q returned no data", m.Query)
		case m.Condition.Holds(canary, stable):
			v.Outcome, v.Canary, v.Baseline = analysis.Pass, canary, stable
			v.Reason = fmt.Sprintf("%s = %g holds %s", m.Name, canary, m.Condition.Raw)
		default:
			v.Outcome, v.Canary, v.Baseline = analysis.Fail, canary, stable
			v.Reason = fmt.Sprintf("%s = %g (stable %g) breaches %s", m.Name, canary, stable, m.Condition.Raw)
		}
		verdicts = append(verdicts, v)
	}
	out := combine(verdicts)
	if out == analysis.NoData {
		out = analysis.Inconclusive
	}
	return rollout.GateResult{ID: g.ID, Outcome: out, Verdicts: verdicts, Message: summarize(verdicts)}
}

// pollBusiness refreshes business trigger values in the background; observe
// hands the latest ones to the engine.
func (d *Driver) pollBusiness(ctx context.Context, every time.Duration) {
	triggers := d.cfg.Spec.RollbackTriggers.Business
	if len(triggers) == 0 || d.cfg.Business == nil || d.cfg.Spec.BusinessMetrics == nil {
		return
	}
	url := d.cfg.Spec.BusinessMetrics.Prometheus
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		vals := map[string]float64{}
		for i, tr := range triggers {
			canary, stable, ok, err := d.businessValues(ctx, url, tr.Query, tr.Condition)
			if err != nil {
				d.log.Warn("business trigger query", "query", tr.Query, "err", err)
				continue
			}
			if ok {
				vals[rollout.BusinessKey(i)] = canary
				vals[rollout.BusinessKey(i)+":stable"] = stable
			}
		}
		d.business.Store(&vals)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

package analysis

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

// series is 30 per-minute values around base with a deterministic wiggle.
func series(base, spread float64) []float64 {
	out := make([]float64, 30)
	for i := range out {
		out[i] = base + spread*math.Sin(float64(i)*1.7)
	}
	return out
}

func TestJudgeClassifiesMetrics(t *testing.T) {
	base := series(100, 5)
	cases := []struct {
		name     string
		metric   JudgeMetric
		want     Classification
		critical bool
	}{
		{"identical", JudgeMetric{Canary: base, Baseline: base}, ClassPass, false},
		{"constant", JudgeMetric{Canary: []float64{3, 3}, Baseline: []float64{3, 3, 3}}, ClassPass, false},
		{"higher", JudgeMetric{Canary: series(130, 5), Baseline: base}, ClassHigh, false},
		{"lower", JudgeMetric{Canary: series(70, 5), Baseline: base}, ClassLow, false},
		{"higher but only decrease counts", JudgeMetric{Canary: series(130, 5), Baseline: base, Direction: Decrease}, ClassPass, false},
		{"lower but only increase counts", JudgeMetric{Canary: series(70, 5), Baseline: base, Direction: Increase}, ClassPass, false},
		{"noise", JudgeMetric{Canary: series(100.5, 5), Baseline: base}, ClassPass, false},
		// +30% is significant but under the allowed ×1.5 and, with 30
		// samples, the interval clears ×1.5.
		{"within allowed ratio", JudgeMetric{Canary: series(130, 5), Baseline: base,
			EffectSize: EffectSize{AllowedIncrease: 1.5}}, ClassPass, false},
		// +40% against an allowed ×1.45 with wide spread: not High (the
		// effect is under 1.45) but the interval reaches past it.
		{"cannot separate from allowed ratio", JudgeMetric{Canary: series(140, 60), Baseline: series(100, 60),
			EffectSize: EffectSize{AllowedIncrease: 1.45}}, ClassInconclusive, false},
		{"critical high", JudgeMetric{Canary: series(130, 5), Baseline: base, Critical: true}, ClassHigh, true},
		{"critical high under critical limit", JudgeMetric{Canary: series(130, 5), Baseline: base, Critical: true,
			EffectSize: EffectSize{CriticalIncrease: 2}}, ClassHigh, false},
		{"cles high", JudgeMetric{Canary: series(130, 5), Baseline: base, EffectSize: EffectSize{Measure: CLES, AllowedIncrease: 0.9}}, ClassHigh, false},
		{"cles under allowed", JudgeMetric{Canary: series(101.5, 5), Baseline: base, EffectSize: EffectSize{Measure: CLES, AllowedIncrease: 0.9}}, ClassPass, false},
		{"no data", JudgeMetric{Canary: nil, Baseline: base}, ClassNoData, false},
		{"NaN only", JudgeMetric{Canary: []float64{math.NaN()}, Baseline: base}, ClassNoData, false},
		{"must have data", JudgeMetric{Canary: nil, Baseline: base, MustHaveData: true}, ClassNodataFailMetric, false},
		{"critical without data", JudgeMetric{Canary: nil, Baseline: base, Critical: true}, ClassNodataFailMetric, true},
		{"zero baseline mean skips effect", JudgeMetric{Canary: series(30, 1), Baseline: []float64{-2, -1, 0, 1, 2, -2, -1, 0, 1, 2}}, ClassHigh, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.metric.Name = "m"
			res, err := Judge([]JudgeMetric{c.metric}, JudgeConfig{})
			if err != nil {
				t.Fatal(err)
			}
			got := res.Metrics[0]
			if got.Classification != c.want || got.CriticalFailure != c.critical {
				t.Errorf("got %s (critical failure %v), want %s (%v): %s", got.Classification, got.CriticalFailure, c.want, c.critical, got.Reason)
			}
			if got.Reason == "" {
				t.Error("no reason")
			}
		})
	}
}

func TestJudgeScores(t *testing.T) {
	base := series(100, 5)
	pass := func(name, group string) JudgeMetric {
		return JudgeMetric{Name: name, Group: group, Canary: base, Baseline: base}
	}
	high := func(name, group string) JudgeMetric {
		return JudgeMetric{Name: name, Group: group, Canary: series(130, 5), Baseline: base}
	}
	noData := func(name, group string) JudgeMetric {
		return JudgeMetric{Name: name, Group: group, Baseline: base}
	}
	cases := []struct {
		name    string
		metrics []JudgeMetric
		cfg     JudgeConfig
		score   float64
		verdict string
	}{
		{"all pass", []JudgeMetric{pass("a", ""), pass("b", "")}, JudgeConfig{}, 100, JudgePass},
		// 2 of 3 pass: 66.666… rounds to 66.67.
		{"rounding", []JudgeMetric{pass("a", ""), pass("b", ""), high("c", "")}, JudgeConfig{}, 66.67, JudgeFail},
		{"marginal", []JudgeMetric{pass("a", ""), pass("b", ""), pass("c", ""), high("d", "")},
			JudgeConfig{PassScore: 90, MarginalScore: 70}, 75, JudgeMarginal},
		// Weighted group "lat" (60) scores 50; "err" and "sat" share 40: 100 and 0.
		{"weights", []JudgeMetric{pass("a", "lat"), high("b", "lat"), pass("c", "err"), high("d", "sat")},
			JudgeConfig{GroupWeights: map[string]float64{"lat": 60}}, 50, JudgeFail},
		// Plain NoData is left out of the group score.
		{"no data ignored", []JudgeMetric{pass("a", ""), pass("b", ""), noData("c", "")}, JudgeConfig{}, 100, JudgePass},
		{"half no data", []JudgeMetric{pass("a", ""), noData("b", "")}, JudgeConfig{}, 0, JudgeFail},
		{"muted high", []JudgeMetric{pass("a", ""), func() JudgeMetric { m := high("b", ""); m.Muted = true; return m }()}, JudgeConfig{}, 100, JudgePass},
		{"critical", []JudgeMetric{pass("a", ""), pass("b", ""), pass("c", ""), func() JudgeMetric { m := high("d", ""); m.Critical = true; return m }()},
			JudgeConfig{PassScore: 50, MarginalScore: 10}, 0, JudgeFail},
		{"inconclusive", []JudgeMetric{pass("a", ""), {Name: "b", Canary: series(140, 60), Baseline: series(100, 60),
			EffectSize: EffectSize{AllowedIncrease: 1.45}}}, JudgeConfig{}, 100, JudgeInconclusive},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := Judge(c.metrics, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Score != c.score || res.Verdict != c.verdict {
				t.Errorf("score %v verdict %s, want %v %s (%s)", res.Score, res.Verdict, c.score, c.verdict, res.Reason)
			}
			if _, err := json.Marshal(res); err != nil {
				t.Errorf("result does not encode: %v", err)
			}
		})
	}
}

func TestJudgeGroupWeights(t *testing.T) {
	base := series(100, 5)
	res, err := Judge([]JudgeMetric{
		{Name: "a", Group: "lat", Canary: base, Baseline: base},
		{Name: "b", Group: "lat", Canary: series(130, 5), Baseline: base},
		{Name: "c", Group: "err", Canary: base, Baseline: base},
		{Name: "d", Group: "sat", Canary: series(130, 5), Baseline: base},
	}, JudgeConfig{GroupWeights: map[string]float64{"lat": 60}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]float64{"lat": {60, 50}, "err": {20, 100}, "sat": {20, 0}}
	for _, g := range res.Groups {
		if w := want[g.Name]; g.Weight != w[0] || g.Score != w[1] {
			t.Errorf("group %s: weight %v score %v, want %v", g.Name, g.Weight, g.Score, w)
		}
	}
}

func TestJudgeRejectsBadConfig(t *testing.T) {
	ok := JudgeMetric{Name: "m", Canary: []float64{1}, Baseline: []float64{1}}
	with := func(f func(*JudgeMetric)) []JudgeMetric { m := ok; f(&m); return []JudgeMetric{m} }
	cases := []struct {
		name    string
		metrics []JudgeMetric
		cfg     JudgeConfig
		want    string
	}{
		{"thresholds", []JudgeMetric{ok}, JudgeConfig{PassScore: 50, MarginalScore: 60}, "thresholds"},
		{"confidence", []JudgeMetric{ok}, JudgeConfig{Confidence: 2}, "confidence"},
		{"weights", []JudgeMetric{ok}, JudgeConfig{GroupWeights: map[string]float64{"a": 70, "b": 40}}, "more than 100"},
		{"no metrics", nil, JudgeConfig{}, "no metrics"},
		{"direction", with(func(m *JudgeMetric) { m.Direction = "up" }), JudgeConfig{}, "direction"},
		{"measure", with(func(m *JudgeMetric) { m.EffectSize.Measure = "median" }), JudgeConfig{}, "measure"},
		{"cles above 1", with(func(m *JudgeMetric) { m.EffectSize = EffectSize{Measure: CLES, AllowedIncrease: 1.5} }), JudgeConfig{}, "cles"},
		{"negative effect", with(func(m *JudgeMetric) { m.EffectSize.AllowedIncrease = -1 }), JudgeConfig{}, "positive"},
		{"infinite sample", with(func(m *JudgeMetric) { m.Canary = []float64{math.Inf(1)} }), JudgeConfig{}, "infinite"},
		{"nan strategy", with(func(m *JudgeMetric) { m.NaNStrategy = "zero" }), JudgeConfig{}, "nanStrategy"},
		{"duplicate", []JudgeMetric{ok, ok}, JudgeConfig{}, "twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Judge(c.metrics, c.cfg)
			if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want ErrInput mentioning %q", err, c.want)
			}
		})
	}
}

func TestJudgeNaNStrategy(t *testing.T) {
	base := series(100, 5)
	canary := append(series(100, 5), math.NaN(), math.NaN())
	res, err := Judge([]JudgeMetric{
		{Name: "removed", Canary: canary, Baseline: base},
		{Name: "replaced", Canary: canary, Baseline: base, NaNStrategy: "replace"},
	}, JudgeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if n := res.Metrics[0].NCanary; n != 30 {
		t.Errorf("remove: n_canary %d, want 30", n)
	}
	if n := res.Metrics[1].NCanary; n != 32 {
		t.Errorf("replace: n_canary %d, want 32", n)
	}
}

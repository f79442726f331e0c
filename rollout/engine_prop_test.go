package rollout

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/analysis"
)

const propSpec = validHead + `  progressDeadline: 20m
  strategy:
    canary:
      steps:
        - smoke: {file: smoke.yaml}
        - setWeight: 5
        - pause: {duration: 10m}
        - setWeight: 20
        - analysis: {duration: 5m}
        - pause: {}
        - setWeight: 50
        - approval: {}
        - pause: {duration: 10m}
        - setWeight: 100
  webhooks:
    - {type: confirm-traffic-increase, url: http://127.0.0.1:7000/more}
  rollbackTriggers:
    sustained:
      - {condition: error_rate > 2%, for: 5m}
`

// TestEngineInvariants drives the engine with random observations and
// commands and checks, at every Step, the properties the driver relies on:
// Step is pure and deterministic (also after a JSON round trip), weight
// increases come after Persist and decreases before it, the returned
// weights are the last ones applied and sum to 100, any traffic change is
// persisted, and an ended rollout stays ended.
func TestEngineInvariants(t *testing.T) {
	specs, err := Parse("prop.yaml", []byte(propSpec))
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(specs[0])
	if err != nil {
		t.Fatal(err)
	}
	metrics := []string{"error_rate", "latency_p50", "latency_p99"}
	outcomes := []analysis.Outcome{analysis.Pass, analysis.Pass, analysis.Pass, analysis.Pass, analysis.Inconclusive, analysis.NoData}
	phases := map[Phase]int{}
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 7))
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		s, acts := e.Init(now)
		checkBatch(t, State{Weights: split(0)}, s, acts)
		var pending []string
		for range 200 {
			if s.Phase.Done() {
				break
			}
			now = now.Add(time.Duration(rng.IntN(180)) * time.Second)
			var obs Observation
			for _, m := range metrics {
				o := outcomes[rng.IntN(len(outcomes))]
				if rng.IntN(400) == 0 {
					o = analysis.Fail
				}
				obs.Verdicts = append(obs.Verdicts, analysis.Verdict{Metric: m, Outcome: o})
			}
			obs.Values = map[string]float64{"error_rate": rng.Float64() * 0.025}
			for _, id := range pending {
				if rng.IntN(3) == 0 {
					o := analysis.Pass
					if rng.IntN(10) == 0 {
						o = analysis.Inconclusive
					}
					obs.GateResults = append(obs.GateResults, GateResult{ID: id, Outcome: o})
				}
			}
			if rng.IntN(25) == 0 {
				kinds := []CommandKind{CmdPromote, CmdPause, CmdResume, CmdSetWeight, CmdJump, CmdAbort}
				c := Command{Kind: kinds[rng.IntN(len(kinds))], Weight: rng.IntN(101), Step: rng.IntN(10), Full: rng.IntN(4) == 0}
				if c.Kind == CmdAbort && rng.IntN(3) > 0 {
					c.Kind = CmdPause
				}
				obs.Command = &c
			}

			before, _ := json.Marshal(s)
			var copied State
			if err := json.Unmarshal(before, &copied); err != nil {
				t.Fatal(err)
			}
			next, acts := e.Step(s, obs, now)
			after, _ := json.Marshal(s)
			if string(before) != string(after) {
				t.Fatalf("seed %d: Step changed its input state", seed)
			}
			next2, acts2 := e.Step(copied, obs, now)
			if jsonText(t, next) != jsonText(t, next2) || jsonText(t, acts) != jsonText(t, acts2) {
				t.Fatalf("seed %d: Step differs after a JSON round trip of the state", seed)
			}
			checkBatch(t, s, next, acts)
			if s.Phase.Done() && next.Phase != s.Phase {
				t.Fatalf("seed %d: ended rollout moved from %s to %s", seed, s.Phase, next.Phase)
			}
			for _, a := range acts {
				if a.Kind == ActRunGate {
					pending = append(pending, a.Gate.ID)
				}
			}
			s = next
		}
		phases[s.Phase]++
	}
	t.Logf("final phases over 30 runs: %v", phases)
	if phases[Promoted] == 0 || phases[RolledBack]+phases[Aborted] == 0 {
		t.Errorf("the random runs did not reach both outcomes: %v", phases)
	}
}

func jsonText(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func checkBatch(t *testing.T, prev, next State, acts []Action) {
	t.Helper()
	switch next.Phase {
	case Progressing, Paused, Promoted, RolledBack, Aborted:
	default:
		t.Fatalf("phase %q is not one of the five", next.Phase)
	}
	persistAt := -1
	for i, a := range acts {
		if a.Kind == ActPersist {
			persistAt = i
		}
	}
	cur := prev.Weights["canary"]
	var last Weights
	for i, a := range acts {
		if a.Kind != ActSetWeights {
			continue
		}
		if a.Weights["stable"]+a.Weights["canary"] != 100 {
			t.Fatalf("weights %v do not sum to 100", a.Weights)
		}
		if a.Weights["canary"] != prev.Weights["canary"] || !reflect.DeepEqual(a.Weights, prev.Weights) {
			if persistAt < 0 {
				t.Fatalf("traffic change %v without Persist: %+v", a.Weights, acts)
			}
		}
		if a.Weights["canary"] > cur && i < persistAt {
			t.Fatalf("weight raised %d → %d before Persist", cur, a.Weights["canary"])
		}
		if a.Weights["canary"] < cur && i > persistAt && next.Phase.Done() {
			t.Fatalf("rollback weight %d → %d after Persist", cur, a.Weights["canary"])
		}
		cur = a.Weights["canary"]
		last = a.Weights
	}
	if last != nil && !reflect.DeepEqual(last, next.Weights) {
		t.Fatalf("state weights %v, last applied %v", next.Weights, last)
	}
	if last == nil && !reflect.DeepEqual(prev.Weights, next.Weights) {
		t.Fatalf("weights changed %v → %v without SetWeights", prev.Weights, next.Weights)
	}
}

func TestCompatible(t *testing.T) {
	specs, err := Parse("p.yaml", []byte(propSpec))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := NewEngine(specs[0])
	s, _ := e.Init(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if err := e.Compatible(s); err != nil {
		t.Fatalf("own state: %v", err)
	}
	shorter := specs[0]
	shorter.Strategy.Canary = &CanaryStrategy{Steps: shorter.Strategy.Canary.Steps[:3]}
	e2, err := NewEngine(shorter)
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Compatible(s); err == nil {
		t.Error("a state from a longer plan was accepted by a shorter one")
	}
}

// BenchmarkStep measures one engine Step during a timed pause with three
// verdicts, the common case of every analysis interval.
func BenchmarkStep(b *testing.B) {
	specs, err := Parse("b.yaml", []byte(seedSpec))
	if err != nil {
		b.Fatal(err)
	}
	e, _ := NewEngine(specs[0])
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := e.Init(now)
	obs := Observation{Verdicts: []analysis.Verdict{
		{Metric: "error_rate", Outcome: analysis.Pass},
		{Metric: "latency_p50", Outcome: analysis.Pass},
		{Metric: "latency_p99", Outcome: analysis.Inconclusive},
	}, Values: map[string]float64{"error_rate": 0.001}}
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		s2, _ := e.Step(s, obs, now)
		_ = s2
	}
}

package bench

import (
	"math"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
)

// ratePolicy rolls back when a window shows the canary failing more than half
// its requests: a test double with arithmetic simple enough to predict.
type ratePolicy struct{ ticks int }

func (p *ratePolicy) Name() string            { return "rate" }
func (p *ratePolicy) Interval() time.Duration { return time.Second }
func (p *ratePolicy) Start(time.Time) (rollout.Weights, error) {
	return rollout.Weights{"stable": 80, "canary": 20}, nil
}
func (p *ratePolicy) Observe(string, Request, time.Time) (rollout.Weights, bool) { return nil, false }
func (p *ratePolicy) Tick(total, window rollout.Snapshot, now time.Time) (rollout.Weights, Phase, error) {
	p.ticks++
	c := window.Versions["canary"]
	if c.Requests > 0 && float64(c.Errors)/float64(c.Requests) > 0.5 {
		return rollout.Weights{"stable": 100, "canary": 0}, RolledBack, nil
	}
	if p.ticks == 100 {
		return rollout.Weights{"stable": 0, "canary": 100}, Promoted, nil
	}
	return nil, Running, nil
}

func TestReplayerMeasuresDetection(t *testing.T) {
	sc := Scenario{Name: "step", Duration: 60 * time.Second, Rate: 1000, MedianLatency: 5 * time.Millisecond, Seed: 1}
	fault := Fault{Kind: FaultErrorRate, Prob: 1, At: 10 * time.Second}
	rp := Replayer{Fault: fault, FaultKnown: true, Seed: 9}
	stream := func(fn func(Request) error) error { return sc.Generate(time.Unix(0, 0), fn) }
	outs, err := rp.Run(stream, []Policy{&ratePolicy{}})
	if err != nil {
		t.Fatal(err)
	}
	o := outs[0]
	if !o.RolledBack || o.DetectionDelay == nil {
		t.Fatalf("outcome %+v: want a detected rollback", o)
	}
	// The fault starts at 10 s; the first full bad window ends at 11 s.
	if *o.DetectionDelay < 0.5 || *o.DetectionDelay > 1.01 {
		t.Errorf("detection delay %.3fs, want the end of the first faulty interval (≤1s)", *o.DetectionDelay)
	}
	// Every canary request after the onset is bad: about 20% of 1000 req/s.
	if want := 200 * *o.DetectionDelay; math.Abs(float64(o.BadRequests)-want) > 4*math.Sqrt(want)+5 {
		t.Errorf("bad requests %d, want about %.0f", o.BadRequests, want)
	}
	if o.BadRequests != o.DetectionRequests {
		t.Errorf("bad %d != detection requests %d with a 100%% fault", o.BadRequests, o.DetectionRequests)
	}
}

func TestReplayerHealthyPromotes(t *testing.T) {
	sc := Scenario{Name: "aa", Duration: 200 * time.Second, Rate: 200, MedianLatency: 5 * time.Millisecond, ErrorRate: 0.01, Seed: 2}
	stream := func(fn func(Request) error) error { return sc.Generate(time.Unix(0, 0), fn) }
	outs, err := Replayer{Seed: 3}.Run(stream, []Policy{&ratePolicy{}})
	if err != nil {
		t.Fatal(err)
	}
	if o := outs[0]; !o.Promoted || o.RolledBack || o.Duration < 99 || o.Duration > 101 {
		t.Fatalf("outcome %+v: want promotion after 100 ticks", o)
	}
	if outs[0].BadRequests == 0 {
		t.Error("with no known fault, failed canary requests should count as bad")
	}
}

func TestPickSplitsByWeight(t *testing.T) {
	w := rollout.Weights{"stable": 90, "canary": 10}
	n := 0
	for i := uint64(1); i <= 100000; i++ {
		u, _ := draws(42, i)
		if pick(w, u) == "canary" {
			n++
		}
	}
	if n < 9700 || n > 10300 {
		t.Errorf("canary got %d of 100000 at 10%%", n)
	}
}

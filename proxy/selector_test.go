package proxy

import (
	"fmt"
	"slices"
	"testing"

	"github.com/deployment-guardian/guardian/rollout"
)

func TestWheelIsExactAndSpread(t *testing.T) {
	versions := []string{"stable", "canary"}
	for _, w := range []int{0, 1, 5, 10, 33, 50, 99, 100} {
		t.Run(fmt.Sprint(w), func(t *testing.T) {
			s := newSplit(versions, rollout.Weights{"stable": 100 - w, "canary": w})
			n := 0
			gap, maxGap := 0, 0
			for range 1000 {
				if s.keyless() == 1 {
					n++
					gap = 0
				} else if gap++; gap > maxGap {
					maxGap = gap
				}
			}
			if n != 10*w {
				t.Fatalf("canary got %d of 1000, want %d", n, 10*w)
			}
			// Smooth interleaving: a version at w% never waits much more
			// than 100/w slots.
			if w > 0 && w < 100 && maxGap > 100/w+1 {
				t.Errorf("longest run without canary %d, want ≤ %d", maxGap, 100/w+1)
			}
		})
	}
	t.Run("sequence", func(t *testing.T) {
		s := newSplit([]string{"a", "b", "c"}, rollout.Weights{"a": 50, "b": 30, "c": 20})
		var got []int
		for range 10 {
			got = append(got, s.keyless())
		}
		want := []int{0, 1, 2, 0, 0, 1, 0, 2, 1, 0} // smooth WRR by hand; ties go to the first listed
		if !slices.Equal(got, want) {
			t.Errorf("first 10 picks %v, want %v", got, want)
		}
	})
}

func TestStickyIsMonotoneForEveryPoint(t *testing.T) {
	versions := []string{"stable", "canary"}
	steps := []int{0, 1, 5, 25, 50, 100}
	prev := make([]int, 2000)
	for i, w := range steps {
		s := newSplit(versions, rollout.Weights{"stable": 100 - w, "canary": w})
		in := 0
		for u := range prev {
			v := s.sticky(fmt.Appendf(nil, "user-%d", u))
			if i > 0 && prev[u] == 1 && v != 1 {
				t.Fatalf("weight %d: user-%d left the canary", w, u)
			}
			prev[u] = v
			in += v
		}
		if got := float64(in) / float64(len(prev)) * 100; got < float64(w)-3 || got > float64(w)+3 {
			t.Errorf("weight %d: %.1f%% of keys in canary, want %d±3", w, got, w)
		}
	}
	t.Run("three versions keep cumulative ranges", func(t *testing.T) {
		vs := []string{"stable", "b", "c"}
		// c owns the lowest points, then b: growing c shrinks b's share
		// from below, never moving a c user.
		s1 := newSplit(vs, rollout.Weights{"stable": 80, "b": 10, "c": 10})
		s2 := newSplit(vs, rollout.Weights{"stable": 60, "b": 10, "c": 30})
		for u := range 2000 {
			k := fmt.Appendf(nil, "k%d", u)
			if s1.sticky(k) == 2 && s2.sticky(k) != 2 {
				t.Fatalf("key %s left c as c grew", k)
			}
		}
	})
	t.Run("zero-weight baseline", func(t *testing.T) {
		s := newSplit(versions, rollout.Weights{"stable": 0, "canary": 100})
		for u := range 200 {
			if v := s.sticky(fmt.Appendf(nil, "u%d", u)); v != 1 {
				t.Fatalf("key u%d went to version %d with stable at 0", u, v)
			}
		}
	})
}

func TestMirrorTakesExactPercent(t *testing.T) {
	for _, pct := range []uint64{1, 10, 37, 100} {
		m := &mirrorPolicy{percent: pct}
		n := 0
		for range 1000 {
			if m.take() {
				n++
			}
		}
		if n != int(10*pct) {
			t.Errorf("mirror %d%%: took %d of 1000, want %d", pct, n, 10*pct)
		}
	}
	var nilPolicy *mirrorPolicy
	if nilPolicy.take() {
		t.Error("nil mirror policy took a request")
	}
}

func TestSetWeightsRejectsBadSplits(t *testing.T) {
	p, err := New(twoVersions("127.0.0.1:1", "127.0.0.1:2", 10), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		w    rollout.Weights
	}{
		{"sum below 100", rollout.Weights{"stable": 50, "canary": 40}},
		{"unknown version", rollout.Weights{"stable": 90, "blue": 10}},
		{"negative", rollout.Weights{"stable": 110, "canary": -10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := p.SetWeights("app", tc.w); err == nil {
				t.Fatalf("SetWeights(%v) = nil, want an error", tc.w)
			}
			if w, _ := p.Weights("app"); w["canary"] != 10 {
				t.Errorf("weights changed to %v by a refused call", w)
			}
		})
	}
	if err := p.SetWeights("nope", rollout.Weights{"stable": 100}); err == nil {
		t.Error("SetWeights on an unknown route succeeded")
	}
	if err := p.SetWeights("app", rollout.Weights{"canary": 100}); err != nil {
		t.Errorf("SetWeights naming one version at 100: %v", err)
	}
	if w, _ := p.Weights("app"); w["stable"] != 0 || w["canary"] != 100 {
		t.Errorf("Weights = %v, want stable 0 canary 100", w)
	}
}

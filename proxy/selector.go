package proxy

import (
	"sync/atomic"

	"github.com/deployment-guardian/guardian/rollout"
)

// stickyPoints is the resolution of sticky placement: a user's key hashes to
// a point in [0, stickyPoints), and a version at w percent owns w·100 points.
const stickyPoints = 10000

// split is one immutable traffic split. The request path loads it through
// an atomic pointer, so SetWeights never blocks a request and a request
// never sees half of a change.
type split struct {
	weights []int // percent per version index, sums to 100
	// wheel holds 100 version indexes interleaved by smooth weighted
	// round-robin, so every run of 100 keyless requests follows the weights
	// exactly and a 10% version gets every tenth request, not ten in a row.
	wheel [100]uint8
	// bounds[i] is the exclusive upper sticky point of order[i].
	order  []uint8
	bounds []uint32
	next   atomic.Uint64
}

// newSplit builds a split for weights (already checked) over versions.
func newSplit(versions []string, w rollout.Weights) *split {
	s := &split{weights: make([]int, len(versions))}
	for i, name := range versions {
		s.weights[i] = w[name]
	}
	// Smooth weighted round-robin (nginx's): each slot, every version gains
	// its weight, the largest current total wins and pays back 100.
	cur := make([]int, len(versions))
	for slot := range s.wheel {
		best := -1
		for i, wt := range s.weights {
			if wt == 0 {
				continue
			}
			cur[i] += wt
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= 100
		s.wheel[slot] = uint8(best)
	}
	// Sticky order: the last-listed versions take the low points and the
	// baseline (index 0) the remainder, so raising a canary's weight only
	// moves the boundary up and no user leaves the canary.
	var acc uint32
	for i := len(versions) - 1; i >= 1; i-- {
		acc += uint32(s.weights[i]) * (stickyPoints / 100)
		s.order = append(s.order, uint8(i))
		s.bounds = append(s.bounds, acc)
	}
	s.order = append(s.order, 0)
	s.bounds = append(s.bounds, stickyPoints)
	return s
}

// keyless returns the next version by the wheel.
func (s *split) keyless() int {
	n := s.next.Add(1) - 1
	return int(s.wheel[n%100])
}

// sticky returns the version owning the point of key.
func (s *split) sticky(key []byte) int {
	p := stickyPoint(key)
	for i, b := range s.bounds {
		if p < b && s.weights[s.order[i]] > 0 {
			return int(s.order[i])
		}
		if p < b {
			break
		}
	}
	// The owning range is empty only when the baseline's weight is 0 and the
	// point lies in its remainder; fall back to the wheel, which only holds
	// versions with weight.
	return s.keyless()
}

// stickyPoint hashes key to [0, stickyPoints): FNV-1a, then a 64-bit
// finaliser so that similar keys (user-1, user-2) spread evenly.
func stickyPoint(key []byte) uint32 {
	h := uint64(14695981039346656037)
	for _, c := range key {
		h ^= uint64(c)
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint32(h % stickyPoints)
}

// weightsOf returns the split as rollout.Weights.
func (s *split) weightsOf(versions []string) rollout.Weights {
	w := make(rollout.Weights, len(versions))
	for i, name := range versions {
		w[name] = s.weights[i]
	}
	return w
}

// cohortKind says where a cohort rule looks.
type cohortKind uint8

const (
	cohortHeader cohortKind = iota
	cohortCookie
	cohortQuery
)

// cohortRule is a compiled Cohort.
type cohortRule struct {
	kind    cohortKind
	name    string
	nameB   []byte
	value   []byte
	anyVal  bool
	version int
}

func (c *cohortRule) matches(v []byte, present bool) bool {
	if !present {
		return false
	}
	return c.anyVal || string(v) == string(c.value)
}

// mirrorPolicy decides which requests are copied to the mirror version.
type mirrorPolicy struct {
	version int
	percent uint64
	n       atomic.Uint64
}

// take reports whether this request is mirrored: exactly percent of every
// 100 requests, evenly spaced.
func (m *mirrorPolicy) take() bool {
	if m == nil || m.percent == 0 {
		return false
	}
	n := m.n.Add(1)
	return n*m.percent/100 != (n-1)*m.percent/100
}

package analysis

import (
	"fmt"
	"math"
	"slices"
	"sync"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// sample is a multiset: values with their multiplicities. Raw samples and
// histograms both reduce to it, so every statistic has a single
// implementation whose cost is linear in the number of distinct values rather
// than in the number of observations. Rank statistics need v distinct and
// ascending (newSample, Counts.sample); moments take any order.
type sample struct {
	v []float64
	w []int64
	n int64
	// grain is, for a histogram, the width of the bucket holding its median:
	// the spacing on which most pairwise differences near the centre lie.
	// 0 for raw samples.
	grain float64
	// integer: every value is an integer of magnitude below 2⁵² (histogram
	// representatives), so differences of values are exact.
	integer bool
}

// newSample validates raw observations and groups equal values.
func newSample(name string, xs []float64) (sample, error) {
	if len(xs) == 0 {
		return sample{}, fmt.Errorf("%w: %s sample is empty", ErrInput, name)
	}
	for i, v := range xs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return sample{}, fmt.Errorf("%w: %s sample: value %d is %v", ErrInput, name, i+1, v)
		}
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	s := sample{v: sorted[:0], n: int64(len(xs))}
	s.w = make([]int64, 0, len(xs))
	for _, v := range sorted {
		// -0 and +0 compare equal and are one tie group, as in scipy.
		if k := len(s.w); k > 0 && s.v[k-1] == v {
			s.w[k-1]++
			continue
		}
		s.v = append(s.v, v)
		s.w = append(s.w, 1)
	}
	return s, nil
}

// expand writes every observation out, in order; used by tests and by
// callers that need plain slices from a histogram.
func (s sample) expand() []float64 {
	out := make([]float64, 0, s.n)
	for i, v := range s.v {
		for range s.w[i] {
			out = append(out, v)
		}
	}
	return out
}

// selfTies is Σ(t³ − t) over the sample's own tie groups.
func (s sample) selfTies() float64 {
	var t float64
	for _, w := range s.w {
		if w > 1 {
			f := float64(w)
			t += f*f*f - f
		}
	}
	return t
}

// Counts is a histogram's counts read once, with their geometry and the
// range of buckets that hold data. hdrhistogram-go offers no read of its
// counts cheaper than Export, which copies all of them (about 17 000 slots
// for 1 µs..60 s at 3 significant figures); a batch's analysis therefore
// exports each histogram once into a Counts and runs every test on it, and
// every walk covers only the non-empty range.
//
// A Counts does not change after NewCounts and is safe for concurrent reads.
type Counts struct {
	geom   hdrGeometry
	counts []int64
	lo, hi int // counts[lo] and counts[hi] are the first and last non-zero slots
	n      int64
	// The histogram's own geometry, for error messages.
	lowest, highest, sig int64
	// blocks[b] is the number of values in the 64 slots from
	// (lo/64 + b)·64, so a rank query or a tail sum walks at most
	// len(blocks) + 64 slots (about 200 for 1M latencies) instead of up to
	// the whole range. NewCounts builds it in the walk that totals the
	// counts; the Monitor keeps its accumulated counts' blocks up to date.
	blockOnce sync.Once
	blocks    []int64
}

const blockShift = 6

// NewCounts exports h once. It refuses a nil histogram and negative counts
// (possible only through hdrhistogram.Import) with ErrInput; an empty
// histogram gives an empty Counts.
func NewCounts(h *hdrhistogram.Histogram) (*Counts, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: histogram is nil", ErrInput)
	}
	c := &Counts{geom: geometryOf(h), lowest: h.LowestTrackableValue(), highest: h.HighestTrackableValue(), sig: h.SignificantFigures()}
	if h.TotalCount() == 0 {
		// Nothing to copy: an empty histogram's counts are all zero.
		c.lo, c.hi = 0, -1
		return c, nil
	}
	if err := c.set(h.Export().Counts); err != nil {
		return nil, err
	}
	return c, nil
}

// set adopts counts, finds the non-empty range and totals it.
func (c *Counts) set(counts []int64) error {
	c.counts, c.lo, c.hi, c.n = counts, 0, -1, 0
	// Most of an exported array is the empty slots below the fastest and
	// above the slowest request: skip them eight at a time.
	lo := 0
	for lo+8 <= len(counts) && counts[lo]|counts[lo+1]|counts[lo+2]|counts[lo+3]|counts[lo+4]|counts[lo+5]|counts[lo+6]|counts[lo+7] == 0 {
		lo += 8
	}
	for lo < len(counts) && counts[lo] == 0 {
		lo++
	}
	if lo == len(counts) {
		return nil
	}
	hi := len(counts) - 1
	for hi-8 >= lo && counts[hi]|counts[hi-1]|counts[hi-2]|counts[hi-3]|counts[hi-4]|counts[hi-5]|counts[hi-6]|counts[hi-7] == 0 {
		hi -= 8
	}
	for counts[hi] == 0 {
		hi--
	}
	c.lo, c.hi = lo, hi
	negative := -1
	c.blockOnce.Do(func() { negative = c.buildBlocks() })
	if negative >= 0 {
		return fmt.Errorf("%w: histogram count %d at index %d is negative", ErrInput, counts[negative], negative)
	}
	if c.n == 0 {
		c.lo, c.hi = 0, -1
	}
	return nil
}

// buildBlocks fills blocks and n, and returns the index of a negative count
// (-1 when there is none).
func (c *Counts) buildBlocks() (negative int) {
	negative = -1
	if c.hi < c.lo {
		return negative
	}
	first := c.lo >> blockShift
	blocks := make([]int64, c.hi>>blockShift-first+1)
	var n int64
	for b := range blocks {
		start := max((first+b)<<blockShift, c.lo)
		end := min((first+b+1)<<blockShift, c.hi+1)
		var s int64
		for i, v := range c.counts[start:end] {
			if v < 0 && negative < 0 {
				negative = start + i
			}
			s += v
		}
		blocks[b] = s
		n += s
	}
	c.blocks, c.n = blocks, n
	return negative
}

func (c *Counts) blockSums() []int64 {
	c.blockOnce.Do(func() { c.buildBlocks() })
	return c.blocks
}

// TotalCount is the number of recorded values.
func (c *Counts) TotalCount() int64 { return c.n }

// ValueAtQuantile is the highest value equivalent to the one at rank
// ⌈q·n⌉ (q in [0, 1]), as the Monitor and its verdicts report quantiles. It
// is 0 for an empty Counts.
func (c *Counts) ValueAtQuantile(q float64) int64 {
	if c.n == 0 {
		return 0
	}
	_, hi := c.geom.bucket(c.rankIndex(int64(math.Ceil(q * float64(c.n)))))
	return hi
}

// rankIndex is the count index holding the k-th smallest value (1-based,
// clamped to [1, n]).
func (c *Counts) rankIndex(k int64) int {
	k = max(k, 1)
	var acc int64
	first := c.lo >> blockShift
	for b, s := range c.blockSums() {
		if acc+s < k {
			acc += s
			continue
		}
		for i := max((first+b)<<blockShift, c.lo); i <= c.hi; i++ {
			if acc += c.counts[i]; acc >= k {
				return i
			}
		}
	}
	return max(c.hi, 0)
}

// sumFrom is the number of values at count index idx and above.
func (c *Counts) sumFrom(idx int) int64 {
	if c == nil || c.n == 0 || idx > c.hi {
		return 0
	}
	if idx <= c.lo {
		return c.n
	}
	blocks := c.blockSums()
	b := idx>>blockShift - c.lo>>blockShift
	var s int64
	for _, v := range blocks[b+1:] {
		s += v
	}
	for _, v := range c.counts[idx:min((idx>>blockShift+1)<<blockShift, c.hi+1)] {
		s += v
	}
	return s
}

// sameCountsGeometry checks that equal indices mean equal values.
func sameCountsGeometry(x, y *Counts) error {
	if x.lowest != y.lowest || x.highest != y.highest || x.sig != y.sig {
		return fmt.Errorf("%w: histograms differ in geometry: canary (lowest %d, highest %d, %d significant figures), baseline (lowest %d, highest %d, %d significant figures)",
			ErrInput, x.lowest, x.highest, x.sig, y.lowest, y.highest, y.sig)
	}
	return nil
}

// representative is the value bucket idx stands for: the middle of its
// equivalent range, as HdrHistogram's Mean and StdDev use. Buckets of width 1
// (values below 2048 at 3 significant figures) represent their exact value.
// TestBucketRepresentative pins it to the library.
func (g hdrGeometry) representative(idx int) float64 {
	lo, hi := g.bucket(idx)
	return float64(lo + (hi-lo+1)>>1)
}

// repTables caches every index's representative per geometry: rankPair
// needs one per non-empty bucket of every histogram test, and a table load is
// several times cheaper than decoding the index. Geometries with more slots
// than maxRepTable (five significant figures over a wide range) decode
// instead of holding megabytes.
var repTables sync.Map // hdrGeometry → []float64

const maxRepTable = 1 << 18

// representatives returns the table for g covering at least n slots, or nil
// when g is too large to cache.
func (g hdrGeometry) representatives(n int) []float64 {
	if n > maxRepTable {
		return nil
	}
	if t, ok := repTables.Load(g); ok {
		if reps := t.([]float64); len(reps) >= n {
			return reps
		}
	}
	reps := make([]float64, n)
	for i := range reps {
		reps[i] = g.representative(i)
	}
	repTables.Store(g, reps)
	return reps
}

// samplePool recycles the bucket lists of histogram tests: at 1M requests a
// side they hold about 7000 buckets each, and the caller only keeps the result.
var samplePool = sync.Pool{New: func() any { return new(pairBuf) }}

type pairBuf struct {
	xv, yv []float64
	xw, yw []int64
}

func (b *pairBuf) reset(nx, ny int) {
	b.xv, b.xw = slices.Grow(b.xv[:0], nx), slices.Grow(b.xw[:0], nx)
	b.yv, b.yw = slices.Grow(b.yv[:0], ny), slices.Grow(b.yw[:0], ny)
}

// rankedPair is two histograms reduced to their non-empty buckets, with the
// rank statistics of rankStats and each side's own tie term, all from one
// walk over the union of their non-empty ranges.
type rankedPair struct {
	x, y         sample
	u2           int64
	ties         float64
	distinct     int
	xTies, yTies float64
}

// rankPair walks both counts in index order, which is value order. The sums
// run in the order rankStats and selfTies use on the same buckets, so the
// floating-point results are identical to the raw-sample path's.
func rankPair(x, y *Counts, buf *pairBuf) rankedPair {
	lo, hi := min(x.lo, y.lo), max(x.hi, y.hi)
	if x.n == 0 {
		lo = y.lo
	}
	if y.n == 0 {
		lo = x.lo
	}
	xc, yc := x.counts, y.counts
	hi = min(hi, max(len(xc), len(yc))-1)
	// Upper bounds on the number of non-empty buckets, so that the loop
	// writes by index into slices it owns (no appends, no write barriers).
	buf.reset(max(x.hi-x.lo+1, 0), max(y.hi-y.lo+1, 0))
	xv, xw := buf.xv[:cap(buf.xv)], buf.xw[:cap(buf.xw)]
	yv, yw := buf.yv[:cap(buf.yv)], buf.yw[:cap(buf.yw)]
	nx, ny := 0, 0
	var r rankedPair
	var below int64
	reps := x.geom.representatives(max(len(xc), len(yc)))
	for i := lo; i <= hi; i++ {
		var a, b int64
		if i < len(xc) {
			a = xc[i]
		}
		if i < len(yc) {
			b = yc[i]
		}
		if a|b == 0 {
			continue
		}
		var v float64
		if reps != nil {
			v = reps[i]
		} else {
			v = x.geom.representative(i)
		}
		if a != 0 {
			xv[nx], xw[nx] = v, a
			nx++
			if a > 1 {
				f := float64(a)
				r.xTies += f*f*f - f
			}
		}
		if b != 0 {
			yv[ny], yw[ny] = v, b
			ny++
			if b > 1 {
				f := float64(b)
				r.yTies += f*f*f - f
			}
		}
		r.u2 += a * (2*below + b)
		below += b
		if t := a + b; t > 1 {
			f := float64(t)
			r.ties += f*f*f - f
		}
		r.distinct++
	}
	// Buckets reach at most twice the highest trackable value.
	integer := x.geom.highest < 1<<50
	r.x = sample{v: xv[:nx], w: xw[:nx], n: x.n, integer: integer}
	r.y = sample{v: yv[:ny], w: yw[:ny], n: y.n, integer: integer}
	if x.n > 0 {
		lo, hi := x.geom.bucket(x.rankIndex((x.n + 1) / 2))
		r.x.grain = float64(hi - lo + 1)
	}
	return r
}

// histSamples checks that two histograms share one geometry, so that equal
// count indices mean equal values, and reduces each to its non-empty buckets.
func histSamples(x, y *hdrhistogram.Histogram) (sample, sample, error) {
	cx, cy, err := countsPair(x, y)
	if err != nil {
		return sample{}, sample{}, err
	}
	r := rankPair(cx, cy, new(pairBuf))
	return r.x, r.y, nil
}

// countsPair exports both histograms once and checks them.
func countsPair(x, y *hdrhistogram.Histogram) (*Counts, *Counts, error) {
	if x == nil || y == nil {
		return nil, nil, fmt.Errorf("%w: histogram is nil", ErrInput)
	}
	if x.LowestTrackableValue() != y.LowestTrackableValue() ||
		x.HighestTrackableValue() != y.HighestTrackableValue() ||
		x.SignificantFigures() != y.SignificantFigures() {
		return nil, nil, fmt.Errorf("%w: histograms differ in geometry: canary (lowest %d, highest %d, %d significant figures), baseline (lowest %d, highest %d, %d significant figures)",
			ErrInput, x.LowestTrackableValue(), x.HighestTrackableValue(), x.SignificantFigures(),
			y.LowestTrackableValue(), y.HighestTrackableValue(), y.SignificantFigures())
	}
	cx, err := NewCounts(x)
	if err != nil {
		return nil, nil, err
	}
	cy, err := NewCounts(y)
	if err != nil {
		return nil, nil, err
	}
	return cx, cy, checkNonEmpty(cx, cy)
}

func checkNonEmpty(x, y *Counts) error {
	if x.n <= 0 {
		return fmt.Errorf("%w: canary histogram is empty", ErrInput)
	}
	if y.n <= 0 {
		return fmt.Errorf("%w: baseline histogram is empty", ErrInput)
	}
	return nil
}

// HistogramValues expands a histogram into one bucket representative per
// recorded value, in ascending order: the sample that every histogram-based
// test in this package is exact for.
func HistogramValues(h *hdrhistogram.Histogram) []float64 {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	c, err := NewCounts(h)
	if err != nil || c.n == 0 {
		return nil
	}
	empty := &Counts{geom: c.geom, lo: 0, hi: -1}
	return rankPair(c, empty, new(pairBuf)).x.expand()
}

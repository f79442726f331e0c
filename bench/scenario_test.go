package bench

import (
	"math"
	"sort"
	"testing"
	"time"
)

func TestScenarioRateAndLatency(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, shape := range []Shape{ShapeConstant, ShapeBursty, ShapeDiurnal} {
		t.Run(string(shape), func(t *testing.T) {
			s := Scenario{Name: "t", Duration: 400 * time.Second, Rate: 50, Shape: shape,
				MedianLatency: 20 * time.Millisecond, Sigma: 0.5, ErrorRate: 0.01, Seed: 7}
			var n, errs int
			var lats []float64
			last := start
			err := s.Generate(start, func(r Request) error {
				if r.Time.Before(last) {
					t.Fatalf("requests out of order: %v after %v", r.Time, last)
				}
				last = r.Time
				n++
				if r.Failed() {
					errs++
				}
				lats = append(lats, float64(r.Latency))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// The bursty shape averages (4 + 3/4)/4 of Rate over whole 40 s cycles.
			want := 50.0 * 400
			if shape == ShapeBursty {
				want *= (4 + 0.75) / 4
			}
			if math.Abs(float64(n)-want) > 5*math.Sqrt(want) {
				t.Errorf("%d requests, want about %.0f", n, want)
			}
			if rate := float64(errs) / float64(n); math.Abs(rate-0.01) > 0.004 {
				t.Errorf("error rate %.4f, want about 0.01", rate)
			}
			sort.Float64s(lats)
			if med := time.Duration(lats[len(lats)/2]); med < 19*time.Millisecond || med > 21*time.Millisecond {
				t.Errorf("median latency %v, want about 20ms", med)
			}
		})
	}
}

func TestScenarioIsDeterministic(t *testing.T) {
	s := Scenario{Name: "d", Duration: 10 * time.Second, Rate: 100, MedianLatency: time.Millisecond, Seed: 3}
	var a, b []Request
	s.Generate(time.Time{}, func(r Request) error { a = append(a, r); return nil })
	s.Generate(time.Time{}, func(r Request) error { b = append(b, r); return nil })
	if len(a) != len(b) || a[len(a)/2] != b[len(b)/2] {
		t.Fatal("same seed gave different traffic")
	}
}

func TestParseFault(t *testing.T) {
	cases := []struct {
		in   string
		want Fault
	}{
		{"error-rate=5%@10m", Fault{Kind: FaultErrorRate, Prob: 0.05, At: 10 * time.Minute}},
		{"latency=+30ms@1m", Fault{Kind: FaultLatency, Shift: 30 * time.Millisecond, At: time.Minute}},
		{"latency=x1.3", Fault{Kind: FaultLatency, Scale: 1.3}},
		{"tail=+200ms@2m", Fault{Kind: FaultTail, Shift: 200 * time.Millisecond, At: 2 * time.Minute}},
		{"degradation=+5ms/min@1m", Fault{Kind: FaultDegradation, Shift: 5 * time.Millisecond, At: time.Minute}},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseFault(c.in)
			if err != nil || got != c.want {
				t.Fatalf("ParseFault(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			}
			if back, err := ParseFault(got.String()); err != nil || back != got {
				t.Errorf("round trip %q -> %+v, %v", got.String(), back, err)
			}
		})
	}
	for _, bad := range []string{"error-rate=150%", "latency=fast", "boom=1", "error-rate=1%@soon", "degradation=+5ms"} {
		if _, err := ParseFault(bad); err == nil {
			t.Errorf("ParseFault(%q) succeeded", bad)
		}
	}
}

func TestFaultApply(t *testing.T) {
	f := Fault{Kind: FaultErrorRate, Prob: 0.5, At: time.Minute}
	r := Request{Status: 200}
	if f.Apply(&r, 30*time.Second, 0.1) || r.Status != 200 {
		t.Error("fault applied before its time")
	}
	if !f.Apply(&r, 2*time.Minute, 0.1) || r.Status != 500 {
		t.Error("fault not applied to a request that drew below Prob")
	}
	r = Request{Status: 200}
	if f.Apply(&r, 2*time.Minute, 0.9) {
		t.Error("fault applied to a request that drew above Prob")
	}
	d := Fault{Kind: FaultDegradation, Shift: 10 * time.Millisecond, At: time.Minute}
	r = Request{Latency: time.Millisecond}
	d.Apply(&r, 4*time.Minute, 0)
	if r.Latency != 31*time.Millisecond {
		t.Errorf("degradation after 3 min = %v, want 31ms", r.Latency)
	}
}

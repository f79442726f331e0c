// Package demo is what `guardian demo` runs besides Guardian itself: demo
// backend services whose latency and error rate can be switched while they
// serve, a bounded loopback load generator, and the scenario that walks a
// canary rollout until the canary degrades and Guardian rolls it back.
// The end-to-end tests reuse the services and the load generator.
package demo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"
)

// Service is a demo backend: it answers every request after Delay (±10%
// jitter, so latency distributions are continuous like real ones) and fails
// a share ErrorRate of them with HTTP 500. Both can change while it serves.
type Service struct {
	Name string

	delay   atomic.Int64  // nanoseconds
	errRate atomic.Uint64 // float64 bits

	served atomic.Int64
	errors atomic.Int64
}

// NewService returns a healthy service answering after delay.
func NewService(name string, delay time.Duration) *Service {
	s := &Service{Name: name}
	s.SetDelay(delay)
	return s
}

// SetDelay changes the service's latency.
func (s *Service) SetDelay(d time.Duration) { s.delay.Store(int64(max(d, 0))) }

// Delay is the service's current latency.
func (s *Service) Delay() time.Duration { return time.Duration(s.delay.Load()) }

// SetErrorRate makes a share p (0..1) of requests fail with HTTP 500;
// out-of-range values are clamped.
func (s *Service) SetErrorRate(p float64) {
	if math.IsNaN(p) {
		p = 0
	}
	s.errRate.Store(math.Float64bits(min(max(p, 0), 1)))
}

// ErrorRate is the share of requests the service fails.
func (s *Service) ErrorRate() float64 { return math.Float64frombits(s.errRate.Load()) }

// Served counts the requests answered; Errors those answered with 500.
func (s *Service) Served() int64 { return s.served.Load() }

// Errors counts the requests answered with HTTP 500.
func (s *Service) Errors() int64 { return s.errors.Load() }

func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d := s.Delay(); d > 0 {
		jitter := 0.9 + 0.2*rand.Float64()
		t := time.NewTimer(time.Duration(float64(d) * jitter))
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	s.served.Add(1)
	w.Header().Set("X-Version", s.Name)
	if p := s.ErrorRate(); p > 0 && rand.Float64() < p {
		s.errors.Add(1)
		http.Error(w, s.Name+": injected failure", http.StatusInternalServerError)
		return
	}
	fmt.Fprintf(w, "hello from %s\n", s.Name)
}

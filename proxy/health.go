package proxy

import (
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Health-check defaults.
const (
	DefaultHealthInterval = 5 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
)

// HealthObserver is told the outcome of each active health-check round of
// a route's version. A route's Observer that also implements it (the guard
// does) receives the rounds: they feed health_check_failures.
type HealthObserver interface {
	HealthCheckFailed(version int)
	HealthCheckOK(version int)
}

// healthRun is the set of probe loops of one configuration generation.
type healthRun struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

// startHealth starts a probe loop per version with a HealthCheck.
func (p *Proxy) startHealth(st *state) *healthRun {
	h := &healthRun{stop: make(chan struct{})}
	for ri, rc := range st.cfg.Routes {
		r := st.routes[ri]
		for vi, vc := range rc.Versions {
			if vc.HealthCheck == nil || len(r.pools[vi].eps) == 0 {
				continue
			}
			hc := *vc.HealthCheck
			if hc.Interval == 0 {
				hc.Interval = Duration(DefaultHealthInterval)
			}
			if hc.Timeout == 0 {
				hc.Timeout = Duration(DefaultHealthTimeout)
			}
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				p.probeLoop(h.stop, r, vi, hc)
			}()
		}
	}
	return h
}

func (h *healthRun) halt() {
	if h == nil {
		return
	}
	close(h.stop)
	h.wg.Wait()
}

func (p *Proxy) probeLoop(stop <-chan struct{}, r *route, v int, hc HealthCheck) {
	t := time.NewTicker(time.Duration(hc.Interval))
	defer t.Stop()
	obs, _ := r.obs.(HealthObserver)
	for {
		failed := 0
		for _, ep := range r.pools[v].eps {
			ok := probe(ep, hc)
			if was := ep.down.Swap(!ok); was != !ok {
				p.log.Warn("proxy: endpoint health changed", "route", r.name, "version", r.versions[v],
					"endpoint", ep.raw, "healthy", ok)
			}
			if !ok {
				failed++
			}
		}
		if obs != nil {
			if failed > 0 {
				obs.HealthCheckFailed(v)
			} else {
				obs.HealthCheckOK(v)
			}
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// probe sends one GET to the endpoint on its own pool.
func probe(ep *endpoint, hc HealthCheck) bool {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	scheme := "http"
	if ep.spec.scheme == "https" {
		scheme = "https"
	}
	req.SetRequestURI(scheme + "://" + ep.spec.addr + hc.Path)
	req.Header.Set("User-Agent", "guardian-health-check")
	if ep.spec.scheme == "h2c" {
		return probeH2C(ep, hc)
	}
	if err := ep.hc.DoTimeout(req, resp, time.Duration(hc.Timeout)); err != nil {
		return false
	}
	return resp.StatusCode() >= 200 && resp.StatusCode() < 400
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/deployment-guardian/guardian/proxy"
	"github.com/deployment-guardian/guardian/proxy/admin"
	"github.com/deployment-guardian/guardian/proxy/guard"
	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/driver"
	"github.com/deployment-guardian/guardian/rollout/store"
	"github.com/deployment-guardian/guardian/xds"
)

// runtimeOpts configure one Guardian process running rollouts.
type runtimeOpts struct {
	specs    []rollout.Spec
	stateDir string
	admin    string // "" disables the admin API
	token    string
	log      *slog.Logger
	// adminListener, when set, is used instead of listening on admin.
	adminListener net.Listener
	xdsListen     string
	xdsTLS        *xds.TLSConfig
}

// runtime is the wired process: proxy, guards, drivers, store, admin API.
type runtime struct {
	log      *slog.Logger
	store    *store.Store
	proxy    *proxy.Proxy
	admin    *admin.Server
	manager  *driver.Manager
	drivers  []*driver.Driver
	reg      *prometheus.Registry
	proxyCfg proxy.Config
	guards   map[string]*guard.Guard
	adminLn  net.Listener
	xds      *xds.Server

	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// proxyConfigFor maps rollouts served on Guardian's own proxy to routes:
// one route per rollout, bound to its listener, versions stable and
// canary, stable at 100% until the rollout's driver restores or starts it.
// Cohorts and A/B routes are not here: the engine sets them as it goes
// (SetRoutes), so a rollback can take them away.
func proxyConfigFor(specs []rollout.Spec) (proxy.Config, error) {
	var cfg proxy.Config
	for _, s := range specs {
		if s.Listen == "" {
			continue
		}
		if !slices.ContainsFunc(cfg.Listeners, func(l proxy.Listener) bool { return l.Addr == s.Listen }) {
			cfg.Listeners = append(cfg.Listeners, proxy.Listener{Addr: s.Listen})
		}
		stable, err := endpointsOf(s.Stable)
		if err != nil {
			return cfg, fmt.Errorf("%s: spec.stable: %w", s.Name, err)
		}
		canary, err := endpointsOf(s.Canary)
		if err != nil {
			return cfg, fmt.Errorf("%s: spec.canary: %w", s.Name, err)
		}
		r := proxy.Route{
			Name:      s.Name,
			Match:     proxy.Match{Host: s.Match.Host, PathPrefix: s.Match.PathPrefix},
			Listeners: []string{s.Listen},
			Versions: []proxy.Version{
				{Name: "stable", Endpoints: stable},
				{Name: "canary", Endpoints: canary},
			},
			Weights: rollout.Weights{"stable": 100, "canary": 0},
		}
		if ff := s.Strategy.FeatureFlag; ff != nil {
			r.Sticky = proxy.Sticky{Header: ff.UserKey.Header, Cookie: ff.UserKey.Cookie}
		}
		if s.Strategy.BlueGreen != nil {
			// Validation traffic reaches green in the request path before
			// the switch, where it is recorded, analysed and guarded.
			r.Cohorts = []proxy.Cohort{{Header: driver.PreviewHeader, Version: "canary"}}
		}
		cfg.Routes = append(cfg.Routes, r)
	}
	return cfg, cfg.Validate()
}

func endpointsOf(b rollout.Backend) ([]string, error) {
	if b.URL != "" {
		if _, err := url.Parse(b.URL); err != nil {
			return nil, err
		}
		return []string{b.URL}, nil
	}
	if len(b.Endpoints) == 0 {
		return nil, errors.New("neither url nor endpoints is set")
	}
	return b.Endpoints, nil
}

// triggersOf maps a spec's critical conditions to the guard's triggers.
func triggersOf(s rollout.Spec) ([]guard.Trigger, error) {
	var out []guard.Trigger
	for i, c := range s.RollbackTriggers.Critical {
		t, err := guard.ParseTrigger(c.Raw)
		if err != nil {
			return nil, fmt.Errorf("%s: spec.rollbackTriggers.critical[%d]: %w", s.Name, i, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// startRuntime wires everything and starts serving. Drivers restore their
// rollouts (and apply the stored weights) before the proxy accepts a
// connection.
func startRuntime(o runtimeOpts) (*runtime, error) {
	rt := &runtime{log: o.log, guards: map[string]*guard.Guard{}}
	if rt.log == nil {
		rt.log = slog.Default()
	}
	cfg, err := proxyConfigFor(o.specs)
	if err != nil {
		return nil, usageErr("%v", oneLine(err))
	}
	rt.proxyCfg = cfg

	rt.store, err = store.Open(filepath.Join(o.stateDir, store.FileName))
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if ok {
			return
		}
		// Whatever started before the failure stops again, so a refused
		// start leaves no listener or goroutine behind.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if rt.admin != nil {
			rt.admin.Shutdown(ctx)
		}
		if rt.proxy != nil {
			rt.proxy.Shutdown(ctx)
		}
		if rt.xds != nil {
			rt.xds.Stop()
		}
		rt.wg.Wait()
		rt.store.Close()
	}()

	rt.reg = prometheus.NewRegistry()
	rt.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	recMetrics, err := record.NewMetrics(rt.reg, record.MetricsOpts{})
	if err != nil {
		return nil, err
	}
	guardMetrics, err := guard.NewMetrics(rt.reg)
	if err != nil {
		return nil, err
	}
	drvMetrics, err := driver.NewMetrics(rt.reg)
	if err != nil {
		return nil, err
	}

	// Guards cut traffic in the request path and then tell the rollout's
	// driver, which is built after the proxy: late-bound pointers.
	late := map[string]*atomic.Pointer[driver.Driver]{}
	observers := map[string]proxy.Observer{}
	for _, s := range o.specs {
		if s.Listen == "" {
			continue
		}
		triggers, err := triggersOf(s)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		if len(triggers) == 0 {
			continue
		}
		name := s.Name
		ptr := &atomic.Pointer[driver.Driver]{}
		late[name] = ptr
		g, err := guard.New(guard.Config{Triggers: triggers, Watch: 1}, func(t guard.Trip) {
			// A promoted rollout is over: its canary is the version now,
			// and there is nothing left to switch back to.
			if d := ptr.Load(); d != nil && d.State().Phase == rollout.Promoted {
				return
			}
			// On the request path that fired: stop harm first, then report.
			// Cohort and A/B routes and the mirror go too: a broken canary
			// gets no request at all.
			if err := rt.proxy.SetWeights(name, rollout.Weights{"stable": 100, "canary": 0}); err != nil {
				rt.log.Error("guard: zeroing the canary failed", "rollout", name, "err", err)
			}
			if err := errors.Join(rt.proxy.SetRoutes(name, nil), rt.proxy.SetMirror(name, 0)); err != nil {
				rt.log.Error("guard: clearing the canary's routes failed", "rollout", name, "err", err)
			}
			guardMetrics.Count(name, t)
			data, _ := json.Marshal(map[string]any{
				"trigger": t.Trigger.String(), "requests": t.Requests, "errors": t.Errors,
				"observed": t.Observed, "bound": t.Bound, "time": t.Time,
			})
			if d := ptr.Load(); d != nil {
				d.Trip(rollout.Trip{Trigger: t.Trigger.String(), Reason: t.Reason, Data: data})
			}
		})
		if err != nil {
			return nil, usageErr("%s: spec.rollbackTriggers.critical: %v", name, err)
		}
		rt.guards[name] = g
		observers[name] = g
	}

	rt.proxy, err = proxy.New(cfg, proxy.Options{Logger: rt.log, Observers: observers, Metrics: recMetrics})
	if err != nil {
		return nil, usageErr("%v", oneLine(err))
	}

	if err := rt.startXDS(o); err != nil {
		return nil, err
	}

	rt.manager = driver.NewManager(rt.store)
	for _, s := range o.specs {
		var routers []rollout.TrafficRouter
		var source rollout.MetricSource
		if s.Listen != "" {
			routers, source = append(routers, rt.proxy), rt.proxy
		}
		if s.XDS != nil {
			routers = append(routers, rt.xds)
			if source == nil {
				// A fleet-only rollout is judged on what Envoy reports.
				source = rt.xds
			}
		}
		d, err := driver.New(driver.Config{
			Spec: s, Store: rt.store, Routers: routers, Source: source,
			Logger: rt.log, Metrics: drvMetrics, Business: driver.Prometheus{},
		})
		if err != nil {
			return nil, err
		}
		if p := late[s.Name]; p != nil {
			p.Store(d)
		}
		rt.drivers = append(rt.drivers, d)
		rt.manager.Add(d)
	}

	if o.admin != "" || o.adminListener != nil {
		addr := o.admin
		if o.adminListener != nil {
			addr = o.adminListener.Addr().String()
		}
		rt.admin, err = admin.New(admin.Config{Addr: addr, Token: o.token, Gatherer: rt.reg, Registerer: rt.reg, Logger: rt.log}, rt.proxy)
		if err != nil {
			return nil, usageErr("--admin: %v", err)
		}
		rt.manager.Register(rt.admin)
		if rt.xds != nil {
			rt.admin.Handle("GET /api/v1/fleet", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(rt.xds.Status())
			}))
		}
		ln := o.adminListener
		if ln == nil {
			if ln, err = net.Listen("tcp", addr); err != nil {
				return nil, fmt.Errorf("--admin %s: %w", addr, err)
			}
		}
		rt.adminLn = ln
		rt.wg.Add(1)
		go func() {
			defer rt.wg.Done()
			if err := rt.admin.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				rt.log.Error("admin API stopped", "err", err)
			}
		}()
	}

	if len(cfg.Listeners) > 0 {
		// Listen synchronously so a bad address is an error here, not a log line.
		for _, l := range cfg.Listeners {
			ln, err := net.Listen("tcp", l.Addr)
			if err != nil {
				return nil, fmt.Errorf("listen %s: %w", l.Addr, err)
			}
			rt.wg.Add(1)
			go func() {
				defer rt.wg.Done()
				if err := rt.proxy.Serve(ln, nil); err != nil && !errors.Is(err, http.ErrServerClosed) {
					rt.log.Error("proxy listener stopped", "addr", l.Addr, "err", err)
				}
			}()
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	rt.cancel = cancel
	for _, d := range rt.drivers {
		rt.wg.Add(1)
		go func() {
			defer rt.wg.Done()
			if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				rt.log.Error("rollout driver stopped", "rollout", d.Name(), "err", err)
			}
		}()
	}
	ok = true
	return rt, nil
}

// startXDS serves the fleet control plane when --xds-listen is given and
// publishes every rollout that names an xDS service, stable at 100% until
// its driver restores or starts it.
func (rt *runtime) startXDS(o runtimeOpts) error {
	var fleet []rollout.Spec
	for _, s := range o.specs {
		if s.XDS != nil {
			fleet = append(fleet, s)
		}
		if s.Listen == "" && s.XDS == nil {
			return usageErr("%s: the rollout needs spec.listen (Guardian's proxy) or spec.xds (a fleet)", s.Name)
		}
	}
	if len(fleet) > 0 && o.xdsListen == "" {
		return usageErr("%s: spec.xds needs --xds-listen", fleet[0].Name)
	}
	if o.xdsListen == "" {
		return nil
	}
	srv, err := xds.NewServer(xds.Config{Listen: o.xdsListen, TLS: o.xdsTLS, Logger: rt.log, Registerer: rt.reg})
	if err != nil {
		return usageErr("--xds-listen: %v", err)
	}
	for _, s := range fleet {
		stable, err := hostPorts(s.Stable)
		if err != nil {
			return usageErr("%s: spec.stable: %v", s.Name, err)
		}
		canary, err := hostPorts(s.Canary)
		if err != nil {
			return usageErr("%s: spec.canary: %v", s.Name, err)
		}
		svc := xds.Service{Name: s.XDS.Service, Rollout: s.Name,
			Versions: []xds.Version{{Name: "stable", Endpoints: stable}, {Name: "canary", Endpoints: canary}},
			Weights:  rollout.Weights{"stable": 100, "canary": 0}}
		if err := srv.SetService(svc); err != nil {
			return usageErr("%s: spec.xds: %v", s.Name, err)
		}
	}
	ln, err := net.Listen("tcp", o.xdsListen)
	if err != nil {
		return fmt.Errorf("--xds-listen %s: %w", o.xdsListen, err)
	}
	rt.xds = srv
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		if err := srv.Serve(ln); err != nil {
			rt.log.Error("xDS server stopped", "err", err)
		}
	}()
	return nil
}

// hostPorts gives a backend's endpoints as ip:port, the form xDS clients
// need.
func hostPorts(b rollout.Backend) ([]string, error) {
	if b.URL == "" {
		return b.Endpoints, nil
	}
	u, err := url.Parse(b.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("url %q has no host:port", b.URL)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = map[string]string{"https": "443"}[u.Scheme]
		if port == "" {
			port = "80"
		}
	}
	return []string{net.JoinHostPort(host, port)}, nil
}

// allDone is closed when every rollout has ended.
func (rt *runtime) allDone() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for _, d := range rt.drivers {
			<-d.Done()
		}
		close(ch)
	}()
	return ch
}

// exitCode is `guardian wait`'s convention over every rollout: 0 when all
// were promoted, 3 when any was rolled back or aborted.
func (rt *runtime) exitCode() int {
	for _, d := range rt.drivers {
		if p := d.State().Phase; p == rollout.RolledBack || p == rollout.Aborted {
			return 3
		}
	}
	return 0
}

// shutdown stops the drivers (their state is already durable), drains the
// proxy and closes the store.
func (rt *runtime) shutdown(drain time.Duration) error {
	rt.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	var errs []error
	if rt.admin != nil {
		errs = append(errs, rt.admin.Shutdown(ctx))
	}
	errs = append(errs, rt.proxy.Shutdown(ctx))
	if rt.xds != nil {
		rt.xds.Stop()
	}
	rt.wg.Wait()
	errs = append(errs, rt.store.Close())
	return errors.Join(errs...)
}

// reload applies changed spec files: the proxy takes the new routes at
// once; a rollout whose spec changed keeps running on its old spec (the
// engine refuses to move a running rollout silently) and is reported.
func (rt *runtime) reload(specs []rollout.Spec) error {
	cfg, err := proxyConfigFor(specs)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, d := range rt.drivers {
		known[d.Name()] = true
	}
	for _, s := range specs {
		if !known[s.Name] {
			return fmt.Errorf("%s: adding rollouts needs a restart (guardian run keeps running rollouts untouched)", s.Name)
		}
	}
	// Keep each route's current weights: the proxy's reload keeps weights
	// unless the config changes them, and ours always says stable 100.
	return rt.proxy.Reload(cfg)
}

// Interface guards: Guardian's proxy carries out every traffic action of
// the engine (weights, cohort and A/B routes, mirroring).
var (
	_ driver.RouteSetter  = (*proxy.Proxy)(nil)
	_ driver.MirrorSetter = (*proxy.Proxy)(nil)
)

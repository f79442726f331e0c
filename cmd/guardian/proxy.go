package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/deployment-guardian/guardian/proxy"
	"github.com/deployment-guardian/guardian/proxy/admin"
	"github.com/deployment-guardian/guardian/proxy/guard"
	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/deployment-guardian/guardian/rollout"
)

func init() { register(func(root *cobra.Command) { root.AddCommand(newProxyCmd()) }) }

type proxyOpts struct {
	listen, stable, canary string
	canaryWeight           int
	admin, token, config   string
	stickyHeader           string
	stickyCookie           string
	critical               []string
	tlsCert, tlsKey        string
	accessLog              string
	healthPath             string
	drain                  time.Duration
	xds                    xdsClientOpts
}

func newProxyCmd() *cobra.Command {
	var o proxyOpts
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the edge proxy: split traffic between stable and canary, record it, guard it",
		Long: `Run Guardian's data plane.

One-line form: one route "default" on --listen, splitting every request between
--stable and --canary (URLs or host:port, comma-separated for several endpoints).
Config-file form (--config FILE, YAML or JSON, see docs/proxy.md): several routes,
cohorts, mirroring, timeouts; SIGHUP reloads the file without dropping requests.

--critical triggers (repeatable; e.g. "error_rate > 5%", "p99_latency > 5000ms",
"consecutive_errors > 20") guard every route with two or more versions: they
watch the last-listed version (the canary) and, when one fires, send all of
that route's traffic to the first version at once.

The admin API (--admin, loopback by default) serves /api/v1/weights,
/api/v1/stats, /healthz, /readyz and /metrics; a --token (or GUARDIAN_TOKEN)
is required when it listens on a non-loopback address.
SIGINT/SIGTERM stop accepting and drain requests in flight (--drain).

--xds ADDR --xds-service NAME joins a fleet run by "guardian run --xds-listen":
the route serving NAME takes its weights from the control plane, and its
recorded numbers are streamed back for the rollout's analysis. If the control
plane becomes unreachable the proxy keeps its last weights (fail static),
stays ready, and says so in /readyz's body and guardian_xds_client_connected.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runProxy(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "", "address to serve on, e.g. 127.0.0.1:8080 (one-line form)")
	f.StringVar(&o.stable, "stable", "", "stable endpoint URL(s), comma-separated")
	f.StringVar(&o.canary, "canary", "", "canary endpoint URL(s), comma-separated")
	f.IntVar(&o.canaryWeight, "canary-weight", 0, "initial canary weight in percent (0..100)")
	f.StringVar(&o.admin, "admin", "127.0.0.1:9090", "admin API address; empty disables it")
	f.StringVar(&o.token, "token", os.Getenv("GUARDIAN_TOKEN"), "bearer token for the admin API (default $GUARDIAN_TOKEN)")
	f.StringVar(&o.config, "config", "", "config file (YAML or JSON); exclusive with --listen/--stable/--canary")
	f.StringVar(&o.stickyHeader, "sticky-header", "", "header carrying the user key for sticky assignment")
	f.StringVar(&o.stickyCookie, "sticky-cookie", "", "cookie carrying the user key for sticky assignment")
	f.StringArrayVar(&o.critical, "critical", nil, `critical rollback trigger, e.g. "error_rate > 5%" (repeatable)`)
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate for --listen (enables TLS, h2 by ALPN)")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key for --tls-cert")
	f.StringVar(&o.accessLog, "access-log", "", `JSON access log file ("-" for stdout; default off)`)
	f.StringVar(&o.healthPath, "health-check", "", "probe every endpoint with GET PATH every 5s (feeds health_check_failures)")
	f.DurationVar(&o.drain, "drain", 30*time.Second, "how long shutdown waits for requests in flight")
	addXDSClientFlags(cmd, &o.xds)
	return cmd
}

// proxyConfig builds the proxy config from the flags or the file.
func proxyConfig(o proxyOpts) (proxy.Config, error) {
	if o.config != "" {
		if o.listen != "" || o.stable != "" || o.canary != "" {
			return proxy.Config{}, usageErr("--config is exclusive with --listen, --stable and --canary")
		}
		c, err := proxy.LoadConfig(o.config)
		if err != nil {
			return proxy.Config{}, usageErr("%v", err)
		}
		if o.accessLog != "" {
			c.AccessLog.Path = o.accessLog
		}
		if err := c.Validate(); err != nil {
			return proxy.Config{}, usageErr("%s: %v", o.config, oneLine(err))
		}
		return c, nil
	}
	if o.listen == "" || o.stable == "" || o.canary == "" {
		return proxy.Config{}, usageErr("--listen, --stable and --canary are required (or --config FILE)")
	}
	if o.canaryWeight < 0 || o.canaryWeight > 100 {
		return proxy.Config{}, usageErr("--canary-weight %d: want 0..100", o.canaryWeight)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return proxy.Config{}, usageErr("--tls-cert and --tls-key go together")
	}
	l := proxy.Listener{Addr: o.listen}
	if o.tlsCert != "" {
		l.TLS = &proxy.TLS{CertFile: o.tlsCert, KeyFile: o.tlsKey}
	}
	c := proxy.Config{
		Listeners: []proxy.Listener{l},
		AccessLog: proxy.AccessLog{Path: o.accessLog},
		Routes: []proxy.Route{{
			Name: "default",
			Versions: []proxy.Version{
				{Name: "stable", Endpoints: splitList(o.stable)},
				{Name: "canary", Endpoints: splitList(o.canary)},
			},
			Sticky:  proxy.Sticky{Header: o.stickyHeader, Cookie: o.stickyCookie},
			Weights: rollout.Weights{"stable": 100 - o.canaryWeight, "canary": o.canaryWeight},
		}},
	}
	if o.healthPath != "" {
		for i := range c.Routes[0].Versions {
			c.Routes[0].Versions[i].HealthCheck = &proxy.HealthCheck{Path: o.healthPath}
		}
	}
	if err := c.Validate(); err != nil {
		return proxy.Config{}, usageErr("%v", oneLine(err))
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if part := s[start:i]; part != "" {
				out = append(out, part)
			}
			start = i + 1
		}
	}
	return out
}

// oneLine joins a multi-error into one stderr line.
func oneLine(err error) string {
	b := []byte(err.Error())
	for i, c := range b {
		if c == '\n' {
			b[i] = ';'
		}
	}
	return string(b)
}

func runProxy(ctx context.Context, o proxyOpts) error {
	if ctx == nil {
		ctx = context.Background()
	}
	cfg, err := proxyConfig(o)
	if err != nil {
		return err
	}
	var triggers []guard.Trigger
	for _, s := range o.critical {
		t, err := guard.ParseTrigger(s)
		if err != nil {
			return usageErr("--critical %q: %v", s, err)
		}
		triggers = append(triggers, t)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	recMetrics, err := record.NewMetrics(reg, record.MetricsOpts{})
	if err != nil {
		return err
	}
	guardMetrics, err := guard.NewMetrics(reg)
	if err != nil {
		return err
	}

	// The guards need the proxy to cut traffic and the proxy needs the
	// guards to observe: build the guards with a closure over p.
	var p *proxy.Proxy
	observers := map[string]proxy.Observer{}
	if len(triggers) > 0 {
		for _, rc := range cfg.Routes {
			if len(rc.Versions) < 2 {
				continue
			}
			route, baseline, watched := rc.Name, rc.Versions[0].Name, rc.Versions[len(rc.Versions)-1].Name
			g, err := guard.New(guard.Config{Triggers: triggers, Watch: len(rc.Versions) - 1}, func(t guard.Trip) {
				// Runs on the request path that fired: cut the canary first,
				// then report.
				err := p.SetWeights(route, rollout.Weights{baseline: 100})
				guardMetrics.Count(route, t)
				log.Error("guard: critical trigger fired; traffic moved to baseline",
					"route", route, "version", watched, "trigger", t.Trigger.String(), "reason", t.Reason,
					"observed", t.Observed, "bound", t.Bound, "requests", t.Requests, "errors", t.Errors, "set_weights_err", err)
			})
			if err != nil {
				return usageErr("--critical: %v", err)
			}
			observers[route] = g
		}
	}
	p, err = proxy.New(cfg, proxy.Options{Logger: log, Observers: observers, Metrics: recMetrics})
	if err != nil {
		return usageErr("%v", oneLine(err))
	}

	fleet, err := newProxyXDS(o.xds, cfg, p, reg, log)
	if err != nil {
		return err
	}
	if fleet != nil {
		defer fleet.stop()
	}

	var adm *admin.Server
	if o.admin != "" {
		ac := admin.Config{Addr: o.admin, Token: o.token, Gatherer: reg, Logger: log}
		var dp admin.DataPlane = p
		if fleet != nil {
			dp, ac.ReadyDetail = xdsPlane{Proxy: p, x: fleet}, fleet.readyDetail
		}
		adm, err = admin.New(ac, dp)
		if err != nil {
			return usageErr("--admin: %v", err)
		}
	}

	// Signals are caught before serving, so a SIGHUP that arrives as soon
	// as the proxy answers cannot kill the process.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)

	errc := make(chan error, 2)
	go func() { errc <- p.ListenAndServe() }()
	if adm != nil {
		go func() { errc <- adm.ListenAndServe() }()
	}
	log.Info("proxy: serving", "listeners", listenAddrs(cfg), "routes", p.Routes(), "admin", o.admin)
	if fleet != nil {
		fleet.start()
		log.Info("proxy: following the control plane", "xds", o.xds.addr, "service", o.xds.service, "route", fleet.route, "node", fleet.node)
	}

	var runErr error
loop:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				if o.config == "" {
					log.Warn("proxy: SIGHUP ignored: no --config file to reload")
					continue
				}
				c, err := proxy.LoadConfig(o.config)
				if err == nil {
					err = p.Reload(c)
				}
				if err != nil {
					log.Error("proxy: reload refused; keeping the running config", "file", o.config, "err", oneLine(err))
				}
				continue
			}
			log.Info("proxy: draining", "signal", s.String(), "timeout", o.drain)
			break loop
		case err := <-errc:
			if !errors.Is(err, http.ErrServerClosed) {
				runErr = &exitError{code: 1, err: err}
			}
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.drain)
	defer cancel()
	if adm != nil {
		adm.Shutdown(sctx)
	}
	if err := p.Shutdown(sctx); err != nil && runErr == nil {
		runErr = &exitError{code: 1, err: fmt.Errorf("shutdown: %w", err)}
	}
	return runErr
}

func listenAddrs(c proxy.Config) []string {
	var out []string
	for _, l := range c.Listeners {
		scheme := "http"
		if l.TLS != nil {
			scheme = "https"
		}
		out = append(out, scheme+"://"+l.Addr)
	}
	return out
}

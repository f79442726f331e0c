package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/xds"
)

func init() { register(func(root *cobra.Command) { root.AddCommand(newRunCmd()) }) }

type runOpts struct {
	admin, token, stateDir, xdsListen string
	xdsCert, xdsKey, xdsClientCA      string
	drain                             time.Duration
	exitOnDone                        bool
}

func newRunCmd() *cobra.Command {
	var o runOpts
	cmd := &cobra.Command{
		Use:   "run FILE...",
		Short: "Run rollouts: serve their traffic, analyse it, and promote or roll back",
		Long: `Run the rollouts described in FILE... (YAML, one or more documents each).

Each rollout with spec.listen is served by Guardian's proxy on that address;
its traffic is recorded in the request path, analysed every
spec.analysis.interval, and the engine walks the steps or rolls back.
Critical triggers run in the request path and zero the canary at once.

State (phase, step, weights, every event) is kept in --state-dir; after a
crash or restart each rollout resumes where it stopped.
SIGHUP re-reads the files: a bad file is refused whole and nothing running
changes. SIGINT/SIGTERM drain requests in flight and stop.

--exit-on-done exits when every rollout has ended: 0 if all were promoted,
3 if any was rolled back or aborted.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runRollouts(cmd.Context(), args, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.admin, "admin", "127.0.0.1:9090", "admin API address; empty disables it")
	// Read at use, not as the flag's default, so --help never prints it.
	f.StringVar(&o.token, "token", "", "bearer token for the admin API (default $GUARDIAN_TOKEN)")
	f.StringVar(&o.stateDir, "state-dir", ".guardian", "directory for the rollout state file")
	f.StringVar(&o.xdsListen, "xds-listen", "", "serve the xDS control plane on this address")
	f.StringVar(&o.xdsCert, "xds-tls-cert", "", "PEM certificate for the xDS server (enables TLS)")
	f.StringVar(&o.xdsKey, "xds-tls-key", "", "PEM private key for --xds-tls-cert")
	f.StringVar(&o.xdsClientCA, "xds-client-ca", "", "PEM CA bundle: require xDS clients to present a certificate it signed (mTLS)")
	f.DurationVar(&o.drain, "drain", 30*time.Second, "how long shutdown waits for requests in flight")
	f.BoolVar(&o.exitOnDone, "exit-on-done", false, "exit when every rollout has ended (0 promoted, 3 rolled back/aborted)")
	return cmd
}

func runRollouts(ctx context.Context, files []string, o runOpts) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.token == "" {
		o.token = os.Getenv("GUARDIAN_TOKEN")
	}
	specs, err := rollout.LoadFiles(files...)
	if err != nil {
		return usageErr("%v", err)
	}
	var xdsTLS *xds.TLSConfig
	switch {
	case (o.xdsCert == "") != (o.xdsKey == ""):
		return usageErr("--xds-tls-cert and --xds-tls-key go together")
	case o.xdsClientCA != "" && o.xdsCert == "":
		return usageErr("--xds-client-ca needs --xds-tls-cert and --xds-tls-key")
	case o.xdsCert != "":
		xdsTLS = &xds.TLSConfig{CertFile: o.xdsCert, KeyFile: o.xdsKey, ClientCAFile: o.xdsClientCA}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)

	rt, err := startRuntime(runtimeOpts{specs: specs, stateDir: o.stateDir, admin: o.admin, token: o.token, log: log, xdsListen: o.xdsListen, xdsTLS: xdsTLS})
	if err != nil {
		// A busy port or an unreadable state file is not bad usage: exit 1.
		var ee *exitError
		if !errors.As(err, &ee) {
			err = &exitError{code: 1, err: err}
		}
		return err
	}
	log.Info("guardian: running", "rollouts", len(specs), "admin", o.admin, "state", o.stateDir)
	var done <-chan struct{}
	if o.exitOnDone {
		done = rt.allDone()
	}
	code := 0
loop:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				newSpecs, err := rollout.LoadFiles(files...)
				if err == nil {
					err = rt.reload(newSpecs)
				}
				if err != nil {
					log.Error("reload refused; the running rollouts are unchanged", "err", oneLine(err))
				} else {
					log.Info("reloaded", "files", files)
				}
				continue
			}
			log.Info("guardian: stopping", "signal", s.String())
			break loop
		case <-done:
			code = rt.exitCode()
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	if err := rt.shutdown(o.drain); err != nil && !errors.Is(err, context.Canceled) {
		log.Warn("shutdown", "err", err)
	}
	if code != 0 {
		return &exitError{code: code, err: errors.New("a rollout was rolled back or aborted")}
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployment-guardian/guardian/bench/demo"
	"github.com/deployment-guardian/guardian/rollout"
)

func init() { register(func(root *cobra.Command) { root.AddCommand(newDemoCmd()) }) }

type demoOpts struct {
	speed   float64
	rate    int
	admin   string
	verbose bool
}

func newDemoCmd() *cobra.Command {
	var o demoOpts
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch Guardian roll back a canary that degrades (about 30 s, no setup)",
		Long: `Start a stable and a canary demo service on loopback, Guardian's proxy and a
canary rollout in front of them (the same runtime as guardian run, with its
state in a temporary directory), and a load generator. The canary walks
10% → 25%; a few seconds after 25% it gets 50 ms slower, and Guardian's
analysis rolls it back. The terminal shows the live dashboard (redrawn on
a terminal, printed as plain blocks otherwise) and ends with the
deployment report. Exit 0 when the canary was rolled back as expected.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := interruptible(cmd.Context())
			defer cancel()
			return runDemo(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.Float64Var(&o.speed, "speed", 1, "time scale: 2 plays the rollout twice as fast")
	f.IntVar(&o.rate, "rate", 500, "load in requests per second (50..2000)")
	f.StringVar(&o.admin, "admin", "127.0.0.1:0", "admin API address, so `guardian status` works from another terminal (port 0 picks one)")
	f.BoolVar(&o.verbose, "verbose", false, "log Guardian's events to stderr")
	return cmd
}

func runDemo(ctx context.Context, out, errw io.Writer, o demoOpts) error {
	if !(o.speed > 0 && o.speed <= 20) {
		return usageErr("--speed %v: want a number in (0, 20]", o.speed)
	}
	if o.rate < 50 || o.rate > 2000 {
		return usageErr("--rate %d: want 50..2000 requests per second", o.rate)
	}
	stateDir, err := os.MkdirTemp("", "guardian-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stateDir)
	logOut := io.Discard
	if o.verbose {
		logOut = errw
	}
	var adminURL string
	start := func(spec []byte) (demo.Rollout, func() error, error) {
		specs, err := rollout.Parse(filepath.Join(stateDir, "demo.yaml"), spec)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", o.admin)
		if err != nil {
			return nil, nil, usageErr("--admin %s: %v", o.admin, err)
		}
		adminURL = "http://" + ln.Addr().String()
		rt, err := startRuntime(runtimeOpts{specs: specs, stateDir: stateDir, adminListener: ln,
			log: slog.New(slog.NewTextHandler(logOut, nil))})
		if err != nil {
			ln.Close()
			return nil, nil, err
		}
		d, ok := rt.manager.Get(specs[0].Name)
		if !ok {
			_ = rt.shutdown(time.Second)
			return nil, nil, errors.New("demo: the rollout did not start")
		}
		return d, func() error { return rt.shutdown(2 * time.Second) }, nil
	}
	res, err := demo.Run(ctx, demo.Options{
		Out: out, TTY: clientTTY(out), Speed: o.speed, Rate: o.rate, Start: start,
		Note: func(name string) string {
			return fmt.Sprintf("From another terminal: guardian status %s --watch --admin %s", name, adminURL)
		},
	})
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	fmt.Fprintln(errw, res.Summary())
	if res.Phase != rollout.RolledBack {
		return &exitError{code: 1, err: fmt.Errorf("demo: the rollout ended %s, not rolled back", res.Phase)}
	}
	return nil
}

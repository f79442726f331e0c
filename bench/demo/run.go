package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/driver"
	"github.com/deployment-guardian/guardian/rollout/report"
)

// Rollout is the demo's rollout as Guardian's runtime runs it
// (*driver.Driver satisfies it).
type Rollout interface {
	Status(maxEvents int) (driver.Status, error)
	Report() (report.Report, error)
	Done() <-chan struct{}
}

// Options configure a demo run.
type Options struct {
	// Out receives the dashboard and the final report.
	Out io.Writer
	// TTY redraws the dashboard in place, with colour; otherwise a plain
	// block is printed when the stage changes and every PlainEvery.
	TTY bool
	// Speed scales the demo's clock: 2 runs the plan twice as fast
	// (default 1: about 30 s).
	Speed float64
	// Rate is the load in requests per second (default 400, at most 2000).
	Rate int
	// Refresh is how often the dashboard is read (default 500ms);
	// PlainEvery how often a plain block is printed without a change
	// (default 5s).
	Refresh, PlainEvery time.Duration
	// Start runs Guardian (the same runtime as `guardian run`) for the
	// spec and returns the rollout and a function that stops Guardian.
	Start func(spec []byte) (Rollout, func() error, error)
	// Note, when set, is printed once Guardian runs (for example where
	// its admin API listens).
	Note func(name string) string
}

// Result is how the demo ended.
type Result struct {
	Phase  rollout.Phase
	Report report.Report
	// Degraded is when the canary was degraded; Ended when the rollout
	// ended.
	Degraded, Ended time.Time
	Load            LoadResult
}

// Name of the demo's rollout.
const Name = "checkout"

// Baseline latency of both services and the canary's regression.
const (
	baseDelay   = 20 * time.Millisecond
	extraDelay  = 50 * time.Millisecond
	degradeWait = 5 * time.Second // after reaching 25%
)

// Spec is the demo's rollout: 10% → 25% → 50% → 100% with pauses, analysed
// on error rate and latency every half second, with a critical error-rate
// trigger in the request path. Durations are divided by speed.
func Spec(listen, stableURL, canaryURL string, speed float64) []byte {
	d := func(v time.Duration) string {
		return (time.Duration(float64(v) / speed)).Round(time.Millisecond).String()
	}
	return fmt.Appendf(nil, `apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: %s}
spec:
  listen: %s
  stable: {url: %s}
  canary: {url: %s}
  progressDeadline: %s
  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: %s}
        - setWeight: 25
        - pause: {duration: %s}
        - setWeight: 50
        - pause: {duration: %s}
        - setWeight: 100
  analysis:
    interval: %s
    confidence: 0.95
    metrics:
      - {name: error_rate,  test: two-proportion-z, maxIncrease: 2%%}
      - {name: latency_p50, test: mann-whitney-u,  maxRatio: 1.3}
  rollbackTriggers:
    critical:
      - error_rate > 10%%
`, Name, listen, stableURL, canaryURL, d(2*time.Minute), d(5*time.Second), d(30*time.Second), d(10*time.Second), d(500*time.Millisecond))
}

// Run plays the demo: two services on loopback, Guardian in front of them,
// load, the canary degrading (+50 ms) five seconds after it reaches 25%,
// the live dashboard, and the final report. It returns when the rollout
// ends, ctx ends, or a two-minute bound passes.
func Run(ctx context.Context, o Options) (Result, error) {
	var res Result
	if o.Start == nil || o.Out == nil {
		return res, errors.New("demo: Options.Start and Options.Out are required")
	}
	speed := o.Speed
	if speed == 0 {
		speed = 1
	}
	if !(speed > 0 && speed <= 20) {
		return res, fmt.Errorf("demo: speed %v is not between 0 and 20", o.Speed)
	}
	rate := o.Rate
	if rate == 0 {
		rate = 500
	}
	if rate < 50 || rate > 2000 {
		return res, fmt.Errorf("demo: rate %d is not between 50 and 2000 req/s", rate)
	}
	refresh, plainEvery := o.Refresh, o.PlainEvery
	if refresh <= 0 {
		refresh = 500 * time.Millisecond
	}
	if plainEvery <= 0 {
		plainEvery = 5 * time.Second
	}

	stable, canary := NewService("stable", baseDelay), NewService("canary", baseDelay)
	stableURL, stopStable, err := listen(stable)
	if err != nil {
		return res, err
	}
	defer stopStable()
	canaryURL, stopCanary, err := listen(canary)
	if err != nil {
		return res, err
	}
	defer stopCanary()
	proxyAddr, err := freeLoopback()
	if err != nil {
		return res, err
	}
	ro, stop, err := o.Start(Spec(proxyAddr, stableURL, canaryURL, speed))
	if err != nil {
		return res, fmt.Errorf("demo: starting guardian: %w", err)
	}
	defer func() {
		if stop != nil {
			_ = stop()
		}
	}()

	fmt.Fprintf(o.Out, "Guardian demo: stable %s and canary %s (both ~%s), proxy http://%s, %d req/s.\n",
		stableURL, canaryURL, baseDelay, proxyAddr, rate)
	fmt.Fprintf(o.Out, "The canary will get %s slower %s after it reaches 25%%; Guardian should roll it back.\n", extraDelay, time.Duration(float64(degradeWait)/speed))
	if o.Note != nil {
		fmt.Fprintln(o.Out, o.Note(Name))
	}
	fmt.Fprintln(o.Out)

	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	loadDone := make(chan LoadResult, 1)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	go func() {
		r, _ := Load{URL: "http://" + proxyAddr + "/", Rate: rate, Duration: 2 * time.Minute, Workers: 64}.Run(loadCtx)
		loadDone <- r
	}()

	var degradedAt atomic.Int64
	var at25 time.Time
	lastStage, lastPrint := "", time.Time{}
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	draw := func(s driver.Status, force bool) {
		d := driver.Dashboard(s)
		d.Color = o.TTY
		text := report.Dashboard(d)
		footer := fmt.Sprintf("\nload: %d req/s · stable served %d · canary served %d (%d errors)", rate, stable.Served(), canary.Served(), canary.Errors())
		if t := degradedAt.Load(); t != 0 {
			footer += fmt.Sprintf(" · canary degraded +%s %s ago", extraDelay, report.FormatDuration(time.Since(time.Unix(0, t))))
		}
		switch {
		case o.TTY:
			fmt.Fprint(o.Out, "\x1b[H\x1b[2J"+text+footer+"\n")
		case force || d.Stage != lastStage || time.Since(lastPrint) >= plainEvery:
			fmt.Fprintf(o.Out, "---- %s ----\n%s%s\n\n", time.Now().Format("15:04:05"), text, footer)
			lastPrint = time.Now()
		}
		lastStage = d.Stage
	}
	for {
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("demo: the rollout did not end in time: %w", ctx.Err())
		case <-ro.Done():
		case <-tick.C:
		}
		s, err := ro.Status(0)
		if err != nil {
			return res, err
		}
		if s.Weights["canary"] >= 25 && at25.IsZero() && !s.Phase.Done() {
			at25 = time.Now()
		}
		if !at25.IsZero() && degradedAt.Load() == 0 && time.Since(at25) >= time.Duration(float64(degradeWait)/speed) {
			canary.SetDelay(baseDelay + extraDelay)
			now := time.Now()
			degradedAt.Store(now.UnixNano())
			res.Degraded = now
			if !o.TTY {
				fmt.Fprintf(o.Out, ">>> %s: the canary degrades: latency %s → %s\n\n", now.Format("15:04:05"), baseDelay, baseDelay+extraDelay)
			}
		}
		if s.Phase.Done() {
			res.Ended, res.Phase = time.Now(), s.Phase
			draw(s, true)
			break
		}
		draw(s, false)
	}
	stopLoad()
	res.Load = <-loadDone
	res.Report, err = ro.Report()
	if err != nil {
		return res, err
	}
	fmt.Fprintln(o.Out)
	if !res.Degraded.IsZero() && res.Phase == rollout.RolledBack {
		fmt.Fprintf(o.Out, "Rolled back %s after the canary degraded.\n\n", res.Ended.Sub(res.Degraded).Round(10*time.Millisecond))
	}
	fmt.Fprint(o.Out, res.Report.Markdown())
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		stop = nil
		return res, fmt.Errorf("demo: stopping guardian: %w", err)
	}
	stop = nil
	return res, nil
}

func freeLoopback() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// listen serves h on a random loopback port.
func listen(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// Summary is one line saying how the demo ended.
func (r Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", Name, r.Phase)
	if r.Phase == rollout.RolledBack && !r.Degraded.IsZero() {
		fmt.Fprintf(&b, " %s after the canary degraded", r.Ended.Sub(r.Degraded).Round(10*time.Millisecond))
	}
	fmt.Fprintf(&b, "; %d requests sent, %d answered OK", r.Load.Sent, r.Load.OK)
	return b.String()
}

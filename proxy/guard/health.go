package guard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// HealthSink receives the verdict of each health check round per version.
// *Guard implements it.
type HealthSink interface {
	HealthCheckFailed(version int)
	HealthCheckOK(version int)
}

// Target is one endpoint's health URL, for example
// http://10.0.0.7:8080/healthz, and the index of the version it serves.
type Target struct {
	Version int
	URL     string
}

// Result is one probe's outcome.
type Result struct {
	Target  Target
	OK      bool
	Status  int // HTTP status, 0 when there was no answer
	Err     error
	Latency time.Duration
}

// HealthChecker actively probes endpoints' health URLs and feeds the verdicts
// to a sink (the guard's health_check_failures trigger). It is the driver
// that owns the clock: Run ticks, CheckOnce is one round. A round fails for
// a version when any of its endpoints fails: a canary with a dead instance is
// a canary to take back.
type HealthChecker struct {
	// Targets to probe each round.
	Targets []Target
	// Sink receives per-version verdicts; nil means results are only kept.
	Sink HealthSink
	// Interval between rounds in Run (default 5s).
	Interval time.Duration
	// Timeout of one probe (default 2s, capped at Interval).
	Timeout time.Duration
	// Client sends the probes. Nil means a client that ignores proxy
	// settings and does not follow redirects.
	Client *http.Client
	// OnResult, when set, sees every probe (for endpoint ejection or logs).
	OnResult func(Result)
	// Logger receives state changes of endpoints. Nil means slog.Default().
	Logger *slog.Logger

	once   sync.Once
	mu     sync.Mutex
	health map[string]bool
}

func (c *HealthChecker) init() {
	c.once.Do(func() {
		if c.Interval <= 0 {
			c.Interval = 5 * time.Second
		}
		if c.Timeout <= 0 {
			c.Timeout = 2 * time.Second
		}
		c.Timeout = min(c.Timeout, c.Interval)
		if c.Client == nil {
			c.Client = &http.Client{
				Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 2 * c.Interval},
				CheckRedirect: func(*http.Request, []*http.Request) error {
					return http.ErrUseLastResponse
				},
			}
		}
		if c.Logger == nil {
			c.Logger = slog.Default()
		}
		c.health = make(map[string]bool)
	})
}

// Validate reports the first bad target.
func (c *HealthChecker) Validate() error {
	if len(c.Targets) == 0 {
		return errors.New("health: Targets is empty")
	}
	for i, t := range c.Targets {
		if t.Version < 0 {
			return fmt.Errorf("health: Targets[%d]: Version %d is not a version index", i, t.Version)
		}
		req, err := http.NewRequest(http.MethodGet, t.URL, nil)
		if err != nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") || req.URL.Host == "" {
			return fmt.Errorf("health: Targets[%d]: URL %q is not an http(s) URL", i, t.URL)
		}
	}
	return nil
}

// Run probes every Interval until ctx ends, starting at once.
func (c *HealthChecker) Run(ctx context.Context) error {
	if err := c.Validate(); err != nil {
		return err
	}
	c.init()
	tick := time.NewTicker(c.Interval)
	defer tick.Stop()
	for {
		c.CheckOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// CheckOnce probes every target concurrently, reports each version's verdict
// to the sink, and returns the probes' results in target order.
func (c *HealthChecker) CheckOnce(ctx context.Context) []Result {
	c.init()
	results := make([]Result, len(c.Targets))
	var wg sync.WaitGroup
	for i, t := range c.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = c.probe(ctx, t)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return results // a cancelled round says nothing about the endpoints
	}
	failed := map[int]bool{}
	for _, r := range results {
		failed[r.Target.Version] = failed[r.Target.Version] || !r.OK
		c.note(r)
		if c.OnResult != nil {
			c.OnResult(r)
		}
	}
	if c.Sink != nil {
		for v, f := range failed {
			if f {
				c.Sink.HealthCheckFailed(v)
			} else {
				c.Sink.HealthCheckOK(v)
			}
		}
	}
	return results
}

func (c *HealthChecker) probe(ctx context.Context, t Target) Result {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	start := time.Now()
	r := Result{Target: t}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		r.Err = err
		return r
	}
	req.Header.Set("User-Agent", "guardian-health-check")
	resp, err := c.Client.Do(req)
	r.Latency = time.Since(start)
	if err != nil {
		r.Err = err
		return r
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	r.Status = resp.StatusCode
	r.OK = resp.StatusCode >= 200 && resp.StatusCode < 400
	if !r.OK {
		r.Err = fmt.Errorf("health check answered %d", resp.StatusCode)
	}
	return r
}

func (c *HealthChecker) note(r Result) {
	c.mu.Lock()
	prev, seen := c.health[r.Target.URL]
	c.health[r.Target.URL] = r.OK
	c.mu.Unlock()
	if seen && prev != r.OK {
		if r.OK {
			c.Logger.Info("health: endpoint recovered", "url", r.Target.URL, "version", r.Target.Version)
		} else {
			c.Logger.Warn("health: endpoint failing", "url", r.Target.URL, "version", r.Target.Version, "err", r.Err)
		}
	}
}

// Healthy reports the last probe of url: true when it passed or was never
// probed (endpoints are innocent until a check says otherwise).
func (c *HealthChecker) Healthy(url string) bool {
	c.init()
	c.mu.Lock()
	defer c.mu.Unlock()
	ok, seen := c.health[url]
	return ok || !seen
}

var _ HealthSink = (*Guard)(nil)

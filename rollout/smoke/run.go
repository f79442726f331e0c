package smoke

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
)

// Options say where and how to run a suite.
type Options struct {
	// Target is the base URL of the version under test (the canary URL or
	// a preview route); HTTP and flag paths are joined to it.
	Target string
	// Concurrency bounds the tests in flight; 0 means the suite's default,
	// then DefaultConcurrency.
	Concurrency int
	// HTTPClient sends HTTP and flag requests; nil means a client with a
	// fresh transport that does not follow redirects. Per-test timeouts come
	// from contexts, not the client.
	HTTPClient *http.Client
	// Header is added to every HTTP and flag request, e.g. the header that
	// steers Guardian's proxy to the preview version.
	Header http.Header
	// GRPCTarget is the host:port for gRPC tests that name no address.
	GRPCTarget string
	// Env resolves SQL tests' DSN variables; nil means os.Getenv.
	Env func(string) string
}

// Result is the outcome of one suite run.
type Result struct {
	Suite    string
	Passed   bool
	Started  time.Time
	Duration time.Duration
	Tests    []TestResult // in suite order
}

// TestResult is the outcome of one test after its retries.
type TestResult struct {
	Name     string
	Kind     string // http, sql, flag, grpc
	Passed   bool
	Attempts int
	// Duration covers every attempt and the backoff between them.
	Duration time.Duration
	// Latency is the last attempt's time to a complete answer.
	Latency time.Duration
	// Reason says why the last attempt failed; empty when the test passed.
	Reason string
}

// Failed returns the tests that did not pass.
func (r Result) Failed() []TestResult {
	var out []TestResult
	for _, t := range r.Tests {
		if !t.Passed {
			out = append(out, t)
		}
	}
	return out
}

// settings are a test's effective timing after defaults.
type settings struct {
	timeout, backoff, budget time.Duration
	retries                  int
}

func (s *Suite) settingsFor(t *Test) settings {
	out := settings{timeout: DefaultTimeout, backoff: DefaultBackoff, retries: DefaultRetries}
	d := s.Defaults
	if d.Timeout != nil {
		out.timeout = d.Timeout.D()
	}
	if d.Backoff != nil {
		out.backoff = d.Backoff.D()
	}
	if d.LatencyBudget != nil {
		out.budget = d.LatencyBudget.D()
	}
	if d.Retries != nil {
		out.retries = *d.Retries
	}
	if t.Timeout != nil {
		out.timeout = t.Timeout.D()
	}
	if t.Backoff != nil {
		out.backoff = t.Backoff.D()
	}
	if t.LatencyBudget != nil {
		out.budget = t.LatencyBudget.D()
	}
	if t.Retries != nil {
		out.retries = *t.Retries
	}
	return out
}

// runner holds what tests of one run share: the HTTP client and the
// database handles, opened once per DSN.
type runner struct {
	opts   Options
	client *http.Client

	// schemas are compiled once per run rather than stored in the suite, so
	// concurrent runs of one suite share nothing mutable.
	schemas map[*Expect]*openapi3.Schema

	mu  sync.Mutex
	dbs map[string]*sql.DB
}

// Run runs every test of the suite against opts.Target with bounded
// concurrency, retrying each failed test with exponential backoff, and
// returns when all are done or ctx ends. It never returns an error: a test
// that cannot run (an invalid suite, a missing DSN, ctx cancelled) fails with
// the reason.
func Run(ctx context.Context, s *Suite, opts Options) Result {
	start := time.Now()
	res := Result{Suite: s.Metadata.Name, Started: start, Tests: make([]TestResult, len(s.Tests))}
	for i := range s.Tests {
		res.Tests[i] = TestResult{Name: s.Tests[i].Name, Kind: s.Tests[i].Kind()}
	}
	if err := s.Validate(); err != nil {
		for i := range res.Tests {
			res.Tests[i].Reason = "invalid suite: " + err.Error()
		}
		res.Duration = time.Since(start)
		return res
	}
	r := &runner{opts: opts, client: opts.HTTPClient, dbs: map[string]*sql.DB{}, schemas: map[*Expect]*openapi3.Schema{}}
	for i := range s.Tests {
		t := &s.Tests[i]
		expects := []*Expect{t.Expect}
		for j := range t.Journey {
			expects = append(expects, t.Journey[j].Expect)
		}
		for _, e := range expects {
			if e != nil && e.Schema != nil {
				// Validate compiled it already, so this cannot fail.
				r.schemas[e], _ = compileSchema(e.Schema, e.SchemaDialect)
			}
		}
	}
	if r.client == nil {
		r.client = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			// A smoke test checks what the version itself answers; a
			// redirect is that answer, not something to follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		defer r.client.CloseIdleConnections()
	}
	if r.opts.Env == nil {
		r.opts.Env = os.Getenv
	}
	defer r.closeDBs()

	n := opts.Concurrency
	if n <= 0 {
		n = s.Defaults.Concurrency
	}
	if n <= 0 {
		n = DefaultConcurrency
	}
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i := range s.Tests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				res.Tests[i].Reason = "not run: " + ctx.Err().Error()
				return
			}
			defer func() { <-sem }()
			res.Tests[i] = r.runTest(ctx, &s.Tests[i], s.settingsFor(&s.Tests[i]))
		}()
	}
	wg.Wait()

	res.Passed = true
	for _, t := range res.Tests {
		res.Passed = res.Passed && t.Passed
	}
	res.Duration = time.Since(start)
	return res
}

func (r *runner) runTest(ctx context.Context, t *Test, set settings) (out TestResult) {
	out = TestResult{Name: t.Name, Kind: t.Kind()}
	start := time.Now()
	defer func() { out.Duration = time.Since(start) }()
	backoff := set.backoff
	for attempt := 1; ; attempt++ {
		out.Attempts = attempt
		latency, err := r.attempt(ctx, t, set.timeout)
		out.Latency = latency
		if err == nil && set.budget > 0 && latency > set.budget {
			err = fmt.Errorf("latency %s over budget %s", latency.Round(time.Millisecond), set.budget)
		}
		if err == nil {
			out.Passed, out.Reason = true, ""
			return out
		}
		out.Reason = err.Error()
		if attempt > set.retries || ctx.Err() != nil {
			return out
		}
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return out
		case <-timer.C:
		}
		backoff *= 2
	}
}

func (r *runner) attempt(ctx context.Context, t *Test, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var err error
	switch {
	case t.HTTP != nil:
		err = r.checkHTTP(ctx, t.HTTP, t.Expect)
	case t.SQL != nil:
		err = r.checkSQL(ctx, t.SQL)
	case t.Flag != nil:
		err = r.checkFlag(ctx, t.Flag)
	case t.GRPC != nil:
		err = r.checkGRPC(ctx, t.GRPC)
	case len(t.Journey) > 0:
		err = r.checkJourney(ctx, t.Journey)
	default:
		err = errors.New("test has no check")
	}
	latency := time.Since(start)
	if err != nil && ctx.Err() == context.DeadlineExceeded && !strings.Contains(err.Error(), "timed out") {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return latency, err
}

package demo

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Load is a paced HTTP GET load against one loopback URL. It is bounded by
// Duration and by MaxRequests, whichever comes first, so a test or a demo
// can never run away.
type Load struct {
	URL string
	// Rate in requests per second (required).
	Rate int
	// Duration bounds the run (required).
	Duration time.Duration
	// MaxRequests bounds the number of requests; 0 means Rate × Duration.
	MaxRequests int64
	// Workers send concurrently (default 32): enough to keep Rate with the
	// slowest backend's latency.
	Workers int
	// Client; nil means a keep-alive client sized for Workers.
	Client *http.Client
	// OnResponse, when set, is called after each response with its status
	// (0 for a transport error).
	OnResponse func(status int)
}

// LoadResult counts what the load saw.
type LoadResult struct {
	Sent   int64 // requests started
	OK     int64 // 2xx answers
	Errors int64 // other HTTP statuses
	Failed int64 // transport errors (no answer)
	Took   time.Duration
}

// ErrNotLoopback refuses a load aimed anywhere but this machine.
var ErrNotLoopback = errors.New("demo: load target must be a loopback address")

// Run sends the load until Duration, MaxRequests or ctx ends it.
func (l Load) Run(ctx context.Context) (LoadResult, error) {
	if l.Rate <= 0 || l.Duration <= 0 {
		return LoadResult{}, errors.New("demo: Load needs a positive Rate and Duration")
	}
	u, err := url.Parse(l.URL)
	if err != nil {
		return LoadResult{}, err
	}
	if ip := net.ParseIP(u.Hostname()); (ip == nil || !ip.IsLoopback()) && u.Hostname() != "localhost" {
		return LoadResult{}, ErrNotLoopback
	}
	workers := l.Workers
	if workers <= 0 {
		workers = 32
	}
	limit := l.MaxRequests
	if limit <= 0 {
		limit = int64(float64(l.Rate) * l.Duration.Seconds())
	}
	client := l.Client
	if client == nil {
		tr := &http.Transport{MaxIdleConns: workers, MaxIdleConnsPerHost: workers, IdleConnTimeout: 30 * time.Second}
		defer tr.CloseIdleConnections()
		client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	ctx, cancel := context.WithTimeout(ctx, l.Duration)
	defer cancel()

	var res LoadResult
	var next atomic.Int64
	start := time.Now()
	period := time.Second / time.Duration(l.Rate)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > limit {
					return
				}
				// Request n is due at start + n·period: pacing by schedule,
				// not by sleeping between requests, keeps the rate when some
				// answers are slow.
				if wait := time.Until(start.Add(time.Duration(n) * period)); wait > 0 {
					t := time.NewTimer(wait)
					select {
					case <-ctx.Done():
						t.Stop()
						return
					case <-t.C:
					}
				} else if ctx.Err() != nil {
					return
				}
				atomic.AddInt64(&res.Sent, 1)
				status := get(ctx, client, l.URL)
				switch {
				case status == 0:
					if ctx.Err() != nil {
						return
					}
					atomic.AddInt64(&res.Failed, 1)
				case status/100 == 2:
					atomic.AddInt64(&res.OK, 1)
				default:
					atomic.AddInt64(&res.Errors, 1)
				}
				if l.OnResponse != nil {
					l.OnResponse(status)
				}
			}
		}()
	}
	wg.Wait()
	res.Took = time.Since(start)
	return res, nil
}

func get(ctx context.Context, c *http.Client, u string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

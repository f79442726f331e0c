package demo

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
)

func TestServiceSwitchesBehaviour(t *testing.T) {
	s := NewService("canary", 0)
	srv := httptest.NewServer(s)
	defer srv.Close()
	get := func() int {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if v := resp.Header.Get("X-Version"); v != "canary" {
			t.Errorf("X-Version %q", v)
		}
		return resp.StatusCode
	}
	for range 20 {
		if c := get(); c != 200 {
			t.Fatalf("healthy service answered %d", c)
		}
	}
	s.SetErrorRate(1)
	for range 20 {
		if c := get(); c != 500 {
			t.Fatalf("failing service answered %d", c)
		}
	}
	if s.Served() != 40 || s.Errors() != 20 {
		t.Errorf("served %d errors %d, want 40 and 20", s.Served(), s.Errors())
	}
	s.SetErrorRate(7) // clamped
	if s.ErrorRate() != 1 {
		t.Errorf("error rate %v after SetErrorRate(7), want 1", s.ErrorRate())
	}
	s.SetErrorRate(0)
	s.SetDelay(30 * time.Millisecond)
	start := time.Now()
	get()
	if took := time.Since(start); took < 27*time.Millisecond {
		t.Errorf("a 30ms service answered in %s", took)
	}
}

func TestLoadIsBoundedAndPaced(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1)%10 == 0 {
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()

	t.Run("count bound", func(t *testing.T) {
		hits.Store(0)
		res, err := Load{URL: srv.URL, Rate: 1000, Duration: 10 * time.Second, MaxRequests: 200}.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent != 200 || hits.Load() != 200 || res.OK != 180 || res.Errors != 20 {
			t.Errorf("%+v, %d hits; want 200 sent, 180 OK, 20 errors", res, hits.Load())
		}
		// Paced: 200 requests at 1,000/s take about 0.2 s, not a burst.
		if res.Took < 150*time.Millisecond {
			t.Errorf("200 requests at 1000/s took %s: not paced", res.Took)
		}
	})
	t.Run("time bound", func(t *testing.T) {
		res, err := Load{URL: srv.URL, Rate: 100, Duration: 300 * time.Millisecond}.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent > 35 || res.Took > 2*time.Second {
			t.Errorf("%+v: a 300ms load at 100/s ran over its bound", res)
		}
	})
	t.Run("loopback only", func(t *testing.T) {
		_, err := Load{URL: "http://192.0.2.1/", Rate: 10, Duration: time.Second}.Run(context.Background())
		if !errors.Is(err, ErrNotLoopback) {
			t.Errorf("err %v, want ErrNotLoopback", err)
		}
	})
}

func TestSpecParsesAndScales(t *testing.T) {
	raw := Spec("127.0.0.1:8080", "http://127.0.0.1:1", "http://127.0.0.1:2", 2)
	specs, err := rollout.Parse("demo.yaml", raw)
	if err != nil || len(specs) != 1 || specs[0].Name != Name {
		t.Fatalf("the demo spec does not parse: %v", err)
	}
	y := string(raw)
	for _, want := range []string{"pause: {duration: 2.5s}", "pause: {duration: 15s}", "interval: 250ms", "name: checkout"} {
		if !strings.Contains(y, want) {
			t.Errorf("spec at speed 2 lacks %q:\n%s", want, y)
		}
	}
}

package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestProxyCommandEndToEnd(t *testing.T) {
	stable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "stable") }))
	defer stable.Close()
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "canary broke", 500) }))
	defer canary.Close()
	listen, adminAddr := freeAddr(t), freeAddr(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetArgs([]string{"proxy", "--listen", listen, "--stable", stable.URL, "--canary", canary.URL,
			"--canary-weight", "0", "--admin", adminAddr, "--critical", "error_rate > 5%", "--drain", "5s"})
		done <- root.ExecuteContext(ctx)
	}()
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get("http://" + adminAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	getBody := func() (int, string) {
		resp, err := c.Get("http://" + listen + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, body := getBody(); code != 200 || body != "stable" {
		t.Fatalf("at canary 0%%: %d %q, want 200 stable", code, body)
	}
	req, _ := http.NewRequest("PUT", "http://"+adminAddr+"/api/v1/weights", strings.NewReader(`{"canary": 100}`))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT weights: %s", resp.Status)
	}
	// Every request now goes to the broken canary until the guard cuts it.
	failures := 0
	for range 200 {
		code, _ := getBody()
		if code == 200 {
			break
		}
		failures++
	}
	if failures == 0 || failures > 25 {
		t.Fatalf("%d failed requests before the guard moved traffic back, want 1..25", failures)
	}
	if code, body := getBody(); code != 200 || body != "stable" {
		t.Fatalf("after the guard fired: %d %q, want 200 stable", code, body)
	}
	resp, err = c.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `guardian_requests_total{code="5xx",route="default",version="canary"}`) {
		t.Errorf("/metrics lacks the canary's 5xx count:\n%s", metrics)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("proxy command returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proxy command did not stop after cancel")
	}
}

func TestProxyCommandUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing flags", []string{"proxy", "--listen", "127.0.0.1:0"}, "required"},
		{"bad weight", []string{"proxy", "--listen", "127.0.0.1:0", "--stable", "127.0.0.1:1", "--canary", "127.0.0.1:2", "--canary-weight", "101"}, "--canary-weight"},
		{"bad endpoint", []string{"proxy", "--listen", "127.0.0.1:0", "--stable", "ftp://x:1", "--canary", "127.0.0.1:2"}, "routes[0].versions[0].endpoints[0]"},
		{"bad trigger", []string{"proxy", "--listen", "127.0.0.1:0", "--stable", "127.0.0.1:1", "--canary", "127.0.0.1:2", "--critical", "vibes > 3"}, "--critical"},
		{"config and flags", []string{"proxy", "--config", "x.yaml", "--listen", "127.0.0.1:0"}, "exclusive"},
		{"missing config file", []string{"proxy", "--config", "/nonexistent/guardian.yaml"}, "/nonexistent/guardian.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newRoot()
			root.SetArgs(tc.args)
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			err := root.Execute()
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want exit 2 mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestProxyCommandReloadsOnSIGHUP(t *testing.T) {
	one := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "one") }))
	defer one.Close()
	two := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "two") }))
	defer two.Close()
	listen, adminAddr := freeAddr(t), freeAddr(t)
	file := t.TempDir() + "/guardian.yaml"
	write := func(to string) {
		cfg := "listeners: [{addr: " + listen + "}]\nroutes:\n  - name: app\n    versions:\n      - {name: stable, endpoints: [" + to + "]}\n"
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(one.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetArgs([]string{"proxy", "--config", file, "--admin", adminAddr, "--drain", "5s"})
		done <- root.ExecuteContext(ctx)
	}()
	c := &http.Client{Timeout: 5 * time.Second}
	body := func() string {
		resp, err := c.Get("http://" + listen + "/")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := body()
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("proxy answers %q, want %q", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("one")
	write(two.URL)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("two")
	// A broken file is refused whole: the proxy keeps serving "two".
	if err := os.WriteFile(file, []byte("routes: [{name: app, versions: []}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	time.Sleep(200 * time.Millisecond)
	if got := body(); got != "two" {
		t.Fatalf("after a refused reload the proxy answers %q, want two", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("proxy command returned %v", err)
	}
}

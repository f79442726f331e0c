package hook

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type payload struct {
	Rollout string `json:"rollout"`
	Reason  string `json:"reason"`
}

var pl = payload{Rollout: "checkout", Reason: "error_rate > 5%"}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestExecSuccessGetsPayloadAndEnv(t *testing.T) {
	out := Run(context.Background(), Action{
		Name: "undo",
		Exec: sh(`cat; echo; echo "hook=$GUARDIAN_HOOK region=$REGION"; echo oops >&2`),
		Env:  map[string]string{"REGION": "eu"},
	}, pl)
	if len(out) != 1 {
		t.Fatalf("got %d outcomes, want 1: %+v", len(out), out)
	}
	o := out[0]
	if !o.OK || o.ExitCode != 0 || o.Attempt != 1 || o.Action != "undo" || o.Err != "" {
		t.Fatalf("outcome = %+v, want OK exit 0 attempt 1", o)
	}
	for _, want := range []string{`{"rollout":"checkout","reason":"error_rate \u003e 5%"}`, "hook=undo region=eu", "oops"} {
		if !strings.Contains(o.Output, want) {
			t.Errorf("output %q lacks %q", o.Output, want)
		}
	}
	if !Succeeded(out) {
		t.Error("Succeeded = false")
	}
}

func TestExecFailureIsRetriedAndRecorded(t *testing.T) {
	out := Run(context.Background(), Action{Name: "fail", Exec: sh("echo failing; exit 3"), Retries: 2, Backoff: time.Millisecond}, pl)
	if len(out) != 3 {
		t.Fatalf("got %d outcomes, want 3 (1 + 2 retries): %+v", len(out), out)
	}
	for i, o := range out {
		if o.OK || o.ExitCode != 3 || o.Attempt != i+1 || !strings.Contains(o.Err, "exit status 3") || !strings.Contains(o.Output, "failing") {
			t.Errorf("attempt %d = %+v, want exit 3 not OK", i+1, o)
		}
	}
	if Succeeded(out) {
		t.Error("Succeeded = true")
	}
}

func TestExecRetryThenSuccess(t *testing.T) {
	counter := filepath.Join(t.TempDir(), "n")
	script := `n=$(cat "$F" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$F"; echo attempt $n; [ $n -ge 3 ]`
	out := Run(context.Background(), Action{Name: "flaky", Exec: sh(script), Env: map[string]string{"F": counter}, Retries: 5, Backoff: time.Millisecond}, pl)
	if len(out) != 3 || !Succeeded(out) || out[0].OK || out[1].OK || out[0].ExitCode != 1 {
		t.Fatalf("outcomes = %+v, want two failures then success", out)
	}
	if !strings.Contains(out[2].Output, "attempt 3") {
		t.Errorf("third output = %q", out[2].Output)
	}
}

func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	start := time.Now()
	// The background sleep holds the output pipe: without the group kill and
	// WaitDelay, Run would wait for it.
	out := Run(context.Background(), Action{Name: "slow", Exec: sh("sleep 30 & sleep 30; wait"), Timeout: 100 * time.Millisecond}, pl)
	elapsed := time.Since(start)
	if len(out) != 1 || out[0].OK || !strings.Contains(out[0].Err, "timed out after 100ms") || out[0].ExitCode != -1 {
		t.Fatalf("outcome = %+v, want a timeout", out)
	}
	if elapsed > 10*time.Second {
		t.Fatalf("Run took %v with a 100ms timeout", elapsed)
	}
}

func TestExecMissingBinary(t *testing.T) {
	out := Run(context.Background(), Action{Name: "missing", Exec: []string{"/nonexistent/guardian-hook"}}, pl)
	if len(out) != 1 || out[0].OK || out[0].ExitCode != -1 || !strings.Contains(out[0].Err, "no such file") {
		t.Fatalf("outcome = %+v, want a start failure", out)
	}
}

func TestOutputTruncatedAndRedacted(t *testing.T) {
	out := Run(context.Background(), Action{
		Name: "noisy",
		Exec: sh(`echo "token is $API_TOKEN"; echo "password=hunter22 Authorization: Bearer abc.def"; head -c 10000 /dev/zero | tr '\0' a`),
		Env:  map[string]string{"API_TOKEN": "s3cr3t-value"},
	}, pl)
	o := out[0]
	if !o.OK {
		t.Fatalf("outcome = %+v", o)
	}
	for _, secret := range []string{"s3cr3t-value", "hunter22", "abc.def"} {
		if strings.Contains(o.Output, secret) {
			t.Errorf("output leaks %q: %q", secret, o.Output[:200])
		}
	}
	if !strings.Contains(o.Output, "token is [REDACTED]") {
		t.Errorf("output %q lacks the redaction marker", o.Output[:100])
	}
	if !strings.HasSuffix(o.Output, "bytes]") || !strings.Contains(o.Output, "[truncated ") || len(o.Output) > MaxOutput+64 {
		t.Errorf("output is %d bytes ending %q, want truncation to %d", len(o.Output), o.Output[len(o.Output)-40:], MaxOutput)
	}
}

func TestWebhookFailsTwiceThenSucceeds(t *testing.T) {
	var calls atomic.Int32
	var lastBody atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		lastBody.Store(string(b))
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Guardian-Hook") != "notify-oncall" || r.Header.Get("Authorization") != "Bearer tkn-123" {
			http.Error(w, "bad request shape", http.StatusBadRequest)
			return
		}
		if calls.Add(1) <= 2 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "rolled back")
	}))
	defer srv.Close()

	out := Run(context.Background(), Action{
		Name: "notify-oncall", Webhook: srv.URL + "/undo", Retries: 3, Backoff: time.Millisecond,
		Headers: map[string]string{"Authorization": "Bearer tkn-123"},
	}, pl)
	if len(out) != 3 {
		t.Fatalf("got %d outcomes, want 3: %+v", len(out), out)
	}
	for i, o := range out[:2] {
		if o.OK || o.HTTPStatus != 503 || !strings.Contains(o.Err, "503") || !strings.Contains(o.Output, "try later") {
			t.Errorf("attempt %d = %+v, want 503", i+1, o)
		}
	}
	if last := out[2]; !last.OK || last.HTTPStatus != 200 || last.Output != "rolled back" || last.Attempt != 3 {
		t.Errorf("last attempt = %+v, want 200 OK", last)
	}
	var got payload
	if err := json.Unmarshal([]byte(lastBody.Load().(string)), &got); err != nil || got != pl {
		t.Errorf("webhook body = %v (%v), want %+v", lastBody.Load(), err, pl)
	}
}

func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	out := Run(context.Background(), Action{Name: "hang", Webhook: srv.URL, Timeout: 100 * time.Millisecond, Retries: 1, Backoff: time.Millisecond}, pl)
	if len(out) != 2 {
		t.Fatalf("got %d outcomes, want 2: %+v", len(out), out)
	}
	for _, o := range out {
		if o.OK || o.HTTPStatus != 0 || o.Err != "timed out after 100ms" {
			t.Errorf("outcome = %+v, want timeout", o)
		}
	}
}

func TestWebhookErrorsHideURLSecrets(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.Listener.Addr().String()
	srv.Close() // nothing listens there now
	out := Run(context.Background(), Action{Name: "dead", Webhook: "http://user:pa55word@" + addr + "/hook?key=abcd1234"}, pl)
	if len(out) != 1 || out[0].OK || out[0].Err == "" {
		t.Fatalf("outcome = %+v, want a connection error", out)
	}
	if strings.Contains(out[0].Err, "pa55word") || strings.Contains(out[0].Err, "abcd1234") {
		t.Fatalf("error leaks URL secrets: %s", out[0].Err)
	}
}

func TestContextCancelStopsRetries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	out := Run(ctx, Action{Name: "x", Exec: sh("exit 1"), Retries: 5, Backoff: time.Hour}, pl)
	if len(out) != 1 || out[0].OK {
		t.Fatalf("outcomes = %+v, want exactly the first failed attempt", out)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("Run did not return when its context ended")
	}

	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	out = Run(done, Action{Name: "y", Exec: sh("exit 0")}, pl)
	if len(out) != 1 || out[0].OK || !strings.Contains(out[0].Err, "not run") {
		t.Fatalf("outcome on a done context = %+v, want not run", out)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		a    Action
		want string
	}{
		{"ok exec", Action{Name: "a", Exec: []string{"true"}}, ""},
		{"ok webhook", Action{Name: "a", Webhook: "https://hooks.example/x"}, ""},
		{"no name", Action{Exec: []string{"true"}}, "name is empty"},
		{"both", Action{Name: "a", Exec: []string{"true"}, Webhook: "http://x"}, "both exec and webhook"},
		{"neither", Action{Name: "a"}, "neither exec nor webhook"},
		{"empty argv0", Action{Name: "a", Exec: []string{""}}, "exec[0] is empty"},
		{"bad url", Action{Name: "a", Webhook: "ftp://x?token=zzzz"}, "not an http(s) URL"},
		{"negative timeout", Action{Name: "a", Exec: []string{"true"}, Timeout: -1}, "timeout"},
		{"negative retries", Action{Name: "a", Exec: []string{"true"}, Retries: -1}, "retries"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.a.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), "zzzz") {
				t.Fatalf("error leaks the URL query: %v", err)
			}
			if out := Run(context.Background(), c.a, nil); len(out) != 1 || out[0].OK {
				t.Fatalf("Run of an invalid action = %+v", out)
			}
		})
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/bench/demo"
	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/driver"
	"github.com/deployment-guardian/guardian/rollout/store"
)

// clientCLI runs one command in process and returns stdout, the error
// line main would print, and the exit code main would use.
func clientCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return out.String(), errOut.String(), 0
	}
	code := 2
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	return out.String(), errOut.String() + err.Error(), code
}

// clientRuntime runs a rollout in process (the same runtime as `guardian
// run`) with a token-protected admin API on a loopback port.
func clientRuntime(t *testing.T, token string) (admin string, rt *runtime) {
	t.Helper()
	stable, canary := demo.NewService("stable", 0), demo.NewService("canary", 0)
	specs, err := rollout.Parse("checkout.yaml", []byte(fmt.Sprintf(`apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: %s
  stable: {url: %s}
  canary: {url: %s}
  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: 1h}
        - setWeight: 50
        - pause: {}
        - setWeight: 100
  analysis:
    metrics:
      - {name: error_rate, maxIncrease: 2%%}
`, e2eAddr(t), e2eServe(t, stable), e2eServe(t, canary))))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rt, err = startRuntime(runtimeOpts{specs: specs, stateDir: filepath.Join(t.TempDir(), "state"), token: token,
		adminListener: ln, log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.shutdown(5 * time.Second) })
	return "http://" + ln.Addr().String(), rt
}

func TestClientCommands(t *testing.T) {
	admin, _ := clientRuntime(t, "s3cret")
	t.Setenv("GUARDIAN_TOKEN", "")
	with := func(args ...string) []string { return append(args, "--admin", admin, "--token", "s3cret") }
	mustOK := func(args ...string) string {
		t.Helper()
		out, errOut, code := clientCLI(t, with(args...)...)
		if code != 0 {
			t.Fatalf("guardian %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	status := func() driver.Status {
		t.Helper()
		var s driver.Status
		if err := json.Unmarshal([]byte(mustOK("status", "checkout", "-o", "json")), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("dashboard", func(t *testing.T) {
		// Duration shows once the step has run for a tick.
		var out string
		for deadline := time.Now().Add(10 * time.Second); ; {
			out = mustOK("status", "checkout")
			if strings.Contains(out, "⏱️ Duration:") || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, want := range []string{"## Deployment Status Dashboard: checkout", "### Current Stage: Canary 10% (step 2/5: pause 1h)",
			"⏱️ Duration:", "🎯 Target: 127.0.0.1:", "⚖️ Weights: stable 90% · canary 10%", "### Health Metrics", "### Decision: "} {
			if !strings.Contains(out, want) {
				t.Errorf("dashboard lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "\x1b[") {
			t.Errorf("colour codes written to a non-terminal:\n%q", out)
		}
	})
	t.Run("list", func(t *testing.T) {
		out := mustOK("status")
		if !strings.Contains(out, "NAME") || !strings.Contains(out, "checkout") || !strings.Contains(out, "Progressing") || !strings.Contains(out, "2/5") {
			t.Errorf("list:\n%s", out)
		}
	})
	t.Run("pause and resume", func(t *testing.T) {
		out := mustOK("pause", "checkout")
		if !strings.Contains(out, "checkout: pause done; phase Paused") {
			t.Errorf("pause said %q", out)
		}
		if s := status(); s.Phase != rollout.Paused {
			t.Fatalf("phase %s after pause", s.Phase)
		}
		_, errOut, code := clientCLI(t, with("pause", "checkout")...)
		if code != 1 || !strings.Contains(errOut, "already paused") {
			t.Errorf("second pause: exit %d, %q; want exit 1 naming the refusal", code, errOut)
		}
		mustOK("resume", "checkout")
		if s := status(); s.Phase != rollout.Progressing {
			t.Fatalf("phase %s after resume", s.Phase)
		}
	})
	t.Run("set-weight", func(t *testing.T) {
		mustOK("set-weight", "checkout", "33")
		if s := status(); s.Weights["canary"] != 33 || s.Weights["stable"] != 67 {
			t.Fatalf("weights %v after set-weight 33", s.Weights)
		}
		mustOK("resume", "checkout")
	})
	t.Run("jump", func(t *testing.T) {
		mustOK("jump", "checkout", "4") // pause {} at 50%
		s := status()
		if s.Step != 3 || s.Weights["canary"] != 50 {
			t.Fatalf("after jump 4: step %d weights %v, want step index 3 at 50%%", s.Step, s.Weights)
		}
		_, errOut, code := clientCLI(t, with("jump", "checkout", "9")...)
		if code != 1 || !strings.Contains(errOut, "step 9 is not between 1 and 5") {
			t.Errorf("jump 9: exit %d, %q", code, errOut)
		}
	})
	t.Run("promote", func(t *testing.T) {
		mustOK("promote", "checkout")
		s := status()
		if s.Weights["canary"] != 100 && s.Phase != rollout.Promoted {
			t.Fatalf("after promote from pause {} at 50%%: phase %s weights %v", s.Phase, s.Weights)
		}
	})
	t.Run("wait promoted", func(t *testing.T) {
		out := mustOK("wait", "checkout", "--timeout", "10s", "--interval", "50ms")
		if !strings.Contains(out, "checkout: Promoted") {
			t.Errorf("wait said %q", out)
		}
	})
	t.Run("commands after the end are refused", func(t *testing.T) {
		_, errOut, code := clientCLI(t, with("abort", "checkout", "--reason", "too late")...)
		if code != 1 || !strings.Contains(errOut, "ended") {
			t.Errorf("abort after promotion: exit %d, %q", code, errOut)
		}
	})
	t.Run("history", func(t *testing.T) {
		var evs []store.StoredEvent
		if err := json.Unmarshal([]byte(mustOK("history", "checkout", "-o", "json")), &evs); err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for i, e := range evs {
			if e.Seq != uint64(i+1) {
				t.Fatalf("event %d has seq %d", i, e.Seq)
			}
			kinds = append(kinds, e.Type)
		}
		joined := strings.Join(kinds, ",")
		for _, want := range []string{rollout.EventStarted, rollout.EventCommand, rollout.EventPromoted} {
			if !strings.Contains(joined, want) {
				t.Errorf("history lacks %s: %s", want, joined)
			}
		}
		text := mustOK("history", "checkout")
		if !strings.HasPrefix(text, "SEQ") || !strings.Contains(text, "pause by cli") {
			t.Errorf("history text:\n%s", text)
		}
	})
	t.Run("report", func(t *testing.T) {
		md := mustOK("report", "checkout")
		if !strings.Contains(md, "## Deployment Report") || !strings.Contains(md, "PROMOTED") {
			t.Errorf("markdown report:\n%s", md)
		}
		var rep struct {
			Decision string `json:"decision"`
		}
		if err := json.Unmarshal([]byte(mustOK("report", "checkout", "-o", "json")), &rep); err != nil || rep.Decision != "PROMOTED" {
			t.Errorf("json report: %+v %v", rep, err)
		}
	})
	t.Run("watch ends with the rollout", func(t *testing.T) {
		out := mustOK("status", "checkout", "--watch", "--interval", "50ms")
		if strings.Count(out, "## Deployment Status Dashboard") != 1 || !strings.Contains(out, "### Decision: PROMOTED") {
			t.Errorf("watch of an ended rollout:\n%s", out)
		}
	})
}

func TestClientErrors(t *testing.T) {
	admin, _ := clientRuntime(t, "s3cret")
	t.Setenv("GUARDIAN_TOKEN", "")
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown rollout", []string{"status", "nope", "--admin", admin, "--token", "s3cret"}, 1, `rollout "nope" not found`},
		{"missing token", []string{"status", "checkout", "--admin", admin}, 1, "refused the token (HTTP 401)"},
		{"wrong token", []string{"promote", "checkout", "--admin", admin, "--token", "nope"}, 1, "refused the token"},
		{"unreachable", []string{"status", "checkout", "--admin", "http://127.0.0.1:1"}, 1, "cannot reach the admin API at http://127.0.0.1:1"},
		{"wait unreachable", []string{"wait", "checkout", "--admin", "127.0.0.1:1"}, 1, "cannot reach the admin API at http://127.0.0.1:1"},
		{"bad output", []string{"status", "checkout", "-o", "yaml", "--admin", admin}, 2, `-o "yaml"`},
		{"bad weight", []string{"set-weight", "checkout", "140", "--admin", admin}, 2, "between 0 and 100"},
		{"bad step", []string{"jump", "checkout", "zero", "--admin", admin}, 2, "not a step number"},
		{"bad admin", []string{"status", "--admin", "ftp://x"}, 2, "--admin"},
		{"missing name", []string{"promote", "--admin", admin}, 2, "accepts 1 arg"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, code := clientCLI(t, c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) {
				t.Errorf("exit %d, %q; want exit %d containing %q", code, errOut, c.code, c.want)
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") > 0 && c.code == 1 {
				t.Errorf("error is not one line: %q", errOut)
			}
		})
	}
	t.Run("token from the environment", func(t *testing.T) {
		t.Setenv("GUARDIAN_TOKEN", "s3cret")
		if _, errOut, code := clientCLI(t, "status", "checkout", "--admin", admin); code != 0 {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("wait times out with 4", func(t *testing.T) {
		_, errOut, code := clientCLI(t, "wait", "checkout", "--admin", admin, "--token", "s3cret", "--timeout", "300ms", "--interval", "50ms")
		if code != 4 || !strings.Contains(errOut, "timed out after 300ms") || !strings.Contains(errOut, "Progressing") {
			t.Errorf("exit %d, %q; want 4 and the last status", code, errOut)
		}
	})
	t.Run("wait exits 3 on abort", func(t *testing.T) {
		if out, errOut, code := clientCLI(t, "abort", "checkout", "--reason", "bad build", "--admin", admin, "--token", "s3cret"); code != 0 {
			t.Fatalf("abort: exit %d: %s%s", code, out, errOut)
		}
		out, errOut, code := clientCLI(t, "wait", "checkout", "--admin", admin, "--token", "s3cret", "--timeout", "10s")
		if code != 3 || !strings.Contains(out, "bad build") {
			t.Errorf("wait after abort: exit %d, %q %q; want 3 with the reason", code, out, errOut)
		}
	})
}

func TestDemoRollsBackTheDegradedCanary(t *testing.T) {
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := runDemo(ctx, &out, &errOut, demoOpts{speed: 2, rate: 500, admin: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	text := out.String()
	for _, want := range []string{
		"## Deployment Status Dashboard: checkout", "### Current Stage: Canary 25%", "the canary degrades",
		"### Decision: ROLLED BACK", "## Deployment Report", "**Phase**: RolledBack", "analysis failed: latency_p50",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(text, "\x1b[") {
		t.Error("colour codes written to a non-terminal")
	}
	if !strings.Contains(errOut.String(), "checkout: RolledBack") {
		t.Errorf("summary line: %q", errOut.String())
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", text)
	}
}

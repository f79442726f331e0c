package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLIErr(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), errOut.String(), err
}

func TestBenchReplayJSON(t *testing.T) {
	var b strings.Builder
	b.WriteString("ts,version,latency_ms,status\n")
	// 20 minutes at 20 req/s, no version column: split by each policy.
	for i := 0; i < 24000; i++ {
		ts := 1_700_000_000 + float64(i)*0.05
		status := "200"
		if i%250 == 0 {
			status = "503"
		}
		b.WriteString(strings.Join([]string{ftoa(ts), "", "12.5", status}, ",") + "\n")
		if i == 100 {
			b.WriteString("not,a,line\n")
		}
	}
	p := filepath.Join(t.TempDir(), "log.csv")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runCLIErr(t, "bench", "replay", "--log", p, "--format", "csv", "--plan-scale", "0.05",
		"--inject", "error-rate=30%@2m", "--policies", "sequential,threshold", "-o", "json", "--plots", filepath.Join(t.TempDir(), "plots"))
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var rep struct {
		Requests  int64            `json:"requests"`
		Malformed int              `json:"malformed"`
		Policies  []map[string]any `json:"policies"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Requests != 24000 || rep.Malformed != 1 || len(rep.Policies) != 2 {
		t.Fatalf("report %+v", rep)
	}
	if !strings.Contains(stderr, "log.csv:103:") {
		t.Errorf("stderr does not name the malformed line 103: %q", stderr)
	}
	for _, pol := range rep.Policies {
		keys := []string{"name", "rolled_back", "detection_delay_s", "detection_requests", "bad_requests", "duration_s"}
		if len(pol) != len(keys) {
			t.Errorf("policy keys %v, want exactly %v", pol, keys)
		}
		for _, k := range keys {
			if _, ok := pol[k]; !ok {
				t.Errorf("policy %v lacks %s", pol, k)
			}
		}
		if pol["name"] == "sequential" && (pol["rolled_back"] != true || pol["detection_delay_s"] == nil) {
			t.Errorf("sequential missed a 30%% error step: %v", pol)
		}
	}
}

func TestBenchBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "replay", "--format", "csv"},
		{"bench", "replay", "--log", "x", "--format", "apache"},
		{"bench", "replay", "--log", "x", "--format", "csv", "--inject", "error-rate=500%"},
		{"bench", "replay", "--log", "x", "--format", "csv", "--policies", "magic"},
		{"bench", "scenarios", "--runs", "0"},
		{"bench", "scenarios", "-o", "yaml"},
	} {
		_, _, err := runCLIErr(t, args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%v: err %v, want a usage error (exit 2)", args, err)
		}
	}
}

func TestBenchScenariosTable(t *testing.T) {
	out, stderr, err := runCLIErr(t, "bench", "scenarios", "--runs", "1", "--rate", "20", "--plan-scale", "0.02",
		"--window", "12s", "--threshold-interval", "6s", "--alphas", "0.2", "--policies", "sequential,guard")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, want := range []string{"error-step", "latency-shift", "tail", "degradation", "low-traffic", "bursty", "diurnal", "aa-alpha", "sequential", "guard"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func ftoa(f float64) string {
	b, _ := json.Marshal(f)
	return string(b)
}

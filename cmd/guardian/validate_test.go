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

func validateCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"validate"}, args...))
	code := 0
	if err := root.Execute(); err != nil {
		code = 2
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), code
}

func TestValidateExamples(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples")
	}
	out, errOut, code := validateCLI(t, append([]string{"-o", "json"}, files...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rows []struct {
		Name     string
		Strategy string
		Steps    []string
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rows {
		if r.Name == "checkout" {
			found = true
			if r.Strategy != "canary" || len(r.Steps) != 10 || r.Steps[2] != "pause 10m" {
				t.Errorf("checkout: %+v", r)
			}
		}
	}
	if !found {
		t.Errorf("checkout missing from %s", out)
	}
}

func TestValidateRefusesWithLocation(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "rollout.yaml")
	os.WriteFile(f, []byte(`apiVersion: guardian.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  listen: 127.0.0.1:8080
  stable: {url: http://127.0.0.1:9101}
  canary: {url: http://127.0.0.1:9102}
  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: 10m}
        - setWeight: 140
`), 0o644)
	_, errOut, code := validateCLI(t, f)
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	want := f + ":13: spec.strategy.canary.steps[2].setWeight: 140 is not between 0 and 100"
	if strings.TrimSpace(errOut) != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
}

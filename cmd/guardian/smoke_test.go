package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// smokeCLI runs the real command tree in-process and returns stdout, stderr
// and the exit code main would use.
func smokeCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	code := 0
	if err != nil {
		code = 2
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), code
}

const smokeTestdata = "../../rollout/smoke/testdata/"

// ordersV2 serves orders-v2.yaml's operations; breakOrder makes
// GET /api/orders/{id} answer 500.
func ordersV2(t *testing.T, breakOrder bool) *httptest.Server {
	mux := http.NewServeMux()
	js := func(code int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			w.Write([]byte(body))
		}
	}
	mux.Handle("GET /api/health", js(200, `{"status":"ok"}`))
	mux.Handle("GET /api/orders", js(200, `[{"id":1,"total":2.5}]`))
	mux.Handle("POST /api/orders", js(201, `{"id":2,"total":5,"currency":"EUR"}`))
	mux.Handle("GET /api/orders/{id}/items", js(200, `{"items":[{"sku":"a","quantity":1}]}`))
	if breakOrder {
		mux.Handle("GET /api/orders/{id}", js(500, `{"error":"boom"}`))
	} else {
		mux.Handle("GET /api/orders/{id}", js(200, `{"id":42,"total":1,"currency":"EUR"}`))
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestSmokeGenerateAndRun(t *testing.T) {
	dir := t.TempDir()
	suite := filepath.Join(dir, "smoke.yaml")
	_, stderr, code := smokeCLI(t, "smoke", "generate",
		"--openapi-old", smokeTestdata+"orders-v1.yaml", "--openapi-new", smokeTestdata+"orders-v2.yaml",
		"--name", "orders", "-o", suite)
	if code != 0 {
		t.Fatalf("generate exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "wrote 5 tests to "+suite) {
		t.Errorf("generate stderr = %q", stderr)
	}
	if out, _, code := smokeCLI(t, "smoke", "validate", suite); code != 0 || !strings.Contains(out, "5 tests, valid") {
		t.Errorf("validate: exit %d, out %q", code, out)
	}

	good := ordersV2(t, false)
	junit := filepath.Join(dir, "junit.xml")
	out, stderr, code := smokeCLI(t, "smoke", "run", suite, "--target", good.URL, "--junit", junit)
	if code != 0 {
		t.Fatalf("run against the new API: exit %d\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(out, "PASSED: 5/5 tests passed") || !strings.Contains(out, "PASS    GET /orders/{orderId} ") {
		t.Errorf("table output:\n%s", out)
	}

	bad := ordersV2(t, true)
	out, stderr, code = smokeCLI(t, "smoke", "run", suite, "--target", bad.URL, "-o", "json", "--junit", junit, "--concurrency", "1")
	if code != 1 || !strings.Contains(stderr, "smoke: 1 of 5 tests failed") {
		t.Fatalf("run against a broken API: exit %d, stderr %q, want 1", code, stderr)
	}
	var res struct {
		Passed bool `json:"passed"`
		Tests  []struct {
			Name, Reason string
			Passed       bool
		} `json:"tests"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("-o json output does not parse: %v\n%s", err, out)
	}
	for _, tr := range res.Tests {
		if tr.Passed == (tr.Name == "GET /orders/{orderId}") {
			t.Errorf("%s: passed=%v reason=%q", tr.Name, tr.Passed, tr.Reason)
		}
	}
	data, err := os.ReadFile(junit)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Suites []struct {
			Failures int `xml:"failures,attr"`
			Cases    []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Message string `xml:"message,attr"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("junit: %v\n%s", err, data)
	}
	if len(doc.Suites) != 1 || doc.Suites[0].Failures != 1 {
		t.Fatalf("junit: %s", data)
	}
	for _, c := range doc.Suites[0].Cases {
		if (c.Failure != nil) != (c.Name == "GET /orders/{orderId}") {
			t.Errorf("junit case %q failure=%+v", c.Name, c.Failure)
		}
		if c.Failure != nil && !strings.HasPrefix(c.Failure.Message, "status 500, want 200") {
			t.Errorf("junit failure message %q", c.Failure.Message)
		}
	}
}

func TestSmokeBadInputExitsTwoWithFileAndLine(t *testing.T) {
	dir := t.TempDir()
	suite := filepath.Join(dir, "bad.yaml")
	os.WriteFile(suite, []byte("apiVersion: guardian.dev/v1alpha1\nkind: SmokeSuite\nmetadata: {name: x}\ntests:\n  - name: a\n    htp: {path: /}\n"), 0o644)
	spec := filepath.Join(dir, "api.yaml")
	os.WriteFile(spec, []byte("openapi: 3.0.3\ninfo: {title: x, version: '1'}\npaths:\n  /o/{id}:\n    get:\n      responses: {'200': {description: ok}}\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown suite field", []string{"smoke", "run", suite, "--target", "http://127.0.0.1:1"}, suite + `:6: test: unknown field "htp"`},
		{"validate", []string{"smoke", "validate", suite}, suite + ":6:"},
		{"malformed openapi", []string{"smoke", "generate", "--openapi-new", spec}, spec + ":4: invalid paths: operation GET /o/{id} must define exactly all path parameters"},
		{"missing suite", []string{"smoke", "run", filepath.Join(dir, "nope.yaml"), "--target", "http://x"}, "nope.yaml: open"},
		{"a spec is not a suite", []string{"smoke", "run", smokeTestdata + "orders-v2.yaml"}, `orders-v2.yaml:1: suite: unknown field "openapi"`},
		{"bad format", []string{"smoke", "run", suite, "-o", "xml"}, "-o must be table or json"},
		{"nothing to generate", []string{"smoke", "generate"}, "nothing to generate from"},
		{"old without new", []string{"smoke", "generate", "--openapi-old", spec, "--migrations", dir}, "--openapi-old needs --openapi-new"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := smokeCLI(t, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tc.want)
			}
		})
	}
}

func TestSmokeRunRequiresTargetForHTTPTests(t *testing.T) {
	suite := filepath.Join(t.TempDir(), "s.yaml")
	os.WriteFile(suite, []byte("apiVersion: guardian.dev/v1alpha1\nkind: SmokeSuite\nmetadata: {name: x}\ntests:\n  - name: a\n    http: {path: /}\n"), 0o644)
	_, stderr, code := smokeCLI(t, "smoke", "run", suite)
	if code != 2 || !strings.Contains(stderr, `--target is required: test "a" (`+suite+":5)") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

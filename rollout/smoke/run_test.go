package smoke

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ordersServer implements orders-v2.yaml under /api. broken names one
// operation to break ("GET /orders/{orderId}") and how: "500" or "schema".
func ordersServer(t *testing.T, broken, how string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	handle := func(pattern, op string, h func(w http.ResponseWriter, r *http.Request)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if op == broken && how == "500" {
				http.Error(w, "boom: nil pointer dereference", http.StatusInternalServerError)
				return
			}
			h(w, r)
		})
	}
	handle("GET /api/health", "GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"status": "healthy"})
	})
	handle("GET /api/orders", "GET /orders", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, []any{map[string]any{"id": 1, "total": 9.5}})
	})
	handle("POST /api/orders", "POST /orders", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Items    []string `json:"items"`
			Currency string   `json:"currency"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || len(in.Items) == 0 {
			writeJSON(w, 400, map[string]any{"error": "bad order"})
			return
		}
		writeJSON(w, 201, map[string]any{"id": 43, "total": 19.0, "currency": in.Currency})
	})
	handle("GET /api/orders/{orderId}", "GET /orders/{orderId}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("orderId"))
		if err != nil {
			writeJSON(w, 404, map[string]any{"error": "no such order"})
			return
		}
		order := map[string]any{"id": id, "total": 12.5, "currency": "EUR"}
		if broken == "GET /orders/{orderId}" && how == "schema" {
			delete(order, "currency") // the v1 shape: what a half-deployed change returns
		}
		writeJSON(w, 200, order)
	})
	handle("GET /api/orders/{orderId}/items", "GET /orders/{orderId}/items", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("limit") == "" {
			writeJSON(w, 400, map[string]any{"error": "limit is required"})
			return
		}
		writeJSON(w, 200, map[string]any{"items": []any{map[string]any{"sku": "sku-1", "quantity": 2}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func resultByName(r Result) map[string]TestResult {
	m := map[string]TestResult{}
	for _, t := range r.Tests {
		m[t.Name] = t
	}
	return m
}

func fast(s *Suite) *Suite {
	zero, short := 0, Duration(time.Millisecond)
	s.Defaults.Retries, s.Defaults.Backoff = &zero, &short
	// The acceptance runs judge behaviour, not speed: a loaded CI machine
	// must not fail them on latency.
	budget := Duration(0)
	s.Defaults.LatencyBudget = &budget
	return s
}

func TestRunGeneratedSuiteAgainstTheNewAPIPasses(t *testing.T) {
	srv := ordersServer(t, "", "")
	res := Run(context.Background(), fast(generateOrders(t)), Options{Target: srv.URL})
	if !res.Passed {
		for _, tr := range res.Tests {
			t.Errorf("%s: passed=%v reason=%q", tr.Name, tr.Passed, tr.Reason)
		}
	}
	if len(res.Tests) != 5 {
		t.Errorf("ran %d tests, want 5 (4 operations + health)", len(res.Tests))
	}
	for _, tr := range res.Tests {
		if tr.Attempts != 1 || tr.Kind != "http" {
			t.Errorf("%s: attempts=%d kind=%q, want 1 attempt of an http test", tr.Name, tr.Attempts, tr.Kind)
		}
	}
}

func TestRunGeneratedSuiteFailsNamingTheBrokenOperation(t *testing.T) {
	for _, tc := range []struct {
		how, reason string
	}{
		{"500", "status 500, want 200: boom: nil pointer dereference"},
		{"schema", `body violates the response schema: at /currency: property "currency" is missing`},
	} {
		t.Run(tc.how, func(t *testing.T) {
			srv := ordersServer(t, "GET /orders/{orderId}", tc.how)
			s := fast(generateOrders(t))
			one := 1
			s.Defaults.Retries = &one
			res := Run(context.Background(), s, Options{Target: srv.URL, Concurrency: 2})
			if res.Passed {
				t.Fatal("suite passed against a broken GET /orders/{orderId}")
			}
			failed := res.Failed()
			if len(failed) != 1 || failed[0].Name != "GET /orders/{orderId}" {
				t.Fatalf("failed tests = %+v, want only GET /orders/{orderId}", failed)
			}
			if failed[0].Reason != tc.reason || failed[0].Attempts != 2 {
				t.Errorf("reason %q after %d attempts, want %q after 2", failed[0].Reason, failed[0].Attempts, tc.reason)
			}

			// JSON names the failed test with its reason.
			raw, err := res.JSON()
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Passed bool `json:"passed"`
				Failed int  `json:"failed"`
				Tests  []struct {
					Name   string `json:"name"`
					Passed bool   `json:"passed"`
					Reason string `json:"reason"`
				} `json:"tests"`
			}
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatalf("JSON does not parse: %v\n%s", err, raw)
			}
			if doc.Passed || doc.Failed != 1 {
				t.Errorf("JSON passed=%v failed=%d, want false, 1", doc.Passed, doc.Failed)
			}
			var jsonFailed []string
			for _, tr := range doc.Tests {
				if !tr.Passed {
					jsonFailed = append(jsonFailed, tr.Name+": "+tr.Reason)
				}
			}
			if want := "GET /orders/{orderId}: " + tc.reason; len(jsonFailed) != 1 || jsonFailed[0] != want {
				t.Errorf("JSON failures = %q, want [%q]", jsonFailed, want)
			}

			// JUnit XML, parsed back as a CI system would.
			raw, err = res.JUnit()
			if err != nil {
				t.Fatal(err)
			}
			var junit struct {
				XMLName xml.Name `xml:"testsuites"`
				Suites  []struct {
					Name     string `xml:"name,attr"`
					Tests    int    `xml:"tests,attr"`
					Failures int    `xml:"failures,attr"`
					Cases    []struct {
						Name    string `xml:"name,attr"`
						Failure *struct {
							Message string `xml:"message,attr"`
						} `xml:"failure"`
					} `xml:"testcase"`
				} `xml:"testsuite"`
			}
			if err := xml.Unmarshal(raw, &junit); err != nil {
				t.Fatalf("JUnit XML does not parse: %v\n%s", err, raw)
			}
			if len(junit.Suites) != 1 || junit.Suites[0].Tests != 5 || junit.Suites[0].Failures != 1 || junit.Suites[0].Name != "orders-v2" {
				t.Fatalf("JUnit testsuite = %+v, want orders-v2 with 5 tests, 1 failure", junit.Suites)
			}
			var junitFailed []string
			for _, c := range junit.Suites[0].Cases {
				if c.Failure != nil {
					junitFailed = append(junitFailed, c.Name+": "+c.Failure.Message)
				}
			}
			if want := "GET /orders/{orderId}: " + tc.reason; len(junitFailed) != 1 || junitFailed[0] != want {
				t.Errorf("JUnit failures = %q, want [%q]", junitFailed, want)
			}
		})
	}
}

func mustParse(t *testing.T, src string) *Suite {
	t.Helper()
	s, err := Parse([]byte(src), "suite.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

func TestRunRetriesWithBackoffUntilTheTestPasses(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	s := mustParse(t, `
apiVersion: guardian.dev/v1alpha1
kind: SmokeSuite
metadata: {name: retry}
defaults: {retries: 2, backoff: 1ms}
tests:
  - name: warming up
    http: {path: /}
    expect: {status: 200, bodyContains: ok}
`)
	res := Run(context.Background(), s, Options{Target: srv.URL})
	tr := res.Tests[0]
	if !res.Passed || tr.Attempts != 3 || calls.Load() != 3 {
		t.Errorf("passed=%v attempts=%d calls=%d reason=%q, want a pass on the 3rd attempt", res.Passed, tr.Attempts, calls.Load(), tr.Reason)
	}
	// Two backoffs of 1ms and 2ms at least, and more than the last attempt.
	if tr.Duration < 3*time.Millisecond || tr.Duration < tr.Latency || tr.Latency <= 0 {
		t.Errorf("duration %s latency %s, want duration >= 3ms (backoff 1ms doubling) and >= latency > 0", tr.Duration, tr.Latency)
	}

	calls.Store(0)
	one := 1
	s.Defaults.Retries = &one
	res = Run(context.Background(), s, Options{Target: srv.URL})
	if tr := res.Tests[0]; res.Passed || tr.Attempts != 2 || tr.Reason != "status 503, want 200" {
		t.Errorf("with 1 retry: passed=%v attempts=%d reason=%q, want a failure after 2 attempts", res.Passed, tr.Attempts, tr.Reason)
	}
}

func TestRunLatencyBudgetAndTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			<-r.Context().Done() // answers only when the client gives up
			return
		}
		w.Write([]byte(`{"status":"UP"}`))
	}))
	defer srv.Close()
	s := mustParse(t, `
apiVersion: guardian.dev/v1alpha1
kind: SmokeSuite
metadata: {name: timing}
defaults: {retries: 0}
tests:
  - name: over budget
    http: {path: /health}
    expect: {healthy: true}
    latencyBudget: 1ns
  - name: within budget
    http: {path: /health}
    expect: {healthy: true}
    latencyBudget: 1m
  - name: hangs
    http: {path: /hang}
    timeout: 100ms
`)
	res := resultByName(Run(context.Background(), s, Options{Target: srv.URL}))
	if tr := res["over budget"]; tr.Passed || !strings.HasPrefix(tr.Reason, "latency ") || !strings.HasSuffix(tr.Reason, " over budget 1ns") {
		t.Errorf("over budget: passed=%v reason=%q, want a latency-budget failure", tr.Passed, tr.Reason)
	}
	if tr := res["within budget"]; !tr.Passed {
		t.Errorf("within budget failed: %q", tr.Reason)
	}
	if tr := res["hangs"]; tr.Passed || !strings.HasPrefix(tr.Reason, "timed out after 100ms") {
		t.Errorf("hangs: passed=%v reason=%q, want a timeout", tr.Passed, tr.Reason)
	}
}

func TestRunBoundsConcurrency(t *testing.T) {
	var mu sync.Mutex
	inflight, peak := 0, 0
	reached := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		if inflight == 2 {
			once.Do(func() { close(reached) })
		}
		mu.Unlock()
		// Hold the first requests until two overlap, so the peak is the
		// bound and not an accident of scheduling.
		select {
		case <-reached:
		case <-time.After(5 * time.Second):
		}
		mu.Lock()
		inflight--
		mu.Unlock()
	}))
	defer srv.Close()
	var b strings.Builder
	b.WriteString("apiVersion: guardian.dev/v1alpha1\nkind: SmokeSuite\nmetadata: {name: c}\ntests:\n")
	for i := range 12 {
		fmt.Fprintf(&b, "  - {name: t%d, http: {path: /%d}}\n", i, i)
	}
	res := Run(context.Background(), mustParse(t, b.String()), Options{Target: srv.URL, Concurrency: 2})
	if !res.Passed {
		t.Fatalf("run failed: %+v", res.Failed())
	}
	if peak != 2 {
		t.Errorf("peak concurrency %d, want exactly the bound 2", peak)
	}
}

func TestRunFlagsHeadersAndJSONFields(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/flags/new-checkout":
			w.Write([]byte(`{"name":"new-checkout","enabled":false}`))
		case "/flags/dark-mode":
			w.Write([]byte(`true`))
		case "/flags/pricing-variant":
			w.Header().Set("X-Pricing-Variant", "control")
		case "/me":
			if r.Header.Get("Authorization") != "Bearer s3cret" || r.Header.Get("X-Preview") != "canary" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Write([]byte(`{"data":{"items":[{"id":7}]}}`))
		}
	}))
	defer srv.Close()
	s := mustParse(t, `
apiVersion: guardian.dev/v1alpha1
kind: SmokeSuite
metadata: {name: flags}
defaults: {retries: 0}
tests:
  - name: new-checkout off
    flag: {name: new-checkout, expect: off}
  - name: new-checkout wrongly expected on
    flag: {name: new-checkout, expect: true}
  - name: dark-mode bare body
    flag: {name: dark-mode, expect: enabled}
  - name: pricing variant header
    flag: {name: pricing-variant, expect: control, header: X-Pricing-Variant}
  - name: me
    http: {path: /me, headers: {Authorization: "Bearer ${SMOKE_TOKEN}"}}
    expect: {status: 200, json: {data.items.0.id: 7}}
  - name: me without token
    http: {path: /me, headers: {Authorization: "Bearer ${MISSING_TOKEN}"}}
`)
	env := map[string]string{"SMOKE_TOKEN": "s3cret"}
	res := resultByName(Run(context.Background(), s, Options{
		Target: srv.URL, Env: func(k string) string { return env[k] },
		Header: http.Header{"X-Preview": {"canary"}},
	}))
	for name, want := range map[string]string{
		"new-checkout off":                 "",
		"new-checkout wrongly expected on": "flag new-checkout is false, want true",
		"dark-mode bare body":              "",
		"pricing variant header":           "",
		"me":                               "",
		"me without token":                 "header Authorization: environment variable MISSING_TOKEN is not set",
	} {
		if tr := res[name]; tr.Passed != (want == "") || tr.Reason != want {
			t.Errorf("%s: passed=%v reason=%q, want reason %q", name, tr.Passed, tr.Reason, want)
		}
	}
}

func TestCheckHealthy(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"status":"healthy"}`, true},
		{`{"status":"UP","components":{}}`, true},
		{`{"Status":"pass"}`, true},
		{`{"health":"ok"}`, true},
		{`OK`, true},
		{`"serving"`, true},
		{`{"status":"DOWN"}`, false},
		{`{"status":"degraded"}`, false},
		{`{"uptime":12}`, false},
		{``, false},
		{`<html>maintenance</html>`, false},
	} {
		t.Run(tc.body, func(t *testing.T) {
			if err := checkHealthy([]byte(tc.body)); (err == nil) != tc.ok {
				t.Errorf("checkHealthy(%q) = %v, want ok=%v", tc.body, err, tc.ok)
			}
		})
	}
}

func TestRunRefusesAnInvalidSuiteTestByTest(t *testing.T) {
	s := &Suite{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "x"}, Tests: []Test{{Name: "nothing"}}}
	res := Run(context.Background(), s, Options{Target: "http://127.0.0.1:1"})
	if res.Passed || !strings.Contains(res.Tests[0].Reason, "exactly one of http, sql, flag, grpc") {
		t.Errorf("passed=%v reason=%q, want the validation problem", res.Passed, res.Tests[0].Reason)
	}
}

func TestRunStopsWhenTheContextEnds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	s := mustParse(t, `
apiVersion: guardian.dev/v1alpha1
kind: SmokeSuite
metadata: {name: cancel}
defaults: {retries: 5, backoff: 1m, timeout: 1m}
tests:
  - {name: a, http: {path: /a}}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := Run(ctx, s, Options{Target: srv.URL})
	if res.Passed || time.Since(start) > 30*time.Second {
		t.Errorf("passed=%v after %s, want a prompt failure when ctx ends", res.Passed, time.Since(start))
	}
}

func TestResultSummary(t *testing.T) {
	r := Result{Tests: []TestResult{{Name: "a", Passed: true}, {Name: "GET /x", Reason: "status 500, want 200"}}}
	if got, want := r.Summary(), "1 of 2 smoke tests failed: GET /x (status 500, want 200)"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
	r.Tests = r.Tests[:1]
	if got, want := r.Summary(), "1/1 smoke tests passed"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
}

func TestOpenAPI31SchemasAreCheckedAsJSONSchema2020(t *testing.T) {
	spec := writeSpec(t, `openapi: 3.1.0
info: {title: prices, version: '1'}
paths:
  /prices/{sku}:
    get:
      parameters:
        - {name: sku, in: path, required: true, schema: {type: string, const: abc}}
      responses:
        "200":
          description: a price
          content:
            application/json:
              schema:
                type: object
                required: [amount, note]
                properties:
                  amount: {type: number, exclusiveMinimum: 0}
                  note: {type: [string, "null"]}
`)
	api, err := LoadOpenAPI(spec)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := Generate(GenerateOptions{NewAPI: api, NoHealth: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Tests) != 1 || s.Tests[0].Expect.SchemaDialect != DialectOpenAPI31 || s.Tests[0].Expect.Schema == nil {
		t.Fatalf("tests = %+v, want one with a 3.1 schema", s.Tests)
	}
	if p := s.Tests[0].HTTP.Path; p != "/prices/abc" {
		t.Errorf("path = %q, want the const value", p)
	}
	body := `{"amount": 2.5, "note": null}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) }))
	defer srv.Close()
	if res := Run(context.Background(), fast(s), Options{Target: srv.URL}); !res.Passed {
		t.Errorf("valid 3.1 body failed: %+v", res.Failed())
	}
	body = `{"amount": 0, "note": null}`
	res := Run(context.Background(), fast(s), Options{Target: srv.URL})
	if res.Passed || res.Tests[0].Reason != "body violates the response schema: at '/amount': exclusiveMinimum: got 0, want 0" {
		t.Errorf("amount 0 against exclusiveMinimum 0: passed=%v reason=%q", res.Passed, res.Tests[0].Reason)
	}
}

func TestRunDoesNotFollowRedirects(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/new", http.StatusMovedPermanently)
			return
		}
		w.Write([]byte("new"))
	}))
	defer srv.Close()
	s := mustParse(t, header+"defaults: {retries: 0}\ntests:\n  - {name: moved, http: {path: /old}, expect: {status: 301, headers: {Location: /new}}}\n")
	if res := Run(context.Background(), s, Options{Target: srv.URL}); !res.Passed {
		t.Errorf("redirect: %+v", res.Failed())
	}
}

func TestRunJourneyCarriesCapturedValuesBetweenSteps(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == "POST" && r.URL.Path == "/login":
			var in struct{ User, Password string }
			json.NewDecoder(r.Body).Decode(&in)
			if in.Password != "pw-from-env" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Write([]byte(`{"token":"t-123","user":{"id":7}}`))
		case r.URL.Path == "/users/7" && r.Header.Get("Authorization") == "Bearer t-123":
			w.Write([]byte(`{"id":7,"name":"smoke"}`))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	src := header + `defaults: {retries: 0}
tests:
  - name: critical user journey
    journey:
      - http: {method: POST, path: /login, body: '{"user":"smoke","password":"${SMOKE_PASSWORD}"}'}
        expect: {status: 200}
        capture: {token: token, userId: user.id}
      - http: {path: "/users/${userId}", headers: {Authorization: "Bearer ${token}"}}
        expect:
          status: 200
          json: {id: 7}
          schema: {type: object, required: [id, name]}
`
	s := mustParse(t, src)
	env := map[string]string{"SMOKE_PASSWORD": "pw-from-env"}
	res := Run(context.Background(), s, Options{Target: srv.URL, Env: func(k string) string { return env[k] }})
	if !res.Passed || res.Tests[0].Kind != "journey" {
		t.Fatalf("journey: %+v", res.Tests)
	}

	env["SMOKE_PASSWORD"] = "wrong"
	res = Run(context.Background(), s, Options{Target: srv.URL, Env: func(k string) string { return env[k] }})
	if want := "step 1 (POST /login): status 401, want 200"; res.Passed || res.Tests[0].Reason != want {
		t.Errorf("wrong password: reason %q, want %q", res.Tests[0].Reason, want)
	}

	bad := strings.Replace(src, "userId: user.id", "userId: user.uid", 1)
	env["SMOKE_PASSWORD"] = "pw-from-env"
	res = Run(context.Background(), mustParse(t, bad), Options{Target: srv.URL, Env: func(k string) string { return env[k] }})
	if want := "step 1 (POST /login): body has no user.uid to capture as userId"; res.Passed || res.Tests[0].Reason != want {
		t.Errorf("missing capture: reason %q, want %q", res.Tests[0].Reason, want)
	}
}

func TestParseRefusesBadJourneys(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{header + "tests:\n  - name: j\n    journey: []\n", `suite.yaml:6: test "j": journey has no steps`},
		{header + "tests:\n  - name: j\n    journey:\n      - expect: {status: 200}\n", `suite.yaml:7: test "j": journey step 1: http is required`},
		{header + "tests:\n  - name: j\n    journey:\n      - http: {path: /a}\n        capture: {bad-name: token}\n", `suite.yaml:8: test "j": journey step 1: capture name "bad-name"`},
		{header + "tests:\n  - name: j\n    journey:\n      - http: {path: a}\n", `suite.yaml:7: test "j": journey step 1: http.path must start with /`},
		{header + "tests:\n  - name: j\n    journey:\n      - http: {path: /a}\n        captur: {}\n", `suite.yaml:8: journey step: unknown field "captur"`},
	} {
		_, err := Parse([]byte(tc.src), "suite.yaml")
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("got %v\nwant %s", err, tc.want)
		}
	}
}

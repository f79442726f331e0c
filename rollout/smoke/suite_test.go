package smoke

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const header = "apiVersion: guardian.dev/v1alpha1\nkind: SmokeSuite\nmetadata: {name: s}\n"

func TestParseRefusesMalformedSuitesWithFileLineAndReason(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"yaml syntax", header + "tests:\n  - name: a\n    http: {path: /a\n", "suite.yaml:6: did not find expected ',' or '}'"},
		{"unknown top-level field", header + "test: []\n", `suite.yaml:4: suite: unknown field "test"`},
		{"unknown test field", header + "tests:\n  - name: a\n    http: {path: /a}\n    expekt: {status: 200}\n", `suite.yaml:7: test: unknown field "expekt"`},
		{"unknown expect field", header + "tests:\n  - name: a\n    http: {path: /a}\n    expect:\n      code: 200\n", `suite.yaml:8: expect: unknown field "code" (known: bodyContains, headers, healthy, json, schema, schemaDialect, status)`},
		{"bad duration", header + "defaults: {timeout: 5}\ntests:\n  - {name: a, http: {path: /a}}\n", `suite.yaml:4: invalid duration "5"`},
		{"wrong type", header + "tests:\n  - name: a\n    http: {path: /a}\n    expect: {status: ok}\n", "suite.yaml:7: cannot unmarshal !!str `ok` into int"},
		{"duplicate key", header + "tests:\n  - name: a\n    name: b\n    http: {path: /a}\n", `suite.yaml:6: test: field "name" given twice`},
		{"wrong kind", "apiVersion: guardian.dev/v1alpha1\nkind: Rollout\nmetadata: {name: s}\ntests:\n  - {name: a, http: {path: /a}}\n", `suite.yaml:2: kind must be "SmokeSuite", got "Rollout"`},
		{"no check", header + "tests:\n  - name: a\n", `suite.yaml:5: test "a": exactly one of http, sql, flag, grpc, journey must be set, got 0`},
		{"two checks", header + "tests:\n  - name: a\n    http: {path: /a}\n    grpc: {address: x:1}\n", `suite.yaml:5: test "a": exactly one of http, sql, flag, grpc, journey must be set, got 2`},
		{"duplicate names", header + "tests:\n  - {name: a, http: {path: /a}}\n  - {name: a, http: {path: /b}}\n", `suite.yaml:6: test "a": name already used on line 5`},
		{"relative path", header + "tests:\n  - name: a\n    http:\n      path: a\n", `suite.yaml:7: test "a": http.path must start with /`},
		{"bad schema", header + "tests:\n  - name: a\n    http: {path: /a}\n    expect:\n      schema: {type: banana}\n", `suite.yaml:8: test "a": expect.schema:`},
		{"dsn in the suite", header + "tests:\n  - name: db\n    sql: {dsnEnv: 'postgres://u:p@h/db', query: SELECT 1}\n", `suite.yaml:6: test "db": sql.dsnEnv must be an environment variable name`},
		{"sql without query or table", header + "tests:\n  - name: db\n    sql: {dsnEnv: X}\n", `suite.yaml:6: test "db": sql needs exactly one of query or table`},
		{"flag expect not scalar", header + "tests:\n  - name: f\n    flag: {name: x, expect: [1]}\n", `suite.yaml:6: flag: expect must be a scalar`},
		{"empty", "", "suite.yaml: empty suite file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "suite.yaml")
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", tc.src)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error:\n got %q\nwant prefix %q", err, tc.want)
			}
			var ie *InputError
			var ies InputErrors
			if !errors.As(err, &ie) && !errors.As(err, &ies) {
				t.Errorf("error %T is not an InputError", err)
			}
		})
	}
}

func TestParseReportsEveryProblemAtOnce(t *testing.T) {
	_, err := Parse([]byte(header+"defaults: {retries: -1}\ntests:\n  - name: a\n  - name: b\n    http: {path: b}\n"), "s.yaml")
	var list InputErrors
	if !errors.As(err, &list) || len(list) != 3 {
		t.Fatalf("got %v, want 3 problems (retries, a has no check, b's path)", err)
	}
	for i, want := range []string{"s.yaml:4:", "s.yaml:6:", "s.yaml:8:"} {
		if !strings.HasPrefix(list[i].Error(), want) {
			t.Errorf("problem %d = %q, want prefix %q", i, list[i], want)
		}
	}
}

func TestLoadReadsCommentsAsSources(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.yaml")
	src := header + "tests:\n  # why this test exists\n  - name: a\n    http: {path: /a}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Tests[0].Source != "why this test exists" || s.Tests[0].Line != 6 {
		t.Errorf("source %q line %d, want the comment and line 6", s.Tests[0].Source, s.Tests[0].Line)
	}
}

func writeSpec(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadOpenAPIRefusesMalformedDocumentsWithFileLineAndReason(t *testing.T) {
	for _, tc := range []struct {
		name, src  string
		line       int
		reasonPart string
	}{
		{"yaml syntax", "openapi: 3.0.3\ninfo: {title: x, version: '1'\npaths: {}\n", 2, "did not find expected"},
		{"swagger 2", "swagger: '2.0'\ninfo: {title: x, version: '1'}\npaths: {}\n", 1, "Swagger 2.0 is not supported"},
		{"openapi 4", "openapi: 4.0.0\ninfo: {title: x, version: '1'}\npaths: {}\n", 1, `openapi version "4.0.0" is not supported`},
		{"no openapi field", "info: {title: x, version: '1'}\npaths: {}\n", 1, "the openapi field is missing"},
		{"undeclared path parameter", `openapi: 3.0.3
info: {title: x, version: '1'}
paths:
  /orders/{id}:
    get:
      responses:
        "200": {description: ok}
`, 4, "must define exactly all path parameters"},
		{"unresolvable ref", `openapi: 3.0.3
info: {title: x, version: '1'}
paths:
  /a:
    get:
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Missing"}
`, 11, "Missing"},
		{"bad schema type", `openapi: 3.0.3
info: {title: x, version: '1'}
paths:
  /a:
    get:
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema:
                type: banana
`, 10, "banana"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeSpec(t, tc.src)
			_, err := LoadOpenAPI(path)
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("LoadOpenAPI = %v (%T), want an *InputError", err, err)
			}
			if ie.File != path || ie.Line != tc.line || !strings.Contains(ie.Reason, tc.reasonPart) {
				t.Errorf("got %s:%d: %s\nwant %s:%d: …%s…", ie.File, ie.Line, ie.Reason, path, tc.line, tc.reasonPart)
			}
		})
	}
}

func TestLoadFlagsRefusesBadEntriesWithLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.yaml")
	os.WriteFile(path, []byte("- {name: a, default: false}\n- {name: a, default: true}\n- {name: b}\n- {name: c, default: null}\n- {name: d, defualt: on}\n"), 0o644)
	_, err := LoadFlags(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+`:5: flag: unknown field "defualt"`) {
		t.Errorf("got %v, want the unknown field on line 5", err)
	}
	os.WriteFile(path, []byte("- {name: a, default: false}\n- {name: a, default: true}\n- {name: b}\n- {name: c, default: null}\n"), 0o644)
	_, err = LoadFlags(path)
	want := path + ":2: flag a: already listed on line 1; " + path + ":3: flag b: default is required (the state the flag must be in); " + path + ":4: flag c: default is null; want true, false or a variant name"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func TestMarshalRoundTripsAHandWrittenSuite(t *testing.T) {
	src := header + `defaults: {timeout: 2s, retries: 1}
tests:
  # log in, then use the token
  - name: journey
    journey:
      - http: {method: POST, path: /login, body: '{"u":"${U}"}'}
        capture: {token: token}
      - http: {path: /me, headers: {Authorization: "Bearer ${token}"}}
        expect: {status: 200, json: {id: 7}}
  - name: db
    sql: {table: public.orders, columns: [id, total]}
    retries: 0
`
	s, err := Parse([]byte(src), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out, "b.yaml")
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, out)
	}
	again, _ := back.Marshal()
	if string(again) != string(out) {
		t.Errorf("not a fixed point:\n%s\n---\n%s", out, again)
	}
	if back.Tests[0].Source != "log in, then use the token" || len(back.Tests[0].Journey) != 2 || *back.Tests[1].Retries != 0 {
		t.Errorf("lost content in the round trip:\n%s", out)
	}
}

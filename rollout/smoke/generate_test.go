package smoke

import (
	"encoding/json"

	"bytes"
	"github.com/getkin/kin-openapi/openapi3"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func loadAPIs(t *testing.T) (old, nw *API) {
	t.Helper()
	old, err := LoadOpenAPI("testdata/orders-v1.yaml")
	if err != nil {
		t.Fatalf("LoadOpenAPI(v1): %v", err)
	}
	nw, err = LoadOpenAPI("testdata/orders-v2.yaml")
	if err != nil {
		t.Fatalf("LoadOpenAPI(v2): %v", err)
	}
	return old, nw
}

// generateOrders is the suite the acceptance tests run: the v1 -> v2 change.
func generateOrders(t *testing.T) *Suite {
	t.Helper()
	old, nw := loadAPIs(t)
	s, _, err := Generate(GenerateOptions{Name: "orders-v2", OldAPI: old, NewAPI: nw})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return s
}

func httpTestNames(s *Suite) []string {
	var names []string
	for _, t := range s.Tests {
		if t.HTTP != nil && !strings.HasPrefix(t.Name, "health: ") {
			names = append(names, t.Name)
		}
	}
	sort.Strings(names)
	return names
}

func TestDiffOperations(t *testing.T) {
	old, nw := loadAPIs(t)
	got := DiffOperations(old, nw)
	want := []OperationChange{
		{Method: "GET", Path: "/orders", Change: "changed", Parts: []string{"parameters"}},
		{Method: "POST", Path: "/orders", Change: "changed", Parts: []string{"request body", "responses"}},
		{Method: "GET", Path: "/orders/{orderId}", Change: "changed", Parts: []string{"responses"}},
		{Method: "PUT", Path: "/orders/{orderId}/cancel", Change: "added"},
		{Method: "GET", Path: "/orders/{orderId}/items", Change: "added"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DiffOperations:\n got %+v\nwant %+v", got, want)
	}
	// Unchanged despite a renamed path parameter (DELETE /orders/{id}) and
	// reworded descriptions (GET /customers/{customerId}).
	if all := DiffOperations(nil, nw); len(all) != 8 {
		t.Errorf("DiffOperations(nil, new) = %d operations, want all 8", len(all))
	}
}

func TestGenerateCoversExactlyTheChangedOperations(t *testing.T) {
	s := generateOrders(t)
	want := []string{"GET /orders", "GET /orders/{orderId}", "GET /orders/{orderId}/items", "POST /orders"}
	if got := httpTestNames(s); !reflect.DeepEqual(got, want) {
		t.Errorf("operation tests = %q, want %q (PUT .../cancel is unsafe without an example)", got, want)
	}
	byName := map[string]Test{}
	for _, tc := range s.Tests {
		byName[tc.Name] = tc
	}
	items := byName["GET /orders/{orderId}/items"]
	if items.HTTP.Path != "/api/orders/42/items?limit=1" {
		t.Errorf("items path = %q, want the server base path, the example id and the minimum limit", items.HTTP.Path)
	}
	post := byName["POST /orders"]
	if post.HTTP.Body != `{"currency":"EUR","items":["sku-1","sku-2"]}` || post.Expect.Status != 201 {
		t.Errorf("POST /orders: body %q status %d, want the spec's example and 201", post.HTTP.Body, post.Expect.Status)
	}
	order := byName["GET /orders/{orderId}"]
	if req, _ := order.Expect.Schema["required"].([]any); len(req) != 3 {
		t.Errorf("GET /orders/{orderId} schema required = %v, want the v2 Order's id, total, currency", order.Expect.Schema["required"])
	}
	if !strings.Contains(order.Source, "changed responses") || !strings.Contains(order.Source, "orders-v2.yaml:58") {
		t.Errorf("source comment = %q, want what changed and where", order.Source)
	}
	health := byName["health: GET /health"]
	if health.HTTP == nil || health.HTTP.Path != "/api/health" || !health.Expect.Healthy {
		t.Errorf("health test = %+v, want GET /api/health expecting a healthy body", health)
	}
	if !strings.Contains(s.Comment, "Skipped PUT /orders/{orderId}/cancel") {
		t.Errorf("suite comment does not list the skipped unsafe operation:\n%s", s.Comment)
	}
}

func TestGenerateUnsafeIncludesEveryUnsafeOperation(t *testing.T) {
	old, nw := loadAPIs(t)
	s, skipped, err := Generate(GenerateOptions{OldAPI: old, NewAPI: nw, Unsafe: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 0 {
		t.Errorf("skipped = %v, want none with Unsafe", skipped)
	}
	want := []string{"GET /orders", "GET /orders/{orderId}", "GET /orders/{orderId}/items", "POST /orders", "PUT /orders/{orderId}/cancel"}
	if got := httpTestNames(s); !reflect.DeepEqual(got, want) {
		t.Errorf("operation tests = %q, want %q", got, want)
	}
}

func TestGenerateWithoutOldSpecCoversEveryOperation(t *testing.T) {
	_, nw := loadAPIs(t)
	s, skipped, err := Generate(GenerateOptions{NewAPI: nw})
	if err != nil {
		t.Fatal(err)
	}
	// 8 operations: DELETE and PUT have no example, GET /health is the op test itself.
	want := []string{"GET /customers/{customerId}", "GET /health", "GET /orders", "GET /orders/{orderId}", "GET /orders/{orderId}/items", "POST /orders"}
	if got := httpTestNames(s); !reflect.DeepEqual(got, want) {
		t.Errorf("operation tests = %q, want %q", got, want)
	}
	if len(skipped) != 2 {
		t.Errorf("skipped = %v, want DELETE and PUT", skipped)
	}
	for _, tc := range s.Tests {
		if tc.Name == "GET /customers/{customerId}" && tc.HTTP.Path != "/api/customers/00000000-0000-4000-8000-000000000001" {
			t.Errorf("uuid path parameter = %q, want a generated uuid", tc.HTTP.Path)
		}
		if tc.Name == "GET /health" && !tc.Expect.Healthy {
			t.Errorf("GET /health added as an operation must also expect a healthy body")
		}
		if strings.HasPrefix(tc.Name, "health: ") {
			t.Errorf("health endpoint tested twice: %q", tc.Name)
		}
	}
}

func TestGenerateIsDeterministicAndRoundTrips(t *testing.T) {
	old, nw := loadAPIs(t)
	m, err := ParseMigrations("testdata/migrations")
	if err != nil {
		t.Fatal(err)
	}
	flags, err := LoadFlags("testdata/flags.yaml")
	if err != nil {
		t.Fatal(err)
	}
	opts := GenerateOptions{Name: "checkout", OldAPI: old, NewAPI: nw, Migrations: m, Flags: flags, GRPCHealth: "127.0.0.1:50051"}
	var outs [][]byte
	for range 3 {
		s, _, err := Generate(opts)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, b)
	}
	if !bytes.Equal(outs[0], outs[1]) || !bytes.Equal(outs[0], outs[2]) {
		t.Fatalf("Generate is not deterministic:\n%s\n---\n%s", outs[0], outs[1])
	}
	path := filepath.Join(t.TempDir(), "smoke.yaml")
	if err := os.WriteFile(path, outs[0], 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatalf("the generated suite does not load back: %v\n%s", err, outs[0])
	}
	again, err := back.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// Comments (test sources) survive a load and re-encode, except the
	// document header which belongs to the generator.
	if !bytes.Equal(dropHeader(again), dropHeader(outs[0])) {
		t.Errorf("load+marshal changed the suite:\n%s\n---\n%s", outs[0], again)
	}
	for _, secret := range []string{"postgres://", "password"} {
		if bytes.Contains(outs[0], []byte(secret)) {
			t.Errorf("generated suite contains %q", secret)
		}
	}
}

func dropHeader(b []byte) []byte {
	i := bytes.Index(b, []byte("apiVersion:"))
	return b[i:]
}

func TestSampleSatisfiesTheSchema(t *testing.T) {
	for _, tc := range []struct {
		name   string
		schema map[string]any
		is31   bool
	}{
		{"bounded integer", map[string]any{"type": "integer", "minimum": 10.0, "maximum": 20.0}, false},
		{"exclusive minimum (3.1)", map[string]any{"type": "number", "exclusiveMinimum": 5.0}, true},
		{"string lengths", map[string]any{"type": "string", "minLength": 8.0}, false},
		{"formats", map[string]any{"type": "object", "required": []any{"at", "id", "mail"}, "properties": map[string]any{
			"at": map[string]any{"type": "string", "format": "date-time"}, "id": map[string]any{"type": "string", "format": "uuid"},
			"mail": map[string]any{"type": "string", "format": "email"}}}, false},
		{"nested required", map[string]any{"type": "object", "required": []any{"items"}, "properties": map[string]any{
			"items": map[string]any{"type": "array", "items": map[string]any{"type": "object", "required": []any{"sku"},
				"properties": map[string]any{"sku": map[string]any{"type": "string", "enum": []any{"a", "b"}}}}}}}, false},
		{"allOf", map[string]any{"allOf": []any{
			map[string]any{"type": "object", "required": []any{"a"}, "properties": map[string]any{"a": map[string]any{"type": "boolean"}}},
			map[string]any{"type": "object", "required": []any{"b"}, "properties": map[string]any{"b": map[string]any{"type": "integer"}}}}}, false},
		{"nullable type list", map[string]any{"type": []any{"null", "integer"}, "minimum": 3.0}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := sample(tc.schema, 0)
			dialect, opts := DialectOpenAPI30, []openapi3.SchemaValidationOption{openapi3.EnableFormatValidation()}
			if tc.is31 {
				dialect, opts = DialectOpenAPI31, append(opts, openapi3.EnableJSONSchema2020())
			}
			sch, err := compileSchema(tc.schema, dialect)
			if err != nil {
				t.Fatal(err)
			}
			if err := sch.VisitJSON(jsonRoundTrip(t, v), opts...); err != nil {
				t.Errorf("sample %v does not satisfy its schema: %v", v, err)
			}
		})
	}
}

func jsonRoundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGenerateSerialisesParametersByOpenAPIStyle(t *testing.T) {
	spec := writeSpec(t, `openapi: 3.0.3
info: {title: x, version: '1'}
paths:
  /items/{ids}:
    get:
      parameters:
        - {name: ids, in: path, required: true, schema: {type: array, items: {type: integer}}, example: [3, 4]}
        - {name: tag, in: query, required: true, schema: {type: array, items: {type: string, enum: [a b]}}}
        - {name: page, in: query, schema: {type: integer}}
        - {name: X-Tenant, in: header, required: true, schema: {type: string, format: uuid}}
      responses:
        "200": {description: ok}
`)
	api, err := LoadOpenAPI(spec)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := Generate(GenerateOptions{NewAPI: api, NoHealth: true})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Tests[0].HTTP
	if h.Path != "/items/3,4?tag=a+b" || h.Headers["X-Tenant"] != "00000000-0000-4000-8000-000000000001" {
		t.Errorf("path %q headers %v, want /items/3,4?tag=a+b (optional page left out) and a uuid tenant", h.Path, h.Headers)
	}
	if s.Tests[0].Expect.Status != 200 || s.Tests[0].Expect.Schema != nil {
		t.Errorf("expect = %+v, want status 200 and no schema (the response has no content)", s.Tests[0].Expect)
	}
}

func TestGenerateInlinesSchemasFromOtherFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "models.yaml"), []byte(`Order:
  type: object
  required: [id, lines]
  properties:
    id: {type: integer}
    lines: {type: array, items: {$ref: "#/Line"}}
Line:
  type: object
  required: [sku]
  properties:
    sku: {type: string}
    children: {type: array, items: {$ref: "#/Line"}}
`), 0o644)
	spec := filepath.Join(dir, "api.yaml")
	os.WriteFile(spec, []byte(`openapi: 3.0.3
info: {title: x, version: '1'}
paths:
  /orders/{id}:
    get:
      parameters: [{name: id, in: path, required: true, schema: {type: integer}}]
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {$ref: "models.yaml#/Order"}
`), 0o644)
	api, err := LoadOpenAPI(spec)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := Generate(GenerateOptions{NewAPI: api, NoHealth: true})
	if err != nil {
		t.Fatal(err)
	}
	sch := s.Tests[0].Expect.Schema
	b, _ := json.Marshal(sch)
	if strings.Contains(string(b), "$ref") || !strings.Contains(string(b), `"sku"`) {
		t.Fatalf("schema not inlined: %s", b)
	}
	compiled, err := compileSchema(sch, "")
	if err != nil {
		t.Fatal(err)
	}
	good := jsonRoundTrip(t, map[string]any{"id": 1, "lines": []any{map[string]any{"sku": "a", "children": []any{map[string]any{"sku": "b"}}}}})
	if err := compiled.VisitJSON(good); err != nil {
		t.Errorf("valid order refused: %v", err)
	}
	if err := compiled.VisitJSON(jsonRoundTrip(t, map[string]any{"id": 1, "lines": []any{map[string]any{}}})); err == nil {
		t.Error("a line without sku passed the inlined schema")
	}
}

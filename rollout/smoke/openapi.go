package smoke

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"gopkg.in/yaml.v3"
)

// API is an OpenAPI 3 document loaded and validated by kin-openapi, kept as
// a plain JSON tree with every $ref local, which is what generation compares
// and copies schemas from.
type API struct {
	File string
	Doc  *openapi3.T

	tree map[string]any
	node *yaml.Node // the file as written, for the line of each operation
}

// LoadOpenAPI reads and validates an OpenAPI 3 document (YAML or JSON).
// External $refs are followed to local files only. Problems are returned as
// *InputError with the file, the line and the reason.
func LoadOpenAPI(path string) (*API, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &InputError{File: path, Reason: err.Error()}
	}
	var node yaml.Node
	if err := yaml.Unmarshal(data, &node); err != nil {
		return nil, inFile(err, path)
	}
	if node.Kind == 0 || len(node.Content) == 0 || node.Content[0].Kind != yaml.MappingNode {
		return nil, &InputError{File: path, Line: 1, Reason: "not an OpenAPI document: expected a mapping at the top"}
	}
	root := node.Content[0]
	if v := mapValue(root, "openapi"); v == nil {
		l := 1
		if sw := mapKey(root, "swagger"); sw != nil {
			return nil, &InputError{File: path, Line: sw.Line, Reason: "Swagger 2.0 is not supported; convert the document to OpenAPI 3"}
		}
		return nil, &InputError{File: path, Line: l, Reason: "not an OpenAPI 3 document: the openapi field is missing"}
	} else if !strings.HasPrefix(v.Value, "3.") {
		return nil, &InputError{File: path, Line: v.Line, Reason: fmt.Sprintf("openapi version %q is not supported; want 3.x", v.Value)}
	}

	loader := openapi3.NewLoader()
	loader.IncludeOrigin = true
	// Files only: a spec must not make generation read URLs.
	loader.ReadFromURIFunc = openapi3.ReadFromFile
	loader.Context = context.Background()
	doc, err := loader.LoadFromFile(path)
	if err != nil {
		return nil, openAPIError(err, path, root)
	}
	if err := doc.Validate(loader.Context, openapi3.DisableExamplesValidation()); err != nil {
		return nil, openAPIError(err, path, root)
	}
	// Every $ref made local, so the JSON tree below resolves on its own.
	doc.InternalizeRefs(loader.Context, nil)
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, &InputError{File: path, Reason: err.Error()}
	}
	var tree map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return nil, &InputError{File: path, Reason: err.Error()}
	}
	return &API{File: path, Doc: doc, tree: tree, node: root}, nil
}

var originType = reflect.TypeOf((*openapi3.Origin)(nil))

// openAPIError locates a kin-openapi error: the Origin kin-openapi records
// on most validation errors, a "line N" from the YAML decoder, or the path
// named by a context wrapper, in that order.
func openAPIError(err error, file string, root *yaml.Node) error {
	reason := strings.Join(strings.Fields(err.Error()), " ")
	if l := originLine(err); l > 0 {
		return &InputError{File: file, Line: l, Reason: reason}
	}
	if g := yamlLineRE.FindStringSubmatch(err.Error()); g != nil {
		return fromYAMLError(errors.New(g[0]), file)
	}
	// A reference that does not resolve: point at the $ref naming it.
	for _, q := range quotedRE.FindAllStringSubmatch(err.Error(), -1) {
		if l := scalarLine(root, q[1]); l > 0 {
			return &InputError{File: file, Line: l, Reason: reason}
		}
	}
	// A path-level problem names the path; point at it.
	if paths := mapValue(root, "paths"); paths != nil {
		for i := 0; i+1 < len(paths.Content); i += 2 {
			if strings.Contains(err.Error(), paths.Content[i].Value) {
				return &InputError{File: file, Line: paths.Content[i].Line, Reason: reason}
			}
		}
	}
	// Top-level fields (info, openapi) carry no origin; point at the field.
	for i := 0; i+1 < len(root.Content); i += 2 {
		if strings.Contains(reason, root.Content[i].Value) {
			return &InputError{File: file, Line: root.Content[i].Line, Reason: reason}
		}
	}
	return &InputError{File: file, Line: 1, Reason: reason}
}

// originLine walks the error chain for an Origin field: kin-openapi's typed
// validation errors each carry one but share no interface for it.
func originLine(err error) int {
	queue := []error{err}
	for len(queue) > 0 {
		e := queue[0]
		queue = queue[1:]
		if e == nil {
			continue
		}
		v := reflect.ValueOf(e)
		for v.Kind() == reflect.Pointer && !v.IsNil() {
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct {
			if f := v.FieldByName("Origin"); f.IsValid() && f.Type() == originType && !f.IsNil() {
				if o := f.Interface().(*openapi3.Origin); o.Key != nil && o.Key.Line > 0 {
					return o.Key.Line
				}
			}
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			queue = append(queue, u.Unwrap()...)
		case interface{ Unwrap() error }:
			queue = append(queue, u.Unwrap())
		}
		if me, ok := e.(openapi3.MultiError); ok {
			queue = append(queue, me...)
		}
	}
	return 0
}

var quotedRE = regexp.MustCompile(`"((?:#|\.|/)[^"]+)"`)

// scalarLine finds the line of the first scalar with the given value.
func scalarLine(n *yaml.Node, value string) int {
	if n.Kind == yaml.ScalarNode && n.Value == value {
		return n.Line
	}
	for _, c := range n.Content {
		if l := scalarLine(c, value); l > 0 {
			return l
		}
	}
	return 0
}

func mapKey(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i]
		}
	}
	return nil
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// operationLine is the line of paths.<path>.<method> in the file.
func (a *API) operationLine(path, method string) int {
	if k := mapKey(mapValue(mapValue(a.node, "paths"), path), strings.ToLower(method)); k != nil {
		return k.Line
	}
	return 0
}

// is31 reports whether the document is OpenAPI 3.1 or later, whose
// schemas are JSON Schema 2020-12.
func (a *API) is31() bool {
	v := strings.TrimPrefix(a.Doc.OpenAPI, "3.")
	minor, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(minor)
	return err == nil && n >= 1
}

// methods in the order tests are written for one path.
var methodOrder = []string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE"}

// Operation is one method on one path of an API.
type Operation struct {
	Method string // upper case
	Path   string // the template as written: /orders/{id}
	op     map[string]any
	item   map[string]any
}

// Operations returns every operation, sorted by path then method.
func (a *API) Operations() []Operation {
	paths, _ := a.tree["paths"].(map[string]any)
	var out []Operation
	for _, p := range sortedKeys(paths) {
		item, _ := a.resolve(paths[p], nil, keepRef).(map[string]any)
		for _, m := range methodOrder {
			if op, ok := item[strings.ToLower(m)].(map[string]any); ok {
				out = append(out, Operation{Method: m, Path: p, op: op, item: item})
			}
		}
	}
	return out
}

var templateParamRE = regexp.MustCompile(`\{[^}/]*\}`)

// opKey identifies an operation across versions: renaming {id} to
// {orderId} is not a new operation.
func opKey(method, path string) string {
	return method + " " + templateParamRE.ReplaceAllString(path, "{}")
}

// cycle policies for resolve: a schema check replaces a recursive schema by
// an unconstrained one; a comparison keeps the reference name.
type cyclePolicy int

const (
	keepRef cyclePolicy = iota
	permissive
)

// resolve returns a deep copy of v with local $refs replaced by what they
// point at.
func (a *API) resolve(v any, stack []string, policy cyclePolicy) any {
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"].(string); ok && strings.HasPrefix(ref, "#/") {
			for _, s := range stack {
				if s == ref {
					if policy == permissive {
						return map[string]any{}
					}
					return map[string]any{"$ref": ref}
				}
			}
			target, ok := a.pointer(ref)
			if !ok {
				return map[string]any{"$ref": ref}
			}
			return a.resolve(target, append(stack, ref), policy)
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = a.resolve(e, stack, policy)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = a.resolve(e, stack, policy)
		}
		return out
	}
	return v
}

func (a *API) pointer(ref string) (any, bool) {
	var cur any = a.tree
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		part, _ = url.PathUnescape(part)
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// parameters merges path-level and operation-level parameters, the latter
// winning by (in, name) as OpenAPI says. Sorted by in then name.
func (a *API) parameters(o Operation) []map[string]any {
	byKey := map[string]map[string]any{}
	var order []string
	for _, src := range []any{o.item["parameters"], o.op["parameters"]} {
		list, _ := a.resolve(src, nil, keepRef).([]any)
		for _, p := range list {
			pm, ok := p.(map[string]any)
			if !ok {
				continue
			}
			k := fmt.Sprint(pm["in"]) + ":" + fmt.Sprint(pm["name"])
			if _, seen := byKey[k]; !seen {
				order = append(order, k)
			}
			byKey[k] = pm
		}
	}
	sort.Strings(order)
	out := make([]map[string]any, len(order))
	for i, k := range order {
		out[i] = byKey[k]
	}
	return out
}

// contract is what a client relies on: parameters, request body and
// responses with documentation stripped, as comparable JSON per part.
func (a *API) contract(o Operation) map[string]string {
	// A path parameter is known by its place in the template, so renaming
	// {id} to {orderId} changes nothing a client sends.
	var params []any
	for _, p := range a.parameters(o) {
		if p["in"] == "path" {
			name, _ := p["name"].(string)
			q := make(map[string]any, len(p))
			for k, v := range p {
				q[k] = v
			}
			q["name"] = fmt.Sprintf("#%d", strings.Index(o.Path, "{"+name+"}"))
			p = q
		}
		params = append(params, p)
	}
	sortParams(params)
	parts := map[string]any{
		"parameters":   params,
		"request body": a.resolve(o.op["requestBody"], nil, keepRef),
		"responses":    a.resolve(o.op["responses"], nil, keepRef),
	}
	out := make(map[string]string, len(parts))
	for k, v := range parts {
		b, _ := json.Marshal(stripDocs(v))
		out[k] = string(b)
	}
	return out
}

// stripDocs drops what documents rather than constrains: a reworded
// description must not make an operation "changed".
func stripDocs(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			switch {
			case k == "description", k == "summary", k == "example", k == "examples",
				k == "externalDocs", k == "title", k == "deprecated", strings.HasPrefix(k, "x-"):
				continue
			}
			out[k] = stripDocs(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = stripDocs(e)
		}
		return out
	}
	return v
}

// OperationChange is an operation the new API adds or changes.
type OperationChange struct {
	Method string
	Path   string   // as in the new document
	Change string   // "added" or "changed"
	Parts  []string // for "changed": parameters, request body, responses
}

// DiffOperations lists the operations of newer that older lacks or defines
// differently, sorted by path then method. With older nil every operation
// of newer counts as added.
func DiffOperations(older, newer *API) []OperationChange {
	before := map[string]Operation{}
	if older != nil {
		for _, o := range older.Operations() {
			before[opKey(o.Method, o.Path)] = o
		}
	}
	var out []OperationChange
	for _, o := range newer.Operations() {
		prev, ok := before[opKey(o.Method, o.Path)]
		if !ok {
			out = append(out, OperationChange{Method: o.Method, Path: o.Path, Change: "added"})
			continue
		}
		was, is := older.contract(prev), newer.contract(o)
		var parts []string
		for _, k := range []string{"parameters", "request body", "responses"} {
			if was[k] != is[k] {
				parts = append(parts, k)
			}
		}
		if len(parts) > 0 {
			out = append(out, OperationChange{Method: o.Method, Path: o.Path, Change: "changed", Parts: parts})
		}
	}
	return out
}

func (a *API) operation(method, path string) (Operation, bool) {
	for _, o := range a.Operations() {
		if o.Method == method && o.Path == path {
			return o, true
		}
	}
	return Operation{}, false
}

// basePath is the path of the first server URL ("/v1" of
// https://api.example.com/v1), which operation paths are relative to.
func (a *API) basePath() string {
	servers, _ := a.tree["servers"].([]any)
	if len(servers) == 0 {
		return ""
	}
	s, _ := servers[0].(map[string]any)
	raw, _ := s["url"].(string)
	if strings.Contains(raw, "{") {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.TrimRight(u.Path, "/")
}

func sortParams(ps []any) {
	sort.Slice(ps, func(i, j int) bool {
		a, _ := ps[i].(map[string]any)
		b, _ := ps[j].(map[string]any)
		return fmt.Sprint(a["in"], ":", a["name"]) < fmt.Sprint(b["in"], ":", b["name"])
	})
}

package smoke

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"gopkg.in/yaml.v3"
)

// The suite document's identity, as for every Guardian document.
const (
	APIVersion = "guardian.dev/v1alpha1"
	Kind       = "SmokeSuite"
)

// Built-in settings for a suite that leaves them out.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultRetries     = 2
	DefaultBackoff     = 200 * time.Millisecond
	DefaultConcurrency = 4
	// DefaultDSNEnv is the environment variable SQL checks read their
	// connection string from when the suite names none.
	DefaultDSNEnv = "GUARDIAN_SMOKE_DSN"
)

// Suite is a smoke-test suite: checks that a freshly deployed version works
// at all, run before any user traffic reaches it.
type Suite struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
	Defaults   Defaults `yaml:"defaults,omitempty"`
	Tests      []Test   `yaml:"tests"`

	// Comment is written above the document when the suite is encoded; the
	// generator records its inputs and what it skipped there.
	Comment string `yaml:"-"`
	// File is where the suite was loaded from, for messages.
	File string `yaml:"-"`

	lines map[string]int
}

// Metadata names the suite.
type Metadata struct {
	Name string `yaml:"name"`
}

// Defaults apply to every test that does not set its own.
type Defaults struct {
	Timeout       *Duration `yaml:"timeout,omitempty"`
	Retries       *int      `yaml:"retries,omitempty"`
	Backoff       *Duration `yaml:"backoff,omitempty"`
	LatencyBudget *Duration `yaml:"latencyBudget,omitempty"`
	Concurrency   int       `yaml:"concurrency,omitempty"`

	lines map[string]int
}

// Test is one check. Exactly one of HTTP, SQL, Flag and GRPC is set.
type Test struct {
	Name string     `yaml:"name"`
	HTTP *HTTPCheck `yaml:"http,omitempty"`
	// Expect says what an HTTP check's answer must look like; nil means any 2xx.
	Expect *Expect    `yaml:"expect,omitempty"`
	SQL    *SQLCheck  `yaml:"sql,omitempty"`
	Flag   *FlagCheck `yaml:"flag,omitempty"`
	GRPC   *GRPCCheck `yaml:"grpc,omitempty"`
	// Journey is a sequence of HTTP steps, later steps using values
	// captured from earlier answers (log in, then fetch with the token).
	Journey []Step `yaml:"journey,omitempty"`

	// Per-test overrides of the suite defaults.
	Timeout       *Duration `yaml:"timeout,omitempty"`
	Retries       *int      `yaml:"retries,omitempty"`
	Backoff       *Duration `yaml:"backoff,omitempty"`
	LatencyBudget *Duration `yaml:"latencyBudget,omitempty"`

	// Source says where the test came from; it is written as the comment
	// above the test and read back from it.
	Source string `yaml:"-"`
	// Line is the test's line in the suite file, 0 when built in code.
	Line int `yaml:"-"`

	lines map[string]int
}

// Step is one request of a journey.
type Step struct {
	HTTP   *HTTPCheck `yaml:"http"`
	Expect *Expect    `yaml:"expect,omitempty"`
	// Capture maps variable names to dotted paths into the JSON answer
	// ("token", "user.id"); later steps use them as ${name} in their path,
	// headers and body.
	Capture map[string]string `yaml:"capture,omitempty"`

	lines map[string]int
	line  int
}

// HTTPCheck sends one request to the target.
type HTTPCheck struct {
	Method  string            `yaml:"method,omitempty"` // default GET
	Path    string            `yaml:"path"`             // joined to the target URL, query included
	Headers map[string]string `yaml:"headers,omitempty"`
	Body    string            `yaml:"body,omitempty"`

	lines map[string]int
}

// Expect is what an HTTP answer must satisfy; every set field is checked.
type Expect struct {
	// Status is the exact status code; 0 accepts any 2xx.
	Status int `yaml:"status,omitempty"`
	// Schema is a JSON Schema (the OpenAPI 3 subset) the JSON body must
	// satisfy, stored inline so the suite needs no spec at run time.
	Schema map[string]any `yaml:"schema,omitempty"`
	// SchemaDialect says how to read Schema: openapi-3.0 (the default) or
	// openapi-3.1 (JSON Schema 2020-12: type lists, numeric
	// exclusiveMinimum, const …).
	SchemaDialect string `yaml:"schemaDialect,omitempty"`
	// BodyContains must appear in the body verbatim.
	BodyContains string `yaml:"bodyContains,omitempty"`
	// Healthy requires a health report: a JSON object whose "status"
	// (or "health", "state") is healthy, ok, up, pass or serving, or a plain
	// body holding one of those words.
	Healthy bool `yaml:"healthy,omitempty"`
	// JSON maps dotted paths into the JSON body ("data.items.0.id") to the
	// values found there.
	JSON map[string]any `yaml:"json,omitempty"`
	// Headers maps response header names to their exact values.
	Headers map[string]string `yaml:"headers,omitempty"`

	lines map[string]int
}

// SQLCheck runs against a database reached through the DSN in an environment
// variable; the DSN itself is never stored in the suite.
type SQLCheck struct {
	DSNEnv string `yaml:"dsnEnv,omitempty"` // default GUARDIAN_SMOKE_DSN
	// Query must run without error (connectivity: SELECT 1).
	Query string `yaml:"query,omitempty"`
	// Table must exist with at least Columns; "schema.table" or a table in
	// the connection's current schema.
	Table   string   `yaml:"table,omitempty"`
	Columns []string `yaml:"columns,omitempty,flow"`

	lines map[string]int
}

// FlagCheck reads a feature flag's state from the target and compares it
// with the expected one.
type FlagCheck struct {
	Name string `yaml:"name"`
	// Expect is the state the flag must be in: true/false (on/off,
	// enabled/disabled count as the same) or any other scalar.
	Expect any `yaml:"expect"`
	// Path is requested with GET; default /flags/{name}.
	Path string `yaml:"path,omitempty"`
	// Header, when set, is the response header holding the state; otherwise
	// the JSON body holds it (see Field).
	Header string `yaml:"header,omitempty"`
	// Field is the dotted path of the state in the JSON body. Empty: a bare
	// scalar body, or the first of the flag name, "enabled", "value", "state".
	Field   string            `yaml:"field,omitempty"`
	Headers map[string]string `yaml:"headers,omitempty"`

	lines map[string]int
}

// GRPCCheck asks a grpc.health.v1 Health service whether a service is SERVING.
type GRPCCheck struct {
	// Address is host:port; empty means Options.GRPCTarget.
	Address string `yaml:"address,omitempty"`
	// Service is the name passed to Health.Check; "" asks about the server.
	Service string `yaml:"service,omitempty"`

	lines map[string]int
}

// Kind names the check a test runs: http, sql, flag or grpc.
func (t *Test) Kind() string {
	switch {
	case t.HTTP != nil:
		return "http"
	case t.SQL != nil:
		return "sql"
	case t.Flag != nil:
		return "flag"
	case t.GRPC != nil:
		return "grpc"
	case len(t.Journey) > 0:
		return "journey"
	}
	return ""
}

// Load reads, strictly decodes and validates a suite file. Problems are
// *InputError or InputErrors naming the file and line.
func Load(path string) (*Suite, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &InputError{File: path, Reason: err.Error()}
	}
	return Parse(data, path)
}

// Parse is Load for a suite already in memory; file is used in messages.
func Parse(data []byte, file string) (*Suite, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, inFile(err, file)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &InputError{File: file, Reason: "empty suite file"}
	}
	root := doc.Content[0]
	s := &Suite{}
	if err := root.Decode(s); err != nil {
		return nil, inFile(err, file)
	}
	s.File = file
	if err := s.Validate(); err != nil {
		return nil, inFile(err, file)
	}
	return s, nil
}

type suiteFields Suite

// UnmarshalYAML decodes strictly and keeps the comments above tests as their
// Source.
func (s *Suite) UnmarshalYAML(n *yaml.Node) error {
	lines, err := decodeStrict(n, (*suiteFields)(s), "suite")
	if err != nil {
		return err
	}
	s.lines = lines
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != "tests" || n.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		for j, item := range n.Content[i+1].Content {
			if j < len(s.Tests) {
				s.Tests[j].Line = item.Line
				s.Tests[j].Source = commentText(item.HeadComment)
			}
		}
	}
	return nil
}

type defaultsFields Defaults

func (d *Defaults) UnmarshalYAML(n *yaml.Node) error {
	lines, err := decodeStrict(n, (*defaultsFields)(d), "defaults")
	d.lines = lines
	return err
}

type testFields Test

func (t *Test) UnmarshalYAML(n *yaml.Node) error {
	lines, err := decodeStrict(n, (*testFields)(t), "test")
	t.lines = lines
	t.Line = n.Line
	return err
}

type stepFields Step

func (st *Step) UnmarshalYAML(n *yaml.Node) error {
	lines, err := decodeStrict(n, (*stepFields)(st), "journey step")
	st.lines, st.line = lines, n.Line
	return err
}

type httpFields HTTPCheck

func (h *HTTPCheck) UnmarshalYAML(n *yaml.Node) error {
	lines, err := decodeStrict(n, (*httpFields)(h), "http")
	h.lines = lines
	return err
}

type expectFields Expect

func (e *Expect) UnmarshalYAML(n *yaml.Node) error {
	lines, err := decodeStrict(n, (*expectFields)(e), "expect")
	e.lines = lines
	return err
}

type sqlFields SQLCheck

func (c *SQLCheck) UnmarshalYAML(n *yaml.Node) error {
	lines, err := decodeStrict(n, (*sqlFields)(c), "sql")
	c.lines = lines
	return err
}

type flagFields FlagCheck

func (c *FlagCheck) UnmarshalYAML(n *yaml.Node) error {
	lines, err := decodeStrict(n, (*flagFields)(c), "flag")
	c.lines = lines
	if err == nil {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "expect" && n.Content[i+1].Kind != yaml.ScalarNode {
				return inputErr(n.Content[i+1].Line, "flag: expect must be a scalar (true, false, a variant name), got %s", kindName(n.Content[i+1]))
			}
		}
	}
	return err
}

type grpcFields GRPCCheck

func (c *GRPCCheck) UnmarshalYAML(n *yaml.Node) error {
	lines, err := decodeStrict(n, (*grpcFields)(c), "grpc")
	c.lines = lines
	return err
}

func commentText(c string) string {
	var out []string
	for _, l := range strings.Split(c, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))
		if l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// line returns the line of field key, or fallback when the value was not
// read from a file.
func line(lines map[string]int, key string, fallback int) int {
	if l, ok := lines[key]; ok {
		return l
	}
	return fallback
}

var headerNameRE = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$")

// Validate checks the whole suite and reports every problem found, each
// with its line when the suite came from a file. It also compiles response
// schemas, so a suite built in code should be validated before Run (Run
// validates too and fails the tests it cannot run).
func (s *Suite) Validate() error {
	var errs InputErrors
	add := func(l int, format string, a ...any) { errs = append(errs, inputErr(l, format, a...)) }

	if s.APIVersion != APIVersion {
		add(line(s.lines, "apiVersion", 1), "apiVersion must be %q, got %q", APIVersion, s.APIVersion)
	}
	if s.Kind != Kind {
		add(line(s.lines, "kind", 1), "kind must be %q, got %q", Kind, s.Kind)
	}
	if s.Metadata.Name == "" {
		add(line(s.lines, "metadata", 1), "metadata.name is required")
	}
	d := s.Defaults
	if d.Retries != nil && (*d.Retries < 0 || *d.Retries > 20) {
		add(line(d.lines, "retries", 1), "defaults.retries must be between 0 and 20, got %d", *d.Retries)
	}
	if d.Timeout != nil && *d.Timeout == 0 {
		add(line(d.lines, "timeout", 1), "defaults.timeout must be positive")
	}
	if d.Concurrency < 0 {
		add(line(d.lines, "concurrency", 1), "defaults.concurrency must not be negative, got %d", d.Concurrency)
	}
	if len(s.Tests) == 0 {
		add(line(s.lines, "tests", 1), "tests: the suite has no tests")
	}
	seen := map[string]int{}
	for i := range s.Tests {
		t := &s.Tests[i]
		at := func(key string) int { return line(t.lines, key, t.Line) }
		if t.Name == "" {
			add(t.Line, "tests[%d]: name is required", i)
		} else if prev, dup := seen[t.Name]; dup {
			add(at("name"), "test %q: name already used on line %d; names must be unique so reports can tell tests apart", t.Name, prev)
		} else {
			seen[t.Name] = at("name")
		}
		label := fmt.Sprintf("test %q", t.Name)
		if t.Name == "" {
			label = fmt.Sprintf("tests[%d]", i)
		}
		n := 0
		for _, set := range []bool{t.HTTP != nil, t.SQL != nil, t.Flag != nil, t.GRPC != nil, t.Journey != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			add(t.Line, "%s: exactly one of http, sql, flag, grpc, journey must be set, got %d", label, n)
		}
		if t.Journey != nil && len(t.Journey) == 0 {
			add(at("journey"), "%s: journey has no steps", label)
		}
		for j := range t.Journey {
			st := &t.Journey[j]
			sl := func(key string) int { return line(st.lines, key, st.line) }
			if st.HTTP == nil {
				add(st.line, "%s: journey step %d: http is required", label, j+1)
			} else {
				errs = append(errs, validateHTTP(st.HTTP, fmt.Sprintf("%s: journey step %d", label, j+1), sl("http"))...)
			}
			if st.Expect != nil {
				errs = append(errs, validateExpect(st.Expect, fmt.Sprintf("%s: journey step %d", label, j+1), sl("expect"))...)
			}
			for _, v := range sortedKeys(st.Capture) {
				if !envNameRE.MatchString(v) {
					add(sl("capture"), "%s: journey step %d: capture name %q must be a variable name (letters, digits, _)", label, j+1, v)
				}
				if st.Capture[v] == "" {
					add(sl("capture"), "%s: journey step %d: capture %s needs a JSON path such as token or user.id", label, j+1, v)
				}
			}
		}
		if t.Expect != nil && t.HTTP == nil {
			add(at("expect"), "%s: expect applies to http tests only", label)
		}
		if t.Retries != nil && (*t.Retries < 0 || *t.Retries > 20) {
			add(at("retries"), "%s: retries must be between 0 and 20, got %d", label, *t.Retries)
		}
		if t.Timeout != nil && *t.Timeout == 0 {
			add(at("timeout"), "%s: timeout must be positive", label)
		}
		if t.HTTP != nil {
			errs = append(errs, validateHTTP(t.HTTP, label, at("http"))...)
		}
		if t.Expect != nil {
			errs = append(errs, validateExpect(t.Expect, label, at("expect"))...)
		}
		if c := t.SQL; c != nil {
			cl := func(key string) int { return line(c.lines, key, at("sql")) }
			if (c.Query == "") == (c.Table == "") {
				add(at("sql"), "%s: sql needs exactly one of query or table", label)
			}
			if len(c.Columns) > 0 && c.Table == "" {
				add(cl("columns"), "%s: sql.columns needs sql.table", label)
			}
			if c.DSNEnv != "" && !envNameRE.MatchString(c.DSNEnv) {
				add(cl("dsnEnv"), "%s: sql.dsnEnv must be an environment variable name, got %q (never put the DSN itself in the suite)", label, c.DSNEnv)
			}
			if c.Table != "" && strings.Count(c.Table, ".") > 1 {
				add(cl("table"), "%s: sql.table must be table or schema.table, got %q", label, c.Table)
			}
		}
		if c := t.Flag; c != nil {
			cl := func(key string) int { return line(c.lines, key, at("flag")) }
			if c.Name == "" {
				add(cl("name"), "%s: flag.name is required", label)
			}
			if c.Expect == nil {
				add(cl("expect"), "%s: flag.expect is required", label)
			}
			if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
				add(cl("path"), "%s: flag.path must start with /, got %q", label, c.Path)
			}
			if c.Header != "" && !headerNameRE.MatchString(c.Header) {
				add(cl("header"), "%s: flag.header %q is not a valid header name", label, c.Header)
			}
		}
		if c := t.GRPC; c != nil && c.Address != "" {
			if _, _, err := net.SplitHostPort(c.Address); err != nil {
				add(line(c.lines, "address", at("grpc")), "%s: grpc.address must be host:port, got %q", label, c.Address)
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func validateHTTP(h *HTTPCheck, label string, at int) InputErrors {
	var errs InputErrors
	hl := func(key string) int { return line(h.lines, key, at) }
	if h.Method != "" && !validMethod(h.Method) {
		errs = append(errs, inputErr(hl("method"), "%s: http.method %q is not an HTTP method", label, h.Method))
	}
	if !strings.HasPrefix(h.Path, "/") {
		errs = append(errs, inputErr(hl("path"), "%s: http.path must start with /, got %q", label, h.Path))
	}
	for _, k := range sortedKeys(h.Headers) {
		if !headerNameRE.MatchString(k) {
			errs = append(errs, inputErr(hl("headers"), "%s: http.headers: %q is not a valid header name", label, k))
		}
	}
	return errs
}

func validateExpect(e *Expect, label string, at int) InputErrors {
	var errs InputErrors
	el := func(key string) int { return line(e.lines, key, at) }
	if e.Status != 0 && (e.Status < 100 || e.Status > 599) {
		errs = append(errs, inputErr(el("status"), "%s: expect.status must be an HTTP status (100-599), got %d", label, e.Status))
	}
	switch e.SchemaDialect {
	case "", DialectOpenAPI30, DialectOpenAPI31:
		if e.Schema != nil {
			if _, err := compileSchema(e.Schema, e.SchemaDialect); err != nil {
				errs = append(errs, inputErr(el("schema"), "%s: expect.schema: %v", label, err))
			}
		}
	default:
		errs = append(errs, inputErr(el("schemaDialect"), "%s: expect.schemaDialect must be %s or %s, got %q", label, DialectOpenAPI30, DialectOpenAPI31, e.SchemaDialect))
	}
	return errs
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func validMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodTrace, http.MethodConnect:
		return true
	}
	return false
}

// Schema dialects of Expect.SchemaDialect.
const (
	DialectOpenAPI30 = "openapi-3.0"
	DialectOpenAPI31 = "openapi-3.1"
)

// compileSchema turns a stored schema into kin-openapi's type and checks it
// is a schema at all, so a typo fails at load rather than mid-rollout.
func compileSchema(m map[string]any, dialect string) (*openapi3.Schema, error) {
	raw, err := json.Marshal(jsonCompatible(m))
	if err != nil {
		return nil, err
	}
	var s openapi3.Schema
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&s); err != nil {
		return nil, err
	}
	opts := []openapi3.ValidationOption{openapi3.DisableExamplesValidation()}
	if dialect == DialectOpenAPI31 {
		opts = append(opts, openapi3.IsOpenAPI31OrLater())
	}
	if err := s.Validate(context.Background(), opts...); err != nil {
		return nil, err
	}
	return &s, nil
}

// jsonCompatible converts yaml.v3's map[any]any-free but int-keyed shapes
// into what encoding/json accepts; yaml.v3 yields map[string]any for string
// keys but keeps non-string keys as they are.
func jsonCompatible(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonCompatible(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = jsonCompatible(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonCompatible(e)
		}
		return out
	}
	return v
}

// Marshal writes the suite as YAML, with each test's Source as the comment
// above it, so a generated suite says where every check came from.
func (s *Suite) Marshal() ([]byte, error) {
	var root yaml.Node
	if err := root.Encode(s); err != nil {
		return nil, err
	}
	root.HeadComment = s.Comment
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, val := root.Content[i], root.Content[i+1]
		switch key.Value {
		case "metadata", "defaults":
			val.Style = yaml.FlowStyle
		case "tests":
			for j, item := range val.Content {
				if j < len(s.Tests) {
					item.HeadComment = s.Tests[j].Source
				}
				flowSmallMaps(item)
			}
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// flowSmallMaps writes the short, flat maps of a test (headers, a grpc
// address) on one line; schemas stay in block style to be readable.
func flowSmallMaps(n *yaml.Node) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		switch key.Value {
		case "schema":
			orderSchema(val)
			continue
		case "body":
			continue
		}
		if val.Kind == yaml.SequenceNode {
			for _, item := range val.Content {
				if item.Kind == yaml.MappingNode {
					flowSmallMaps(item)
				}
			}
		}
		if val.Kind == yaml.MappingNode {
			if flat(val) && len(val.Content) <= 8 {
				val.Style = yaml.FlowStyle
			} else {
				flowSmallMaps(val)
			}
		}
	}
}

func flat(n *yaml.Node) bool {
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode {
			return false
		}
		if strings.Contains(c.Value, "\n") {
			return false
		}
	}
	return true
}

// schemaKeyRank orders a schema's keywords the way people write them: what
// it is first, then its parts, then constraints (alphabetical after these).
var schemaKeyRank = map[string]int{
	"$ref": 1, "type": 2, "format": 3, "nullable": 4, "enum": 5, "const": 6,
	"required": 7, "properties": 8, "items": 9, "additionalProperties": 10,
	"allOf": 11, "oneOf": 12, "anyOf": 13, "not": 14,
}

func orderSchema(n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		return
	}
	type pair struct{ k, v *yaml.Node }
	pairs := make([]pair, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		pairs = append(pairs, pair{n.Content[i], n.Content[i+1]})
	}
	rank := func(k string) int {
		if r, ok := schemaKeyRank[k]; ok {
			return r
		}
		return 100
	}
	sort.SliceStable(pairs, func(i, j int) bool { return rank(pairs[i].k.Value) < rank(pairs[j].k.Value) })
	n.Content = n.Content[:0]
	for _, p := range pairs {
		n.Content = append(n.Content, p.k, p.v)
		switch p.k.Value {
		case "properties", "patternProperties", "$defs", "definitions":
			if p.v.Kind == yaml.MappingNode {
				for i := 1; i < len(p.v.Content); i += 2 {
					orderSchema(p.v.Content[i])
				}
			}
		case "items", "not", "additionalProperties", "contains":
			orderSchema(p.v)
		case "allOf", "oneOf", "anyOf", "prefixItems":
			for _, c := range p.v.Content {
				orderSchema(c)
			}
		}
		if p.k.Value == "required" || p.k.Value == "enum" {
			if p.v.Kind == yaml.SequenceNode && flat(p.v) {
				p.v.Style = yaml.FlowStyle
			}
		}
	}
	// Leaf schemas ({type: integer, minimum: 1}) read best on one line.
	if flat(n) && len(n.Content) <= 8 {
		n.Style = yaml.FlowStyle
	}
}

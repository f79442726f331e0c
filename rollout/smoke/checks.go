package smoke

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// maxBody bounds what a check reads of an answer; smoke tests look at small
// documents and must not be stalled by a large one.
const maxBody = 4 << 20

func (r *runner) url(path string) (string, error) {
	if r.opts.Target == "" {
		return "", errors.New("no target URL given")
	}
	base, err := url.Parse(r.opts.Target)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return "", fmt.Errorf("target %q is not an absolute URL", r.opts.Target)
	}
	return strings.TrimRight(r.opts.Target, "/") + path, nil
}

// do sends one request and reads the whole (bounded) answer. ${NAME} in
// the path, header values and body is replaced by vars[NAME] (a journey's
// captures) or else the environment variable.
func (r *runner) do(ctx context.Context, method, path string, headers map[string]string, body string, vars map[string]string) (*http.Response, []byte, error) {
	path, err := r.expand(path, vars, url.PathEscape)
	if err != nil {
		return nil, nil, fmt.Errorf("path: %w", err)
	}
	if body, err = r.expand(body, vars, nil); err != nil {
		return nil, nil, fmt.Errorf("body: %w", err)
	}
	u, err := r.url(path)
	if err != nil {
		return nil, nil, err
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, err
	}
	for k, vs := range r.opts.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	for k, v := range headers {
		v, err := r.expand(v, vars, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("header %s: %w", k, err)
		}
		req.Header.Set(k, v)
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading body: %w", method, path, err)
	}
	return resp, data, nil
}

var envRefRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expand replaces ${NAME} with a captured value or else the environment
// variable, so tokens stay out of the suite file. escape, when set, is
// applied to each substituted value.
func (r *runner) expand(v string, vars map[string]string, escape func(string) string) (string, error) {
	if !strings.Contains(v, "${") {
		return v, nil
	}
	var missing string
	out := envRefRE.ReplaceAllStringFunc(v, func(m string) string {
		name := m[2 : len(m)-1]
		val, ok := vars[name]
		if !ok {
			val = r.opts.Env(name)
		}
		if val == "" && !ok && missing == "" {
			missing = name
		}
		if escape != nil {
			val = escape(val)
		}
		return val
	})
	if missing != "" {
		return "", fmt.Errorf("environment variable %s is not set", missing)
	}
	return out, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (r *runner) checkHTTP(ctx context.Context, h *HTTPCheck, e *Expect) error {
	_, err := r.exchange(ctx, h, e, nil)
	return err
}

// checkJourney runs the steps in order, each seeing what earlier steps
// captured; the first failing step fails the journey.
func (r *runner) checkJourney(ctx context.Context, steps []Step) error {
	vars := map[string]string{}
	for i := range steps {
		st := &steps[i]
		doc, err := r.exchange(ctx, st.HTTP, st.Expect, vars)
		if err == nil {
			for _, name := range sortedKeys(st.Capture) {
				v, ok := lookup(doc, st.Capture[name])
				if !ok || v == nil {
					err = fmt.Errorf("body has no %s to capture as %s", st.Capture[name], name)
					break
				}
				vars[name] = scalarText(v)
			}
		}
		if err != nil {
			return fmt.Errorf("step %d (%s %s): %w", i+1, methodOf(st.HTTP), st.HTTP.Path, err)
		}
	}
	return nil
}

func methodOf(h *HTTPCheck) string {
	if h.Method == "" {
		return http.MethodGet
	}
	return h.Method
}

// exchange sends one request and checks the answer against e, returning
// the answer's JSON value (nil when the body is not JSON).
func (r *runner) exchange(ctx context.Context, h *HTTPCheck, e *Expect, vars map[string]string) (any, error) {
	method := methodOf(h)
	resp, body, err := r.do(ctx, method, h.Path, h.Headers, h.Body, vars)
	if err != nil {
		return nil, err
	}
	var doc any
	if json.Unmarshal(body, &doc) != nil {
		doc = nil
	}
	return doc, r.checkAnswer(resp, body, doc, e)
}

func (r *runner) checkAnswer(resp *http.Response, body []byte, doc any, e *Expect) error {
	if e == nil {
		e = &Expect{}
	}
	if e.Status != 0 && resp.StatusCode != e.Status {
		return fmt.Errorf("status %d, want %d%s", resp.StatusCode, e.Status, bodyHint(body))
	}
	if e.Status == 0 && (resp.StatusCode < 200 || resp.StatusCode > 299) {
		return fmt.Errorf("status %d, want 2xx%s", resp.StatusCode, bodyHint(body))
	}
	for _, k := range sortedKeys(e.Headers) {
		if got := resp.Header.Get(k); got != e.Headers[k] {
			return fmt.Errorf("header %s is %q, want %q", k, got, e.Headers[k])
		}
	}
	if e.BodyContains != "" && !bytes.Contains(body, []byte(e.BodyContains)) {
		return fmt.Errorf("body does not contain %q%s", e.BodyContains, bodyHint(body))
	}
	needJSON := e.Schema != nil || len(e.JSON) > 0
	if needJSON {
		if err := json.Unmarshal(body, new(any)); err != nil {
			return fmt.Errorf("body is not JSON (%v)%s", err, bodyHint(body))
		}
	}
	if e.Healthy {
		if err := checkHealthy(body); err != nil {
			return err
		}
	}
	if e.Schema != nil {
		sch := r.schemas[e]
		if sch == nil {
			return errors.New("expect.schema was not compiled")
		}
		var opts []openapi3.SchemaValidationOption
		if e.SchemaDialect == DialectOpenAPI31 {
			opts = append(opts, openapi3.EnableJSONSchema2020())
		}
		if err := sch.VisitJSON(doc, opts...); err != nil {
			return fmt.Errorf("body violates the response schema: %s", schemaErrorText(err))
		}
	}
	for _, k := range sortedKeys(e.JSON) {
		got, ok := lookup(doc, k)
		if !ok {
			return fmt.Errorf("body has no %s", k)
		}
		if !sameValue(got, e.JSON[k]) {
			return fmt.Errorf("body %s is %s, want %s", k, jsonText(got), jsonText(e.JSON[k]))
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// bodyHint shows the start of a body in a failure, which usually says why.
func bodyHint(body []byte) string {
	s := strings.TrimSpace(string(body))
	if s == "" {
		return ""
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return ": " + s
}

func schemaErrorText(err error) string {
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		// The JSON Schema 2020-12 validator puts its own located messages
		// under a generic first line.
		if first, rest, ok := strings.Cut(se.Reason, "\n"); ok && strings.HasPrefix(first, "jsonschema validation failed") {
			var parts []string
			for _, l := range strings.Split(rest, "\n") {
				if l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "- ")); l != "" {
					parts = append(parts, l)
				}
			}
			return strings.Join(parts, "; ")
		}
		ptr := "/" + strings.Join(se.JSONPointer(), "/")
		return fmt.Sprintf("at %s: %s", ptr, se.Reason)
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

var healthyWords = map[string]bool{
	"healthy": true, "ok": true, "up": true, "pass": true, "passing": true,
	"serving": true, "green": true, "alive": true, "ready": true,
}

// checkHealthy accepts the common health-report shapes: {"status":"UP"}
// (Spring), {"status":"pass"} (IETF health+json), {"status":"healthy"},
// {"health":"ok"}, or a plain "OK".
func checkHealthy(body []byte) error {
	var doc any
	if json.Unmarshal(body, &doc) == nil {
		switch v := doc.(type) {
		case map[string]any:
			for _, k := range []string{"status", "health", "state"} {
				for key, val := range v {
					if strings.EqualFold(key, k) {
						s, _ := val.(string)
						if healthyWords[strings.ToLower(s)] {
							return nil
						}
						return fmt.Errorf("unhealthy: %s is %s", key, jsonText(val))
					}
				}
			}
			return fmt.Errorf("unhealthy: body has no status field%s", bodyHint(body))
		case string:
			if healthyWords[strings.ToLower(v)] {
				return nil
			}
		case bool:
			if v {
				return nil
			}
		}
		return fmt.Errorf("unhealthy: body is %s", jsonText(doc))
	}
	if healthyWords[strings.ToLower(strings.TrimSpace(string(body)))] {
		return nil
	}
	return fmt.Errorf("unhealthy: body does not report a healthy status%s", bodyHint(body))
}

// lookup follows a dotted path ("data.items.0.id") through a JSON value.
func lookup(doc any, path string) (any, bool) {
	cur := doc
	for _, part := range strings.Split(path, ".") {
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[part]
			if !ok {
				return nil, false
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(v) {
				return nil, false
			}
			cur = v[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// sameValue compares a JSON value with a YAML one: numbers by value,
// everything else by its JSON text.
func sameValue(got, want any) bool {
	if g, ok := toFloat(got); ok {
		if w, ok := toFloat(want); ok {
			return g == w
		}
	}
	return jsonText(got) == jsonText(jsonCompatible(want))
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	}
	return 0, false
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// flagState normalises a flag value so on/enabled/1 and true compare equal.
func flagState(v any) string {
	s := strings.ToLower(strings.TrimSpace(fmt.Sprint(v)))
	switch s {
	case "true", "on", "enabled", "yes", "1":
		return "true"
	case "false", "off", "disabled", "no", "0":
		return "false"
	}
	return s
}

func (r *runner) checkFlag(ctx context.Context, f *FlagCheck) error {
	path := f.Path
	if path == "" {
		path = "/flags/" + url.PathEscape(f.Name)
	}
	resp, body, err := r.do(ctx, http.MethodGet, path, f.Headers, "", nil)
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("flag %s: %s answered %d%s", f.Name, path, resp.StatusCode, bodyHint(body))
	}
	var got any
	switch {
	case f.Header != "":
		vals := resp.Header.Values(f.Header)
		if len(vals) == 0 {
			return fmt.Errorf("flag %s: response has no %s header", f.Name, f.Header)
		}
		got = vals[0]
	default:
		var doc any
		if err := json.Unmarshal(body, &doc); err != nil {
			got = strings.TrimSpace(string(body))
			break
		}
		if _, isObj := doc.(map[string]any); !isObj {
			got = doc
			break
		}
		fields := []string{f.Field}
		if f.Field == "" {
			fields = []string{f.Name, "enabled", "value", "state"}
		}
		found := false
		for _, k := range fields {
			if v, ok := lookup(doc, k); ok {
				got, found = v, true
				break
			}
		}
		if !found {
			return fmt.Errorf("flag %s: body has none of %s%s", f.Name, strings.Join(fields, ", "), bodyHint(body))
		}
	}
	if flagState(got) != flagState(f.Expect) {
		return fmt.Errorf("flag %s is %v, want %v", f.Name, got, f.Expect)
	}
	return nil
}

func (r *runner) db(env string) (*sql.DB, error) {
	if env == "" {
		env = DefaultDSNEnv
	}
	dsn := r.opts.Env(env)
	if dsn == "" {
		return nil, fmt.Errorf("environment variable %s is not set (it must hold the database DSN)", env)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if db, ok := r.dbs[dsn]; ok {
		return db, nil
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", env, redact(err, dsn))
	}
	r.dbs[dsn] = db
	return db, nil
}

func (r *runner) closeDBs() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, db := range r.dbs {
		db.Close()
	}
}

// redact keeps the DSN and its password out of failure messages, which end
// up in CI logs and rollout reports.
func redact(err error, dsn string) string {
	msg := err.Error()
	if cfg, perr := pgx.ParseConfig(dsn); perr == nil && cfg.Password != "" {
		msg = strings.ReplaceAll(msg, cfg.Password, "***")
	}
	return strings.ReplaceAll(msg, dsn, "***")
}

func (r *runner) checkSQL(ctx context.Context, c *SQLCheck) error {
	db, err := r.db(c.DSNEnv)
	if err != nil {
		return err
	}
	dsn := r.opts.Env(envOr(c.DSNEnv))
	if c.Query != "" {
		rows, err := db.QueryContext(ctx, c.Query)
		if err != nil {
			return fmt.Errorf("query failed: %s", redact(err, dsn))
		}
		defer rows.Close()
		for rows.Next() {
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("query failed: %s", redact(err, dsn))
		}
		return nil
	}
	schema, table, qualified := strings.Cut(c.Table, ".")
	if !qualified {
		schema, table = "", c.Table
	}
	// current_schema() when none is named: the table the application would
	// see with an unqualified name.
	rows, err := db.QueryContext(ctx, `
		SELECT column_name FROM information_schema.columns
		WHERE table_schema = COALESCE(NULLIF($1, ''), current_schema()) AND table_name = $2`, schema, table)
	if err != nil {
		return fmt.Errorf("reading information_schema: %s", redact(err, dsn))
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var col string
		if err := rows.Scan(&col); err != nil {
			return fmt.Errorf("reading information_schema: %s", redact(err, dsn))
		}
		have[col] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading information_schema: %s", redact(err, dsn))
	}
	if len(have) == 0 {
		return fmt.Errorf("table %s does not exist", c.Table)
	}
	var missing []string
	for _, col := range c.Columns {
		if !have[col] {
			missing = append(missing, col)
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("table %s: missing column %s", c.Table, missing[0])
	}
	return fmt.Errorf("table %s: missing columns %s", c.Table, strings.Join(missing, ", "))
}

func envOr(env string) string {
	if env == "" {
		return DefaultDSNEnv
	}
	return env
}

func (r *runner) checkGRPC(ctx context.Context, c *GRPCCheck) error {
	addr := c.Address
	if addr == "" {
		addr = r.opts.GRPCTarget
	}
	if addr == "" {
		return errors.New("no gRPC address: set grpc.address or pass a gRPC target")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("grpc %s: %w", addr, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: c.Service})
	if err != nil {
		return fmt.Errorf("grpc health %s%s: %w", addr, serviceSuffix(c.Service), err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("grpc health %s%s: %s, want SERVING", addr, serviceSuffix(c.Service), resp.GetStatus())
	}
	return nil
}

func serviceSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " service " + s
}

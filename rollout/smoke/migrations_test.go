package smoke

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseMigrations(t *testing.T) {
	m, err := ParseMigrations("testdata/migrations")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"001_create_orders.sql", "002_add_currency.sql"}; !reflect.DeepEqual(m.Files, want) {
		t.Errorf("files = %q, want %q (the .down.sql file is not applied)", m.Files, want)
	}
	got := map[string][]string{}
	for _, tb := range m.Tables {
		got[tb.Name] = tb.Columns
	}
	want := map[string][]string{
		// note dropped, total_cents renamed, currency and status added;
		// constraints are not columns.
		"orders":       {"id", "created_at", "currency", "status", "amount_cents"},
		"order_items":  {"order_id", "sku", "Quantity"},
		"audit.events": {"id", "payload"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tables:\n got %v\nwant %v", got, want)
	}
}

func TestParseMigrationsStatements(t *testing.T) {
	for _, tc := range []struct {
		name, sql string
		want      map[string][]string
	}{
		{"goose down half ignored", "-- +goose Up\nCREATE TABLE a (x int);\n-- +goose Down\nDROP TABLE a;\n", map[string][]string{"a": {"x"}}},
		{"rename table", "CREATE TABLE a (x int); ALTER TABLE a RENAME TO b;", map[string][]string{"b": {"x"}}},
		{"drop table", "CREATE TABLE a (x int); CREATE TABLE c (y int); DROP TABLE IF EXISTS a, other CASCADE;", map[string][]string{"c": {"y"}}},
		{"alter only existing", "ALTER TABLE ONLY public.t ADD COLUMN IF NOT EXISTS z text, ADD CONSTRAINT z_nn CHECK (z <> '');", map[string][]string{"public.t": {"z"}}},
		{"create as", "CREATE UNLOGGED TABLE snap AS SELECT 1;", map[string][]string{"snap": nil}},
		{"nested comments and quotes", "/* a /* nested */ comment; */ CREATE TABLE \"Mixed\" (\"Col\" int, e text DEFAULT E'it\\'s;');", map[string][]string{"Mixed": {"Col", "e"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "001.sql"), []byte(tc.sql), 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := ParseMigrations(dir)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			for _, tb := range m.Tables {
				got[tb.Name] = tb.Columns
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseMigrationsRefusesUnterminatedInputWithLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "001.sql")
	if err := os.WriteFile(path, []byte("CREATE TABLE a (x int);\n\nINSERT INTO a VALUES ('oops);\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ParseMigrations(dir)
	if err == nil || err.Error() != path+":3: unterminated string literal" {
		t.Errorf("got %v, want %s:3: unterminated string literal", err, path)
	}
}

// postgres is a throwaway PostgreSQL server started from Debian's binaries.
type postgres struct {
	dsn string
}

func findPostgresBin() string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi > vj
	})
	if len(matches) == 0 {
		return ""
	}
	return filepath.Dir(matches[0])
}

// startPostgres runs initdb and pg_ctl into a fresh directory, listening on
// 127.0.0.1 on a free port with its socket in that directory, and stops it
// when the test ends. PostgreSQL refuses to run as root, so as root the
// server runs as the postgres user.
func startPostgres(t *testing.T) *postgres {
	t.Helper()
	bin := findPostgresBin()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (CI installs the postgresql package)")
		}
		t.Skip("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin")
	}
	// Not t.TempDir: its parents are private to root, and the server may
	// run as another user.
	dir, err := os.MkdirTemp("", "smoke-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var asUser []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root and there is no postgres user to run the server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	run := func(args ...string) {
		t.Helper()
		full := append(append([]string{}, asUser...), args...)
		cmd := exec.Command(full[0], full[1:]...)
		if out, err := cmd.CombinedOutput(); err != nil {
			logData, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Fatalf("%s: %v\n%s\n%s", strings.Join(full, " "), err, out, logData)
		}
	}
	data := filepath.Join(dir, "data")
	run(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	opts := fmt.Sprintf("-h 127.0.0.1 -p %d -k %s -F -c max_connections=20", port, dir)
	run(filepath.Join(bin, "pg_ctl"), "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts, "-w", "-t", "60", "start")
	t.Cleanup(func() {
		full := append(append([]string{}, asUser...), filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
		if out, err := exec.Command(full[0], full[1:]...).CombinedOutput(); err != nil {
			t.Errorf("stopping PostgreSQL: %v\n%s", err, out)
		}
	})
	return &postgres{dsn: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)}
}

func (p *postgres) exec(t *testing.T, stmts ...string) {
	t.Helper()
	// The simple protocol runs a whole migration file in one Exec.
	db, err := sql.Open("pgx", p.dsn+"&default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func migrationSuite(t *testing.T) *Suite {
	t.Helper()
	m, err := ParseMigrations("testdata/migrations")
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := Generate(GenerateOptions{Name: "db", Migrations: m, DSNEnv: "SMOKE_DB", NoHealth: true})
	if err != nil {
		t.Fatal(err)
	}
	return fast(s)
}

func TestMigrationChecksAgainstPostgreSQL(t *testing.T) {
	pg := startPostgres(t)
	s := migrationSuite(t)
	env := func(dsn string) func(string) string {
		return func(k string) string {
			if k == "SMOKE_DB" {
				return dsn
			}
			return ""
		}
	}

	// Before the migrations: the database answers, the tables are missing.
	res := resultByName(Run(context.Background(), s, Options{Env: env(pg.dsn)}))
	if tr := res["database connectivity"]; !tr.Passed {
		t.Errorf("connectivity failed: %s", tr.Reason)
	}
	if tr := res["table orders"]; tr.Passed || tr.Reason != "table orders does not exist" {
		t.Errorf("table orders before migrating: passed=%v reason=%q", tr.Passed, tr.Reason)
	}

	// The migrations applied as written: every check passes.
	pg.exec(t, "CREATE SCHEMA audit")
	for _, f := range []string{"001_create_orders.sql", "002_add_currency.sql"} {
		b, err := os.ReadFile(filepath.Join("testdata/migrations", f))
		if err != nil {
			t.Fatal(err)
		}
		pg.exec(t, string(b))
	}
	all := Run(context.Background(), s, Options{Env: env(pg.dsn)})
	if !all.Passed || len(all.Tests) != 4 {
		t.Fatalf("after migrating: passed=%v tests=%d failures=%+v", all.Passed, len(all.Tests), all.Failed())
	}

	// A half-applied migration: one column and one table missing.
	pg.exec(t, "ALTER TABLE orders DROP COLUMN currency", "DROP TABLE audit.events")
	res = resultByName(Run(context.Background(), s, Options{Env: env(pg.dsn)}))
	if tr := res["table orders"]; tr.Passed || tr.Reason != "table orders: missing column currency" {
		t.Errorf("table orders: passed=%v reason=%q, want the missing column named", tr.Passed, tr.Reason)
	}
	if tr := res["table audit.events"]; tr.Passed || tr.Reason != "table audit.events does not exist" {
		t.Errorf("table audit.events: passed=%v reason=%q", tr.Passed, tr.Reason)
	}
	if tr := res["table order_items"]; !tr.Passed {
		t.Errorf("table order_items: %s", tr.Reason)
	}

	// Failures never show the DSN's password.
	secret := "hunter2-do-not-log"
	closed := "postgres://app:" + secret + "@127.0.0.1:1/app?sslmode=disable&connect_timeout=5"
	res = resultByName(Run(context.Background(), s, Options{Env: env(closed)}))
	tr := res["database connectivity"]
	if tr.Passed || tr.Reason == "" || strings.Contains(tr.Reason, secret) {
		t.Errorf("unreachable database: passed=%v reason=%q, want a failure without the password", tr.Passed, tr.Reason)
	}
	res = resultByName(Run(context.Background(), s, Options{Env: env("")}))
	if tr := res["database connectivity"]; tr.Passed || tr.Reason != "environment variable SMOKE_DB is not set (it must hold the database DSN)" {
		t.Errorf("unset DSN: reason %q", tr.Reason)
	}
}

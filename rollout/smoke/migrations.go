package smoke

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Migrations is what a directory of SQL migrations leaves in the database:
// the tables and columns its statements create, after later files' renames
// and drops.
type Migrations struct {
	Dir    string
	Files  []string // the .sql files read, in the order applied
	Tables []MigratedTable
}

// MigratedTable is a table the migrations create or add columns to.
type MigratedTable struct {
	// Name as PostgreSQL stores it: unquoted identifiers folded to lower
	// case, "schema.table" when the migration qualifies it.
	Name string
	// Columns created or added, in statement order; for a table only
	// altered here these are just the added columns.
	Columns []string
	// Sources are file:line of each statement that shaped the table.
	Sources []string
}

// Down migrations undo, so their statements say nothing about the new
// schema; goose and dbmate keep both halves in one file behind markers.
var (
	downFileRE   = regexp.MustCompile(`(?i)(^|[._-])down\.sql$`)
	downMarkerRE = regexp.MustCompile(`(?im)^\s*--\s*(\+goose\s+down|migrate:down)\b`)
)

// ParseMigrations reads the *.sql files of dir in name order (the order
// migration tools apply them) and follows CREATE TABLE, ALTER TABLE
// ADD/DROP/RENAME COLUMN, ALTER TABLE RENAME TO and DROP TABLE. Other
// statements are ignored. Lexical errors (an unterminated string or
// comment) are *InputError with file and line.
func ParseMigrations(dir string) (*Migrations, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, &InputError{File: dir, Reason: err.Error()}
	}
	m := &Migrations{Dir: dir}
	st := newSchemaState()
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(strings.ToLower(name), ".sql") || downFileRE.MatchString(name) {
			continue
		}
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, &InputError{File: path, Reason: err.Error()}
		}
		text := string(data)
		if loc := downMarkerRE.FindStringIndex(text); loc != nil {
			text = text[:loc[0]]
		}
		stmts, err := splitSQL(text)
		if err != nil {
			return nil, inFile(err, path)
		}
		for _, s := range stmts {
			st.apply(s, name)
		}
		m.Files = append(m.Files, name)
	}
	if len(m.Files) == 0 {
		return nil, &InputError{File: dir, Reason: "no .sql migration files found"}
	}
	m.Tables = st.tables()
	return m, nil
}

type tokKind int

const (
	tokIdent  tokKind = iota // bare word, folded to lower case
	tokQuoted                // "Quoted" identifier, case kept
	tokString
	tokNumber
	tokPunct
)

type token struct {
	kind tokKind
	text string
	line int
}

// splitSQL lexes PostgreSQL SQL into statements of tokens, honouring
// comments (nested /* */ too), quoted identifiers, strings and
// dollar-quoted bodies, so a ';' inside a function body does not split.
func splitSQL(src string) ([][]token, error) {
	var stmts [][]token
	var cur []token
	line := 1
	i := 0
	n := len(src)
	for i < n {
		c := src[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f':
			i++
		case c == '-' && i+1 < n && src[i+1] == '-':
			for i < n && src[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < n && src[i+1] == '*':
			start, depth := line, 0
			for i < n {
				if src[i] == '/' && i+1 < n && src[i+1] == '*' {
					depth++
					i += 2
					continue
				}
				if src[i] == '*' && i+1 < n && src[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
					continue
				}
				if src[i] == '\n' {
					line++
				}
				i++
			}
			if depth != 0 {
				return nil, inputErr(start, "unterminated /* comment")
			}
		case c == '\'' || ((c == 'E' || c == 'e') && i+1 < n && src[i+1] == '\''):
			start := line
			if c != '\'' {
				i++
			}
			i++
			closed := false
			for i < n {
				if src[i] == '\\' && c != '\'' && i+1 < n {
					i += 2
					continue
				}
				if src[i] == '\'' {
					if i+1 < n && src[i+1] == '\'' {
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				if src[i] == '\n' {
					line++
				}
				i++
			}
			if !closed {
				return nil, inputErr(start, "unterminated string literal")
			}
			cur = append(cur, token{kind: tokString, line: start})
		case c == '"':
			start := line
			var b strings.Builder
			i++
			closed := false
			for i < n {
				if src[i] == '"' {
					if i+1 < n && src[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				if src[i] == '\n' {
					line++
				}
				b.WriteByte(src[i])
				i++
			}
			if !closed {
				return nil, inputErr(start, "unterminated quoted identifier")
			}
			cur = append(cur, token{kind: tokQuoted, text: b.String(), line: start})
		case c == '$' && dollarTag(src[i:]) != "":
			tag := dollarTag(src[i:])
			start := line
			i += len(tag)
			end := strings.Index(src[i:], tag)
			if end < 0 {
				return nil, inputErr(start, "unterminated dollar-quoted string %s", tag)
			}
			line += strings.Count(src[i:i+end], "\n")
			i += end + len(tag)
			cur = append(cur, token{kind: tokString, line: start})
		case isIdentStart(c):
			j := i
			for j < n && isIdentPart(src[j]) {
				j++
			}
			cur = append(cur, token{kind: tokIdent, text: strings.ToLower(src[i:j]), line: line})
			i = j
		case c >= '0' && c <= '9':
			j := i
			for j < n && (src[j] >= '0' && src[j] <= '9' || src[j] == '.') {
				j++
			}
			cur = append(cur, token{kind: tokNumber, text: src[i:j], line: line})
			i = j
		case c == ';':
			if len(cur) > 0 {
				stmts = append(stmts, cur)
			}
			cur = nil
			i++
		default:
			cur = append(cur, token{kind: tokPunct, text: string(c), line: line})
			i++
		}
	}
	if len(cur) > 0 {
		stmts = append(stmts, cur)
	}
	return stmts, nil
}

var dollarTagRE = regexp.MustCompile(`^\$([A-Za-z_][A-Za-z0-9_]*)?\$`)

func dollarTag(s string) string { return dollarTagRE.FindString(s) }

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isIdentPart(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' || c == '$' }

// schemaState follows tables through the statements in order.
type schemaState struct {
	byName map[string]*MigratedTable
}

func newSchemaState() *schemaState { return &schemaState{byName: map[string]*MigratedTable{}} }

func (s *schemaState) tables() []MigratedTable {
	out := make([]MigratedTable, 0, len(s.byName))
	for _, t := range s.byName {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *schemaState) table(name string) *MigratedTable {
	t, ok := s.byName[name]
	if !ok {
		t = &MigratedTable{Name: name}
		s.byName[name] = t
	}
	return t
}

// cursor walks one statement's tokens.
type cursor struct {
	toks []token
	i    int
}

func (c *cursor) done() bool { return c.i >= len(c.toks) }

func (c *cursor) peekWord(words ...string) bool {
	for k, w := range words {
		if c.i+k >= len(c.toks) || c.toks[c.i+k].kind != tokIdent || c.toks[c.i+k].text != w {
			return false
		}
	}
	return true
}

// accept consumes the words when they come next.
func (c *cursor) accept(words ...string) bool {
	if c.peekWord(words...) {
		c.i += len(words)
		return true
	}
	return false
}

func (c *cursor) ident() (string, bool) {
	if c.done() {
		return "", false
	}
	t := c.toks[c.i]
	if t.kind != tokIdent && t.kind != tokQuoted {
		return "", false
	}
	c.i++
	return t.text, true
}

// name reads a possibly schema-qualified name.
func (c *cursor) name() (string, bool) {
	first, ok := c.ident()
	if !ok {
		return "", false
	}
	if !c.done() && c.toks[c.i].kind == tokPunct && c.toks[c.i].text == "." {
		c.i++
		second, ok := c.ident()
		if !ok {
			return "", false
		}
		return first + "." + second, true
	}
	return first, true
}

func (c *cursor) punct(p string) bool {
	if !c.done() && c.toks[c.i].kind == tokPunct && c.toks[c.i].text == p {
		c.i++
		return true
	}
	return false
}

// items splits the tokens from here to the matching ')' (or the end when
// parens is false) at top-level commas.
func (c *cursor) items(parens bool) [][]token {
	var out [][]token
	var cur []token
	depth := 0
	for ; !c.done(); c.i++ {
		t := c.toks[c.i]
		if t.kind == tokPunct {
			switch t.text {
			case "(":
				depth++
			case ")":
				if depth == 0 && parens {
					c.i++
					return append(out, cur)
				}
				depth--
			case ",":
				if depth == 0 {
					out = append(out, cur)
					cur = nil
					continue
				}
			}
		}
		cur = append(cur, t)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

var constraintWords = map[string]bool{
	"constraint": true, "primary": true, "foreign": true, "unique": true,
	"check": true, "exclude": true, "like": true,
}

func (s *schemaState) apply(toks []token, file string) {
	c := &cursor{toks: toks}
	where := fmt.Sprintf("%s:%d", file, toks[0].line)
	switch {
	case c.accept("create"):
		c.accept("or", "replace")
		for c.accept("global") || c.accept("local") || c.accept("unlogged") {
		}
		if c.accept("temp") || c.accept("temporary") {
			return // gone when the migration's session ends
		}
		if !c.accept("table") {
			return
		}
		c.accept("if", "not", "exists")
		name, ok := c.name()
		if !ok {
			return
		}
		t := s.table(name)
		t.Sources = append(t.Sources, where+" CREATE TABLE")
		if !c.punct("(") {
			return // CREATE TABLE ... AS / PARTITION OF: the table, columns unknown
		}
		for _, item := range c.items(true) {
			if len(item) == 0 || (item[0].kind == tokIdent && constraintWords[item[0].text]) {
				continue
			}
			if item[0].kind == tokIdent || item[0].kind == tokQuoted {
				t.addColumn(item[0].text)
			}
		}
	case c.accept("alter", "table"):
		c.accept("if", "exists")
		c.accept("only")
		name, ok := c.name()
		if !ok {
			return
		}
		c.punct("*")
		if c.accept("rename", "to") {
			if to, ok := c.ident(); ok {
				if old, had := s.byName[name]; had {
					delete(s.byName, name)
					if schema, _, q := strings.Cut(name, "."); q {
						to = schema + "." + to
					}
					old.Name = to
					old.Sources = append(old.Sources, where+" RENAME TO")
					s.byName[to] = old
				}
			}
			return
		}
		for _, item := range c.items(false) {
			s.alterAction(name, item, where)
		}
	case c.accept("drop", "table"):
		c.accept("if", "exists")
		for _, item := range c.items(false) {
			ic := &cursor{toks: item}
			if n, ok := ic.name(); ok {
				delete(s.byName, n)
			}
		}
	}
}

func (s *schemaState) alterAction(table string, item []token, where string) {
	c := &cursor{toks: item}
	switch {
	case c.accept("add"):
		if !c.done() && c.toks[c.i].kind == tokIdent && constraintWords[c.toks[c.i].text] {
			return
		}
		c.accept("column")
		c.accept("if", "not", "exists")
		if col, ok := c.ident(); ok {
			t := s.table(table)
			t.addColumn(col)
			t.Sources = append(t.Sources, where+" ADD COLUMN "+col)
		}
	case c.accept("drop"):
		if c.peekWord("constraint") {
			return
		}
		c.accept("column")
		c.accept("if", "exists")
		if col, ok := c.ident(); ok {
			if t, had := s.byName[table]; had {
				t.dropColumn(col)
				t.Sources = append(t.Sources, where+" DROP COLUMN "+col)
			}
		}
	case c.accept("rename"):
		if c.peekWord("constraint") {
			return
		}
		c.accept("column")
		from, ok := c.ident()
		if !ok || !c.accept("to") {
			return
		}
		if to, ok := c.ident(); ok {
			if t, had := s.byName[table]; had && t.dropColumn(from) {
				t.addColumn(to)
				t.Sources = append(t.Sources, where+" RENAME COLUMN "+from+" TO "+to)
			}
		}
	}
}

func (t *MigratedTable) addColumn(col string) {
	for _, c := range t.Columns {
		if c == col {
			return
		}
	}
	t.Columns = append(t.Columns, col)
}

func (t *MigratedTable) dropColumn(col string) bool {
	for i, c := range t.Columns {
		if c == col {
			t.Columns = append(t.Columns[:i], t.Columns[i+1:]...)
			return true
		}
	}
	return false
}

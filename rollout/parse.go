package rollout

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a spec, located in its file.
type Problem struct {
	File  string `json:"file,omitempty"`
	Line  int    `json:"line,omitempty"`
	Field string `json:"field,omitempty"`
	Msg   string `json:"msg"`
}

func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
		}
		b.WriteString(": ")
	} else if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// ValidationError lists every problem found in the input; the input is
// refused whole.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Parse decodes, defaults and validates every Rollout document in data; name
// is used in messages. Empty documents are skipped. On any problem it
// returns a *ValidationError listing all of them and no specs.
func Parse(name string, data []byte) ([]Spec, error) {
	specs, probs := parse(name, data)
	probs = append(probs, crossCheck(specs)...)
	if len(probs) > 0 {
		sortProblems(probs)
		return nil, &ValidationError{Problems: probs}
	}
	return specs, nil
}

// ParseFile parses the Rollout documents in the file at path.
func ParseFile(path string) ([]Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// LoadFiles parses every file and checks the rollouts against each other
// (unique names; listeners shared only with distinct matches). Problems in
// all files are reported together.
func LoadFiles(paths ...string) ([]Spec, error) {
	var all []Spec
	var probs []Problem
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			probs = append(probs, Problem{File: path, Msg: err.Error()})
			continue
		}
		specs, p := parse(path, data)
		all = append(all, specs...)
		probs = append(probs, p...)
	}
	probs = append(probs, crossCheck(all)...)
	if len(probs) > 0 {
		sortProblems(probs)
		return nil, &ValidationError{Problems: probs}
	}
	return all, nil
}

// sortProblems orders problems as they appear in the files, so the first
// line a user reads is the first mistake in the file.
func sortProblems(probs []Problem) {
	slices.SortStableFunc(probs, func(a, b Problem) int {
		if a.File != b.File {
			return strings.Compare(a.File, b.File)
		}
		return a.Line - b.Line
	})
}

var yamlLineRE = regexp.MustCompile(`line (\d+): `)

func parse(name string, data []byte) ([]Spec, []Problem) {
	var specs []Spec
	var probs []Problem
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "yaml: ")
			p := Problem{File: name, Msg: msg}
			if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
				p.Line, _ = strconv.Atoi(m[1])
				p.Msg = strings.Replace(msg, m[0], "", 1)
			}
			return nil, append(probs, p)
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue
		}
		if budget := maxExpandedNodes; !withinBudget(root, &budget) {
			probs = append(probs, Problem{File: name, Line: root.Line, Msg: fmt.Sprintf("document expands to more than %d nodes through aliases", maxExpandedNodes)})
			continue
		}
		d := &decoder{file: name, lines: map[string]int{}, bad: map[string]bool{}}
		s := d.spec(root)
		s.File, s.Line = name, root.Line
		s.lines, s.bad = d.lines, d.bad
		probs = append(probs, d.probs...)
		s.Defaults()
		probs = append(probs, s.validate()...)
		specs = append(specs, s)
	}
	if len(specs) == 0 && len(probs) == 0 {
		probs = append(probs, Problem{File: name, Msg: "no Rollout document"})
	}
	return specs, probs
}

// maxExpandedNodes bounds a document with its aliases expanded, so that a
// "billion laughs" file is refused instead of walked for ever.
const maxExpandedNodes = 100_000

func withinBudget(n *yaml.Node, budget *int) bool {
	*budget--
	if *budget < 0 {
		return false
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return withinBudget(n.Alias, budget)
	}
	for _, c := range n.Content {
		if !withinBudget(c, budget) {
			return false
		}
	}
	return true
}

// decoder walks yaml nodes into a Spec, strictly: unknown fields, wrong
// kinds and bad scalars are problems, and every path's line is recorded.
type decoder struct {
	file  string
	probs []Problem
	lines map[string]int
	bad   map[string]bool
}

type fieldFuncs map[string]func(v *yaml.Node, path string)

func (d *decoder) errAt(n *yaml.Node, path, format string, a ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.probs = append(d.probs, Problem{File: d.file, Line: line, Field: path, Msg: fmt.Sprintf(format, a...)})
	d.bad[path] = true
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "unknown"
}

// object decodes a mapping with the given fields; anything else is an
// unknown field. It returns the keys present.
func (d *decoder) object(n *yaml.Node, path string, fields fieldFuncs) map[string]bool {
	n = resolve(n)
	seen := map[string]bool{}
	if n.Kind != yaml.MappingNode {
		d.errAt(n, path, "want a mapping, got %s", kindName(n))
		return seen
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		p := join(path, k.Value)
		if seen[k.Value] {
			d.errAt(k, p, "duplicate field")
			continue
		}
		seen[k.Value] = true
		f, ok := fields[k.Value]
		if !ok {
			if k.Value == "secret" && strings.HasSuffix(strings.TrimRight(path, "]0123456789["), "notifications") {
				d.errAt(k, p, "secrets must not be written in the file: put it in an environment variable and name that in secretEnv")
				continue
			}
			known := make([]string, 0, len(fields))
			for name := range fields {
				known = append(known, name)
			}
			slices.Sort(known)
			d.errAt(k, p, "unknown field (known: %s)", strings.Join(known, ", "))
			continue
		}
		d.lines[p] = k.Line
		f(v, p)
	}
	return seen
}

func (d *decoder) list(n *yaml.Node, path string, each func(v *yaml.Node, path string)) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errAt(n, path, "want a list, got %s", kindName(n))
		return
	}
	for i, v := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		v = resolve(v)
		d.lines[p] = v.Line
		each(v, p)
	}
}

func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errAt(n, path, "want a value, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (d *decoder) str(n *yaml.Node, path string) string {
	s, _ := d.scalar(n, path)
	return s
}

func (d *decoder) strs(n *yaml.Node, path string) []string {
	var out []string
	d.list(n, path, func(v *yaml.Node, p string) {
		if s, ok := d.scalar(v, p); ok {
			out = append(out, s)
		}
	})
	return out
}

func (d *decoder) integer(n *yaml.Node, path string) (int, bool) {
	s, ok := d.scalar(n, path)
	if !ok {
		return 0, false
	}
	v, err := strconv.Atoi(s)
	if err != nil || n.Tag != "!!int" {
		d.errAt(n, path, "%q is not a whole number", s)
		return 0, false
	}
	return v, true
}

// percentInt accepts `5` or `5%` for a whole percentage.
func (d *decoder) percentInt(n *yaml.Node, path string) (int, bool) {
	s, ok := d.scalar(n, path)
	if !ok {
		return 0, false
	}
	v, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	if err != nil {
		d.errAt(n, path, "%q is not a whole percentage (e.g. 5 or 5%%)", s)
		return 0, false
	}
	return v, true
}

func (d *decoder) float(n *yaml.Node, path string) (float64, bool) {
	s, ok := d.scalar(n, path)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || (n.Tag != "!!int" && n.Tag != "!!float") {
		d.errAt(n, path, "%q is not a number", s)
		return 0, false
	}
	return v, true
}

func (d *decoder) boolean(n *yaml.Node, path string) bool {
	s, ok := d.scalar(n, path)
	if !ok {
		return false
	}
	if n.Tag != "!!bool" {
		d.errAt(n, path, "%q is not true or false", s)
		return false
	}
	return s == "true" || s == "True" || s == "TRUE"
}

func (d *decoder) duration(n *yaml.Node, path string) time.Duration {
	s, ok := d.scalar(n, path)
	if !ok {
		return 0
	}
	if s == "0" {
		return 0
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.errAt(n, path, "%q is not a duration (e.g. 30s, 10m, 1h30m)", s)
		return 0
	}
	if v < 0 {
		d.errAt(n, path, "%s is negative", s)
		return 0
	}
	return v
}

// percent reads `2%` as 0.02.
func (d *decoder) percent(n *yaml.Node, path string) float64 {
	s, ok := d.scalar(n, path)
	if !ok {
		return 0
	}
	t := strings.TrimSpace(s)
	if !strings.HasSuffix(t, "%") {
		d.errAt(n, path, "%q is not a percentage (e.g. 2%%)", s)
		return 0
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(t, "%")), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		d.errAt(n, path, "%q is not a percentage (e.g. 2%%)", s)
		return 0
	}
	return v / 100
}

func (d *decoder) spec(n *yaml.Node) Spec {
	var s Spec
	var blue, green *Backend
	d.object(n, "", fieldFuncs{
		"apiVersion": func(v *yaml.Node, p string) { s.APIVersion = d.str(v, p) },
		"kind":       func(v *yaml.Node, p string) { s.Kind = d.str(v, p) },
		"metadata": func(v *yaml.Node, p string) {
			d.object(v, p, fieldFuncs{
				"name":        func(v *yaml.Node, p string) { s.Name = d.str(v, p) },
				"labels":      func(v *yaml.Node, p string) { d.stringMap(v, p) },
				"annotations": func(v *yaml.Node, p string) { d.stringMap(v, p) },
			})
		},
		"spec": func(v *yaml.Node, p string) {
			d.object(v, p, fieldFuncs{
				"listen": func(v *yaml.Node, p string) { s.Listen = d.str(v, p) },
				"match": func(v *yaml.Node, p string) {
					d.object(v, p, fieldFuncs{
						"host":       func(v *yaml.Node, p string) { s.Match.Host = d.str(v, p) },
						"pathPrefix": func(v *yaml.Node, p string) { s.Match.PathPrefix = d.str(v, p) },
					})
				},
				"stable": func(v *yaml.Node, p string) { s.Stable = d.backend(v, p) },
				"canary": func(v *yaml.Node, p string) { s.Canary = d.backend(v, p) },
				"blue":   func(v *yaml.Node, p string) { b := d.backend(v, p); blue = &b },
				"green":  func(v *yaml.Node, p string) { b := d.backend(v, p); green = &b },
				"xds": func(v *yaml.Node, p string) {
					s.XDS = &XDS{}
					d.object(v, p, fieldFuncs{"service": func(v *yaml.Node, p string) { s.XDS.Service = d.str(v, p) }})
				},
				"strategy":         func(v *yaml.Node, p string) { s.Strategy = d.strategy(v, p) },
				"analysis":         func(v *yaml.Node, p string) { s.Analysis = d.analysis(v, p) },
				"rollbackTriggers": func(v *yaml.Node, p string) { s.RollbackTriggers = d.triggers(v, p) },
				"progressDeadline": func(v *yaml.Node, p string) { s.ProgressDeadline = d.duration(v, p) },
				"hooks": func(v *yaml.Node, p string) {
					d.object(v, p, fieldFuncs{
						"rollback": func(v *yaml.Node, p string) { s.Hooks.Rollback = d.hooks(v, p) },
						"cleanup":  func(v *yaml.Node, p string) { s.Hooks.Cleanup = d.hooks(v, p) },
					})
				},
				"webhooks": func(v *yaml.Node, p string) {
					d.list(v, p, func(v *yaml.Node, p string) {
						var w Webhook
						d.object(v, p, fieldFuncs{
							"type":          func(v *yaml.Node, p string) { w.Type = d.str(v, p) },
							"url":           func(v *yaml.Node, p string) { w.URL = d.str(v, p) },
							"timeout":       func(v *yaml.Node, p string) { w.Timeout = d.duration(v, p) },
							"failurePolicy": func(v *yaml.Node, p string) { w.FailurePolicy = d.str(v, p) },
						})
						s.Webhooks = append(s.Webhooks, w)
					})
				},
				"notifications": func(v *yaml.Node, p string) {
					d.list(v, p, func(v *yaml.Node, p string) {
						var nt Notification
						d.object(v, p, fieldFuncs{
							"url":       func(v *yaml.Node, p string) { nt.URL = d.str(v, p) },
							"kind":      func(v *yaml.Node, p string) { nt.Kind = d.str(v, p) },
							"secretEnv": func(v *yaml.Node, p string) { nt.SecretEnv = d.str(v, p) },
						})
						s.Notifications = append(s.Notifications, nt)
					})
				},
				"businessMetrics": func(v *yaml.Node, p string) { s.BusinessMetrics = d.business(v, p) },
			})
		},
	})
	if blue != nil {
		if s.Stable.URL != "" || len(s.Stable.Endpoints) > 0 {
			d.errAt(n, "spec.blue", "set either stable or blue (they name the same version), not both")
		}
		s.Stable = *blue
		d.alias("spec.blue", "spec.stable")
	}
	if green != nil {
		if s.Canary.URL != "" || len(s.Canary.Endpoints) > 0 {
			d.errAt(n, "spec.green", "set either canary or green (they name the same version), not both")
		}
		s.Canary = *green
		d.alias("spec.green", "spec.canary")
	}
	return s
}

// alias makes validation of the stable/canary paths point at blue/green.
func (d *decoder) alias(from, to string) {
	for p, l := range d.lines {
		if p == from || strings.HasPrefix(p, from+".") {
			d.lines[to+strings.TrimPrefix(p, from)] = l
		}
	}
}

func (d *decoder) stringMap(n *yaml.Node, path string) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errAt(n, path, "want a mapping, got %s", kindName(n))
		return
	}
	for i := 1; i < len(n.Content); i += 2 {
		d.scalar(resolve(n.Content[i]), join(path, n.Content[i-1].Value))
	}
}

func (d *decoder) backend(n *yaml.Node, path string) Backend {
	var b Backend
	d.object(n, path, fieldFuncs{
		"url":       func(v *yaml.Node, p string) { b.URL = d.str(v, p) },
		"endpoints": func(v *yaml.Node, p string) { b.Endpoints = d.strs(v, p) },
	})
	return b
}

func (d *decoder) strategy(n *yaml.Node, path string) Strategy {
	var s Strategy
	d.object(n, path, fieldFuncs{
		"canary": func(v *yaml.Node, p string) {
			c := &CanaryStrategy{}
			d.object(v, p, fieldFuncs{
				"steps": func(v *yaml.Node, p string) {
					d.list(v, p, func(v *yaml.Node, p string) { c.Steps = append(c.Steps, d.step(v, p)) })
				},
				"adaptive": func(v *yaml.Node, p string) {
					a := &Adaptive{}
					d.object(v, p, fieldFuncs{
						"enabled":       func(v *yaml.Node, p string) { a.Enabled = d.boolean(v, p) },
						"maxWeight":     func(v *yaml.Node, p string) { a.MaxWeight, _ = d.percentInt(v, p) },
						"maxStepWeight": func(v *yaml.Node, p string) { a.MaxStepWeight, _ = d.percentInt(v, p) },
					})
					c.Adaptive = a
				},
			})
			s.Canary = c
		},
		"blueGreen": func(v *yaml.Node, p string) {
			bg := &BlueGreenStrategy{AutoPromotion: true}
			d.object(v, p, fieldFuncs{
				"autoPromotion": func(v *yaml.Node, p string) { bg.AutoPromotion = d.boolean(v, p) },
				"previewURL":    func(v *yaml.Node, p string) { bg.PreviewURL = d.str(v, p) },
				"validate": func(v *yaml.Node, p string) {
					d.object(v, p, fieldFuncs{
						"smoke": func(v *yaml.Node, p string) { bg.Validate.Smoke = d.str(v, p) },
						"analysis": func(v *yaml.Node, p string) {
							d.object(v, p, fieldFuncs{"duration": func(v *yaml.Node, p string) { bg.Validate.Analysis = d.duration(v, p) }})
						},
					})
				},
				"monitor": func(v *yaml.Node, p string) {
					d.object(v, p, fieldFuncs{"duration": func(v *yaml.Node, p string) { bg.Monitor = d.duration(v, p) }})
				},
			})
			s.BlueGreen = bg
		},
		"featureFlag": func(v *yaml.Node, p string) {
			ff := &FeatureFlagStrategy{}
			d.object(v, p, fieldFuncs{
				"userKey": func(v *yaml.Node, p string) {
					d.object(v, p, fieldFuncs{
						"header": func(v *yaml.Node, p string) { ff.UserKey.Header = d.str(v, p) },
						"cookie": func(v *yaml.Node, p string) { ff.UserKey.Cookie = d.str(v, p) },
					})
				},
				"cohorts": func(v *yaml.Node, p string) {
					d.list(v, p, func(v *yaml.Node, p string) {
						var c Cohort
						d.object(v, p, fieldFuncs{
							"name":  func(v *yaml.Node, p string) { c.Name = d.str(v, p) },
							"match": func(v *yaml.Node, p string) { c.Match = d.matchRules(v, p) },
						})
						ff.Cohorts = append(ff.Cohorts, c)
					})
				},
				"stages": func(v *yaml.Node, p string) {
					d.list(v, p, func(v *yaml.Node, p string) {
						st := Stage{Line: v.Line}
						d.object(v, p, fieldFuncs{
							"cohort": func(v *yaml.Node, p string) { st.Cohort = d.str(v, p) },
							"percent": func(v *yaml.Node, p string) {
								if x, ok := d.percentInt(v, p); ok {
									st.Percent = &x
								}
							},
							"pause": func(v *yaml.Node, p string) { st.Pause = d.pause(v, p) },
						})
						ff.Stages = append(ff.Stages, st)
					})
				},
			})
			s.FeatureFlag = ff
		},
	})
	return s
}

func (d *decoder) pause(n *yaml.Node, path string) *PauseStep {
	ps := &PauseStep{}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return ps
	}
	d.object(n, path, fieldFuncs{"duration": func(v *yaml.Node, p string) { ps.Duration = d.duration(v, p) }})
	return ps
}

func (d *decoder) step(n *yaml.Node, path string) Step {
	st := Step{Line: n.Line}
	keys := d.object(n, path, fieldFuncs{
		"setWeight": func(v *yaml.Node, p string) {
			if x, ok := d.percentInt(v, p); ok {
				st.SetWeight = &x
			}
		},
		"pause": func(v *yaml.Node, p string) { st.Pause = d.pause(v, p) },
		"analysis": func(v *yaml.Node, p string) {
			a := &AnalysisStep{}
			if !(v.Kind == yaml.ScalarNode && v.Tag == "!!null") {
				d.object(v, p, fieldFuncs{
					"duration": func(v *yaml.Node, p string) { a.Duration = d.duration(v, p) },
					"metrics":  func(v *yaml.Node, p string) { a.Metrics = d.strs(v, p) },
				})
			}
			st.Analysis = a
		},
		"smoke": func(v *yaml.Node, p string) {
			sm := &SmokeStep{}
			d.object(v, p, fieldFuncs{"file": func(v *yaml.Node, p string) { sm.File = d.str(v, p) }})
			st.Smoke = sm
		},
		"setHeaderRoute": func(v *yaml.Node, p string) {
			hr := &HeaderRoute{}
			d.object(v, p, fieldFuncs{
				"name":  func(v *yaml.Node, p string) { hr.Name = d.str(v, p) },
				"match": func(v *yaml.Node, p string) { hr.Match = d.matchRules(v, p) },
			})
			st.SetHeaderRoute = hr
		},
		"setMirror": func(v *yaml.Node, p string) {
			m := &MirrorStep{}
			d.object(v, p, fieldFuncs{"percent": func(v *yaml.Node, p string) { m.Percent, _ = d.percentInt(v, p) }})
			st.SetMirror = m
		},
		"approval": func(v *yaml.Node, p string) {
			a := &ApprovalStep{}
			if !(v.Kind == yaml.ScalarNode && v.Tag == "!!null") {
				d.object(v, p, fieldFuncs{"webhook": func(v *yaml.Node, p string) { a.Webhook = d.str(v, p) }})
			}
			st.Approval = a
		},
	})
	if len(keys) > 1 {
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		slices.Sort(names)
		d.errAt(n, path, "a step has exactly one of setWeight, pause, analysis, smoke, setHeaderRoute, setMirror, approval; got %s", strings.Join(names, " and "))
	}
	return st
}

func (d *decoder) matchRules(n *yaml.Node, path string) []MatchRule {
	var out []MatchRule
	d.list(n, path, func(v *yaml.Node, p string) {
		var r MatchRule
		var sources, ops []string
		d.object(v, p, fieldFuncs{
			"header": func(v *yaml.Node, p string) {
				r.Source, r.Name = "header", d.str(v, p)
				sources = append(sources, "header")
			},
			"cookie": func(v *yaml.Node, p string) {
				r.Source, r.Name = "cookie", d.str(v, p)
				sources = append(sources, "cookie")
			},
			"query": func(v *yaml.Node, p string) {
				r.Source, r.Name = "query", d.str(v, p)
				sources = append(sources, "query")
			},
			"exact":  func(v *yaml.Node, p string) { r.Op, r.Value = "exact", d.str(v, p); ops = append(ops, "exact") },
			"prefix": func(v *yaml.Node, p string) { r.Op, r.Value = "prefix", d.str(v, p); ops = append(ops, "prefix") },
			"regex":  func(v *yaml.Node, p string) { r.Op, r.Value = "regex", d.str(v, p); ops = append(ops, "regex") },
		})
		if len(sources) != 1 {
			d.errAt(v, p, "a match rule names exactly one of header, cookie, query")
		}
		if len(ops) != 1 {
			d.errAt(v, p, "a match rule has exactly one of exact, prefix, regex")
		}
		if r.Op == "regex" {
			if _, err := regexp.Compile(r.Value); err != nil {
				d.errAt(v, p+".regex", "bad regular expression: %v", err)
			}
		}
		out = append(out, r)
	})
	return out
}

func (d *decoder) analysis(n *yaml.Node, path string) AnalysisSpec {
	var a AnalysisSpec
	d.object(n, path, fieldFuncs{
		"interval":   func(v *yaml.Node, p string) { a.Interval = d.duration(v, p) },
		"confidence": func(v *yaml.Node, p string) { a.Confidence, _ = d.float(v, p) },
		"minSamples": func(v *yaml.Node, p string) {
			x, _ := d.integer(v, p)
			a.MinSamples = int64(x)
		},
		"metrics": func(v *yaml.Node, p string) {
			a.Metrics = []MetricSpec{} // present, even if empty: no defaults
			d.list(v, p, func(v *yaml.Node, p string) {
				var m MetricSpec
				d.object(v, p, fieldFuncs{
					"name": func(v *yaml.Node, p string) { m.Name = d.str(v, p) },
					"test": func(v *yaml.Node, p string) { m.Test = d.str(v, p) },
					"maxIncrease": func(v *yaml.Node, p string) {
						s, ok := d.scalar(v, p)
						if !ok {
							return
						}
						// error_rate takes a percentage, latencies a duration;
						// which one is checked once the name is known.
						if strings.HasSuffix(strings.TrimSpace(s), "%") {
							m.MaxIncrease = d.percent(v, p)
							m.increaseUnit = "%"
						} else if dur, err := time.ParseDuration(s); err == nil {
							m.MaxIncrease = float64(dur) / float64(time.Millisecond)
							m.increaseUnit = "ms"
						} else {
							d.errAt(v, p, "%q is neither a percentage (2%%) nor a duration (20ms)", s)
						}
					},
					"maxRatio": func(v *yaml.Node, p string) { m.MaxRatio, _ = d.float(v, p) },
					"critical": func(v *yaml.Node, p string) { m.Critical = d.boolean(v, p) },
				})
				a.Metrics = append(a.Metrics, m)
			})
		},
	})
	return a
}

func (d *decoder) triggers(n *yaml.Node, path string) RollbackTriggers {
	var t RollbackTriggers
	d.object(n, path, fieldFuncs{
		"critical": func(v *yaml.Node, p string) {
			d.list(v, p, func(v *yaml.Node, p string) {
				if s, ok := d.scalar(v, p); ok {
					c, err := ParseCondition(s)
					if err != nil {
						d.errAt(v, p, "%v", err)
						return
					}
					t.Critical = append(t.Critical, c)
				}
			})
		},
		"sustained": func(v *yaml.Node, p string) {
			d.list(v, p, func(v *yaml.Node, p string) {
				var st SustainedTrigger
				d.object(v, p, fieldFuncs{
					"condition": func(v *yaml.Node, p string) {
						if s, ok := d.scalar(v, p); ok {
							c, err := ParseCondition(s)
							if err != nil {
								d.errAt(v, p, "%v", err)
							}
							st.Condition = c
						}
					},
					"for": func(v *yaml.Node, p string) { st.For = d.duration(v, p) },
				})
				t.Sustained = append(t.Sustained, st)
			})
		},
		"business": func(v *yaml.Node, p string) {
			d.list(v, p, func(v *yaml.Node, p string) {
				var bt BusinessTrigger
				d.object(v, p, fieldFuncs{
					"query": func(v *yaml.Node, p string) { bt.Query = d.str(v, p) },
					"condition": func(v *yaml.Node, p string) {
						if s, ok := d.scalar(v, p); ok {
							c, err := ParseBusinessCondition(s)
							if err != nil {
								d.errAt(v, p, "%v", err)
							}
							bt.Condition = c
						}
					},
					"for": func(v *yaml.Node, p string) { bt.For = d.duration(v, p) },
				})
				t.Business = append(t.Business, bt)
			})
		},
	})
	return t
}

func (d *decoder) hooks(n *yaml.Node, path string) []Hook {
	var out []Hook
	d.list(n, path, func(v *yaml.Node, p string) {
		h := Hook{Retries: -1}
		d.object(v, p, fieldFuncs{
			"exec":    func(v *yaml.Node, p string) { h.Exec = d.strs(v, p) },
			"webhook": func(v *yaml.Node, p string) { h.Webhook = d.str(v, p) },
			"timeout": func(v *yaml.Node, p string) { h.Timeout = d.duration(v, p) },
			"retries": func(v *yaml.Node, p string) {
				if x, ok := d.integer(v, p); ok {
					h.Retries = x
				}
			},
		})
		out = append(out, h)
	})
	return out
}

func (d *decoder) business(n *yaml.Node, path string) *BusinessMetrics {
	b := &BusinessMetrics{}
	d.object(n, path, fieldFuncs{
		"prometheus": func(v *yaml.Node, p string) { b.Prometheus = d.str(v, p) },
		"metrics": func(v *yaml.Node, p string) {
			d.list(v, p, func(v *yaml.Node, p string) {
				var m BusinessMetric
				d.object(v, p, fieldFuncs{
					"name":  func(v *yaml.Node, p string) { m.Name = d.str(v, p) },
					"query": func(v *yaml.Node, p string) { m.Query = d.str(v, p) },
					"condition": func(v *yaml.Node, p string) {
						if s, ok := d.scalar(v, p); ok {
							c, err := ParseBusinessCondition(s)
							if err != nil {
								d.errAt(v, p, "%v", err)
							}
							m.Condition = c
						}
					},
				})
				b.Metrics = append(b.Metrics, m)
			})
		},
	})
	return b
}

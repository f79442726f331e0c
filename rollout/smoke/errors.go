package smoke

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// InputError is a problem with a file a person wrote: a suite, an OpenAPI
// document, a flag list or a migration. It names where the problem is so the
// person can go straight to it.
type InputError struct {
	File   string
	Line   int // 0 when the problem has no single line (an empty file, a missing file)
	Reason string
}

func (e *InputError) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
	case e.File != "":
		return fmt.Sprintf("%s: %s", e.File, e.Reason)
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
	}
	return e.Reason
}

// InputErrors is every problem found in one file, in file order, so a person
// fixes them in one pass instead of one per run.
type InputErrors []*InputError

func (es InputErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

func inputErr(line int, format string, a ...any) *InputError {
	return &InputError{Line: line, Reason: fmt.Sprintf(format, a...)}
}

// inFile stamps file on every InputError in err that does not name one yet;
// the decoders below run without knowing which file they read.
func inFile(err error, file string) error {
	if err == nil {
		return nil
	}
	var list InputErrors
	if errors.As(err, &list) {
		for _, e := range list {
			if e.File == "" {
				e.File = file
			}
		}
		return list
	}
	var one *InputError
	if errors.As(err, &one) {
		if one.File == "" {
			one.File = file
		}
		return one
	}
	return fromYAMLError(err, file)
}

var yamlLineRE = regexp.MustCompile(`line (\d+): (.*)`)

// fromYAMLError turns yaml.v3's "yaml: line 4: mapping values are not allowed"
// and *yaml.TypeError into InputErrors with the line pulled out.
func fromYAMLError(err error, file string) error {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	var out InputErrors
	for _, m := range msgs {
		e := &InputError{File: file, Reason: strings.TrimPrefix(m, "yaml: ")}
		if g := yamlLineRE.FindStringSubmatch(m); g != nil {
			e.Line, _ = strconv.Atoi(g[1])
			e.Reason = g[2]
			// yaml.v3 reports parser (not scanner) errors with the 0-based
			// line of the construct they are in; make it the 1-based line.
			if yamlParserProblem[e.Reason] {
				e.Line++
			}
		}
		out = append(out, e)
	}
	if len(out) == 1 {
		return out[0]
	}
	return out
}

var yamlParserProblem = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
}

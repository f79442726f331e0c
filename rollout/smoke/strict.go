package smoke

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// yaml.v3's KnownFields applies only to the top-level Decoder, not to
// node.Decode calls inside UnmarshalYAML methods, so every suite type checks
// its own keys with decodeStrict before decoding through a method-less alias.

var knownFieldsCache sync.Map // reflect.Type -> []string

func knownFields(t reflect.Type) []string {
	if v, ok := knownFieldsCache.Load(t); ok {
		return v.([]string)
	}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	knownFieldsCache.Store(t, names)
	return names
}

// decodeStrict decodes the mapping node into v (a pointer to a struct with no
// UnmarshalYAML of its own), refusing unknown and duplicate keys. It returns
// the line of each key so later validation can point at the field at fault.
func decodeStrict(node *yaml.Node, v any, what string) (map[string]int, error) {
	if node.Kind != yaml.MappingNode {
		return nil, inputErr(node.Line, "%s: expected a mapping, got %s", what, kindName(node))
	}
	known := knownFields(reflect.TypeOf(v).Elem())
	lines := make(map[string]int, len(node.Content)/2)
	for i := 0; i+1 < len(node.Content); i += 2 {
		k := node.Content[i]
		if !contains(known, k.Value) {
			return nil, inputErr(k.Line, "%s: unknown field %q (known: %s)", what, k.Value, strings.Join(known, ", "))
		}
		if _, dup := lines[k.Value]; dup {
			return nil, inputErr(k.Line, "%s: field %q given twice", what, k.Value)
		}
		lines[k.Value] = k.Line
	}
	if err := node.Decode(v); err != nil {
		return nil, err
	}
	return lines, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return fmt.Sprintf("scalar %q", n.Value)
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// Duration is a time.Duration written the Go way in YAML ("5s", "250ms").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes the duration as "5s".
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalYAML reads "5s"; bare numbers are refused because their unit would
// be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return inputErr(n.Line, "expected a duration such as 5s or 250ms, got %s", kindName(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return inputErr(n.Line, "invalid duration %q: want a number with a unit, such as 5s or 250ms", n.Value)
	}
	if v < 0 {
		return inputErr(n.Line, "duration %q must not be negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

package smoke

import (
	"os"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Flag is a feature flag the deployment ships and the state it must be in
// before anyone turns it on.
type Flag struct {
	Name    string `yaml:"name"`
	Default any    `yaml:"default"`
	// Path, Header and Field override the generator's flag endpoint for
	// this flag (see FlagCheck).
	Path   string `yaml:"path,omitempty"`
	Header string `yaml:"header,omitempty"`
	Field  string `yaml:"field,omitempty"`

	File string `yaml:"-"`
	Line int    `yaml:"-"`
}

type flagEntry Flag

// LoadFlags reads a YAML list of flags:
//
//   - {name: new-checkout, default: false}
//   - {name: pricing-variant, default: control, header: X-Pricing-Variant}
func LoadFlags(path string) ([]Flag, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &InputError{File: path, Reason: err.Error()}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, inFile(err, path)
	}
	if len(doc.Content) == 0 {
		return nil, &InputError{File: path, Reason: "empty flags file"}
	}
	list := doc.Content[0]
	if list.Kind != yaml.SequenceNode {
		return nil, &InputError{File: path, Line: list.Line, Reason: "expected a list of flags such as - {name: new-checkout, default: false}, got " + kindName(list)}
	}
	var out []Flag
	var errs InputErrors
	seen := map[string]int{}
	for _, item := range list.Content {
		var f Flag
		lines, err := decodeStrict(item, (*flagEntry)(&f), "flag")
		if err != nil {
			return nil, inFile(err, path)
		}
		f.File, f.Line = path, item.Line
		switch {
		case f.Name == "":
			errs = append(errs, &InputError{File: path, Line: item.Line, Reason: "flag: name is required"})
		case seen[f.Name] != 0:
			errs = append(errs, &InputError{File: path, Line: line(lines, "name", item.Line), Reason: "flag " + f.Name + ": already listed on line " + strconv.Itoa(seen[f.Name])})
		}
		seen[f.Name] = item.Line
		if v := mapValue(item, "default"); v == nil {
			errs = append(errs, &InputError{File: path, Line: item.Line, Reason: "flag " + f.Name + ": default is required (the state the flag must be in)"})
		} else if v.Tag == "!!null" {
			errs = append(errs, &InputError{File: path, Line: v.Line, Reason: "flag " + f.Name + ": default is null; want true, false or a variant name"})
		} else if v.Kind != yaml.ScalarNode {
			errs = append(errs, &InputError{File: path, Line: v.Line, Reason: "flag " + f.Name + ": default must be a scalar, got " + kindName(v)})
		}
		out = append(out, f)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

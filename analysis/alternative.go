package analysis

import (
	"errors"
	"fmt"
)

// Alternative is the alternative hypothesis of a test, from the canary's side.
type Alternative int

const (
	TwoSided Alternative = iota
	Greater              // canary larger than baseline
	Less                 // canary smaller than baseline
)

// ParseAlternative accepts scipy's and statsmodels' spellings.
func ParseAlternative(s string) (Alternative, error) {
	switch s {
	case "", "two-sided", "two_sided", "twosided":
		return TwoSided, nil
	case "greater", "larger":
		return Greater, nil
	case "less", "smaller":
		return Less, nil
	}
	return TwoSided, fmt.Errorf("alternative %q: want two-sided, greater (larger) or less (smaller)", s)
}

func (a Alternative) String() string {
	switch a {
	case Greater:
		return "greater"
	case Less:
		return "less"
	}
	return "two-sided"
}

// ErrInput is wrapped by every input-validation error, so callers can tell
// bad input from a numerical failure.
var ErrInput = errors.New("invalid input")

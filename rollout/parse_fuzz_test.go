package rollout

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse: any input either parses into specs an engine accepts, or is
// refused with located problems; it never panics.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../deploy/examples/*.yaml")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte(seedSpec))
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, data) })
}

func checkParse(t *testing.T, data []byte) {
	specs, err := Parse("f.yaml", data)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, "f.yaml") {
				t.Fatalf("problem without its file: %q", line)
			}
		}
		return
	}
	for _, s := range specs {
		e, err := NewEngine(s)
		if err != nil {
			t.Fatalf("parsed spec refused by NewEngine: %v", err)
		}
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		st, _ := e.Init(t0)
		e.Step(st, Observation{}, t0.Add(DefaultProgressDeadline))
	}
}

// TestParseMutations runs the fuzz property over deterministic line-level
// mutations of the examples (deleted, duplicated and swapped lines), which
// reach the validator far more often than random bytes do.
func TestParseMutations(t *testing.T) {
	files, _ := filepath.Glob("../deploy/examples/*.yaml")
	rng := rand.New(rand.NewPCG(1, 2))
	refused := 0
	for _, p := range files {
		b, _ := os.ReadFile(p)
		lines := strings.Split(string(b), "\n")
		for range 150 {
			m := append([]string(nil), lines...)
			i, j := rng.IntN(len(m)), rng.IntN(len(m))
			switch rng.IntN(4) {
			case 0:
				m = append(m[:i], m[i+1:]...)
			case 1:
				m = append(m[:i+1], m[i:]...)
			case 2:
				m[i], m[j] = m[j], m[i]
			case 3:
				m[i] = strings.Replace(m[i], ":", ": -", 1)
			}
			data := []byte(strings.Join(m, "\n"))
			if _, err := Parse("f.yaml", data); err != nil {
				refused++
			}
			checkParse(t, data)
		}
	}
	if refused == 0 {
		t.Error("no mutation was refused; the test does not reach the validator")
	}
}

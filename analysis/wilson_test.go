package analysis

import (
	"errors"
	"math"
	"testing"
)

func TestWilsonInterval(t *testing.T) {
	// Reference: statsmodels 0.13.5 proportion_confint(k, n, 1-conf, method="wilson").
	cases := []struct {
		name       string
		k, n       int64
		conf       float64
		wantLo, wH float64
	}{
		{"half", 5, 10, 0.95, 0.23659309051256394, 0.7634069094874361},
		{"zero", 0, 20, 0.95, 0, 0.1611251580528194},
		{"all", 25, 25, 0.99, 0.7902665311443744, 1},
		{"rare", 3, 1000, 0.95, 0.0010207838811386195, 0.008783014053503176},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lo, hi, err := WilsonInterval(c.k, c.n, c.conf)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(lo-c.wantLo) > 1e-9 || math.Abs(hi-c.wH) > 1e-9 {
				t.Errorf("WilsonInterval(%d, %d, %v) = [%v, %v], want [%v, %v]", c.k, c.n, c.conf, lo, hi, c.wantLo, c.wH)
			}
		})
	}
}

func TestWilsonIntervalRejectsBadInput(t *testing.T) {
	for _, c := range []struct{ k, n int64 }{{1, 0}, {-1, 5}, {6, 5}} {
		if _, _, err := WilsonInterval(c.k, c.n, 0.95); !errors.Is(err, ErrInput) {
			t.Errorf("WilsonInterval(%d, %d): err = %v, want ErrInput", c.k, c.n, err)
		}
	}
}

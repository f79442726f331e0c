// Package analysis holds Guardian's statistics: fixed-horizon tests
// (Mann–Whitney U, two-proportion z, Fisher, Welch), anytime-valid
// sequential tests (e-processes) and a Kayenta-style judge.
//
// Everything here is a pure function over samples, histograms and counts: no
// I/O, no clock, no goroutines. By convention x is the canary and y the
// baseline, and "greater" means the canary's value is larger (worse, for
// latency and errors). See shared/design/statistics.md for the formulas.
package analysis

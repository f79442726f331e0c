// Package rollout is Guardian's rollout engine: the Rollout spec (parsing,
// defaults, validation), the trigger condition language, and a pure state
// machine that decides every step of a canary, blue-green or feature-flag
// rollout.
//
// # Spec
//
// Parse, ParseFile and LoadFiles decode YAML strictly (unknown fields are
// errors), fill in defaults, then validate, in that order. Any problem
// refuses the whole input with a *ValidationError listing every problem as
// `file:line: field: message`.
//
// # Engine
//
// The Engine follows etcd raft's core: no goroutines, no clock, no I/O.
// A driver owns the ticker, the store, the TrafficRouter and the analysis,
// and loops:
//
//	s, acts := eng.Init(now)             // or eng.Restore(stored, now) after a restart
//	for {
//	    carry out acts in order          // see Action
//	    obs := what happened since       // verdicts, trips, values, gate results, a command
//	    s, acts = eng.Step(s, obs, now)
//	}
//
// Step never mutates its input State, and the same (State, Observation,
// now) always gives the same result, so a replay driver with a virtual clock
// (the bench) runs exactly what production runs.
//
// The order of a batch of actions is the contract with the driver: traffic
// taken away from the canary first (in process, microseconds), then
// Persist, then everything else. See Action.
package rollout

// Package smoke generates smoke tests from what a deployment changes and runs
// them as the first gate of a rollout: does the new version work at all,
// before a single user is sent to it?
//
// A suite is a YAML document (kind SmokeSuite) a person can read, edit and
// commit. Generate writes one from an OpenAPI pair (a test for every added or
// changed operation, with its response schema inlined), health endpoints, SQL
// migrations (connectivity and table/column checks), feature-flag defaults
// and gRPC health services. Load reads one strictly, reporting problems as
// file:line: reason.
//
// Run executes a suite against a target URL with bounded concurrency,
// per-test timeouts, retries with exponential backoff and latency budgets,
// and returns a Result that renders as a table, JSON or JUnit XML. The
// rollout driver calls Run against the canary or preview URL before any
// traffic moves:
//
//	suite, err := smoke.Load(step.Smoke)
//	res := smoke.Run(ctx, suite, smoke.Options{Target: canaryURL})
//	if !res.Passed { /* stop the rollout; record res.Summary() and res.Failed() */ }
package smoke

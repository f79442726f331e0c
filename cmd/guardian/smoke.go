package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"

	"github.com/deployment-guardian/guardian/rollout/smoke"
)

func init() { register(func(root *cobra.Command) { root.AddCommand(newSmokeCmd()) }) }

func newSmokeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "smoke",
		Short: "Generate smoke tests from what a deployment changes, and run them",
	}
	cmd.AddCommand(newSmokeGenerateCmd(), newSmokeRunCmd(), newSmokeValidateCmd())
	return cmd
}

// inputErr turns the smoke package's file:line problems into exit code 2.
func inputErr(err error) error {
	var ie *smoke.InputError
	var ies smoke.InputErrors
	if errors.As(err, &ie) || errors.As(err, &ies) {
		return usageErr("%v", err)
	}
	return err
}

func newSmokeGenerateCmd() *cobra.Command {
	var (
		oldSpec, newSpec, migrations, flagsFile, out string
		opts                                         smoke.GenerateOptions
	)
	cmd := &cobra.Command{
		Use:   "generate [--openapi-old OLD] --openapi-new NEW [--migrations DIR] [--flags FILE] [--grpc-health ADDR] -o smoke.yaml",
		Short: "Write a smoke suite for the operations, migrations, flags and gRPC services a deployment changes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if newSpec == "" && migrations == "" && flagsFile == "" && opts.GRPCHealth == "" {
				return usageErr("smoke generate: nothing to generate from: give --openapi-new, --migrations, --flags or --grpc-health")
			}
			if oldSpec != "" && newSpec == "" {
				return usageErr("smoke generate: --openapi-old needs --openapi-new")
			}
			var err error
			if oldSpec != "" {
				if opts.OldAPI, err = smoke.LoadOpenAPI(oldSpec); err != nil {
					return inputErr(err)
				}
			}
			if newSpec != "" {
				if opts.NewAPI, err = smoke.LoadOpenAPI(newSpec); err != nil {
					return inputErr(err)
				}
			}
			if migrations != "" {
				if opts.Migrations, err = smoke.ParseMigrations(migrations); err != nil {
					return inputErr(err)
				}
			}
			if flagsFile != "" {
				if opts.Flags, err = smoke.LoadFlags(flagsFile); err != nil {
					return inputErr(err)
				}
			}
			suite, skipped, err := smoke.Generate(opts)
			if err != nil {
				return err
			}
			data, err := suite.Marshal()
			if err != nil {
				return err
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(data)
				return err
			}
			if err := os.WriteFile(out, data, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %d tests to %s", len(suite.Tests), out)
			if len(skipped) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), " (%d unsafe operations skipped; see the file's header)", len(skipped))
			}
			fmt.Fprintln(cmd.ErrOrStderr())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&oldSpec, "openapi-old", "", "OpenAPI 3 document of the running version; only operations it lacks or defines differently get tests")
	f.StringVar(&newSpec, "openapi-new", "", "OpenAPI 3 document of the version being deployed")
	f.StringVar(&migrations, "migrations", "", "directory of SQL migrations; adds connectivity and table/column checks")
	f.StringVar(&flagsFile, "flags", "", "YAML list of feature flags and their default states: - {name: new-checkout, default: false}")
	f.StringVar(&opts.GRPCHealth, "grpc-health", "", "host:port of a grpc.health.v1 service to check")
	f.StringVar(&opts.GRPCService, "grpc-service", "", "service name for the gRPC health check (default: the whole server)")
	f.BoolVar(&opts.Unsafe, "unsafe", false, "also exercise POST/PUT/PATCH/DELETE operations the spec gives no example request for")
	f.BoolVar(&opts.NoHealth, "no-health", false, "leave out health-endpoint checks")
	f.StringVar(&opts.DSNEnv, "dsn-env", smoke.DefaultDSNEnv, "environment variable the SQL checks read the DSN from at run time")
	f.StringVar(&opts.FlagPath, "flag-path", "/flags/{name}", "flag-state endpoint; {name} is replaced by the flag name")
	f.StringVar(&opts.FlagHeader, "flag-header", "", "read flag states from this response header instead of the JSON body, e.g. X-Flag-{name}")
	f.StringVar(&opts.Name, "name", "smoke", "the suite's metadata.name")
	f.StringVarP(&out, "output", "o", "-", "file to write the suite to (- for stdout)")
	return cmd
}

func newSmokeRunCmd() *cobra.Command {
	var (
		opts          smoke.Options
		junit, format string
		headers       []string
	)
	cmd := &cobra.Command{
		Use:   "run FILE --target URL [--junit out.xml] [-o table|json] [--concurrency N]",
		Short: "Run a smoke suite against a version; exit 0 all passed, 1 any failed, 2 bad input",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "table" && format != "json" {
				return usageErr("smoke run: -o must be table or json, got %q", format)
			}
			if opts.Concurrency < 0 {
				return usageErr("smoke run: --concurrency must not be negative, got %d", opts.Concurrency)
			}
			suite, err := smoke.Load(args[0])
			if err != nil {
				return inputErr(err)
			}
			if opts.Target == "" {
				for _, t := range suite.Tests {
					if t.HTTP != nil || t.Flag != nil || len(t.Journey) > 0 {
						return usageErr("smoke run: --target is required: test %q (%s:%d) sends HTTP requests", t.Name, args[0], t.Line)
					}
				}
			}
			if len(headers) > 0 {
				opts.Header = http.Header{}
				for _, h := range headers {
					k, v, ok := strings.Cut(h, ":")
					if !ok || strings.TrimSpace(k) == "" {
						return usageErr("smoke run: --header %q: want 'Name: value'", h)
					}
					opts.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			res := smoke.Run(ctx, suite, opts)

			if junit != "" {
				data, err := res.JUnit()
				if err != nil {
					return err
				}
				if err := os.WriteFile(junit, data, 0o644); err != nil {
					return err
				}
			}
			if format == "json" {
				data, err := res.JSON()
				if err != nil {
					return err
				}
				if _, err := cmd.OutOrStdout().Write(data); err != nil {
					return err
				}
			} else if err := res.WriteTable(cmd.OutOrStdout()); err != nil {
				return err
			}
			if !res.Passed {
				return &exitError{code: 1, err: fmt.Errorf("smoke: %d of %d tests failed", len(res.Failed()), len(res.Tests))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Target, "target", "", "base URL of the version under test (canary URL or preview route)")
	f.StringVar(&opts.GRPCTarget, "grpc-target", "", "host:port for gRPC health tests that name no address")
	f.IntVar(&opts.Concurrency, "concurrency", 0, "tests in flight at once (default: the suite's, then 4)")
	f.StringVar(&junit, "junit", "", "also write JUnit XML to this file")
	f.StringVarP(&format, "output", "o", "table", "output format: table or json")
	f.StringArrayVarP(&headers, "header", "H", nil, "header added to every request, 'Name: value' (repeatable)")
	return cmd
}

func newSmokeValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a smoke suite without running it; exit 2 with file:line: reason when it is malformed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			suite, err := smoke.Load(args[0])
			if err != nil {
				return inputErr(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d tests, valid\n", args[0], len(suite.Tests))
			return nil
		},
	}
}

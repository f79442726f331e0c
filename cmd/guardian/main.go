// Command guardian is the one Guardian binary: proxy, rollout controller,
// xDS control plane, statistics and bench, each as a subcommand.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code out of a command, so commands stay
// testable (no os.Exit inside them).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks bad input: exit code 2, one line on stderr.
func usageErr(format string, a ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, a...)}
}

// commands registers every subcommand; each file adds its own with register.
var commands []func(root *cobra.Command)

func register(f func(root *cobra.Command)) { commands = append(commands, f) }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "guardian",
		Short:         "Progressive-delivery proxy and control plane",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, f := range commands {
		f(root)
	}
	return root
}

func main() {
	root := newRoot()
	err := root.Execute()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "guardian:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(2)
}

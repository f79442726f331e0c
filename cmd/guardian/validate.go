package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/deployment-guardian/guardian/rollout"
)

func init() { register(func(root *cobra.Command) { root.AddCommand(newValidateCmd()) }) }

// newValidateCmd checks rollout files the way `guardian run` loads them,
// without running anything: every problem, each with file, line and field.
func newValidateCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check rollout specs and list the rollouts they define",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return usageErr("-o %q: want text or json", output)
			}
			specs, err := rollout.LoadFiles(args...)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			type row struct {
				Name     string   `json:"name"`
				File     string   `json:"file"`
				Line     int      `json:"line"`
				Strategy string   `json:"strategy"`
				Steps    []string `json:"steps"`
			}
			rows := make([]row, 0, len(specs))
			for _, s := range specs {
				e, err := rollout.NewEngine(s)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				rows = append(rows, row{s.Name, s.File, s.Line, s.Strategy.Name(), e.StepNames()})
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			for _, r := range rows {
				fmt.Fprintf(out, "%s (%s:%d): %s, %d steps\n", r.Name, r.File, r.Line, r.Strategy, len(r.Steps))
				for i, st := range r.Steps {
					fmt.Fprintf(out, "  %d. %s\n", i+1, st)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

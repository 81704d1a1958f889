package main

import (
	"fmt"
	"maps"
	"slices"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks/builtin"
)

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check configuration files",
		Example: `  fhirferry config check fhirferry.yaml
  fhirferry config check configs/examples/*.yaml`,
	}
	cmd.AddCommand(newConfigCheckCmd(g))
	return cmd
}

func newConfigCheckCmd(*globals) *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE...",
		Short: "Report every problem of a config file, without touching the network or the warehouse",
		Long: `check reads each config file as a start would and reports every problem at once:
unknown keys and bad values (each with its line or key), unset environment
variables without a ${VAR:-default}, schedules, views that do not compile, sink
types this build lacks. Files the config names that are missing here (keys,
tokens, CA bundles) are warnings, since they often exist only on the server.
Nothing is created, opened for writing or contacted. The exit code is 2 if
any file has a problem, else 0.`,
		Example: `  fhirferry config check /etc/fhirferry/config.yaml
  FHIRFERRY_BASE_URL=https://ehr.example/fhir fhirferry config check fhirferry.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			types := slices.Sorted(maps.Keys(builtin.Factories()))
			bad := 0
			for _, path := range args {
				rep, err := pipeline.CheckConfig(path, types)
				if err != nil {
					bad++
					fmt.Fprintf(out, "%s: %v\n", path, err)
					continue
				}
				for _, w := range rep.Warnings {
					fmt.Fprintf(out, "%s: warning: %s\n", path, w)
				}
				if len(rep.Problems) == 0 {
					fmt.Fprintf(out, "%s: ok (%d sources, %d sinks)\n  %s\n", path, len(rep.Config.Sources), len(rep.Config.Sinks), rep.Memory)
					continue
				}
				bad++
				fmt.Fprintf(out, "%s: %d problem(s):\n", path, len(rep.Problems))
				for _, p := range rep.Problems {
					fmt.Fprintf(out, "  - %s\n", p)
				}
			}
			if bad > 0 {
				return &exitError{2, fmt.Errorf("%d of %d config files have problems", bad, len(args))}
			}
			return nil
		},
	}
}

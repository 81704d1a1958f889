package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/pipeline"
)

func newValueSetsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "valuesets",
		Example: "  fhirferry valuesets load --config fhirferry.yaml ./valuesets",
		Short:   "Load the value sets the quality measures use",
		Long: `valuesets stores FHIR ValueSet expansions in every sink's valueset_code table, one
row per code, so that measures and analysts test value-set membership with a join.`,
	}
	cmd.AddCommand(newValueSetsLoadCmd(g))
	return cmd
}

func newValueSetsLoadCmd(g *globals) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:     "load --config FILE [PATH]",
		Example: "  fhirferry valuesets load --config fhirferry.yaml ./vsac-2026",
		Short:   "Replace the sinks' value sets with those at PATH",
		Long: `load reads FHIR ValueSet resources with an expansion (expansion.contains) from
PATH: a JSON file holding a ValueSet or a Bundle of them (as VSAC and the eCQM
packages hand them out), an NDJSON file, or a folder of such files, read recursively.
Each sink's valueset_code table is replaced, in one transaction, by exactly these
value sets. PATH defaults to the config's measures.valuesets. A value set with no expansion is listed and left out: fhirferry is not
a terminology server. VSAC's expansions need the user's own UMLS licence.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			a, err := buildApp(ctx, g, cfgPath, nil, nil)
			if err != nil {
				return err
			}
			defer a.Close()
			path := a.Config().Measures.ValueSets
			if len(args) == 1 {
				path = args[0]
			}
			if path == "" {
				return &exitError{2, errors.New("valuesets load: give PATH or set measures.valuesets in the config")}
			}
			rep, err := a.LoadValueSets(ctx, path)
			if rep != nil {
				printValueSets(cmd.OutOrStdout(), rep)
			}
			if err != nil {
				return &exitError{1, err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config file (required)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func printValueSets(w io.Writer, rep *pipeline.ValueSetReport) {
	fmt.Fprintf(w, "loaded %d value sets (%d codes) from %d files in %s into %s\n",
		rep.Sets, rep.Codes, rep.Files, rep.Path, strings.Join(rep.Sinks, ", "))
	for _, u := range rep.Unexpanded {
		fmt.Fprintf(w, "  left out, no expansion: %s\n", u)
	}
}

package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/pipeline"
)

func newViewsRebuildCmd(g *globals) *cobra.Command {
	var cfgPath string
	var o pipeline.RebuildOptions
	cmd := &cobra.Command{
		Use:     "rebuild --config FILE [--view NAME ...] [--all] [--sink NAME ...]",
		Example: "  fhirferry views rebuild --config fhirferry.yaml\n  fhirferry views rebuild --config fhirferry.yaml --view patient --sink dw",
		Short:   "Rebuild view tables from the raw landing without a new export",
		Long: `rebuild recomputes view tables from the resources already in each sink's raw
landing, so a new or changed ViewDefinition covers every stored resource, not only
those loaded after the change. Each table is replaced in one transaction: readers see
the old rows until the new ones are complete, and a failure leaves the old table.

Without --view it rebuilds, per sink, exactly the views whose definition is new or
changed since the table was last built (each sink records the hash of the definition
in its view_definitions table). --all rebuilds every view. It prints, per sink and
table, the rows before and after and the time taken, and exits non-zero naming the
sink and view of any failure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			a, err := buildApp(ctx, g, cfgPath, nil, nil)
			if err != nil {
				return err
			}
			defer a.Close()
			rep, err := a.RebuildViews(ctx, o)
			if rep == nil {
				return err
			}
			if perr := printRebuild(cmd.OutOrStdout(), rep); perr != nil {
				return errors.Join(err, perr)
			}
			if err != nil {
				return &exitError{1, fmt.Errorf("views rebuild: %w", err)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config file (required)")
	cmd.Flags().StringArrayVar(&o.Views, "view", nil, "rebuild this view (repeatable; default: the new and changed views)")
	cmd.Flags().BoolVar(&o.All, "all", false, "rebuild every view")
	cmd.Flags().StringArrayVar(&o.Sinks, "sink", nil, "rebuild in this sink only (repeatable; default: every sink)")
	cmd.MarkFlagsMutuallyExclusive("view", "all")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// printRebuild writes one line per sink and table, then the sinks that
// were up to date.
func printRebuild(w io.Writer, rep *pipeline.RebuildReport) error {
	if len(rep.Rows) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SINK\tVIEW\tRESOURCE\tROWS BEFORE\tROWS AFTER\tERRORS\tDURATION")
		for _, r := range rep.Rows {
			after, failed := fmt.Sprint(r.After), fmt.Sprint(r.Failed)
			if r.Err != nil {
				after, failed = "failed", "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Sink, r.View, r.Resource, r.Before, after, failed,
				r.Duration.Round(time.Millisecond))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, s := range rep.UpToDate {
		fmt.Fprintf(w, "sink %s: all %d views are up to date\n", s, rep.Views)
	}
	return nil
}

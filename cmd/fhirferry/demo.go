package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/pipeline"
)

func newDemoCmd(g *globals) *cobra.Command {
	var dir string
	var patients int
	cmd := &cobra.Command{
		Use:     "demo",
		Example: "  fhirferry demo\n  fhirferry demo --dir /tmp/demo --patients 100",
		Short:   "Run fhirferry end to end against the built-in test server",
		Long: `demo starts the built-in Bulk Data test server (with SMART Backend Services
auth) in this process, registers a freshly generated ES384 key, runs an initial
Group export into <dir>/warehouse.duckdb, advances the server's clock (new, updated and
deleted resources), runs an incremental export, and prints what happened. The
folder is reset at the start; the config it used is left in <dir>/fhirferry.yaml.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("log-level") {
				g.logLevel = "warn" // the demo prints its own account of each run
			}
			return runDemo(cmd.Context(), g, cmd.OutOrStdout(), dir, patients)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "fhirferry-demo", "folder for the warehouse, state and config")
	cmd.Flags().IntVar(&patients, "patients", 25, "patients the test server generates")
	return cmd
}

func runDemo(ctx context.Context, g *globals, out io.Writer, dir string, patients int) error {
	prog := newProgress(os.Stderr)
	d, err := pipeline.StartDemo(ctx, dir, patients, g.deps(prog, nil))
	if err != nil {
		return err
	}
	defer d.Close()
	fmt.Fprintf(out, "Test server: %s (SMART Backend Services, %d patients, Group/cohort)\n", d.Server.BaseURL(), patients)
	run := func(title string) (*pipeline.Result, error) {
		fmt.Fprintf(out, "\n== %s\n", title)
		res, err := d.Run(ctx)
		prog.finish()
		printSummary(out, []*pipeline.Result{res}, []error{err})
		return res, err
	}
	if _, err := run("Run 1: initial export (no _since)"); err != nil {
		return err
	}
	if err := printTables(ctx, out, d); err != nil {
		return err
	}
	mut := d.Advance()
	fmt.Fprintf(out, "\n== The server's clock moves to %s: %d new patients (%d resources), %d resources updated, %d deleted;\n"+
		"   %d patient(s) join Group/cohort with their history, %d leave it\n",
		mut.Time.Format(time.RFC3339), len(mut.NewPatients), len(mut.Created), len(mut.Updated), len(mut.Deleted),
		len(mut.AddedToGroup), len(mut.RemovedFromGroup))
	res, err := run("Run 2: incremental export (_since = run 1's transactionTime)")
	if err != nil {
		return err
	}
	changes, more, err := d.Changes(ctx, mut, 4)
	if err != nil {
		return err
	}
	printChanges(out, changes, more)
	if err := printTables(ctx, out, d); err != nil {
		return err
	}
	if err := printSampleQuery(ctx, out, d); err != nil {
		return err
	}
	fmt.Fprintf(out, `
The checkpoint for the next run is %q (the manifest's transactionTime, verbatim).
Open the warehouse with the DuckDB CLI (read-only works even while a daemon writes it;
the README's "Analysts' quick start" has more questions to ask it):

  duckdb -readonly %s
  D SELECT gender, count(*) FROM patient GROUP BY gender;
  D DESCRIBE observation;

Run it yourself against any Bulk Data server: copy %s, point base_url and auth at
your server, and run 'fhirferry run --config FILE'.
`, res.TransactionTime, d.Warehouse, d.ConfigPath)
	return nil
}

func printTables(ctx context.Context, out io.Writer, d *pipeline.Demo) error {
	tables, err := d.Tables(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tROWS")
	for _, t := range tables {
		fmt.Fprintf(tw, "%s\t%d\n", t.Name, t.Rows)
	}
	return tw.Flush()
}

// printChanges shows that the warehouse followed the server: updated
// resources carry the new version and deleted ones are gone.
func printChanges(out io.Writer, changes []pipeline.DemoChange, more map[string]int) {
	fmt.Fprintln(out, "\nWhat the incremental run changed in fhir_resources (resources of the Group's patients):")
	last := ""
	for i, c := range changes {
		if c.Gone {
			fmt.Fprintf(out, "  %-8s %s/%s: no longer in the warehouse\n", c.Kind, c.Key.Type, c.Key.ID)
		} else {
			fmt.Fprintf(out, "  %-8s %s/%s: version %s, lastUpdated %s\n", c.Kind, c.Key.Type, c.Key.ID, c.Version, c.LastUpdated.Format(time.RFC3339))
		}
		last = c.Kind
		if next := i + 1; (next == len(changes) || changes[next].Kind != last) && more[last] > 0 {
			fmt.Fprintf(out, "  ... and %d more %s\n", more[last], last)
		}
	}
}

// printSampleQuery runs a query a population-health analyst would write.
func printSampleQuery(ctx context.Context, out io.Writer, d *pipeline.Demo) error {
	fmt.Fprintf(out, "\nA sample analyst query:\n\n  %s\n\n", strings.ReplaceAll(pipeline.DemoQuery, "\n", "\n  "))
	rows, err := d.SampleQuery(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  GENDER\tPATIENTS\tCONDITIONS\tPER PATIENT")
	for _, r := range rows {
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%.1f\n", r.Gender, r.Patients, r.Conditions, r.PerPatient)
	}
	return tw.Flush()
}

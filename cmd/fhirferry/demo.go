package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/fetch/auth"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
)

func init() { register(newDemoCmd) }

func newDemoCmd(g *globals) *cobra.Command {
	var dir string
	var patients int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run fhirferry end to end against the built-in test server",
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
	for _, p := range []string{"warehouse.duckdb", "warehouse.duckdb.wal", "state", "spool", "keys", "fhirferry.yaml"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		return err
	}
	// SMART Backend Services: a new key pair, registered with the server
	// the way an operator registers a JWKS with an EHR.
	key, err := auth.GenerateKey(auth.ES384, "")
	if err != nil {
		return err
	}
	keyPath := filepath.Join(dir, "keys", "private-key.pem")
	if err := os.WriteFile(keyPath, key.PrivatePEM, 0o600); err != nil {
		return err
	}
	jwks, err := jwk.Parse(key.PublicJWKS)
	if err != nil {
		return err
	}
	smart := bulktest.NewSMARTServer(bulktest.SMARTServerOptions{TokenLifetime: 5 * time.Minute})
	if err := smart.Register("fhirferry-demo", jwks); err != nil {
		return err
	}
	srv, err := bulktest.NewServer(bulktest.Options{Patients: patients, Seed: 7, Auth: smart, FileMaxResources: 2000})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(out, "Test server: %s (SMART Backend Services, %d patients, Group/cohort)\n", srv.BaseURL(), patients)

	cfgPath := filepath.Join(dir, "fhirferry.yaml")
	cfgText := fmt.Sprintf(`# Written by 'fhirferry demo'. The server it points at lives only while the demo runs.
data_dir: %s
sources:
  - name: demo
    base_url: %s
    level: group
    group_id: cohort
    http:
      min_wait: 200ms
      max_wait: 5s
    auth:
      type: smart
      client_id: fhirferry-demo
      private_key_file: %s
      alg: ES384
      scopes: [system/*.rs]
sinks:
  - name: warehouse
    type: duckdb
    duckdb:
      path: %s
`, dir, srv.BaseURL(), keyPath, filepath.Join(dir, "warehouse.duckdb"))
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	prog := newProgress(os.Stderr)
	a, err := buildApp(ctx, cfgPath, g.logger(), prog, nil)
	if err != nil {
		return err
	}
	defer a.close()
	wh, ok := a.sinks["warehouse"].(*duckdb.Sink)
	if !ok {
		return errors.New("demo: the warehouse sink is not DuckDB")
	}

	run := func(title string) (*pipeline.Result, error) {
		fmt.Fprintf(out, "\n== %s\n", title)
		res, err := a.runSource(ctx, "demo")
		prog.finish()
		if res == nil {
			res = &pipeline.Result{Source: "demo"}
		}
		printSummary(out, []*pipeline.Result{res}, []error{err})
		return res, err
	}
	if _, err := run("Run 1: initial export (no _since)"); err != nil {
		return err
	}
	if err := printTables(ctx, out, wh); err != nil {
		return err
	}

	mut := srv.Advance(24*time.Hour, bulktest.Mutation{NewPatients: 2, UpdatedResources: 30, DeletedResources: 12})
	fmt.Fprintf(out, "\n== The server's clock moves to %s: %d new patients (%d resources), %d resources updated, %d deleted\n",
		mut.Time.Format(time.RFC3339), len(mut.NewPatients), len(mut.Created), len(mut.Updated), len(mut.Deleted))

	res, err := run("Run 2: incremental export (_since = run 1's transactionTime)")
	if err != nil {
		return err
	}
	if err := printChanges(ctx, out, wh.DB(), mut, srv.Truth("group", "cohort", nil)); err != nil {
		return err
	}
	if err := printTables(ctx, out, wh); err != nil {
		return err
	}
	if err := printSampleQuery(ctx, out, wh.DB()); err != nil {
		return err
	}
	fmt.Fprintf(out, `
The checkpoint for the next run is %q (the manifest's transactionTime, verbatim).
Open the warehouse with the DuckDB CLI:

  duckdb %s
  D SELECT gender, count(*) FROM patient GROUP BY gender;

Run it yourself against any Bulk Data server: copy %s, point base_url and auth at
your server, and run 'fhirferry run --config FILE'.
`, res.TransactionTime, filepath.Join(dir, "warehouse.duckdb"), cfgPath)
	return nil
}

func printTables(ctx context.Context, out io.Writer, wh *duckdb.Sink) error {
	tables, err := wh.Tables(ctx)
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
func printChanges(ctx context.Context, out io.Writer, db *sql.DB, mut bulktest.MutationResult, truth map[bulktest.Key]bulktest.TruthRow) error {
	fmt.Fprintln(out, "\nWhat the incremental run changed in fhir_resources (resources of the Group's patients):")
	var updated []bulktest.Key
	for _, k := range mut.Updated {
		if _, ok := truth[k]; ok {
			updated = append(updated, k) // updates outside the Group are not exported to it
		}
	}
	show := func(label string, keys []bulktest.Key, n int) error {
		for i, k := range keys {
			if i == n {
				fmt.Fprintf(out, "  ... and %d more %s\n", len(keys)-n, label)
				break
			}
			var version sql.NullString
			var lastUpdated sql.NullTime
			err := db.QueryRowContext(ctx, `SELECT version_id, last_updated FROM fhir_resources WHERE resource_type = ? AND id = ?`, k.Type, k.ID).Scan(&version, &lastUpdated)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				fmt.Fprintf(out, "  %-8s %s/%s: no longer in the warehouse\n", label, k.Type, k.ID)
			case err != nil:
				return err
			default:
				fmt.Fprintf(out, "  %-8s %s/%s: version %s, lastUpdated %s\n", label, k.Type, k.ID, version.String, lastUpdated.Time.UTC().Format(time.RFC3339))
			}
		}
		return nil
	}
	if err := show("updated", updated, 4); err != nil {
		return err
	}
	return show("deleted", mut.Deleted, 4)
}

// printSampleQuery runs a query a population-health analyst would write.
func printSampleQuery(ctx context.Context, out io.Writer, db *sql.DB) error {
	const q = `SELECT p.gender, count(DISTINCT p.id) AS patients, count(c.id) AS conditions,
       round(count(c.id) / count(DISTINCT p.id), 1) AS conditions_per_patient
FROM patient p LEFT JOIN condition c ON c.patient_id = p.id
GROUP BY p.gender ORDER BY p.gender`
	fmt.Fprintf(out, "\nA sample analyst query:\n\n  %s\n\n", strings.ReplaceAll(q, "\n", "\n  "))
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  GENDER\tPATIENTS\tCONDITIONS\tPER PATIENT")
	for rows.Next() {
		var gender sql.NullString
		var patients, conditions int64
		var per float64
		if err := rows.Scan(&gender, &patients, &conditions, &per); err != nil {
			return err
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%.1f\n", gender.String, patients, conditions, per)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return tw.Flush()
}

package main

import (
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

// newTestServerCmd runs the fault-injecting Bulk Data test server, so users
// can try fhirferry (and other clients) without a real EHR.
func newTestServerCmd(g *globals) *cobra.Command {
	var (
		addr         string
		patients     int
		seed         int64
		fileMax      int
		polls        int
		advanceEvery time.Duration
		updates      int
		deletes      int
		newPatients  int
		joins        int
		leaves       int
		crossOrigin  bool
		redirect     bool
		txOffset     string
	)
	cmd := &cobra.Command{
		Use:   "testserver",
		Short: "Run a FHIR Bulk Data test server with generated, deterministic data",
		Long: `Run a conformant FHIR Bulk Data ($export) server on generated Synthea-like
data. Groups "all" and "cohort" exist. With --advance-every the server clock
moves forward and resources are created, updated and deleted, so incremental
(_since) exports have something to return. The server is open (no auth).`,
		Example: `  fhirferry testserver --addr 127.0.0.1:8080 --patients 1000
  fhirferry testserver --patients 200 --advance-every 1m --updates 50 --deletes 5
  fhirferry testserver --advance-every 1m --cohort-joins 2 --cohort-leaves 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.logger()
			opts := bulktest.Options{
				Patients: patients, Seed: seed, FileMaxResources: fileMax,
				PollsBeforeComplete: polls, CrossOriginFiles: crossOrigin, RedirectFiles: redirect,
				Logger: log,
			}
			if txOffset != "" {
				t, err := time.Parse("-07:00", txOffset)
				if err != nil {
					return fmt.Errorf("--transaction-time-offset %q: want e.g. -05:00: %w", txOffset, err)
				}
				_, off := t.Zone()
				opts.TransactionTimeOffset = time.FixedZone("", off)
			}
			s, err := bulktest.New(opts)
			if err != nil {
				return err
			}
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", addr, err)
			}
			ctx := cmd.Context()
			if advanceEvery > 0 {
				m := bulktest.Mutation{NewPatients: newPatients, UpdatedResources: updates, DeletedResources: deletes,
					AddGroupMembers: joins, RemoveGroupMembers: leaves}
				go s.AdvanceEvery(ctx, advanceEvery, m)
			}
			return s.Serve(ctx, l)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "listen address")
	f.IntVar(&patients, "patients", 1000, "patients generated at start")
	f.Int64Var(&seed, "seed", 1, "data seed (same seed, same data)")
	f.IntVar(&fileMax, "file-max-resources", 10000, "resources per file before a type is split")
	f.IntVar(&polls, "polls-before-complete", 1, "status polls answered 202 before the manifest")
	f.DurationVar(&advanceEvery, "advance-every", 0, "move the clock and mutate data this often (0: never)")
	f.IntVar(&updates, "updates", 20, "resources updated per advance")
	f.IntVar(&deletes, "deletes", 2, "resources deleted per advance")
	f.IntVar(&newPatients, "new-patients", 1, "patients created per advance")
	f.IntVar(&joins, "cohort-joins", 0, "existing patients (former members among them) who join the cohort Group per advance")
	f.IntVar(&leaves, "cohort-leaves", 0, "members who leave the cohort Group per advance (their data stays on the server)")
	f.BoolVar(&crossOrigin, "cross-origin-files", false, "serve files from a second origin (localhost:PORT2)")
	f.BoolVar(&redirect, "redirect-files", false, "answer file URLs with 307 to signed URLs on a second origin")
	f.StringVar(&txOffset, "transaction-time-offset", "", "emit transactionTime with this UTC offset, e.g. -05:00")
	return cmd
}

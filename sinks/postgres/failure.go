package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

var _ sinks.FailureRecorder = (*Sink)(nil)

// RecordFailure implements sinks.FailureRecorder: one runs row per run
// id that has not succeeded, replaced by the row of a later success.
func (s *Sink) RecordFailure(ctx context.Context, r sinks.RunInfo, sum sinks.RunSummary) error {
	_, err := s.pool.Exec(ctx, insertRun(s.ident(schemas.RunsTable), "finished_at = excluded.finished_at, outcome = excluded.outcome"),
		runArgs(r, sum)...)
	if err != nil {
		return fmt.Errorf("postgres sink %s: record failed run: %w", s.name, err)
	}
	return nil
}

// insertRun writes a runs row from runArgs; a row of the same run id
// that has not succeeded takes the SET columns (update) of the new one.
func insertRun(table, update string) string {
	return fmt.Sprintf(`INSERT INTO %[1]s (run_id, source, export_id, since,
		transaction_time, started_at, finished_at, outcome, files, bytes, resources, deleted, rejects, outcomes, membership, purged)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,NULLIF($15, ''),$16) ON CONFLICT (run_id) DO UPDATE SET
		%[2]s
		WHERE %[1]s.outcome <> 'success'`, table, update)
}

func runArgs(r sinks.RunInfo, sum sinks.RunSummary) []any {
	finished := sum.Finished
	if finished.IsZero() {
		finished = time.Now()
	}
	return []any{r.RunID, r.Source, r.ExportID, r.Since, r.TransactionTime, r.Started, finished, sum.Outcome,
		sum.Files, sum.Bytes, sum.Resources, sum.Deleted, sum.Rejects, sum.Outcomes, sum.MembersFrom, sum.Purged}
}

package duckdb

import (
	"context"
	"fmt"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

var _ sinks.FailureRecorder = (*Sink)(nil)

// RecordFailure implements sinks.FailureRecorder: one runs row per run
// id that has not succeeded, replaced by the row of a later success.
func (s *Sink) RecordFailure(ctx context.Context, r sinks.RunInfo, sum sinks.RunSummary) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	var done int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+quote(schemas.RunsTable)+` WHERE run_id = ? AND outcome = 'success'`, r.RunID).Scan(&done); err != nil {
		return fmt.Errorf("duckdb sink %s: record failed run: %w", s.name, err)
	}
	if done > 0 {
		return nil // the run committed here; the failure was elsewhere
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM `+quote(schemas.RunsTable)+` WHERE run_id = ?`, r.RunID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, insertRun, runArgs(r, sum)...); err != nil {
		return fmt.Errorf("duckdb sink %s: record failed run: %w", s.name, err)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.dirty.Store(true)
	return nil
}

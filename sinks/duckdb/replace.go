package duckdb

import (
	"context"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/fhirferry/fhirferry/pipeline"
)

// ReplaceTable replaces the whole of table t (dropping and recreating it
// with t's current schema) with the rows produce emits, atomically:
// readers see the old table until the new one is complete. produce calls
// emit once per batch; emit takes ownership of the batch and releases it,
// also on error, and produce must return emit's error. Batches have
// t.Schema, ColSeq included (it is not stored).
//
// It is the write behind `fhirferry views rebuild`; like a Txn it holds the
// sink's single writer slot while it runs.
func (s *Sink) ReplaceTable(ctx context.Context, t *pipeline.Table,
	produce func(emit func(arrow.RecordBatch) error) error) (err error) {
	if t == nil || t.Kind == pipeline.KindDeleted {
		return fmt.Errorf("duckdb sink %s: replace table: not a stored table", s.name)
	}
	txn, err := s.newTxn(ctx, "replace-"+t.Name)
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, txn.cleanup())
		if err != nil {
			err = fmt.Errorf("duckdb sink %s: replace table %s: %w", s.name, t.Name, err)
		}
	}()
	txn.done = true
	st, err := newStage(ctx, txn.conn, s.mode, txn.dir, t, 0)
	if err != nil {
		return err
	}
	txn.order = append(txn.order, st)
	err = produce(func(rec arrow.RecordBatch) error {
		defer rec.Release()
		if err := ctx.Err(); err != nil {
			return err
		}
		return st.write(rec)
	})
	if err != nil {
		return err
	}
	if err := st.finish(ctx, txn.conn); err != nil {
		return err
	}
	defs, err := columnDefs(t.StoredFields(), false)
	if err != nil {
		return err
	}
	cols, sel := selectList(t)
	tx, err := txn.conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for _, q := range []string{
		"DROP TABLE IF EXISTS " + quote(t.Name),
		"CREATE TABLE " + quote(t.Name) + " (" + defs + ")",
		"INSERT INTO " + quote(t.Name) + " (" + cols + ") SELECT " + sel + " FROM " + st.rel + " s",
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return errors.Join(err, ignoreDone(tx.Rollback()))
		}
	}
	if t.Description != "" {
		if _, err := tx.ExecContext(ctx, "COMMENT ON TABLE "+quote(t.Name)+" IS "+lit(t.Description)); err != nil {
			return errors.Join(err, ignoreDone(tx.Rollback()))
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.mu.Lock()
	s.tables[t.Name] = t
	s.mu.Unlock()
	return nil
}

package duckdb

import (
	"context"
	"errors"
	"fmt"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/txnguard"
)

var _ sinks.Rebuilder = (*Sink)(nil)

// ReplaceTable implements [sinks.Rebuilder]: it replaces the whole of
// table t (dropping and recreating it with t's current schema) with the
// rows produce emits, atomically: readers see the old table until the new
// one is complete. Batches must be for t, with t.Schema, ColSeq included
// (it is not stored).
//
// It is the write behind `fhirferry views rebuild`; like a Txn it holds the
// sink's single writer slot while it runs, so no run commits between a
// [Sink.ScanRaw] that produce makes and the replacement.
func (s *Sink) ReplaceTable(ctx context.Context, t *schemas.Table,
	produce func(emit func(schemas.Batch) error) error) (err error) {
	if err := txnguard.CheckReplaceable("duckdb sink "+s.name, t); err != nil {
		return err
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
	// One stage per stamp: the batches of a rebuild come namespace by
	// namespace (ScanRaw's order), and each stage's INSERT stamps its own.
	var groups []stamped
	err = produce(txnguard.ReplaceEmit(ctx, t, func(b schemas.Batch) error {
		sp := stamp{namespace: b.Namespace, source: b.Source}
		if len(groups) == 0 || groups[len(groups)-1].stamp != sp {
			st, err := newStage(&s.stg, txn.dir, t, len(txn.order))
			if err != nil {
				return err
			}
			txn.order = append(txn.order, st)
			groups = append(groups, stamped{stage: st, stamp: sp})
		}
		return groups[len(groups)-1].stage.write(b.Rec)
	}))
	if err != nil {
		return err
	}
	defs, err := columnDefs(t.StoredFields(), false)
	if err != nil {
		return err
	}
	qs := []string{"DROP TABLE IF EXISTS " + quote(t.Name), "CREATE TABLE " + quote(t.Name) + " (" + defs + ")"}
	for _, g := range groups {
		if err := g.stage.finish(ctx, txn.conn); err != nil {
			return err
		}
		qs = append(qs, insertFrom(t, g.stage.rel, g.stamp))
	}
	tx, err := txn.conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for _, q := range qs {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return errors.Join(err, ignoreDone(tx.Rollback()))
		}
	}
	if err := comment(ctx, tx, t, nil); err != nil {
		return errors.Join(err, ignoreDone(tx.Rollback()))
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.tables.Put(t)
	s.dirty.Store(true)
	return nil
}

// stamped is one stage of a ReplaceTable with the stamp of its rows.
type stamped struct {
	stage *stage
	stamp stamp
}

// ScanRaw implements [sinks.Rebuilder]: it streams the committed raw
// resources of one type, by namespace and source. It reads through the
// shared pool, so it may run while ReplaceTable holds the writer slot.
func (s *Sink) ScanRaw(ctx context.Context, resourceType string, fn func(schemas.RawResource) error) (err error) {
	rows, err := s.db.QueryContext(ctx, `SELECT namespace, source, id, CAST(resource AS VARCHAR) FROM `+quote(schemas.RawTable)+
		` WHERE resource_type = ? ORDER BY namespace, source`, resourceType)
	if err != nil {
		return fmt.Errorf("duckdb sink %s: scan %s: %w", s.name, resourceType, err)
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	var r schemas.RawResource
	for rows.Next() {
		if err := rows.Scan(&r.Namespace, &r.Source, &r.ID, &r.JSON); err != nil {
			return fmt.Errorf("duckdb sink %s: scan %s: %w", s.name, resourceType, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("duckdb sink %s: scan %s: %w", s.name, resourceType, err)
	}
	return nil
}

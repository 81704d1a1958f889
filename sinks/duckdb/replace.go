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
//
// The Go driver materializes a query's whole result before the first row
// is read, so one query over a type's resources held all their JSON in
// DuckDB's memory: a rebuild of a 1 GB warehouse peaked at 750 MiB, and
// with an ORDER BY on the stamp failed under a 128 MiB memory_limit
// ("failed to pin block"). The scan goes instead (namespace, source) by
// (namespace, source), each in windows of scanWindow row ids, so that no
// result holds more than a window's resources.
func (s *Sink) ScanRaw(ctx context.Context, resourceType string, fn func(schemas.RawResource) error) error {
	stamps, last, err := s.rawStamps(ctx, resourceType)
	if err != nil {
		return fmt.Errorf("duckdb sink %s: scan %s: %w", s.name, resourceType, err)
	}
	for _, st := range stamps {
		for lo := int64(0); lo <= last; lo += scanWindow {
			if err := s.scanWindow(ctx, resourceType, st, lo, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// scanWindow is the row ids one ScanRaw query covers: a row group and a
// half of the sink's, at most 24,576 resources (some 25-50 MB of JSON).
const scanWindow = rowGroupSize * 3 / 2

// rawStamps lists the (namespace, source) pairs that hold resources of
// resourceType, in order, and the largest row id among them.
func (s *Sink) rawStamps(ctx context.Context, resourceType string) (out []stamp, last int64, err error) {
	rows, err := s.db.QueryContext(ctx, `SELECT namespace, source, max(rowid) FROM `+quote(schemas.RawTable)+
		` WHERE resource_type = ? GROUP BY ALL ORDER BY namespace, source`, resourceType)
	if err != nil {
		return nil, 0, err
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	for rows.Next() {
		var st stamp
		var top int64
		if err := rows.Scan(&st.namespace, &st.source, &top); err != nil {
			return nil, 0, err
		}
		out, last = append(out, st), max(last, top)
	}
	return out, last, rows.Err()
}

func (s *Sink) scanWindow(ctx context.Context, resourceType string, st stamp, lo int64, fn func(schemas.RawResource) error) (err error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, CAST(resource AS VARCHAR) FROM `+quote(schemas.RawTable)+
		` WHERE rowid >= ? AND rowid < ? AND resource_type = ? AND namespace = ? AND source = ?`,
		lo, lo+scanWindow, resourceType, st.namespace, st.source)
	if err != nil {
		return fmt.Errorf("duckdb sink %s: scan %s: %w", s.name, resourceType, err)
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	r := schemas.RawResource{Namespace: st.namespace, Source: st.source}
	for rows.Next() {
		if err := rows.Scan(&r.ID, &r.JSON); err != nil {
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

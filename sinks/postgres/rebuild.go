package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/txnguard"
)

var _ sinks.Rebuilder = (*Sink)(nil)

// scanFetch is how many raw rows ScanRaw fetches from its cursor at a time.
const scanFetch = 500

// ReplaceTable implements [sinks.Rebuilder]: the whole table t (a view
// being rebuilt, or an append table such as view_definitions) is dropped,
// re-created from t.Schema and loaded with the batches produce emits, in
// one transaction, so readers see the old rows or the new ones.
//
// The transaction first takes a SHARE lock on the raw landing: a run's
// commit (of any process) waits until the replacement commits, so rows
// produce computes from [Sink.ScanRaw] are still current when they become
// visible.
func (s *Sink) ReplaceTable(ctx context.Context, t *schemas.Table, produce func(emit func(schemas.Batch) error) error) (err error) {
	if t == nil || (t.Kind != schemas.KindView && t.Kind != schemas.KindAppend && t.Kind != schemas.KindMeta) {
		return fmt.Errorf("postgres sink %s: replace table: only view and append tables can be replaced", s.name)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("postgres sink %s: replace %s: %w", s.name, t.Name, err)
		}
	}()
	staged, err := tableColumns(t, false)
	if err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if _, err = tx.Exec(ctx, "LOCK TABLE "+s.ident(schemas.RawTable)+" IN SHARE MODE"); err != nil {
		return err
	}
	if _, err = tx.Exec(ctx, "DROP TABLE IF EXISTS "+s.ident(t.Name)); err != nil {
		return err
	}
	if err = s.createTable(ctx, tx, t); err != nil {
		return err
	}
	// Batches are COPYed into a staging table and moved to the target, cast
	// to the stored types and stamped, whenever the stamp changes (a
	// rebuild's batches come namespace by namespace).
	if _, err = tx.Exec(ctx, "CREATE TEMP TABLE _ff_replace ("+stageDefs(staged)+") ON COMMIT DROP"); err != nil {
		return err
	}
	names := make([]string, len(staged))
	for i, c := range staged {
		names[i] = c.name
	}
	var rows, pending int64
	var cur stamp
	flush := func() error {
		if pending == 0 {
			return nil
		}
		cols, sel, err := insertCols(t, cur, "s")
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM _ff_replace s", s.ident(t.Name), cols, sel)); err != nil {
			return err
		}
		pending = 0
		_, err = tx.Exec(ctx, "TRUNCATE _ff_replace")
		return err
	}
	err = produce(txnguard.ReplaceEmit(ctx, t, func(b schemas.Batch) error {
		if sp := (stamp{namespace: b.Namespace, source: b.Source}); sp != cur {
			if err := flush(); err != nil {
				return err
			}
			cur = sp
		}
		n, err := copyRecord(ctx, tx, pgx.Identifier{"_ff_replace"}, names, b.Rec, staged)
		rows, pending = rows+n, pending+n
		return err
	}))
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	if err = tx.Commit(ctx); err != nil {
		return err
	}
	s.tables.Put(t)
	s.log.Debug("replaced table", "table", t.Name, "rows", rows)
	return nil
}

// ScanRaw implements [sinks.Rebuilder]: it streams the committed raw
// resources of one type through a cursor in a read-only transaction, so
// memory stays bounded and stopping early does not read the rest. The
// JSON is PostgreSQL's rendering of the stored jsonb (keys reordered,
// whitespace normalised), which views read the same.
func (s *Sink) ScanRaw(ctx context.Context, resourceType string, fn func(schemas.RawResource) error) (err error) {
	var fnErr error // returned as is
	defer func() {
		if err != nil && err != fnErr { //nolint:errorlint // identity, not a kind of error
			err = fmt.Errorf("postgres sink %s: scan %s: %w", s.name, resourceType, err)
		}
	}()
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "DECLARE ff_scan NO SCROLL CURSOR FOR SELECT namespace, source, id, resource::text FROM "+
		s.ident(schemas.RawTable)+" WHERE resource_type = $1 ORDER BY namespace, source", resourceType); err != nil {
		return err
	}
	fetch := fmt.Sprintf("FETCH %d FROM ff_scan", scanFetch)
	for {
		rows, err := tx.Query(ctx, fetch)
		if err != nil {
			return err
		}
		n := 0
		var r schemas.RawResource
		for rows.Next() {
			n++
			if err := rows.Scan(&r.Namespace, &r.Source, &r.ID, &r.JSON); err != nil {
				rows.Close()
				return err
			}
			if fnErr = fn(r); fnErr != nil {
				rows.Close()
				return fnErr
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if n < scanFetch {
			return nil
		}
	}
}

package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/txnguard"
)

// Txn is one run's PostgreSQL transaction.
type Txn struct {
	s      *Sink
	run    sinks.RunInfo
	conn   *pgxpool.Conn
	tx     pgx.Tx
	stages map[string]*stage
	// Noop is set when the sink already holds the run's export: writes are
	// discarded and Commit only records the run. After a write error (Err)
	// the PostgreSQL transaction is aborted and the run cannot commit.
	txnguard.Guard
}

// stage is a TEMP staging table of one target table.
type stage struct {
	t     *schemas.Table
	temp  string
	cols  []column // staged columns, _seq included
	names []string
	rows  int64
}

var _ sinks.Txn = (*Txn)(nil)

// Begin implements sinks.Sink. It opens the run's transaction and takes a
// per-source advisory lock, so two processes cannot apply runs of one source
// to the same schema at once.
func (s *Sink) Begin(ctx context.Context, run sinks.RunInfo) (sinks.Txn, error) {
	if s.tables.Get(schemas.RawTable) == nil {
		if err := s.Prepare(ctx, nil); err != nil {
			return nil, err
		}
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres sink %s: begin: %w", s.name, err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("postgres sink %s: begin: %w", s.name, err)
	}
	t := &Txn{s: s, run: run, conn: conn, tx: tx, stages: map[string]*stage{}}
	fail := func(err error) (sinks.Txn, error) {
		_ = t.Rollback(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("postgres sink %s: begin: %w", s.name, err)
	}
	var locked bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtext($1))`, "fhirferry/run/"+s.schema+"/"+run.Source).Scan(&locked); err != nil {
		return fail(err)
	}
	if !locked {
		return fail(fmt.Errorf("another run of source %q is writing to schema %s", run.Source, s.schema))
	}
	// Staged JSON is compressed with lz4 when the server has it: cheaper than
	// pglz, and the compressed value is then moved into the target as is.
	if _, err := tx.Exec(ctx, "SAVEPOINT lz4; SET LOCAL default_toast_compression = 'lz4'; RELEASE SAVEPOINT lz4"); err != nil {
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT lz4"); err != nil {
			return fail(err)
		}
	}
	var exportID string
	err = tx.QueryRow(ctx, fmt.Sprintf(`SELECT export_id FROM %s WHERE source=$1`, s.ident(schemas.CheckTable)), run.Source).Scan(&exportID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return fail(err)
	default:
		t.Noop = run.ExportID != "" && exportID == run.ExportID
	}
	if t.Noop {
		s.log.Info("export already held; run is a no-op", "source", run.Source)
	}
	s.mu.Lock()
	s.open[t] = true
	s.mu.Unlock()
	return t, nil
}

// Write implements sinks.Txn: rows are COPYed into the table's staging
// table (or straight into an append table, invisible until commit).
func (t *Txn) Write(ctx context.Context, b schemas.Batch) error {
	return t.Guard.Write(ctx, "postgres sink "+t.s.name, b, t.write)
}

func (t *Txn) write(ctx context.Context, b schemas.Batch) error {
	st, ok := t.stages[b.Table.Name]
	if !ok {
		tbl := t.s.tables.Get(b.Table.Name)
		if tbl == nil {
			return fmt.Errorf("table %s was not prepared", b.Table.Name)
		}
		st = &stage{t: tbl}
		var err error
		if st.cols, err = tableColumns(tbl, false); err != nil {
			return err
		}
		// Every table stages in a temp table, appends too: the namespace
		// is stamped as it moves to the target.
		st.temp = fmt.Sprintf("_ff_stage_%d", len(t.stages))
		if _, err := t.tx.Exec(ctx, fmt.Sprintf("CREATE TEMP TABLE %s (%s) ON COMMIT DROP", st.temp, stageDefs(st.cols))); err != nil {
			return err
		}
		for _, c := range st.cols {
			st.names = append(st.names, c.name)
		}
		t.stages[b.Table.Name] = st
	}
	n, err := copyRecord(ctx, t.tx, pgx.Identifier{st.temp}, st.names, b.Rec, st.cols)
	st.rows += n
	return err
}

// Commit implements sinks.Txn. On failure the transaction is rolled back
// at once; a later Rollback is a no-op.
func (t *Txn) Commit(ctx context.Context, sum sinks.RunSummary) error {
	if t.Done {
		return sinks.ErrTxnDone
	}
	err := t.Err
	if err == nil && !t.Noop {
		err = t.apply(ctx)
	}
	if err == nil {
		err = t.record(ctx, sum)
	}
	if err == nil {
		err = t.tx.Commit(ctx)
	}
	if err != nil {
		_ = t.Rollback(context.WithoutCancel(ctx))
		if t.Err == nil {
			err = fmt.Errorf("postgres sink %s: commit: %w", t.s.name, err)
		}
		return err
	}
	t.end()
	return nil
}

// end marks the run ended and returns its connection to the pool.
func (t *Txn) end() {
	t.Done = true
	t.conn.Release()
	t.s.mu.Lock()
	delete(t.s.open, t)
	t.s.mu.Unlock()
}

// Rollback implements sinks.Txn.
func (t *Txn) Rollback(ctx context.Context) error {
	if t.Done {
		return nil
	}
	err := t.tx.Rollback(ctx)
	closed := t.conn.Conn().IsClosed()
	// A connection left mid-transaction (cancelled COPY) is closed by the pool.
	t.end()
	if err != nil && !errors.Is(err, pgx.ErrTxClosed) && !closed {
		return fmt.Errorf("postgres sink %s: rollback: %w", t.s.name, err)
	}
	return nil
}

func (t *Txn) exec(ctx context.Context, step, q string, args ...any) error {
	t0 := time.Now()
	if _, err := t.tx.Exec(ctx, q, args...); err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	t.s.log.Debug("commit step", "step", step, "duration", time.Since(t0))
	return nil
}

// apply runs the contract's steps 1-3 set-based over the staging tables.
func (t *Txn) apply(ctx context.Context) error {
	rawSt := t.stages[schemas.RawTable]
	if rawSt != nil {
		if err := t.upsertRaw(ctx, rawSt); err != nil {
			return err
		}
	}
	if delSt := t.stages[schemas.DeletedTable]; delSt != nil {
		if err := t.applyDeletes(ctx, delSt, rawSt != nil); err != nil {
			return err
		}
	}
	if rawSt != nil {
		if err := t.replaceViewRows(ctx); err != nil {
			return err
		}
	}
	return t.appendRows(ctx)
}

// appendRows moves the staged rows of the append tables (rejects,
// outcomes) to their targets.
func (t *Txn) appendRows(ctx context.Context) error {
	for _, st := range t.stages {
		if st.t.Kind != schemas.KindAppend {
			continue
		}
		names, sel, err := insertCols(st.t, runStamp(t.run), "s")
		if err != nil {
			return err
		}
		if err := t.exec(ctx, "append "+st.t.Name, fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s s",
			t.s.ident(st.t.Name), names, sel, st.temp)); err != nil {
			return err
		}
	}
	return nil
}

// upsertRaw is step 1: the run's winning line per key goes into the raw
// landing, and the keys it wrote are kept in _ff_won.
func (t *Txn) upsertRaw(ctx context.Context, rawSt *stage) error {
	raw := t.s.ident(schemas.RawTable)
	// Per key, the run's latest row (NULL last_updated lowest, then _seq).
	if err := t.exec(ctx, "pick winners", fmt.Sprintf(`CREATE TEMP TABLE _ff_pick ON COMMIT DROP AS
		SELECT DISTINCT ON (resource_type, id) resource_type, id, _seq FROM %s
		ORDER BY resource_type, id, last_updated DESC NULLS LAST, _seq DESC`, rawSt.temp)); err != nil {
		return err
	}
	if err := t.exec(ctx, "analyze", "ANALYZE _ff_pick"); err != nil {
		return err
	}
	cols, err := tableColumns(rawSt.t, true)
	if err != nil {
		return err
	}
	names, sel, err := insertCols(rawSt.t, runStamp(t.run), "s")
	if err != nil {
		return err
	}
	sets := make([]string, 0, len(cols))
	for _, c := range cols {
		sets = append(sets, fmt.Sprintf("%s = EXCLUDED.%s", c.quoted(), c.quoted()))
	}
	// Against the stored row: an older lastUpdated never overwrites a
	// newer one, and SUBSETTED never overwrites a full resource. The keys
	// actually written are the run's winners.
	q := fmt.Sprintf(`CREATE TEMP TABLE _ff_won (resource_type text, id text, _seq bigint) ON COMMIT DROP;
		WITH up AS (
			INSERT INTO %[1]s AS r (%[2]s)
			SELECT %[3]s FROM %[4]s s JOIN _ff_pick p USING (resource_type, id, _seq)
			ON CONFLICT (namespace, resource_type, id) DO UPDATE SET %[5]s
			WHERE NOT coalesce(r.last_updated > EXCLUDED.last_updated, false)
			  AND (r.subsetted OR NOT EXCLUDED.subsetted)
			RETURNING r.resource_type, r.id)
		INSERT INTO _ff_won SELECT p.resource_type, p.id, p._seq FROM up JOIN _ff_pick p USING (resource_type, id)`,
		raw, names, sel, rawSt.temp, strings.Join(sets, ", "))
	if err := t.exec(ctx, "upsert "+schemas.RawTable, q); err != nil {
		return err
	}
	if err := t.exec(ctx, "analyze", "ANALYZE _ff_won"); err != nil {
		return err
	}
	return nil
}

// applyDeletes is step 2: deletes, unless a version newer than the export
// is stored; a deleted key is no winner (hasWinners: _ff_won exists).
func (t *Txn) applyDeletes(ctx context.Context, delSt *stage, hasWinners bool) error {
	raw := t.s.ident(schemas.RawTable)
	tt, err := time.Parse(time.RFC3339Nano, t.run.TransactionTime)
	if err != nil {
		return fmt.Errorf("deletes: run transaction_time %q is not an instant: %w", t.run.TransactionTime, err)
	}
	q := fmt.Sprintf(`CREATE TEMP TABLE _ff_del ON COMMIT DROP AS
		SELECT DISTINCT d.resource_type, d.id FROM %[1]s d
		WHERE NOT EXISTS (SELECT 1 FROM %[2]s r WHERE r.namespace = $2 AND r.resource_type = d.resource_type AND r.id = d.id
			AND r.last_updated > $1)`, delSt.temp, raw)
	ns := t.run.Namespace
	if err := t.exec(ctx, "stage deletes", q, tt, ns); err != nil {
		return err
	}
	if err := t.exec(ctx, "delete "+schemas.RawTable, fmt.Sprintf(`DELETE FROM %s r USING _ff_del d
		WHERE r.namespace = $1 AND r.resource_type = d.resource_type AND r.id = d.id`, raw), ns); err != nil {
		return err
	}
	if hasWinners {
		if err := t.exec(ctx, "delete winners", `DELETE FROM _ff_won w USING _ff_del d
			WHERE w.resource_type = d.resource_type AND w.id = d.id`); err != nil {
			return err
		}
	}
	for _, v := range t.s.tables.Views() {
		if err := t.exec(ctx, "delete "+v.Name, fmt.Sprintf(`DELETE FROM %s v USING _ff_del d
			WHERE d.resource_type = $1 AND v.namespace = $2 AND v.%s = d.id`, t.s.ident(v.Name), pgx.Identifier{schemas.ColResourceID}.Sanitize()),
			v.ResourceType, ns); err != nil {
			return err
		}
	}
	return nil
}

// replaceViewRows is step 3: a winner's view rows are replaced by the rows
// of its winning line.
func (t *Txn) replaceViewRows(ctx context.Context) error {
	rid := pgx.Identifier{schemas.ColResourceID}.Sanitize()
	for _, v := range t.s.tables.Views() {
		if err := t.exec(ctx, "replace "+v.Name, fmt.Sprintf(`DELETE FROM %s v USING _ff_won w
			WHERE w.resource_type = $1 AND v.namespace = $2 AND v.%s = w.id`, t.s.ident(v.Name), rid), v.ResourceType, t.run.Namespace); err != nil {
			return err
		}
		st := t.stages[v.Name]
		if st == nil {
			continue
		}
		names, sel, err := insertCols(v, runStamp(t.run), "s")
		if err != nil {
			return err
		}
		// Rows without a resource id are kept in the select so the target's
		// NOT NULL rejects the run instead of silently dropping them.
		q := fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM %s s
			LEFT JOIN _ff_won w ON w.resource_type = $1 AND w.id = s.%s AND w._seq = s._seq
			WHERE w.id IS NOT NULL OR s.%s IS NULL`,
			t.s.ident(v.Name), names, sel, st.temp, rid, rid)
		if err := t.exec(ctx, "insert "+v.Name, q, v.ResourceType); err != nil {
			return err
		}
	}
	return nil
}

// record writes the runs row and the checkpoint (steps 5).
func (t *Txn) record(ctx context.Context, sum sinks.RunSummary) error {
	r := t.run
	if err := t.exec(ctx, "record run", insertRun(t.s.ident(schemas.RunsTable), `finished_at = excluded.finished_at,
		outcome = excluded.outcome, files = excluded.files, bytes = excluded.bytes, resources = excluded.resources,
		deleted = excluded.deleted, rejects = excluded.rejects, outcomes = excluded.outcomes,
		membership = excluded.membership, purged = excluded.purged`), runArgs(r, sum)...); err != nil {
		return err
	}
	if t.Noop {
		return nil
	}
	if err := t.members(ctx, sum.Membership); err != nil {
		return err
	}
	return t.exec(ctx, "checkpoint", fmt.Sprintf(`INSERT INTO %s (source, transaction_time, export_id, committed_at)
		VALUES ($1,$2,$3,$4) ON CONFLICT (source) DO UPDATE
		SET transaction_time = EXCLUDED.transaction_time, export_id = EXCLUDED.export_id, committed_at = EXCLUDED.committed_at`,
		t.s.ident(schemas.CheckTable)), r.Source, r.TransactionTime, r.ExportID, time.Now())
}

// members applies a run's Group membership to group_member (see
// sinks.Membership): close the stays of patients no longer listed, open
// one for each listed patient without an open stay.
func (t *Txn) members(ctx context.Context, m *sinks.Membership) error {
	if m == nil {
		return nil
	}
	G, r := t.s.ident(schemas.GroupMemberTable), t.run
	if err := t.exec(ctx, "members left", fmt.Sprintf(`UPDATE %s SET left_at = $4, left_run = $5
		WHERE namespace = $1 AND source = $2 AND group_id = $3 AND left_at IS NULL
		AND patient_id NOT IN (SELECT unnest($6::text[]))`, G),
		r.Namespace, r.Source, m.Group, m.At, r.RunID, m.Patients); err != nil {
		return err
	}
	return t.exec(ctx, "members joined", fmt.Sprintf(`INSERT INTO %[1]s
		(namespace, source, group_id, patient_id, joined_at, joined_run)
		SELECT $1, $2, $3, p, $4, $5 FROM unnest($6::text[]) p
		WHERE NOT EXISTS (SELECT FROM %[1]s g WHERE g.namespace = $1 AND g.source = $2
			AND g.group_id = $3 AND g.patient_id = p AND g.left_at IS NULL)`, G),
		r.Namespace, r.Source, m.Group, m.At, r.RunID, m.Patients)
}

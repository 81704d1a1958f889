package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

// Txn stages one run on a connection of its own and applies it in Commit.
type Txn struct {
	s    *Sink
	run  sinks.RunInfo
	tt   time.Time // run.TransactionTime parsed; zero when empty
	conn *sql.Conn
	dir  string // spool folder of the run (Parquet staging)

	// ctx bounds the DuckDB transaction tx, opened by the first raw batch
	// or by Commit; cancel ends it when the Txn ends.
	ctx    context.Context
	cancel context.CancelFunc
	tx     *sql.Tx
	raw    *rawStream
	// threads is DuckDB's thread count to restore when the raw stream
	// ends; 0 when it was not changed.
	threads int64
	// commitMemory: Commit raised DuckDB's memory_limit (cleanup restores it).
	commitMemory bool

	stages map[string]*stage
	order  []*stage
	done   bool
	// empty names the view tables that held no rows when the raw stream
	// began: their staged files may be loaded during the transform (see
	// streamViews).
	empty map[string]bool

	// failBefore, when set by tests, fails Commit before the named step.
	failBefore string
}

// Begin implements sinks.Sink. It waits while another writer holds the sink.
func (s *Sink) Begin(ctx context.Context, run sinks.RunInfo) (sinks.Txn, error) {
	var tt time.Time
	if run.TransactionTime != "" {
		var err error
		if tt, err = time.Parse(time.RFC3339Nano, run.TransactionTime); err != nil {
			return nil, fmt.Errorf("duckdb sink %s: run %s: transaction_time %q is not an instant: %w",
				s.name, run.RunID, run.TransactionTime, err)
		}
	}
	t, err := s.newTxn(ctx, run.RunID)
	if err != nil {
		return nil, err
	}
	t.run, t.tt = run, tt
	// The transaction outlives the caller's per-phase contexts (the
	// runner's transform group ends before Commit); Rollback ends it.
	t.ctx, t.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return t, nil
}

// newTxn takes the writer token and a connection of its own.
func (s *Sink) newTxn(ctx context.Context, id string) (*Txn, error) {
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	t := &Txn{s: s, stages: map[string]*stage{}}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		s.release()
		return nil, fmt.Errorf("duckdb sink %s: begin: %w", s.name, err)
	}
	t.conn = conn
	t.dir = filepath.Join(s.spool, sanitize(id))
	if err := os.MkdirAll(t.dir, 0o750); err != nil {
		return nil, errors.Join(fmt.Errorf("duckdb sink %s: begin: %w", s.name, err), t.cleanup())
	}
	return t, nil
}

// Write implements sinks.Txn: it stages b and releases it.
func (t *Txn) Write(ctx context.Context, b schemas.Batch) error {
	defer b.Release()
	if t.done {
		return sinks.ErrTxnDone
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.Table == nil || b.Rec == nil {
		return fmt.Errorf("duckdb sink %s: batch without table or rows", t.s.name)
	}
	if b.Table.Kind == schemas.KindRaw {
		if err := t.writeRaw(ctx, b.Rec); err != nil {
			return fmt.Errorf("duckdb sink %s: %w", t.s.name, err)
		}
		return nil
	}
	st, err := t.stage(b.Table)
	if err != nil {
		return err
	}
	if st.loader == nil && t.raw != nil && t.empty[b.Table.Name] {
		t.streamViews(st)
	}
	if err := st.write(b.Rec); err != nil {
		return fmt.Errorf("duckdb sink %s: %w", t.s.name, err)
	}
	if held, big := t.held(); held > t.s.stg.budget {
		if err := big.flush(); err != nil {
			return fmt.Errorf("duckdb sink %s: %w", t.s.name, err)
		}
	}
	return nil
}

// held returns the bytes the open stages hold for their next row groups,
// and the stage holding the most: flushing it frees the most memory and
// keeps row groups large. (Flushing the table just written made row
// groups of a few rows for small tables.)
func (t *Txn) held() (total int64, big *stage) {
	for _, st := range t.order {
		if st.file == nil {
			continue
		}
		total += st.file.held.Bytes
		if big == nil || st.file.held.Bytes > big.file.held.Bytes {
			big = st
		}
	}
	return total, big
}

// defaultStageBudget bounds the Arrow bytes all of a Txn's staged tables
// hold for their next row groups together, when the sink is given no
// staging_bytes. Each table writes a row group at rowGroupBytes, but with
// dozens of view tables that was 100 MiB of Go heap, and under a 128MiB Go
// memory limit the garbage collector ran without pause: over the budget,
// the table holding the most writes its row group early.
const defaultStageBudget = 8 << 20

// writeRaw streams raw landing rows into the raw table (see rawStream).
func (t *Txn) writeRaw(ctx context.Context, rec arrow.RecordBatch) error {
	if err := checkSchema(schemas.Raw, rec.Schema()); err != nil {
		return err
	}
	if rec.NumRows() == 0 {
		return nil
	}
	if t.raw == nil {
		tx, err := t.begin()
		if err != nil {
			return err
		}
		if err := t.streamThreads(tx); err != nil {
			return err
		}
		if t.empty, err = emptyTables(t.ctx, tx, append(t.s.tables.Views(), schemas.Raw)); err != nil {
			return err
		}
		log := func(msg string, args ...any) {
			t.s.log.Debug(msg, append([]any{"run", t.run.RunID}, args...)...)
		}
		t.raw = newRawStream(t.ctx, tx, &t.s.stg, t.dir, t.run, log)
	}
	return t.raw.write(ctx, rec)
}

// streamViews lets st's files be loaded into its view table while the
// transform runs, by the raw stream's loader when it is idle, instead of
// all at Commit: with dozens of views, the view INSERTs were most of
// Commit, after the transform, on one thread while the other core idled.
// Only a table that was empty when the run began qualifies: its rows are
// then all the run's own, so Commit needs no stored-row DELETE there (it
// could not tell stored rows from streamed ones), and where a streamed
// resource lost (an older duplicate, a stored newer version, a deletion)
// Commit's fix-up replaces that resource's rows (see steps). A first load
// or backfill, the runs with the most rows, fills empty tables.
func (t *Txn) streamViews(st *stage) {
	st.loader = t.raw
	st.insert = func(path string) string { return insertFrom(st.t, readParquet([]string{path}), runStamp(t.run)) }
}

// insertFrom is the INSERT into table t of its staged rows from the
// relation from (aliased s), stamped with st.
func insertFrom(t *schemas.Table, from string, st stamp) string {
	cols, sel := selectList(t, st)
	return `INSERT INTO ` + quote(t.Name) + ` (` + cols + `) SELECT ` + sel + ` FROM ` + from + ` s`
}

// readParquet is the relation of the staged Parquet files at paths.
func readParquet(paths []string) string {
	files := make([]string, len(paths))
	for i, p := range paths {
		files[i] = lit(p)
	}
	return `read_parquet([` + strings.Join(files, ", ") + `])`
}

// emptyTables reports which of tables hold no rows, in one query.
func emptyTables(ctx context.Context, tx *sql.Tx, tables []*schemas.Table) (map[string]bool, error) {
	if len(tables) == 0 {
		return nil, nil
	}
	parts := make([]string, len(tables))
	for i, v := range tables {
		parts[i] = `SELECT ` + lit(v.Name) + `, NOT EXISTS (SELECT 1 FROM ` + quote(v.Name) + `)`
	}
	rows, err := tx.QueryContext(ctx, strings.Join(parts, " UNION ALL "))
	if err != nil {
		return nil, fmt.Errorf("empty views: %w", err)
	}
	defer rows.Close()
	empty := map[string]bool{}
	for rows.Next() {
		var name string
		var e bool
		if err := rows.Scan(&name, &e); err != nil {
			return nil, fmt.Errorf("empty views: %w", err)
		}
		empty[name] = e
	}
	return empty, rows.Err()
}

// intoStoredRows reports whether the run writes into tables that hold
// rows already: an incremental run, whose COMMIT merges its rows into the
// tables' last row groups and records its deletes across them. That is
// where DuckDB needs commit_memory_limit; a first load into empty tables
// commits within memory_limit (and at its size would fill the larger
// pool for nothing).
func (t *Txn) intoStoredRows() bool {
	if t.empty == nil {
		return true // no raw rows streamed: not known, so assume so
	}
	for _, e := range t.empty {
		if !e {
			return true
		}
	}
	return false
}

// streamThreads gives DuckDB the sink's stream_threads while raw rows
// stream in. The transform keeps the cores busy meanwhile, and DuckDB's
// parallel INSERT writes each row group twice (once optimistically, again
// at the checkpoint): on the 500 MB benchmark on 2 cores, one DuckDB
// thread loaded the raw landing 20% faster than two. Commit's set-based
// statements get the configured threads back, unless the sink has a
// memory_limit: each thread of an INSERT keeps its own in-memory row
// groups per table, and with dozens of view tables in one transaction
// that ran out of memory (64MB, 100 MB of input, 46 views). The setting
// is global; restoreThreads puts the previous value back.
func (t *Txn) streamThreads(tx *sql.Tx) error {
	var cur int64
	if err := tx.QueryRowContext(t.ctx, "SELECT current_setting('threads')").Scan(&cur); err != nil {
		return fmt.Errorf("threads: %w", err)
	}
	if cur == int64(t.s.streamThreads) {
		return nil
	}
	if _, err := tx.ExecContext(t.ctx, fmt.Sprintf("SET threads = %d", t.s.streamThreads)); err != nil {
		return fmt.Errorf("threads: %w", err)
	}
	t.threads = cur
	return nil
}

// restoreThreads undoes streamThreads.
func (t *Txn) restoreThreads(ctx context.Context) error {
	if t.threads == 0 {
		return nil
	}
	n := t.threads
	t.threads = 0
	if _, err := t.s.db.ExecContext(ctx, fmt.Sprintf("SET threads = %d", n)); err != nil {
		return fmt.Errorf("restore threads: %w", err)
	}
	return nil
}

// begin opens the run's DuckDB transaction once.
func (t *Txn) begin() (*sql.Tx, error) {
	if t.tx == nil {
		// Only Commit and cleanup end the transaction. Given t.ctx,
		// database/sql would also roll it back when cleanup cancels t.ctx,
		// and close t.conn from its own goroutine while cleanup retires the
		// same connection (a race that crashed sql.Conn.Raw). The statements
		// still carry t.ctx, so the cancel interrupts them.
		tx, err := t.conn.BeginTx(context.WithoutCancel(t.ctx), nil)
		if err != nil {
			return nil, fmt.Errorf("begin: %w", err)
		}
		t.tx = tx
	}
	return t.tx, nil
}

func (t *Txn) stage(tbl *schemas.Table) (*stage, error) {
	if st := t.stages[tbl.Name]; st != nil {
		return st, nil
	}
	if tbl.Kind != schemas.KindDeleted && t.s.tables.Get(tbl.Name) == nil {
		return nil, fmt.Errorf("duckdb sink %s: table %s was not prepared", t.s.name, tbl.Name)
	}
	st, err := newStage(&t.s.stg, t.dir, tbl, len(t.order))
	if err != nil {
		return nil, fmt.Errorf("duckdb sink %s: %w", t.s.name, err)
	}
	t.stages[tbl.Name] = st
	t.order = append(t.order, st)
	return st, nil
}

// Rollback implements sinks.Txn.
func (t *Txn) Rollback(context.Context) error {
	if t.done {
		return nil
	}
	t.done = true
	return t.cleanup()
}

// cleanup ends the Txn: it discards staging, retires the connection (so
// its TEMP tables go with it), removes the run's spool folder and frees the
// sink for the next writer.
func (t *Txn) cleanup() error {
	var errs []error
	if t.cancel != nil {
		t.cancel()
	}
	if t.raw != nil {
		errs = append(errs, t.raw.abort(), t.restoreThreads(context.Background()))
	}
	errs = append(errs, t.s.commitMemoryOff(t.commitMemory))
	t.commitMemory = false
	for _, st := range t.order {
		errs = append(errs, st.discard())
	}
	if t.tx != nil {
		errs = append(errs, ignoreDone(t.tx.Rollback()))
	}
	if t.conn != nil {
		// ErrBadConn makes database/sql close the connection instead of
		// pooling it, which drops the TEMP staging objects with it.
		_ = t.conn.Raw(func(any) error { return driver.ErrBadConn })
		if err := t.conn.Close(); !errors.Is(err, sql.ErrConnDone) {
			errs = append(errs, err)
		}
		t.conn = nil
	}
	if t.dir != "" {
		errs = append(errs, os.RemoveAll(t.dir))
	}
	t.s.release()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("duckdb sink %s: cleanup: %w", t.s.name, err)
	}
	return nil
}

// prepareCommit ends the raw stream, sets DuckDB's threads and memory for
// the commit's statements and returns the run's transaction.
func (t *Txn) prepareCommit(ctx context.Context) (*sql.Tx, error) {
	if t.raw != nil {
		t0 := time.Now()
		if err := t.raw.finish(ctx); err != nil {
			return nil, err
		}
		t.s.log.Debug("commit step", "run", t.run.RunID, "step", "raw parts", "duration", time.Since(t0))
		if !t.s.memoryLimited() {
			if err := t.restoreThreads(ctx); err != nil {
				return nil, err
			}
		}
	}
	tx, err := t.begin()
	if err != nil {
		return nil, err
	}
	if t.intoStoredRows() {
		if t.commitMemory, err = t.s.commitMemoryOn(ctx); err != nil {
			return nil, err
		}
	}
	return tx, nil
}

// Commit implements sinks.Txn; see the package doc for the steps.
func (t *Txn) Commit(ctx context.Context, sum sinks.RunSummary) (err error) {
	if t.done {
		return sinks.ErrTxnDone
	}
	t.done = true
	defer func() {
		if cerr := t.cleanup(); cerr != nil && err == nil {
			t.s.log.Warn("cleanup after commit", "run", t.run.RunID, "err", cerr)
		}
		if err != nil {
			err = fmt.Errorf("duckdb sink %s: commit run %s: %w", t.s.name, t.run.RunID, err)
		}
	}()
	tx, err := t.prepareCommit(ctx)
	if err != nil {
		return err
	}
	for _, st := range t.order {
		if err := st.finish(ctx, tx); err != nil {
			return err
		}
	}
	del, err := t.rel(ctx, tx, schemas.Deleted)
	if err != nil {
		return err
	}
	var ap applied
	for _, step := range t.steps(del, sum) {
		if t.failBefore == step.name {
			return fmt.Errorf("injected failure before %s", step.name)
		}
		if step.skip != nil && step.skip(&ap) {
			continue
		}
		t0 := time.Now()
		q, args := step.sql, step.args
		if ap.allWon && step.ifAllWon != nil {
			q, args = step.ifAllWon.sql, step.ifAllWon.args
		}
		var res sql.Result
		var err error
		switch {
		case step.exec != nil:
			err = step.exec(ctx, tx)
		case q != "":
			res, err = tx.ExecContext(ctx, q, args...)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", step.name, withMemory(ctx, t.s.db, err))
		}
		if step.affected != nil && res != nil {
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("%s: %w", step.name, err)
			}
			step.affected(n, &ap)
		}
		t.s.log.Debug("commit step", "run", t.run.RunID, "step", step.name, "duration", time.Since(t0))
		if step.then != nil {
			if err := step.then(ctx, tx, &ap); err != nil {
				return fmt.Errorf("%s: %w", step.name, err)
			}
		}
	}
	t0 := time.Now()
	if err = tx.Commit(); err != nil {
		return withMemory(ctx, t.s.db, err)
	}
	t.s.log.Debug("commit step", "run", t.run.RunID, "step", "commit", "duration", time.Since(t0))
	t.s.dirty.Store(true)
	// The run is committed whatever the copy does: a failed publish is
	// retried at the next commit or Flush.
	if perr := t.s.publish(context.WithoutCancel(ctx)); perr != nil {
		t.s.log.Warn("the committed run is not published for readers yet", "run", t.run.RunID, "err", perr)
	}
	return nil
}

// applied is what Commit's steps have found so far.
type applied struct {
	allWon   bool  // every raw row of the run won, and none was deleted
	replaces bool  // some winner replaces a stored row
	removed  int64 // stored resources replaced or deleted (rows)
	// rewrite names the views whose removed rows go by a rewrite of the
	// table rather than a DELETE (see planDeletes).
	rewrite map[string]bool
}

// measureWinners fills ap from the winners table: whether it holds every
// raw row of the run (so no row of the run, and no view row, needs
// filtering out) and whether any winner replaces a stored row.
func (t *Txn) measureWinners(ctx context.Context, tx *sql.Tx, ap *applied) error {
	var rows int64
	if t.raw != nil {
		rows = t.raw.rows
	}
	var n, stored int64
	if err := tx.QueryRowContext(ctx, "SELECT count(*), count(*) FILTER (stored) FROM win").Scan(&n, &stored); err != nil {
		return err
	}
	ap.allWon, ap.replaces = n == rows, stored > 0
	return nil
}

func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}

// rel returns the staging relation of a system table, creating an empty
// one when the run staged no rows for it.
func (t *Txn) rel(ctx context.Context, tx *sql.Tx, tbl *schemas.Table) (string, error) {
	if st := t.stages[tbl.Name]; st != nil {
		return st.rel, nil
	}
	name := fmt.Sprintf("stg_empty_%d", len(t.order))
	defs, err := columnDefs(tbl.Schema.Fields(), true)
	if err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, "CREATE TEMP TABLE "+name+" ("+defs+")"); err != nil {
		return "", err
	}
	t.order = append(t.order, &stage{t: tbl, rel: "temp.main." + name})
	return "temp.main." + name, nil
}

type step struct {
	name string
	sql  string
	args []any
	// skip, when set, tells from what earlier steps found whether the step
	// has nothing to do: runs without duplicates, stale versions or
	// stored resources (a first load) skip the joins that only filter.
	skip func(*applied) bool
	// ifAllWon replaces the step when every raw row of the run won.
	ifAllWon *step
	// affected, when set, is told how many rows the step changed.
	affected func(n int64, ap *applied)
	// then runs after the step, to measure what it did.
	then func(context.Context, *sql.Tx, *applied) error
	// exec, when set, is the step instead of sql: work that takes several
	// statements planned from what earlier steps found.
	exec func(context.Context, *sql.Tx) error
}

// countRemoved counts the stored resources a step replaced or deleted.
func countRemoved(n int64, ap *applied) { ap.removed += n }

// fixup returns the steps that correct a view whose files were loaded
// during the transform (see streamViews). The table held none but the
// run's rows then, some of which may belong to a version that did not win
// or to a resource the run deleted: the resources of such rows lose all
// their streamed rows, and get back those of their winning version. The
// rest of the stage is inserted by the usual step after these. A run whose
// every row won and that deleted nothing (a first load) skips them.
func (t *Txn) fixup(st *stage) []step {
	v := st.t
	V, id, seq := quote(v.Name), quote(schemas.ColResourceID), quote(schemas.ColSeq)
	src := readParquet(st.streamed)
	fix := fmt.Sprintf("fix_%d", st.idx)
	skip := func(ap *applied) bool { return ap.allWon }
	return []step{
		{name: "view " + v.Name + " losers", skip: skip, args: []any{v.ResourceType},
			sql: `CREATE TEMP TABLE ` + fix + ` AS SELECT DISTINCT s.` + id + ` AS id FROM ` + src + ` s
				ANTI JOIN (SELECT _seq FROM win WHERE resource_type = ?) w ON s.` + seq + ` = w._seq`},
		{name: "view " + v.Name + " losers delete", skip: skip,
			sql: `DELETE FROM ` + V + ` v USING ` + fix + ` f WHERE v.namespace = ` + lit(t.run.Namespace) + ` AND v.` + id + ` = f.id`},
		{name: "view " + v.Name + " losers winners", skip: skip, args: []any{v.ResourceType},
			sql: insertFrom(v, src, runStamp(t.run)) + `
				SEMI JOIN (SELECT _seq FROM win WHERE resource_type = ?) w ON s.` + seq + ` = w._seq
				WHERE s.` + id + ` IN (SELECT id FROM ` + fix + `)`},
	}
}

// steps returns Commit's statements. Each is set-based: the run's winners
// come from one window query over the run's rows in the raw table, and
// every change is a join against them.
func (t *Txn) steps(del string, sum sinks.RunSummary) []step {
	R := quote(schemas.RawTable)
	// The namespace is a literal, not a parameter: DuckDB binds a DELETE's
	// parameters in plan order, not in the order they are written.
	run, ns := t.run.RunID, lit(t.run.Namespace)
	// The deleted-entry guard: a stored row updated after the run's
	// transactionTime is newer than the deletion. With no transactionTime,
	// nothing is newer.
	guard := "FALSE"
	var guardArgs []any
	if !t.tt.IsZero() {
		guard = "t.last_updated > ?"
		guardArgs = []any{t.tt.UTC()}
	}

	steps := []step{
		{name: "winners", sql: `CREATE TEMP TABLE win AS
			SELECT c.resource_type, c.id, c._seq, t.id IS NOT NULL AS stored FROM (
				SELECT resource_type, id, _seq, last_updated, subsetted FROM ` + R + ` WHERE run_id = ?
				QUALIFY row_number() OVER (PARTITION BY resource_type, id
					ORDER BY last_updated DESC NULLS LAST, _seq DESC) = 1
			) c LEFT JOIN (SELECT resource_type, id, last_updated, subsetted FROM ` + R + `
				WHERE run_id IS DISTINCT FROM ? AND namespace = ` + ns + `) t ON t.resource_type = c.resource_type AND t.id = c.id
			WHERE t.id IS NULL OR (NOT coalesce(t.last_updated > c.last_updated, FALSE)
				AND NOT (c.subsetted AND NOT t.subsetted))`, args: []any{run, run},
			then: t.measureWinners},
		{name: "raw delete", sql: `DELETE FROM ` + R + ` t USING win w
			WHERE t.namespace = ` + ns + ` AND t.resource_type = w.resource_type AND t.id = w.id AND t.run_id IS DISTINCT FROM ?`,
			args:     []any{run},
			affected: countRemoved, skip: func(ap *applied) bool { return !ap.replaces }},
		{name: "raw losers", sql: `DELETE FROM ` + R + ` WHERE run_id = ? AND _seq NOT IN (SELECT _seq FROM win)`,
			args: []any{run}, skip: func(ap *applied) bool { return ap.allWon }},
		{name: "deleted keys", sql: `CREATE TEMP TABLE gone AS
			SELECT DISTINCT d.resource_type, d.id FROM ` + del + ` d
			ANTI JOIN (SELECT resource_type, id FROM ` + R + ` t WHERE t.namespace = ` + ns + ` AND ` + guard + `) n
				ON n.resource_type = d.resource_type AND n.id = d.id`, args: guardArgs},
		{name: "raw deletes", sql: `DELETE FROM ` + R + ` t USING gone g
			WHERE t.namespace = ` + ns + ` AND t.resource_type = g.resource_type AND t.id = g.id`, affected: countRemoved},
		{name: "deleted winners", sql: `DELETE FROM win USING gone g
			WHERE win.resource_type = g.resource_type AND win.id = g.id`,
			// A resource the run both sent and deleted is no winner: its
			// staged view rows must be filtered out too.
			affected: func(n int64, ap *applied) { ap.allWon = ap.allWon && n == 0 }},
		{name: "delete plan", then: t.planDeletes, skip: func(ap *applied) bool { return ap.removed == 0 }},
	}
	for _, v := range t.s.tables.Views() {
		st := t.stages[v.Name]
		if st != nil && len(st.streamed) > 0 {
			steps = append(steps, t.fixup(st)...)
		} else {
			steps = append(steps, step{name: "view " + v.Name + " delete", sql: `DELETE FROM ` + quote(v.Name) + ` v USING (
				SELECT id FROM win WHERE resource_type = ? UNION ALL SELECT id FROM gone WHERE resource_type = ?) k
			WHERE v.namespace = ` + ns + ` AND v.` + quote(schemas.ColResourceID) + ` = k.id`, args: []any{v.ResourceType, v.ResourceType},
				// View rows exist only for stored resources.
				skip: func(ap *applied) bool { return ap.removed == 0 || ap.rewrite[v.Name] }},
				step{name: "view " + v.Name + " rewrite", exec: func(ctx context.Context, tx *sql.Tx) error { return t.rewriteView(ctx, tx, v) },
					skip: func(ap *applied) bool { return !ap.rewrite[v.Name] }})
		}
		if st != nil {
			insert := insertFrom(v, st.rel, runStamp(t.run))
			steps = append(steps, step{name: "view " + v.Name + " insert",
				sql: insert + ` SEMI JOIN (SELECT _seq FROM win WHERE resource_type = ?) w
					ON s.` + quote(schemas.ColSeq) + ` = w._seq`,
				args:     []any{v.ResourceType},
				ifAllWon: &step{sql: insert}})
		}
	}
	for _, st := range t.order {
		if st.t.Kind == schemas.KindAppend {
			steps = append(steps, step{name: "append " + st.t.Name, sql: insertFrom(st.t, st.rel, runStamp(t.run))})
		}
	}
	steps = append(steps, t.membership(sum.Membership)...)
	r := t.run
	steps = append(steps,
		// A failure row of an earlier attempt of this run gives way to the success.
		step{name: "runs", sql: `DELETE FROM ` + quote(schemas.RunsTable) + ` WHERE run_id = ? AND outcome <> 'success'`, args: []any{r.RunID}},
		step{name: "runs", sql: insertRun, args: runArgs(r, sum)},
		step{name: "checkpoint", sql: `INSERT INTO ` + quote(schemas.CheckTable) + ` VALUES (?, ?, ?, ?)
			ON CONFLICT (source) DO UPDATE SET transaction_time = excluded.transaction_time,
				export_id = excluded.export_id, committed_at = excluded.committed_at`,
			args: []any{r.Source, r.TransactionTime, r.ExportID, time.Now().UTC()}},
	)
	return steps
}

// membership returns the steps that apply a run's Group membership to
// group_member (see sinks.Membership): close the stays of patients no
// longer listed, open one for each listed patient without an open stay.
func (t *Txn) membership(m *sinks.Membership) []step {
	if m == nil {
		return nil
	}
	ids, _ := json.Marshal(m.Patients) // []string cannot fail
	G := quote(schemas.GroupMemberTable)
	// Literals, not parameters, for the keys: see steps on DuckDB's
	// parameter order in a DELETE; an UPDATE with a subquery binds alike.
	key := `namespace = ` + lit(t.run.Namespace) + ` AND source = ` + lit(t.run.Source) + ` AND group_id = ` + lit(m.Group)
	at, run := lit(m.At.UTC().Format(time.RFC3339Nano)), lit(t.run.RunID)
	return []step{
		{name: "members", sql: `CREATE TEMP TABLE members AS SELECT DISTINCT unnest(from_json(?, '["VARCHAR"]')) AS patient_id`,
			args: []any{string(ids)}},
		{name: "members left", sql: `UPDATE ` + G + ` SET left_at = ` + at + `::TIMESTAMPTZ, left_run = ` + run + `
			WHERE ` + key + ` AND left_at IS NULL AND patient_id NOT IN (SELECT patient_id FROM members)`},
		{name: "members joined", sql: `INSERT INTO ` + G + ` SELECT ` + lit(t.run.Namespace) + `, ` + lit(t.run.Source) + `, ` + lit(m.Group) + `,
			m.patient_id, ` + at + `::TIMESTAMPTZ, NULL, ` + run + `, NULL FROM members m
			ANTI JOIN (SELECT patient_id FROM ` + G + ` WHERE ` + key + ` AND left_at IS NULL) g ON g.patient_id = m.patient_id`},
	}
}

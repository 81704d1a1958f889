package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/prepared"
	"github.com/fhirferry/fhirferry/sinks/internal/sqlread"
)

var _ sinks.Sink = (*Sink)(nil)

// Sink is a DuckDB warehouse file. It serves one writer (a Txn, Prepare or
// ReplaceTable) at a time; read-only queries through DB may run alongside.
type Sink struct {
	// Reads reads the tables back for views rebuild (reader).
	sqlread.Reads
	name string
	log  *slog.Logger
	path string // the file the sink writes
	// published is where the read-only copy goes ("" without snapshots);
	// dirty says the working copy has changes it lacks.
	published string
	dirty     atomic.Bool
	db        *sql.DB
	spool     string
	stg       staging
	// streamThreads is DuckDB's thread count while raw rows stream in.
	streamThreads int
	// memoryLimit and commitMemory are DuckDB's memory_limit and the one
	// it gets while a run commits or a commit is published (see
	// configs.DuckDBSink.CommitMemoryLimit); commitMemory is "" when the
	// two are the same.
	memoryLimit, commitMemory string

	// rewrites counts the views commits rewrote (planDeletes); tests set
	// rewriteAll to rewrite every view a commit removes rows from.
	rewrites   atomic.Int64
	rewriteAll bool

	// writer holds a token while a Txn, Prepare or ReplaceTable runs.
	writer chan struct{}

	tables prepared.Tables
}

// Open is the sinks.Factory of type duckdb.
func Open(_ context.Context, cfg configs.Sink, env sinks.Env) (sinks.Sink, error) {
	return New(cfg.DuckDB, env)
}

// New opens (creating if needed) the DuckDB warehouse cfg.Path (":memory:"
// for a throwaway database). With cfg.SnapshotOn the sink writes
// cfg.WriterPath and publishes a read-only copy at cfg.Path (see
// snapshot.go); a warehouse written before snapshots is adopted as the
// working copy.
func New(cfg configs.DuckDBSink, env sinks.Env) (*Sink, error) {
	name, log := env.Name, env.Log()
	if cfg.Path == "" {
		return nil, fmt.Errorf("duckdb sink %s: path is required", name)
	}
	published := cfg.Path
	if cfg.WriterPath() != cfg.Path {
		if err := adopt(cfg.Path, cfg.WriterPath()); err != nil {
			return nil, fmt.Errorf("duckdb sink %s: %w", name, err)
		}
		cfg.Path = cfg.WriterPath()
	} else {
		published = ""
	}
	// Commit needs no particular row order, and keeping it costs memory
	// on large inserts (DuckDB's own advice for bulk loads).
	q := url.Values{"preserve_insertion_order": {"false"}}
	// DuckDB's allocator keeps up to 128 MiB of freed memory cached after
	// each task by default, on top of memory_limit; flushing at 16 MiB,
	// with a background thread, keeps the process near the limit the
	// user set (see the package doc for the measurement).
	q.Set("allocator_flush_threshold", "16MB")
	q.Set("allocator_background_threads", "true")
	if cfg.Threads > 0 {
		q.Set("threads", strconv.Itoa(cfg.Threads))
	}
	if cfg.MemoryLimit != "" {
		q.Set("memory_limit", cfg.MemoryLimit)
	}
	if cfg.Path != ":memory:" {
		// Spill next to the file, as DuckDB does for a file it opens.
		q.Set("temp_directory", cfg.Path+".tmp")
	}
	// The file is attached rather than opened, for ATTACH's ROW_GROUP_SIZE;
	// every connection of the pool then makes it its default catalog.
	// STORAGE_VERSION: a new warehouse stays readable by DuckDB 1.x, the
	// CLI many analysts have (DuckDB 2.0 would write a format they cannot
	// open); a warehouse keeps the version it was created with.
	attach := "ATTACH IF NOT EXISTS " + lit(cfg.Path) + " AS " + catalog +
		" (ROW_GROUP_SIZE " + strconv.Itoa(rowGroupSize) + ", STORAGE_VERSION 'v1.0.0')"
	conn, err := duckdb.NewConnector(":memory:?"+q.Encode(), func(ex driver.ExecerContext) error {
		for _, stmt := range []string{attach, "USE " + catalog} {
			if _, err := ex.ExecContext(context.Background(), stmt, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("duckdb sink %s: open %s: %w", name, cfg.Path, err)
	}
	db := sql.OpenDB(conn)
	// Attach now, so that a locked or unreadable file fails here.
	if err := db.PingContext(context.Background()); err != nil {
		return nil, errors.Join(fmt.Errorf("duckdb sink %s: open %s: %w", name, cfg.Path, err), db.Close())
	}
	spool := cfg.Path + ".spool"
	if cfg.Path == ":memory:" {
		if spool, err = os.MkdirTemp("", "fhirferry-duckdb-spool-"); err != nil {
			return nil, errors.Join(fmt.Errorf("duckdb sink %s: %w", name, err), db.Close())
		}
	}
	// The file is locked to this process now, so whatever a crashed run
	// left in the spool folder is stale.
	if err := os.RemoveAll(spool); err != nil {
		return nil, errors.Join(fmt.Errorf("duckdb sink %s: clear spool: %w", name, err), db.Close())
	}
	s := &Sink{
		name: name, log: log, path: cfg.Path, published: published, db: db,
		spool: spool, stg: defaultStaging(env.Allocator(), env.StagingBytes), streamThreads: max(cfg.StreamThreads, 1),
		memoryLimit: cfg.MemoryLimit,
		writer:      make(chan struct{}, 1),
	}
	s.Reads = sqlread.Reads{Reader: s.reader}
	if cfg.MemoryLimit != "" && cfg.CommitMemoryLimit != "" && cfg.CommitMemoryLimit != cfg.MemoryLimit {
		s.commitMemory = cfg.CommitMemoryLimit
	}
	if published != "" {
		// A new warehouse, or a crash before a commit was published.
		pub, perr := os.Stat(published)
		wr, werr := os.Stat(s.path)
		s.dirty.Store(perr != nil || werr != nil || wr.ModTime().After(pub.ModTime()))
	}
	return s, nil
}

// catalog is the name the database file is attached under.
const catalog = "fhirferry"

// rowGroupSize is the rows per row group of every table, instead of
// DuckDB's 122,880. A run's rows wait in memory until a row group fills:
// 122,880 raw resources are about 120 MB, over a small memory_limit, so
// DuckDB spilled them, compressed, to the temp directory and read them
// back. At 16,384 (about 16 MB of FHIR JSON) loading 500 MB of raw
// resources with 1 thread and memory_limit 48MB took 1.75 s instead of
// 2.5 s, and scans of the small view rows are no slower.
const rowGroupSize = 16384

// defaultMode is the staging path that stays within memory_limit at scale;
// see the package doc.
const defaultMode = stageParquetPlain

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// memoryLimited reports whether a memory_limit is set, so that Commit
// keeps streamThreads.
func (s *Sink) memoryLimited() bool { return s.memoryLimit != "" }

// commitMemoryOn gives DuckDB the commit's memory_limit; commitMemoryOff
// puts the sink's own back. The setting is global to the database: the
// caller holds the writer slot, and the transform, whose share the commit
// borrows, is done.
func (s *Sink) commitMemoryOn(ctx context.Context) (bool, error) {
	if s.commitMemory == "" {
		return false, nil
	}
	if _, err := s.db.ExecContext(ctx, "SET memory_limit = "+lit(s.commitMemory)); err != nil {
		return false, fmt.Errorf("commit memory_limit: %w", err)
	}
	return true, nil
}

func (s *Sink) commitMemoryOff(raised bool) error {
	if !raised {
		return nil
	}
	// Not the caller's context: a cancelled run must still restore it.
	if _, err := s.db.ExecContext(context.Background(), "SET memory_limit = "+lit(s.memoryLimit)); err != nil {
		return fmt.Errorf("restore memory_limit: %w", err)
	}
	return nil
}

// DB returns the database for read-only queries (demo, summaries). Writes
// must go through a Txn, since DuckDB aborts conflicting writers.
func (s *Sink) DB() *sql.DB { return s.db }

// Close publishes what is not published yet and closes the database. No
// Txn may be open.
func (s *Sink) Close() error {
	perr := s.Flush(context.Background())
	err := errors.Join(perr, s.db.Close())
	// The spool folder is empty between runs; leave it if not.
	_ = os.Remove(s.spool)
	return err
}

func (s *Sink) acquire(ctx context.Context) error {
	select {
	case s.writer <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("duckdb sink %s: waiting for the writer: %w", s.name, context.Cause(ctx))
	}
}

func (s *Sink) release() { <-s.writer }

// Prepare implements sinks.Sink: it creates the metadata tables and
// tables, and adds the columns an existing table lacks, in one transaction.
//
// No index is created: Commit joins staged keys against whole tables,
// which DuckDB runs as hash joins whatever indexes exist, while an ART
// index on (resource_type, id) would slow every load and cost memory.
func (s *Sink) Prepare(ctx context.Context, tables []*schemas.Table) (err error) {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	all := append(schemas.System(), tables...)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("duckdb sink %s: prepare: %w", s.name, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, tx.Rollback())
		}
	}()
	for _, q := range metaDDL {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("duckdb sink %s: prepare: %w", s.name, err)
		}
	}
	seen := map[string]*schemas.Table{}
	for _, t := range all {
		if t == nil || seen[t.Name] == t {
			continue
		}
		seen[t.Name] = t
		if t.Kind == schemas.KindDeleted {
			continue
		}
		if t.Kind == schemas.KindView && t.ResourceType == "" {
			return fmt.Errorf("duckdb sink %s: view table %s has no resource type", s.name, t.Name)
		}
		if err := ensureTable(ctx, tx, t); err != nil {
			return fmt.Errorf("duckdb sink %s: prepare: %w", s.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("duckdb sink %s: prepare: %w", s.name, err)
	}
	for _, t := range seen {
		s.tables.Put(t)
	}
	s.dirty.Store(true)
	return nil
}

// Checkpoint implements sinks.Sink.
func (s *Sink) Checkpoint(ctx context.Context, source string) (sinks.Checkpoint, bool, error) {
	cp := sinks.Checkpoint{Source: source}
	cols, err := existingColumns(ctx, s.db, schemas.CheckTable)
	if err != nil || cols == nil {
		return cp, false, err // never prepared: no checkpoint
	}
	err = s.db.QueryRowContext(ctx, `SELECT transaction_time, export_id, committed_at FROM `+
		quote(schemas.CheckTable)+` WHERE source = ?`, source).Scan(&cp.TransactionTime, &cp.ExportID, &cp.CommittedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, fmt.Errorf("duckdb sink %s: checkpoint of %s: %w", s.name, source, err)
	}
	return cp, true, nil
}

package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
	"github.com/fhirferry/fhirferry/transform"
)

// childViewFloor measures the part of a views load that is DuckDB's own:
// the default views' rows of a finished `bench-child load` (its database
// in loaded) are copied out to uncompressed Parquet, untimed, then
// INSERTed into a fresh database whose tables the DuckDB sink created
// (its DDL, column compression and ROW_GROUP_SIZE), in one transaction
// with one DuckDB thread, as the sink's loader runs, and committed. As
// long as the tables stay as they are (columns, compression, row groups),
// no change to how fhirferry evaluates the views or hands their rows over
// makes DuckDB's part of a views load cheaper than this.
func childViewFloor(ctx context.Context, loaded, work string, tune benchTune) (benchResult, error) {
	r := benchResult{Name: "duckdb view inserts"}
	views, err := transform.LoadViews(true, "")
	if err != nil {
		return r, err
	}
	eng, err := transform.New(transform.Options{Views: views})
	if err != nil {
		return r, err
	}
	var tables []*schemas.Table
	for _, t := range eng.Tables() {
		if t.Kind == schemas.KindView {
			tables = append(tables, t)
		}
	}
	want, err := exportViews(ctx, loaded, work, tables)
	if err != nil {
		return r, fmt.Errorf("copy the views out of %s: %w", loaded, err)
	}
	sink, err := duckdb.New(configs.DuckDBSink{
		Path: filepath.Join(work, "floor.duckdb"), MemoryLimit: tune.MemoryLimit, Threads: 1,
	}, sinks.Env{Name: "floor"})
	if err != nil {
		return r, err
	}
	if err := sink.Prepare(ctx, tables); err != nil {
		return r, errors.Join(err, sink.Close())
	}
	cpu0, t0 := processCPU(), time.Now()
	rows, err := insertViews(ctx, sink.DB(), work, tables)
	if err = errors.Join(err, sink.Close()); err != nil { // Close checkpoints: part of the load
		return r, err
	}
	r.Seconds, r.WorkCPU = time.Since(t0).Seconds(), processCPU()-cpu0
	if rows != want {
		return r, fmt.Errorf("inserted %d view rows, the load has %d", rows, want)
	}
	r.Rows = rows
	r.Note = fmt.Sprintf("(%d view tables, 1 DuckDB thread, memory_limit %s)", len(tables), tune.MemoryLimit)
	return r, nil
}

// exportViews writes each view table of the database at loaded to
// work/<table>.parquet and returns their rows.
func exportViews(ctx context.Context, loaded, work string, tables []*schemas.Table) (int64, error) {
	db, err := sql.Open("duckdb", loaded+"?access_mode=read_only")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var rows int64
	for _, t := range tables {
		q := fmt.Sprintf("COPY %s TO %s (FORMAT parquet, COMPRESSION uncompressed)",
			sqlIdent(t.Name), sqlLit(filepath.Join(work, t.Name+".parquet")))
		n, err := execRows(ctx, db, q)
		if err != nil {
			return 0, err
		}
		rows += n
	}
	return rows, nil
}

// insertViews INSERTs every exported view file into its table in one
// transaction.
func insertViews(ctx context.Context, db *sql.DB, work string, tables []*schemas.Table) (int64, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	var rows int64
	for _, t := range tables {
		q := fmt.Sprintf("INSERT INTO %s BY NAME SELECT * FROM read_parquet(%s)",
			sqlIdent(t.Name), sqlLit(filepath.Join(work, t.Name+".parquet")))
		n, err := execRows(ctx, tx, q)
		if err != nil {
			return 0, errors.Join(fmt.Errorf("%s: %w", t.Name, err), tx.Rollback())
		}
		rows += n
	}
	return rows, tx.Commit()
}

// execRows runs q and returns the rows it affected (for COPY TO, the rows
// written).
func execRows(ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, q string) (int64, error) {
	res, err := db.ExecContext(ctx, q)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// processCPU is the user plus system CPU time of this process so far.
func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

// partBytes is the Arrow size at which the raw stream cuts a part. Smaller
// parts overlap more of the load with the transform, but each is one
// INSERT, and DuckDB's per-statement cost showed: on the 500 MB benchmark,
// 32 MiB parts (18 statements) loaded in 4.0 s of DuckDB time, 128 MiB
// parts (5) in 3.4 s.
const partBytes = 128 << 20

// minPartBytes is the size at which a part is cut early when the loader
// is idle, so that a transform slower than DuckDB (dozens of views) does
// not leave a large part for after its end.
const minPartBytes = 16 << 20

// rawStream loads a run's raw landing rows into the raw table while the
// transform still runs, inside the Txn's open DuckDB transaction: batches
// go to a Parquet part file, and each full part is inserted by a loader
// goroutine while the next one is written. The rows carry the run's id and
// their _seq, so Commit can tell them from the stored rows when it picks
// the winners. Nothing is visible to readers before Commit.
type rawStream struct {
	stg    *staging
	dir    string
	runID  string
	insert func(path string) string // the INSERT of one part, with the run id as parameter

	parts int     // parts created
	cur   *pqFile // the open part, if any
	rows  int64   // rows written to all parts

	queue  chan loadJob  // finished parts; closed by finish or abort
	closed bool          // queue is closed
	idle   atomic.Bool   // the loader waits for a part
	done   chan struct{} // closed when the loader has returned
	failed chan struct{} // closed on the loader's first error
	err    error         // the loader's first error; read after failed or done
}

// newRawStream starts the loader on tx. ctx bounds the loader's statements
// and lives as long as the Txn.
func newRawStream(ctx context.Context, tx *sql.Tx, stg *staging, dir string, run sinks.RunInfo, log func(msg string, args ...any)) *rawStream {
	cols, sel := selectList(schemas.Raw, runStamp(run))
	r := &rawStream{
		stg: stg, dir: dir, runID: run.RunID,
		insert: func(path string) string {
			return `INSERT INTO ` + quote(schemas.RawTable) + ` (` + cols + `, run_id, ` + quote(schemas.ColSeq) + `)
				SELECT ` + sel + `, ?, s.` + quote(schemas.ColSeq) + ` FROM read_parquet(` + lit(path) + `) s`
		},
		// One part waits while one loads and the next is written: a slow
		// database holds back the transform instead of filling the disk.
		queue:  make(chan loadJob, 1),
		done:   make(chan struct{}),
		failed: make(chan struct{}),
	}
	go r.load(ctx, tx, log)
	return r
}

// loadJob is one statement for the loader: the INSERT of a finished raw
// part (removed once loaded) or of a view's staged file (kept: Commit may
// read it again, see Txn.fixup).
type loadJob struct {
	what   string // for logs and errors
	path   string
	sql    string
	args   []any
	remove bool
}

func (r *rawStream) load(ctx context.Context, tx *sql.Tx, log func(string, ...any)) {
	defer close(r.done)
	// DuckDB runs a statement on the calling thread, and its allocator
	// caches memory per thread: one OS thread for all parts keeps one
	// cache instead of one per thread the Go scheduler happens to use
	// (measured: 20-50 MiB less peak RSS on the 500 MB benchmark).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		r.idle.Store(true)
		job, ok := <-r.queue
		r.idle.Store(false)
		if !ok {
			return
		}
		if r.err == nil {
			t0 := time.Now()
			if _, err := tx.ExecContext(ctx, job.sql, job.args...); err != nil {
				r.err = fmt.Errorf("load %s %s: %w", job.what, filepath.Base(job.path), err)
				close(r.failed)
			} else {
				log("part loaded", "what", job.what, "part", filepath.Base(job.path), "duration", time.Since(t0))
			}
		}
		if job.remove {
			_ = os.Remove(job.path)
		}
	}
}

// ready reports whether offer would hand a job over now (under
// stg.wait, once the loader takes it).
func (r *rawStream) ready() bool { return !r.closed && (r.stg.wait || r.idle.Load()) }

// offer hands job to the loader if it is waiting for work, and reports
// whether it did. Unlike raw parts, which wait their turn, a view's file
// is offered only to an idle loader: otherwise the writer keeps filling
// it, and what is never offered is loaded at Commit.
func (r *rawStream) offer(job loadJob) bool {
	if !r.ready() {
		return false
	}
	if r.stg.wait {
		select {
		case r.queue <- job:
			return true
		case <-r.failed:
			return false
		}
	}
	select {
	case r.queue <- job:
		return true
	default:
		return false
	}
}

// write adds rec to the open part, and hands the part to the loader once
// it is full.
func (r *rawStream) write(ctx context.Context, rec arrow.RecordBatch) error {
	select {
	case <-r.failed:
		return r.err
	default:
	}
	if r.cur == nil {
		f, err := createParquet(filepath.Join(r.dir, fmt.Sprintf("raw_%04d.parquet", r.parts)), schemas.Raw, r.stg)
		if err != nil {
			return fmt.Errorf("raw part: %w", err)
		}
		r.parts++
		r.cur = f
	}
	if err := r.cur.write(rec); err != nil {
		return fmt.Errorf("raw part %s: %w", filepath.Base(r.cur.path), err)
	}
	r.rows += rec.NumRows()
	if n := r.cur.bytes; n >= partBytes || n >= minPartBytes && r.idle.Load() {
		return r.flush(ctx)
	}
	return nil
}

// flush closes the open part and queues it for the loader.
func (r *rawStream) flush(ctx context.Context) error {
	f := r.cur
	if f == nil {
		return nil
	}
	r.cur = nil
	if err := f.close(); err != nil {
		return fmt.Errorf("raw part %s: %w", filepath.Base(f.path), err)
	}
	select {
	case r.queue <- loadJob{what: "raw part", path: f.path, sql: r.insert(f.path), args: []any{r.runID}, remove: true}:
		return nil
	case <-r.failed:
		return r.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// finish loads the last part and waits for the loader. It may be called
// again, to the same result.
func (r *rawStream) finish(ctx context.Context) error {
	var err error
	if !r.closed {
		err = r.flush(ctx)
		r.closed = true
		close(r.queue)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if err != nil {
		return err
	}
	return r.err
}

// abort stops the stream without loading what is left; the caller has
// cancelled the loader's context, so a statement in flight ends early.
func (r *rawStream) abort() error {
	var err error
	if r.cur != nil {
		err = r.cur.abort()
		r.cur = nil
	}
	if !r.closed {
		r.closed = true
		close(r.queue)
	}
	<-r.done
	return err
}

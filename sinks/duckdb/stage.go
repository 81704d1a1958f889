package duckdb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks/internal/rowgroup"
)

// stageMode selects how staged Parquet files are compressed.
type stageMode int

const (
	// stageParquetPlain writes uncompressed Parquet: the files live for one
	// run in the page cache, and Snappy cost more CPU on both sides (Go
	// writing, DuckDB reading) than the smaller files saved.
	stageParquetPlain stageMode = iota
	// stageParquetSnappy trades that CPU for a spool about 4x smaller.
	stageParquetSnappy
)

func (m stageMode) String() string {
	switch m {
	case stageParquetPlain:
		return "parquet-plain"
	case stageParquetSnappy:
		return "parquet-snappy"
	}
	return "unknown"
}

// Parquet row groups are cut at this many rows (DuckDB's own row group
// size) or Arrow (uncompressed) bytes. The byte cut bounds both the
// batches a file holds for its next row group and what each DuckDB thread
// decompresses at Commit: zstd shrinks FHIR JSON about tenfold, so a cut
// on compressed bytes made row groups too large to read under a small
// memory_limit. 2 MiB rather than 16: every staged table (one per view)
// holds its next row group in Go memory, and DuckDB reads a column chunk
// in one allocation, outside its buffer pool's accounting.
const (
	rowGroupRows  = 122880
	rowGroupBytes = 2 << 20
)

// stage is one table's staged rows within a Txn. rel is the relation Commit
// reads them from: a TEMP view over the Parquet files (or an empty TEMP
// table, see Txn.rel).
type stage struct {
	t    *schemas.Table
	idx  int
	rel  string
	rows int64
	stg  *staging
	base string  // path of the first file, without ".parquet"
	file *pqFile // the open file; nil once finished
	// A writer keeps each row group's metadata until it closes, so after
	// stg.fileRowGroups the stage continues in a new file; done holds
	// the finished ones.
	done  []string
	files int // files created
	// loader, when set, takes a file of at least stg.partBytes while it
	// is idle and INSERTs it into the table during the transform (see
	// Txn.streamViews); streamed holds the files it took, which Commit's
	// fix-up may read again.
	loader   *rawStream
	insert   func(path string) string
	streamed []string
}

// staging is how a Sink writes and streams its staged Parquet files. It is
// fixed when the Sink is built; this package's tests change a Sink's copy
// before its first run.
type staging struct {
	mode stageMode
	// alloc supplies the Parquet writers' page buffers (the process's
	// shared pool: see mempool.PoolAllocator).
	alloc memory.Allocator
	// partBytes is the Arrow size from which a view's staged file is
	// offered to an idle loader. Tests set it to 1 and wait, so that every
	// file of a view is streamed, whether the loader is idle or not.
	partBytes int64
	wait      bool
	// fileRowGroups bounds the row groups of one staged file (a writer
	// keeps each row group's metadata until it closes).
	fileRowGroups int
	// streamed counts the files streamed, for tests.
	streamed *atomic.Int64
	// budget bounds the bytes a Txn's stages hold together (see
	// defaultStageBudget).
	budget int64
}

func defaultStaging(alloc memory.Allocator, budget int64) staging {
	if budget <= 0 {
		budget = defaultStageBudget
	}
	return staging{mode: defaultMode, alloc: alloc, partBytes: 8 << 20, fileRowGroups: 256, streamed: new(atomic.Int64), budget: budget}
}

// pqFile is one staging Parquet file being written (a raw part or a staged
// table's file). It holds the batches of its next row group and writes
// them in one call (see rowgroup.Batches) when they reach rowGroupBytes or
// rowGroupRows, or when flushed: buffering in the Parquet writer instead
// grew the Go heap with the input, from 60 to 100 MB over 500 MB with the
// default views.
type pqFile struct {
	path string
	pw   *pqarrow.FileWriter
	// schema is the table's schema with JSON columns (jsonCols) typed
	// arrow.json, so the Parquet file marks them JSON and DuckDB reads
	// them as JSON without a cast.
	schema   *arrow.Schema
	jsonCols []int

	held   rowgroup.Batches
	bytes  int64 // Arrow bytes of every batch written to the file
	groups int   // row groups written
}

// jsonType is the Arrow extension type Parquet writes as logical type JSON.
var jsonType = func() arrow.DataType {
	t, err := extensions.NewJSONType(arrow.BinaryTypes.String)
	if err != nil {
		panic(err)
	}
	return t
}()

// parquetSchema returns t's schema with JSON columns typed arrow.json, and
// the positions of those columns.
func parquetSchema(t *schemas.Table) (*arrow.Schema, []int) {
	fields := t.Schema.Fields()
	var cols []int
	for i, f := range fields {
		if schemas.IsJSON(f) && arrow.TypeEqual(f.Type, arrow.BinaryTypes.String) {
			fields[i].Type = jsonType
			cols = append(cols, i)
		}
	}
	if cols == nil {
		return t.Schema, nil
	}
	md := t.Schema.Metadata()
	return arrow.NewSchema(fields, &md), cols
}

// asParquet returns rec with its JSON columns wrapped as arrow.json (no
// copy: the extension arrays share rec's buffers).
func asParquet(schema *arrow.Schema, jsonCols []int, rec arrow.RecordBatch) arrow.RecordBatch {
	cols := rec.Columns()
	out := make([]arrow.Array, len(cols))
	copy(out, cols)
	for _, i := range jsonCols {
		out[i] = array.NewExtensionArrayWithStorage(jsonType.(arrow.ExtensionType), cols[i])
	}
	rb := array.NewRecordBatch(schema, out, rec.NumRows())
	for _, i := range jsonCols {
		out[i].Release()
	}
	return rb
}

// newStage creates the staging file of t in dir; Commit reads it through
// the TEMP view rel.
func newStage(stg *staging, dir string, t *schemas.Table, idx int) (*stage, error) {
	base := filepath.Join(dir, fmt.Sprintf("%03d_%s", idx, sanitize(t.Name)))
	f, err := createParquet(base+".parquet", t, stg)
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", t.Name, err)
	}
	return &stage{t: t, idx: idx, rel: fmt.Sprintf("temp.main.stg_%d", idx), file: f, stg: stg, base: base, files: 1}, nil
}

// createParquet creates a staging file for rows of t.
func createParquet(path string, t *schemas.Table, stg *staging) (*pqFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	codec := compress.Codecs.Uncompressed
	if stg.mode == stageParquetSnappy {
		codec = compress.Codecs.Snappy
	}
	// No statistics: the file is read once, whole, and min/max of every
	// JSON text cost CPU for nothing. Without them the writer keeps no
	// slice of a batch after writing it, which the shared pool requires
	// of its page buffers and of the batches themselves.
	props := parquet.NewWriterProperties(parquet.WithCompression(codec),
		parquet.WithDictionaryDefault(false), parquet.WithStats(false), parquet.WithAllocator(stg.alloc),
		parquet.WithMaxRowGroupLength(rowGroupRows))
	schema, jsonCols := parquetSchema(t)
	// The writer closes its sink when it is closed.
	sink := &bufferedFile{Writer: bufio.NewWriterSize(f, 256<<10), f: f}
	pw, err := pqarrow.NewFileWriter(schema, sink, props, pqarrow.NewArrowWriterProperties())
	if err != nil {
		f.Close()
		return nil, err
	}
	return &pqFile{path: path, pw: pw, schema: schema, jsonCols: jsonCols}, nil
}

// write holds rec (which the caller still releases) for the next row
// group, and writes the group once it is full.
func (f *pqFile) write(rec arrow.RecordBatch) error {
	f.bytes += f.held.Add(rec)
	if f.held.Bytes < rowGroupBytes && f.held.Rows < rowGroupRows {
		return nil
	}
	return f.flush()
}

// flush writes the held batches as one row group.
func (f *pqFile) flush() error {
	if f.held.Rows == 0 {
		return nil
	}
	f.groups++
	var conv func(arrow.RecordBatch) arrow.RecordBatch
	if f.jsonCols != nil {
		conv = func(rec arrow.RecordBatch) arrow.RecordBatch { return asParquet(f.schema, f.jsonCols, rec) }
	}
	return f.held.WriteTo(f.pw, f.schema, conv)
}

// close writes what the file holds and finishes it.
func (f *pqFile) close() error {
	err := f.flush()
	return errors.Join(err, f.pw.Close())
}

// abort finishes the file without what it holds; its content no longer
// matters.
func (f *pqFile) abort() error {
	f.held.Release()
	return f.pw.Close()
}

// bufferedFile batches the Parquet writer's many small writes (page
// headers, one column chunk per column per row group) into few syscalls:
// 6,417 write calls for the 100 MB benchmark with the default views before,
// 712 after. A syscall is dear in this project's VMs.
type bufferedFile struct {
	*bufio.Writer
	f *os.File
}

func (b *bufferedFile) Close() error {
	return errors.Join(b.Flush(), b.f.Close())
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			b[i] = '_'
		}
	}
	return string(b)
}

// write stages rec, whose schema must have the table's column names.
func (st *stage) write(rec arrow.RecordBatch) error {
	if err := checkSchema(st.t, rec.Schema()); err != nil {
		return err
	}
	if rec.NumRows() == 0 {
		return nil
	}
	if st.file == nil {
		return fmt.Errorf("stage %s: already finished", st.t.Name)
	}
	st.rows += rec.NumRows()
	if err := st.file.write(rec); err != nil {
		return fmt.Errorf("stage %s: %w", st.t.Name, err)
	}
	return st.rotate()
}

// flush writes the held rows as a row group now, to free their memory.
func (st *stage) flush() error {
	if err := st.file.flush(); err != nil {
		return fmt.Errorf("stage %s: %w", st.t.Name, err)
	}
	return st.rotate()
}

// rotate continues in a new file once the open one has
// stg.fileRowGroups row groups, or once the loader can take it.
func (st *stage) rotate() error {
	f := st.file
	offer := st.loader != nil && f.bytes >= st.stg.partBytes && st.loader.ready()
	if f.groups < st.stg.fileRowGroups && !offer {
		return nil
	}
	st.file = nil
	if err := f.close(); err != nil {
		return fmt.Errorf("stage %s: close parquet: %w", st.t.Name, err)
	}
	if offer && st.loader.offer(loadJob{what: "view " + st.t.Name, path: f.path, sql: st.insert(f.path)}) {
		st.streamed = append(st.streamed, f.path)
		st.stg.streamed.Add(1)
	} else {
		st.done = append(st.done, f.path)
	}
	nf, err := createParquet(fmt.Sprintf("%s.%d.parquet", st.base, st.files), st.t, st.stg)
	if err != nil {
		return fmt.Errorf("stage %s: %w", st.t.Name, err)
	}
	st.file = nf
	st.files++
	return nil
}

func checkSchema(t *schemas.Table, got *arrow.Schema) error {
	want := t.Schema.Fields()
	if len(got.Fields()) != len(want) {
		return fmt.Errorf("table %s: batch has %d columns, table has %d", t.Name, len(got.Fields()), len(want))
	}
	for i, f := range got.Fields() {
		if f.Name != want[i].Name || !arrow.TypeEqual(f.Type, want[i].Type) {
			return fmt.Errorf("table %s: batch column %d is %s %s, table has %s %s",
				t.Name, i, f.Name, f.Type, want[i].Name, want[i].Type)
		}
	}
	return nil
}

// finish writes what the stage holds, closes its file and puts a TEMP view
// over its files.
func (st *stage) finish(ctx context.Context, db execer) error {
	if st.file == nil {
		return nil
	}
	f := st.file
	st.file = nil
	if err := f.close(); err != nil {
		return fmt.Errorf("stage %s: close parquet: %w", st.t.Name, err)
	}
	view := st.rel[len("temp.main."):]
	_, err := db.ExecContext(ctx, "CREATE TEMP VIEW "+view+" AS SELECT * FROM "+readParquet(append(st.done, f.path)))
	if err != nil {
		return fmt.Errorf("stage %s: %w", st.t.Name, err)
	}
	return nil
}

// discard drops what finish did not consume; the run's folder goes with
// the Txn.
func (st *stage) discard() error {
	f := st.file
	if f == nil {
		return nil
	}
	st.file = nil
	return f.abort()
}

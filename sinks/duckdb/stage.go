package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/schemas"
)

// stageMode selects how a run's batches reach DuckDB before Commit.
type stageMode int

const (
	// stageAppender appends each batch through the DuckDB Appender into a
	// TEMP table of the Txn's connection.
	stageAppender stageMode = iota
	// stageParquetSnappy and stageParquetZstd write each table's batches to
	// a Parquet file in the run's spool folder; Commit reads them with
	// read_parquet.
	stageParquetSnappy
	stageParquetZstd
)

func (m stageMode) String() string {
	switch m {
	case stageAppender:
		return "appender"
	case stageParquetSnappy:
		return "parquet-snappy"
	case stageParquetZstd:
		return "parquet-zstd"
	}
	return "unknown"
}

// Parquet row groups are cut at this many rows (DuckDB's own row group
// size) or Arrow (uncompressed) bytes. The byte cut bounds both the
// writer's buffered row group and what each DuckDB thread decompresses at
// Commit: zstd shrinks FHIR JSON about tenfold, so a cut on compressed
// bytes made row groups too large to read under a small memory_limit.
// 2 MiB rather than 16: every staged table (one per view) buffers its open
// row group in Go memory, and DuckDB reads a column chunk in one
// allocation, outside its buffer pool's accounting.
const (
	rowGroupRows  = 122880
	rowGroupBytes = 2 << 20
)

// stage is one table's staged rows within a Txn. rel is the relation Commit
// reads them from: a TEMP table or a TEMP view over a Parquet file.
type stage struct {
	t    *pipeline.Table
	rel  string
	rows int64

	app  *duckdb.Appender
	vals []driver.Value

	path    string
	file    *os.File
	pw      *pqarrow.FileWriter
	rgBytes int64 // Arrow bytes in the buffered row group
	// pqSchema is t.Schema with JSON columns (jsonCols) typed arrow.json,
	// so the Parquet file marks them JSON and DuckDB reads them as JSON
	// without a cast at Commit.
	pqSchema *arrow.Schema
	jsonCols []int
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
func parquetSchema(t *pipeline.Table) (*arrow.Schema, []int) {
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
func (st *stage) asParquet(rec arrow.RecordBatch) arrow.RecordBatch {
	cols := rec.Columns()
	out := make([]arrow.Array, len(cols))
	copy(out, cols)
	for _, i := range st.jsonCols {
		out[i] = array.NewExtensionArrayWithStorage(jsonType.(arrow.ExtensionType), cols[i])
	}
	rb := array.NewRecordBatch(st.pqSchema, out, rec.NumRows())
	for _, i := range st.jsonCols {
		out[i].Release()
	}
	return rb
}

// newStage creates the staging relation of t.
func newStage(ctx context.Context, conn *sql.Conn, mode stageMode, dir string, t *pipeline.Table, idx int) (*stage, error) {
	st := &stage{t: t, rel: fmt.Sprintf("temp.main.stg_%d", idx)}
	if mode != stageAppender {
		st.path = filepath.Join(dir, fmt.Sprintf("%03d_%s.parquet", idx, sanitize(t.Name)))
		f, err := os.Create(st.path)
		if err != nil {
			return nil, fmt.Errorf("stage %s: %w", t.Name, err)
		}
		codec := compress.Codecs.Snappy
		if mode == stageParquetZstd {
			codec = compress.Codecs.Zstd
		}
		props := parquet.NewWriterProperties(parquet.WithCompression(codec),
			parquet.WithDictionaryDefault(false), parquet.WithMaxRowGroupLength(rowGroupRows))
		st.pqSchema, st.jsonCols = parquetSchema(t)
		pw, err := pqarrow.NewFileWriter(st.pqSchema, f, props, pqarrow.NewArrowWriterProperties())
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("stage %s: %w", t.Name, err)
		}
		st.file, st.pw = f, pw
		return st, nil
	}
	defs, err := columnDefs(t.Schema.Fields(), true)
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", t.Name, err)
	}
	if _, err := conn.ExecContext(ctx, "CREATE TEMP TABLE stg_"+fmt.Sprint(idx)+" ("+defs+")"); err != nil {
		return nil, fmt.Errorf("stage %s: %w", t.Name, err)
	}
	err = conn.Raw(func(dc any) error {
		a, err := duckdb.NewAppender(dc.(driver.Conn), "temp", "main", "stg_"+fmt.Sprint(idx))
		st.app = a
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stage %s: appender: %w", t.Name, err)
	}
	st.vals = make([]driver.Value, len(t.Schema.Fields()))
	return st, nil
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
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
	if st.pw != nil {
		if st.jsonCols != nil {
			rec = st.asParquet(rec)
			defer rec.Release()
		}
		if err := st.pw.WriteBuffered(rec); err != nil {
			return fmt.Errorf("stage %s: %w", st.t.Name, err)
		}
		if st.rgBytes += recordBytes(rec); st.rgBytes >= rowGroupBytes {
			st.pw.NewBufferedRowGroup()
			st.rgBytes = 0
		}
		st.rows += rec.NumRows()
		return nil
	}
	getters := make([]func(int) driver.Value, rec.NumCols())
	for i, col := range rec.Columns() {
		g, err := getter(col)
		if err != nil {
			return fmt.Errorf("stage %s: column %s: %w", st.t.Name, rec.ColumnName(i), err)
		}
		getters[i] = g
	}
	for r := range int(rec.NumRows()) {
		for i, g := range getters {
			st.vals[i] = g(r)
		}
		if err := st.app.AppendRow(st.vals...); err != nil {
			return fmt.Errorf("stage %s: row %d: %w", st.t.Name, r, err)
		}
	}
	st.rows += rec.NumRows()
	return nil
}

func checkSchema(t *pipeline.Table, got *arrow.Schema) error {
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

// finish makes the staged rows readable by SQL on conn: it flushes the
// Appender, or closes the Parquet file and puts a TEMP view over it.
func (st *stage) finish(ctx context.Context, conn *sql.Conn) error {
	if st.app != nil {
		a := st.app
		st.app = nil
		if err := a.CloseWithCancel(ctx); err != nil {
			return fmt.Errorf("stage %s: flush: %w", st.t.Name, err)
		}
		return nil
	}
	if st.pw == nil {
		return nil
	}
	pw := st.pw
	st.pw = nil
	if err := pw.Close(); err != nil { // also closes the file
		return fmt.Errorf("stage %s: close parquet: %w", st.t.Name, err)
	}
	view := st.rel[len("temp.main."):]
	_, err := conn.ExecContext(ctx, "CREATE TEMP VIEW "+view+" AS SELECT * FROM read_parquet("+lit(st.path)+")")
	if err != nil {
		return fmt.Errorf("stage %s: %w", st.t.Name, err)
	}
	return nil
}

// discard drops what finish did not consume. The TEMP objects die with
// the connection, which the Txn discards.
func (st *stage) discard() error {
	var errs []error
	if st.app != nil {
		errs = append(errs, st.app.Clear(), st.app.Close())
		st.app = nil
	}
	if st.pw != nil {
		errs = append(errs, st.pw.Close())
		st.pw = nil
	}
	return errors.Join(errs...)
}

// getter returns a function reading row i of col as a value the Appender
// accepts for the column's staging type.
func getter(col arrow.Array) (func(int) driver.Value, error) {
	nullable := col.NullN() > 0
	wrap := func(f func(int) driver.Value) func(int) driver.Value {
		if !nullable {
			return f
		}
		return func(i int) driver.Value {
			if col.IsNull(i) {
				return nil
			}
			return f(i)
		}
	}
	switch a := col.(type) {
	case *array.String:
		return wrap(func(i int) driver.Value { return a.Value(i) }), nil
	case *array.LargeString:
		return wrap(func(i int) driver.Value { return a.Value(i) }), nil
	case *array.Binary:
		return wrap(func(i int) driver.Value { return a.Value(i) }), nil
	case *array.Boolean:
		return wrap(func(i int) driver.Value { return a.Value(i) }), nil
	case *array.Int8:
		return wrap(func(i int) driver.Value { return a.Value(i) }), nil
	case *array.Int16:
		return wrap(func(i int) driver.Value { return a.Value(i) }), nil
	case *array.Int32:
		return wrap(func(i int) driver.Value { return a.Value(i) }), nil
	case *array.Int64:
		return wrap(func(i int) driver.Value { return a.Value(i) }), nil
	case *array.Float32:
		return wrap(func(i int) driver.Value { return a.Value(i) }), nil
	case *array.Float64:
		return wrap(func(i int) driver.Value { return a.Value(i) }), nil
	case *array.Date32:
		return wrap(func(i int) driver.Value { return a.Value(i).ToTime() }), nil
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		return wrap(func(i int) driver.Value { return a.Value(i).ToTime(unit).UTC() }), nil
	case *array.List:
		elem, err := getter(a.ListValues())
		if err != nil {
			return nil, err
		}
		return wrap(func(i int) driver.Value {
			start, end := a.ValueOffsets(i)
			out := make([]any, 0, end-start)
			for j := start; j < end; j++ {
				out = append(out, elem(int(j)))
			}
			return out
		}), nil
	}
	return nil, fmt.Errorf("arrow type %s cannot be staged", col.DataType())
}

// recordBytes is the size of rec's Arrow buffers (slices count in full).
func recordBytes(rec arrow.RecordBatch) int64 {
	var n int64
	for _, c := range rec.Columns() {
		n += dataBytes(c.Data())
	}
	return n
}

func dataBytes(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataBytes(c)
	}
	return n
}

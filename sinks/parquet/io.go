package parquet

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/rowgroup"
)

// Sizes of the files the lake writes.
const (
	rowGroupRows  = 128 << 10 // rows per row group at most
	rowGroupBytes = 32 << 20  // Arrow bytes buffered per row group at most
	fileRows      = 1 << 20   // rows per file before a new one is started
	readBatch     = 16 << 10  // rows per record when reading files back
)

func codec(name string) (compress.Compression, error) {
	switch name {
	case "", "zstd":
		return compress.Codecs.Zstd, nil
	case "snappy":
		return compress.Codecs.Snappy, nil
	case "gzip":
		return compress.Codecs.Gzip, nil
	case "none":
		return compress.Codecs.Uncompressed, nil
	}
	return compress.Codecs.Uncompressed, fmt.Errorf("compression %q is not zstd, snappy, gzip or none", name)
}

// noClose hands an ObjectWriter to pqarrow, whose Close would otherwise
// publish the object before we decide to.
type noClose struct{ w ObjectWriter }

func (n noClose) Write(p []byte) (int, error) { return n.w.Write(p) }

// fileSet writes a table's rows into one or more new files named
// prefix-N.parquet, each published by Close.
type fileSet struct {
	ctx    context.Context
	st     Store
	mem    memory.Allocator
	comp   compress.Compression
	schema *arrow.Schema
	prefix string

	obj     ObjectWriter
	fw      *pqarrow.FileWriter
	name    string
	rows    int64            // rows in the current file
	group   rowgroup.Batches // the current row group's batches
	pending []string
	files   []fileMeta
}

func newFileSet(ctx context.Context, st Store, mem memory.Allocator, comp compress.Compression, schema *arrow.Schema, prefix string) *fileSet {
	return &fileSet{ctx: ctx, st: st, mem: mem, comp: comp, schema: schema, prefix: prefix,
		group: rowgroup.Batches{Stats: true}}
}

func (s *fileSet) open() error {
	s.name = fmt.Sprintf("%s-%d.parquet", s.prefix, len(s.files)+len(s.pending))
	obj, err := s.st.Create(s.ctx, s.name)
	if err != nil {
		return err
	}
	props := parquet.NewWriterProperties(parquet.WithCompression(s.comp), parquet.WithAllocator(s.mem),
		parquet.WithMaxRowGroupLength(rowGroupRows))
	fw, err := pqarrow.NewFileWriter(s.schema, noClose{obj}, props,
		pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema(), pqarrow.WithAllocator(s.mem)))
	if err != nil {
		_ = obj.Abort()
		return err
	}
	s.obj, s.fw, s.rows = obj, fw, 0
	return nil
}

// write appends rec (whose schema must equal the set's); it does not release it.
func (s *fileSet) write(rec arrow.RecordBatch) error {
	if rec.NumRows() == 0 {
		return nil
	}
	if s.fw == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	// The row group's batches are held until it is written in one call.
	s.group.Add(rec)
	s.rows += rec.NumRows()
	if s.group.Rows >= rowGroupRows || s.group.Bytes >= rowGroupBytes {
		if err := s.flushGroup(); err != nil {
			return err
		}
	}
	if s.rows >= fileRows {
		return s.finish()
	}
	return nil
}

// flushGroup writes the held batches as a row group.
func (s *fileSet) flushGroup() error {
	if s.fw == nil || s.group.Rows == 0 {
		return nil
	}
	if err := s.group.WriteTo(s.fw, s.schema, nil); err != nil {
		return fmt.Errorf("write %s: %w", s.name, err)
	}
	return nil
}

// finish closes the current file.
func (s *fileSet) finish() error {
	if s.fw == nil {
		return nil
	}
	fw, obj := s.fw, s.obj
	s.fw, s.obj = nil, nil
	err := s.group.WriteTo(fw, s.schema, nil)
	if cerr := fw.Close(); err == nil {
		err = cerr
	}
	s.group.Release() // after Close, which encodes the last group's statistics
	if err != nil {
		_ = obj.Abort()
		return fmt.Errorf("close %s: %w", s.name, err)
	}
	if err := obj.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.name, err)
	}
	s.files = append(s.files, fileMeta{Path: s.name, Rows: s.rows})
	return nil
}

// close finishes the last file and returns every file written.
func (s *fileSet) close() ([]fileMeta, error) {
	if err := s.finish(); err != nil {
		return nil, err
	}
	return s.files, nil
}

// abort discards the open file; files already finished are returned so the
// caller can delete them.
func (s *fileSet) abort() []fileMeta {
	if s.fw != nil {
		_ = s.fw.Close()
		_ = s.obj.Abort()
		s.fw, s.obj = nil, nil
	}
	s.group.Release()
	return s.files
}

// scan calls fn with every record of a file, projected to cols (all columns
// when nil). Records are released after fn returns.
func scan(ctx context.Context, st Store, mem memory.Allocator, name string, cols []string, fn func(arrow.RecordBatch) error) error {
	obj, err := st.Open(ctx, name)
	if err != nil {
		return err
	}
	defer obj.Close()
	pf, err := file.NewParquetReader(obj, file.WithReadProps(parquet.NewReaderProperties(mem)))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: readBatch}, mem)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var idx []int
	if cols != nil {
		sc, err := fr.Schema()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for _, c := range cols {
			i := sc.FieldIndices(c)
			if len(i) == 0 {
				return fmt.Errorf("%s: no column %q", name, c)
			}
			idx = append(idx, i[0])
		}
	}
	rr, err := fr.GetRecordReader(ctx, idx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer rr.Release()
	for rr.Next() {
		if err := fn(rr.RecordBatch()); err != nil {
			return err
		}
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// fileSchema reads a file's Arrow schema from its footer.
func fileSchema(ctx context.Context, st Store, mem memory.Allocator, name string) (*arrow.Schema, error) {
	obj, err := st.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	pf, err := file.NewParquetReader(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, mem)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return fr.Schema()
}

// stamp is the value of the stamped columns (schemas.Table.Stamped) of the
// rows a write adds: the run's, or a rebuilt batch's.
type stamp struct{ namespace, source string }

func runStamp(r sinks.RunInfo) stamp { return stamp{namespace: r.Namespace, source: r.Source} }

// value is the stamp of the column named name, or false when st does not
// fill it.
func (st stamp) value(name string) (string, bool) {
	switch {
	case name == schemas.ColNamespace && st.namespace != "":
		return st.namespace, true
	case name == schemas.ColSource && st.source != "":
		return st.source, true
	}
	return "", false
}

// constStrings is an array of n copies of v.
func constStrings(mem memory.Allocator, v string, n int) arrow.Array {
	b := array.NewStringBuilder(mem)
	defer b.Release()
	b.ReserveData(len(v) * n)
	for range n {
		b.Append(v)
	}
	return b.NewArray()
}

// conform returns rec with exactly the fields of target, by name: columns
// rec lacks are st's stamp where it has one, else all-null (a view gained
// a column); extra ones are dropped. The result must be released.
func conform(mem memory.Allocator, rec arrow.RecordBatch, target *arrow.Schema, st stamp) (arrow.RecordBatch, error) {
	cols := make([]arrow.Array, target.NumFields())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for i, f := range target.Fields() {
		idx := rec.Schema().FieldIndices(f.Name)
		if v, ok := st.value(f.Name); ok && len(idx) == 0 {
			cols[i] = constStrings(mem, v, int(rec.NumRows()))
			continue
		}
		if len(idx) == 0 {
			cols[i] = array.MakeArrayOfNull(mem, f.Type, int(rec.NumRows()))
			continue
		}
		c := rec.Column(idx[0])
		if !arrow.TypeEqual(c.DataType(), f.Type) {
			return nil, fmt.Errorf("column %q is %s in the stored files but %s now; rebuild the table", f.Name, c.DataType(), f.Type)
		}
		c.Retain()
		cols[i] = c
	}
	return array.NewRecordBatch(target, cols, rec.NumRows()), nil
}

// filter keeps the rows of rec where keep is true. The result must be released.
func filter(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch, keep []bool) (arrow.RecordBatch, error) {
	all := true
	for _, k := range keep {
		all = all && k
	}
	if all {
		rec.Retain()
		return rec, nil
	}
	b := array.NewBooleanBuilder(mem)
	defer b.Release()
	b.AppendValues(keep, nil)
	mask := b.NewBooleanArray()
	defer mask.Release()
	return compute.FilterRecordBatch(compute.WithAllocator(ctx, mem), rec, mask, compute.DefaultFilterOptions())
}

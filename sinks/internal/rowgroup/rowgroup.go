// Package rowgroup writes Parquet row groups from held Arrow batches, for
// the sinks that stage or store Parquet.
package rowgroup

import (
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Batches are the batches of one Parquet row group, held (reference
// counted, not copied) until the group is written in one call.
//
// Writing each batch as it comes (pqarrow's buffered row groups) keeps
// every column's page and encoder buffers open between writes, which with
// dozens of tables grew the Go heap with the input. It also leaves the
// writer's min/max statistics pointing into batches the caller has
// released, whose buffers pipeline.Buffers hands out again. Held batches
// outlive the statistics: they are released once their row group is
// written.
type Batches struct {
	recs  []arrow.RecordBatch
	Bytes int64 // Arrow bytes held (see Size)
	Rows  int64
}

// Add holds rec (the caller still releases its own reference) and returns
// its size.
func (b *Batches) Add(rec arrow.RecordBatch) int64 {
	rec.Retain()
	n := Size(rec)
	b.recs = append(b.recs, rec)
	b.Bytes += n
	b.Rows += rec.NumRows()
	return n
}

// WriteTo writes the held batches as one row group of pw, whose schema is
// schema, and drops them. conv, when not nil, returns a batch in schema
// for a held one (for example with extension types); its results are
// released here.
func (b *Batches) WriteTo(pw *pqarrow.FileWriter, schema *arrow.Schema, conv func(arrow.RecordBatch) arrow.RecordBatch) error {
	if len(b.recs) == 0 {
		return nil
	}
	recs := b.recs
	if conv != nil {
		recs = make([]arrow.RecordBatch, len(b.recs))
		for i, rec := range b.recs {
			recs[i] = conv(rec)
		}
		defer releaseAll(recs)
	}
	tbl := array.NewTableFromRecords(schema, recs)
	defer tbl.Release()
	rows := b.Rows
	b.Release()
	return pw.WriteTable(tbl, rows)
}

// Release drops the held batches.
func (b *Batches) Release() {
	releaseAll(b.recs)
	clear(b.recs)
	b.recs, b.Bytes, b.Rows = b.recs[:0], 0, 0
}

func releaseAll(recs []arrow.RecordBatch) {
	for _, rec := range recs {
		rec.Release()
	}
}

// Size is the size of rec's Arrow buffers (a slice counts its buffers
// whole).
func Size(rec arrow.RecordBatch) int64 {
	var n int64
	for _, c := range rec.Columns() {
		n += dataSize(c.Data())
	}
	return n
}

func dataSize(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataSize(c)
	}
	return n
}

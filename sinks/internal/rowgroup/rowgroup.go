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
	// Stats is true when the writer keeps column statistics. pqarrow
	// encodes a row group's statistics, which point into its batches,
	// only when it closes the group: at the next row group or the file's
	// Close. The batches of the last group written are then held until
	// the next WriteTo or Release, and Release must follow the writer's
	// Close.
	Stats bool

	recs    []arrow.RecordBatch
	written []arrow.RecordBatch // the last group's, when Stats
	Bytes   int64               // Arrow bytes held for the next group (see Size)
	Rows    int64
	// Written is the Arrow bytes of the last group written that are held
	// for its statistics (Stats): memory too, until the next WriteTo.
	Written int64
}

// Held is all the Arrow bytes b holds: the next group's and, with Stats,
// the last written group's.
func (b *Batches) Held() int64 { return b.Bytes + b.Written }

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
	err := pw.WriteTable(tbl, b.Rows)
	// Writing this group closed the previous one.
	b.written = drop(b.written)
	b.Written = 0
	if b.Stats {
		b.written = append(b.written, b.recs...)
		b.Written = b.Bytes
		clear(b.recs)
		b.recs = b.recs[:0]
	} else {
		b.recs = drop(b.recs)
	}
	b.Bytes, b.Rows = 0, 0
	return err
}

// Release drops every batch held, those of a group written included.
func (b *Batches) Release() {
	b.recs = drop(b.recs)
	b.written = drop(b.written)
	b.Bytes, b.Rows, b.Written = 0, 0, 0
}

// drop releases recs and returns the emptied slice.
func drop(recs []arrow.RecordBatch) []arrow.RecordBatch {
	releaseAll(recs)
	clear(recs)
	return recs[:0]
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

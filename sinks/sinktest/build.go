// Package sinktest builds Arrow batches by hand for sink tests and holds a
// semantic suite ([Run]) that any [sinks.Sink] can be checked against.
//
// Sinks import it from their tests only; it depends on testing and testify.
package sinktest

import (
	"fmt"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/fhirferry/fhirferry/schemas"
)

// Seq returns the _seq of line in the file with index file, as the
// transform computes it.
func Seq(file, line int64) int64 { return file<<32 | line }

// Raw is one raw landing row. Zero provenance fields get fixed test values;
// a zero LastUpdated is stored as NULL; an empty Resource gets a small JSON
// document naming type, id and version.
type Raw struct {
	Type, ID, VersionID string
	LastUpdated         time.Time
	Subsetted           bool
	Resource            string
	Seq                 int64
	Prov                Prov
}

// Prov is the provenance of a staged row.
type Prov struct {
	Source, ExportID, TransactionTime, File string
	Line                                    int64
}

func (p Prov) withDefaults() Prov {
	if p.Source == "" {
		p.Source = "test"
	}
	if p.ExportID == "" {
		p.ExportID = "export-1"
	}
	if p.TransactionTime == "" {
		p.TransactionTime = "2025-01-01T00:00:00Z"
	}
	if p.File == "" {
		p.File = "file.ndjson"
	}
	return p
}

func (p Prov) values() []any {
	p = p.withDefaults()
	return []any{p.Source, p.ExportID, p.TransactionTime, p.File, p.Line}
}

// RawBatch builds a batch for [schemas.Raw].
func RawBatch(mem memory.Allocator, rows ...Raw) schemas.Batch {
	vals := make([][]any, len(rows))
	for i, r := range rows {
		res := r.Resource
		if res == "" {
			res = fmt.Sprintf(`{"resourceType":%q,"id":%q,"meta":{"versionId":%q}}`, r.Type, r.ID, r.VersionID)
		}
		var vid, lu any
		if r.VersionID != "" {
			vid = r.VersionID
		}
		if !r.LastUpdated.IsZero() {
			lu = r.LastUpdated
		}
		vals[i] = append([]any{r.Type, r.ID, vid, lu, r.Subsetted, res, r.Seq}, r.Prov.values()...)
	}
	return Build(mem, schemas.Raw, vals...)
}

// Deleted is one entry of a run's `deleted` list.
type Deleted struct {
	Type, ID string
	Prov     Prov
}

// DeletedBatch builds a batch for [schemas.Deleted].
func DeletedBatch(mem memory.Allocator, rows ...Deleted) schemas.Batch {
	vals := make([][]any, len(rows))
	for i, r := range rows {
		vals[i] = append([]any{r.Type, r.ID}, r.Prov.values()...)
	}
	return Build(mem, schemas.Deleted, vals...)
}

// RejectBatch builds a batch for [schemas.Rejects] with one row per reason.
func RejectBatch(mem memory.Allocator, prov Prov, reasons ...string) schemas.Batch {
	vals := make([][]any, len(reasons))
	for i, r := range reasons {
		vals[i] = append([]any{nil, nil, r, "{bad"}, prov.values()...)
	}
	return Build(mem, schemas.Rejects, vals...)
}

// ViewTable returns a view table of resourceType whose schema is
// _resource_id, _seq, then cols.
func ViewTable(name, resourceType string, cols ...arrow.Field) *schemas.Table {
	fields := append([]arrow.Field{
		{Name: schemas.ColResourceID, Type: arrow.BinaryTypes.String},
		{Name: schemas.ColSeq, Type: arrow.PrimitiveTypes.Int64},
	}, cols...)
	return &schemas.Table{Name: name, Kind: schemas.KindView, ResourceType: resourceType,
		Schema: arrow.NewSchema(fields, nil), Description: "test view " + name}
}

// Build builds a batch for t from rows given in schema order. Values are
// nil (NULL), string, bool, int32, int64, float64, time.Time (timestamp and
// date32 columns) or []any (list columns). It panics on a value that does
// not fit, since that is a bug in the test.
func Build(mem memory.Allocator, t *schemas.Table, rows ...[]any) schemas.Batch {
	b := array.NewRecordBuilder(mem, t.Schema)
	defer b.Release()
	for ri, row := range rows {
		if len(row) != len(b.Fields()) {
			panic(fmt.Sprintf("sinktest: %s row %d has %d values, schema has %d", t.Name, ri, len(row), len(b.Fields())))
		}
		for i, v := range row {
			appendValue(b.Field(i), v)
		}
	}
	// Stamped as a rebuild stamps its batches; a run uses its own values.
	return schemas.Batch{Table: t, Rec: b.NewRecordBatch(), Namespace: Namespace, Source: "test"}
}

func appendValue(fb array.Builder, v any) {
	if v == nil {
		fb.AppendNull()
		return
	}
	switch b := fb.(type) {
	case *array.StringBuilder:
		b.Append(v.(string))
	case *array.BooleanBuilder:
		b.Append(v.(bool))
	case *array.Int32Builder:
		b.Append(v.(int32))
	case *array.Int64Builder:
		b.Append(v.(int64))
	case *array.Float64Builder:
		b.Append(v.(float64))
	case *array.TimestampBuilder:
		b.Append(arrow.Timestamp(v.(time.Time).UnixMicro()))
	case *array.Date32Builder:
		b.Append(arrow.Date32FromTime(v.(time.Time)))
	case *array.ListBuilder:
		b.Append(true)
		for _, e := range v.([]any) {
			appendValue(b.ValueBuilder(), e)
		}
	default:
		panic(fmt.Sprintf("sinktest: unsupported builder %T", fb))
	}
}

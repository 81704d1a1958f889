package schemas

import "github.com/apache/arrow-go/v18/arrow"

// TableKind says how a sink applies a table's rows at commit.
type TableKind int

const (
	// KindRaw is the raw landing: one row per resource line, upserted by
	// (resource_type, id) where an older last_updated never overwrites a
	// newer one and a SUBSETTED resource never overwrites a full one.
	KindRaw TableKind = iota + 1
	// KindView is a SQL-on-FHIR view of one resource type. Its rows carry
	// ColResourceID and ColSeq; a resource's rows are replaced as a whole
	// by the rows of the raw version that won the upsert.
	KindView
	// KindDeleted holds the run's `deleted` entries (resource_type, id):
	// the resource and all its view rows are removed.
	KindDeleted
	// KindAppend tables (rejects, OperationOutcome issues) are appended.
	KindAppend
)

func (k TableKind) String() string {
	switch k {
	case KindRaw:
		return "raw"
	case KindView:
		return "view"
	case KindDeleted:
		return "deleted"
	case KindAppend:
		return "append"
	}
	return "unknown"
}

// Names of the columns the sinks rely on.
const (
	// ColSeq orders the resource lines of one run: (file index << 32) | line.
	// It is staged but never stored in a target table; a view row belongs to
	// the raw row with the same (resource id, seq).
	ColSeq = "_seq"
	// ColResourceID is the first column of every view table: the id of the
	// resource the row was computed from.
	ColResourceID = "_resource_id"
)

// Table describes one destination table.
type Table struct {
	Name string
	Kind TableKind
	// ResourceType is the FHIR type a view reads; empty for other kinds.
	ResourceType string
	// Schema is the schema of the batches written to the table, staging
	// columns (ColSeq) included.
	Schema *arrow.Schema
	// Description is shown to analysts (table comment) when the sink supports it.
	Description string
}

// StoredFields returns the schema's fields without staging-only columns:
// the columns of the table a sink creates.
func (t *Table) StoredFields() []arrow.Field {
	out := make([]arrow.Field, 0, len(t.Schema.Fields()))
	for _, f := range t.Schema.Fields() {
		if f.Name == ColSeq {
			continue
		}
		out = append(out, f)
	}
	return out
}

// Batch is a set of rows bound for one table.
type Batch struct {
	Table *Table
	Rec   arrow.RecordBatch
}

// Release drops the batch's reference to its Arrow memory.
func (b Batch) Release() {
	if b.Rec != nil {
		b.Rec.Release()
	}
}

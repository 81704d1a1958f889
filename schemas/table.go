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
	// KindMeta tables (view_definitions) describe the sink as a whole:
	// they are written only by ReplaceTable and carry no namespace.
	KindMeta
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
	case KindMeta:
		return "meta"
	}
	return "unknown"
}

// Names of the columns the sinks rely on.
const (
	// ColSeq orders the resource lines of one run: (file index << 32) | line.
	// It is staged but never stored in a target table; a view row belongs to
	// the raw row with the same (resource id, seq).
	ColSeq = "_seq"
	// ColResourceID is in every view table: the id of the resource the row
	// was computed from.
	ColResourceID = "_resource_id"
	// ColNamespace is the first column of every stored table: the namespace
	// (the FHIR server) of the resource the row belongs to, since ids are
	// unique only within one server. Batches do not carry it: a sink stamps
	// it on every row from the run (sinks.RunInfo.Namespace), or in a
	// ReplaceTable from the batch (Batch.Namespace).
	ColNamespace = "namespace"
	// ColSource is the source that wrote a row: a provenance column of the
	// raw, deleted, rejects and outcomes batches, and stamped like
	// ColNamespace on view rows.
	ColSource = "source"
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

// Stamped returns the columns a sink fills with one value per run (or per
// batch, in a ReplaceTable) instead of reading them from the batch: the
// namespace, and on views the source.
func (t *Table) Stamped() []arrow.Field {
	ns := arrow.Field{Name: ColNamespace, Type: arrow.BinaryTypes.String}
	switch t.Kind {
	case KindView:
		return []arrow.Field{ns, {Name: ColSource, Type: arrow.BinaryTypes.String}}
	case KindMeta:
		return nil
	}
	return []arrow.Field{ns}
}

// StoredFields returns the columns of the table a sink creates: the
// stamped ones, then the schema's fields without staging-only columns.
func (t *Table) StoredFields() []arrow.Field {
	out := append(make([]arrow.Field, 0, len(t.Schema.Fields())+2), t.Stamped()...)
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
	// Namespace and Source are the stamped columns of every row of a batch
	// handed to ReplaceTable (a rebuild spans namespaces). In a run the
	// run's own values apply.
	Namespace, Source string
}

// Release drops the batch's reference to its Arrow memory.
func (b Batch) Release() {
	if b.Rec != nil {
		b.Rec.Release()
	}
}

// RawResource is one stored resource as a sink reads it back from its raw
// landing (a view rebuild's input).
type RawResource struct {
	Namespace, Source, ID string
	JSON                  []byte
}

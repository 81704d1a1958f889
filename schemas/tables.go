// Package schemas holds the warehouse's table definitions: the raw landing,
// the metadata tables, and the embedded default SQL-on-FHIR ViewDefinitions.
package schemas

import (
	"github.com/apache/arrow-go/v18/arrow"
)

// Table names of the non-view tables.
const (
	RawTable      = "fhir_resources"
	DeletedTable  = "_deleted" // staged only: the run's deleted entries
	RejectsTable  = "rejects"
	OutcomesTable = "operation_outcomes"
	RunsTable     = "runs"
	CheckTable    = "checkpoints"
	// ViewDefsTable records the definition each view table was built from.
	ViewDefsTable = "view_definitions"
	// GroupMemberTable is the membership history of the Group sources: one
	// row per stay of a patient in a Group (joined_at, left_at).
	GroupMemberTable = "group_member"
	// CurrentMemberView is GroupMemberTable's open rows: who is in each
	// Group now.
	CurrentMemberView = "current_member"
	// ValueSetCodesTable holds the expansions of the loaded value sets, one
	// row per code, for the quality measures' value-set membership.
	ValueSetCodesTable = "valueset_code"
)

// Timestamp is the type of every instant column: microseconds in UTC, which
// DuckDB, Spark and PostgreSQL all read (nanoseconds are not portable).
var Timestamp = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

func str(name string, nullable bool) arrow.Field {
	return arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: nullable}
}

func i64(name string, nullable bool) arrow.Field {
	return arrow.Field{Name: name, Type: arrow.PrimitiveTypes.Int64, Nullable: nullable}
}

// provenance columns shared by the raw, deleted, rejects and outcomes tables.
func provenance() []arrow.Field {
	return []arrow.Field{
		str("source", false),
		str("export_id", false),
		str("transaction_time", false), // verbatim from the manifest
		str("file", false),
		i64("line", false),
	}
}

// JSONMetadata marks a string column that holds JSON text, so sinks can use
// their JSON type (DuckDB JSON, PostgreSQL jsonb).
var JSONMetadata = arrow.NewMetadata([]string{"fhirferry.type"}, []string{"json"})

// IsJSON reports whether f carries JSONMetadata.
func IsJSON(f arrow.Field) bool {
	v, ok := f.Metadata.GetValue("fhirferry.type")
	return ok && v == "json"
}

// KeyMetadata marks a string column that holds resource keys (ids): text
// that barely repeats, which a sink should not try to compress as if it
// did (DuckDB's dictionary analysis of it cost time and saved nothing).
var KeyMetadata = arrow.NewMetadata([]string{"fhirferry.key"}, []string{"resource"})

// IsKey reports whether f carries KeyMetadata.
func IsKey(f arrow.Field) bool {
	v, ok := f.Metadata.GetValue("fhirferry.key")
	return ok && v == "resource"
}

// Raw is the raw landing table: every current resource's JSON, keyed by
// (resource_type, id).
var Raw = &Table{
	Name: RawTable,
	Kind: KindRaw,
	Schema: arrow.NewSchema(append([]arrow.Field{
		str("resource_type", false),
		described(arrow.Field{Name: "id", Type: arrow.BinaryTypes.String, Nullable: false, Metadata: KeyMetadata},
			"The resource's id; with namespace and resource_type, its key."),
		described(str("version_id", true), "meta.versionId, as the server sent it."),
		described(arrow.Field{Name: "last_updated", Type: Timestamp, Nullable: true},
			"meta.lastUpdated: an older version never overwrites a newer one."),
		described(arrow.Field{Name: "subsetted", Type: arrow.FixedWidthTypes.Boolean, Nullable: false},
			"The server marked the resource SUBSETTED (an _elements export): it never overwrites a full version."),
		described(arrow.Field{Name: "resource", Type: arrow.BinaryTypes.String, Nullable: false, Metadata: JSONMetadata},
			"The resource as JSON, exactly as exported (lossless)."),
		i64(ColSeq, false),
	}, provenance()...), nil),
	Description: "Every current FHIR resource as JSON, with meta.lastUpdated and provenance.",
}

// Deleted stages a run's `deleted` entries.
var Deleted = &Table{
	Name: DeletedTable,
	Kind: KindDeleted,
	Schema: arrow.NewSchema(append([]arrow.Field{
		str("resource_type", false),
		str("id", false),
	}, provenance()...), nil),
}

// Rejects records lines that could not be loaded, with the reason.
var Rejects = &Table{
	Name: RejectsTable,
	Kind: KindAppend,
	Schema: arrow.NewSchema(append([]arrow.Field{
		str("resource_type", true),
		described(str("id", true), "The resource's id, when the line had one."),
		described(str("reason", false), "Why the line was not loaded, naming the field or view column at fault."),
		described(str("content", true), "The offending line, truncated."),
	}, provenance()...), nil),
	Description: "Input lines that were not loaded, with file, line and reason.",
}

// Outcomes records the issues of the OperationOutcomes in a manifest's error files.
var Outcomes = &Table{
	Name: OutcomesTable,
	Kind: KindAppend,
	Schema: arrow.NewSchema(append([]arrow.Field{
		described(str("severity", true), "OperationOutcome.issue.severity: fatal, error, warning or information."),
		described(str("code", true), "OperationOutcome.issue.code."),
		described(str("diagnostics", true), "OperationOutcome.issue.diagnostics, as the server wrote it."),
		described(str("details", true), "OperationOutcome.issue.details.text."),
	}, provenance()...), nil),
	Description: "Issues of the OperationOutcomes the server reported in error files.",
}

// ViewDefinitions records, per sink, the definition each view table
// was last built from, so a changed or new view is detected (see
// transform.ViewHashes). Callers of ReplaceTable rewrite it whole.
var ViewDefinitions = &Table{
	Name: ViewDefsTable,
	Kind: KindMeta,
	Schema: arrow.NewSchema([]arrow.Field{
		{Name: "name", Type: arrow.BinaryTypes.String},
		{Name: "resource_type", Type: arrow.BinaryTypes.String},
		{Name: "definition_hash", Type: arrow.BinaryTypes.String},
		{Name: "updated_at", Type: Timestamp},
	}, nil),
	Description: "The ViewDefinition (SHA-256 of its canonical JSON) each view table was last rebuilt from.",
}

// ValueSetCodes is the codes of the value sets the quality measures use,
// from their expansions. It describes no source, so like view_definitions
// it carries no namespace, and `fhirferry valuesets load` replaces it
// whole. Membership is (url or oid, system, code): the code system's
// version is kept for display only, since measures ignore it.
var ValueSetCodes = &Table{
	Name: ValueSetCodesTable,
	Kind: KindMeta,
	Schema: arrow.NewSchema([]arrow.Field{
		str("url", false),
		str("oid", true),
		str("name", true),
		str("version", true),
		str("system", false),
		str("system_version", true),
		str("code", false),
		str("display", true),
	}, nil),
	Description: "Codes of the loaded value sets' expansions (fhirferry valuesets load), for value-set membership.",
}

// System returns the non-view tables every sink holds.
func System() []*Table {
	return []*Table{Raw, Deleted, Rejects, Outcomes}
}

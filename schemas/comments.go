package schemas

import "github.com/apache/arrow-go/v18/arrow"

// MetaDescription is the field metadata key of a column's description (a
// view column's ViewDefinition description). Sinks turn it into COMMENT
// ON COLUMN; Parquet keeps it in the stored Arrow schema.
const MetaDescription = "fhirferry.description"

// Describe returns md with the description d added.
func Describe(md arrow.Metadata, d string) arrow.Metadata {
	if d == "" {
		return md
	}
	return arrow.NewMetadata(append(md.Keys(), MetaDescription), append(md.Values(), d))
}

// Description is the description of f: its own, else the one every table
// gives a column of that name.
func Description(f arrow.Field) string {
	if d, ok := f.Metadata.GetValue(MetaDescription); ok {
		return d
	}
	return commonColumns[f.Name]
}

// commonColumns describes the columns fhirferry adds to many tables.
var commonColumns = map[string]string{
	ColNamespace: "The FHIR server the row's resource comes from (its base URL, or the sources' configured namespace): ids are unique only within one server.",
	ColSource:    "The configured source whose export wrote the row.",
	ColResourceID: "Id of the resource the row was computed from; with namespace, the key that joins the row to " +
		RawTable + " (resource_type, id).",
	"export_id":        "The export (status URL) the row arrived in.",
	"transaction_time": "The export's transactionTime, verbatim from its manifest.",
	"file":             "The export file the row was read from.",
	"line":             "The line of that file (1-based).",
	"resource_type":    "FHIR resource type.",
}

// Comment is one column's description.
type Comment struct{ Column, Text string }

// Comments returns the descriptions of t's stored columns, in order; the
// columns without one are left out.
func (t *Table) Comments() []Comment {
	var out []Comment
	for _, f := range t.StoredFields() {
		if d := Description(f); d != "" {
			out = append(out, Comment{Column: f.Name, Text: d})
		}
	}
	return out
}

// described is a field with description d.
func described(f arrow.Field, d string) arrow.Field {
	f.Metadata = Describe(f.Metadata, d)
	return f
}

package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

// quote returns name as a SQL identifier, so view columns such as
// "Gender Code" or "order" are safe.
func quote(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }

// lit returns s as a SQL string literal.
func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// sqlType maps an Arrow field to the DuckDB type of its stored column.
// staging is true for staging tables, where JSON stays VARCHAR so that the
// Appender and Parquet paths load it without parsing; Commit casts it.
func sqlType(f arrow.Field, staging bool) (string, error) {
	if !staging && schemas.IsJSON(f) {
		return "JSON", nil
	}
	return arrowType(f.Name, f.Type)
}

func arrowType(name string, t arrow.DataType) (string, error) {
	switch t := t.(type) {
	case *arrow.StringType, *arrow.LargeStringType, *arrow.StringViewType:
		return "VARCHAR", nil
	case *arrow.BinaryType, *arrow.LargeBinaryType:
		return "BLOB", nil
	case *arrow.BooleanType:
		return "BOOLEAN", nil
	case *arrow.Int8Type:
		return "TINYINT", nil
	case *arrow.Int16Type:
		return "SMALLINT", nil
	case *arrow.Int32Type:
		return "INTEGER", nil
	case *arrow.Int64Type:
		return "BIGINT", nil
	case *arrow.Float32Type:
		return "FLOAT", nil
	case *arrow.Float64Type:
		return "DOUBLE", nil
	case *arrow.Date32Type:
		return "DATE", nil
	case *arrow.Time64Type:
		return "TIME", nil
	case *arrow.Decimal128Type:
		return fmt.Sprintf("DECIMAL(%d,%d)", t.Precision, t.Scale), nil
	case *arrow.TimestampType:
		// Instants are stored in microseconds; a zone makes them TIMESTAMPTZ,
		// which is also what DuckDB reads from Parquet's isAdjustedToUTC.
		if t.TimeZone != "" {
			return "TIMESTAMPTZ", nil
		}
		return "TIMESTAMP", nil
	case *arrow.ListType:
		elem, err := arrowType(name, t.Elem())
		if err != nil {
			return "", err
		}
		return elem + "[]", nil
	}
	return "", fmt.Errorf("column %q: arrow type %s has no DuckDB mapping", name, t)
}

// columnDefs renders fields as a column list for CREATE TABLE.
func columnDefs(fields []arrow.Field, staging bool) (string, error) {
	defs := make([]string, len(fields))
	for i, f := range fields {
		typ, err := sqlType(f, staging)
		if err != nil {
			return "", err
		}
		defs[i] = quote(f.Name) + " " + typ
		if !staging && schemas.IsJSON(f) {
			// Resources are ~1 KB of mostly unique text: DuckDB's FSST and
			// dictionary analysis of it cost more CPU than the load's
			// whole Go side and buffer memory far beyond memory_limit,
			// for about 5% smaller files (none on Synthea samples, where
			// it chose Uncompressed anyway).
			defs[i] += " USING COMPRESSION uncompressed"
		} else if !staging && typ == "VARCHAR" && schemas.IsKey(f) {
			// Resource keys are unique text: a dictionary of them is as
			// large as they are, and its analysis was 0.5 s of the 500 MB
			// benchmark's Commit with the default views, for 0.2% of the
			// file.
			defs[i] += " USING COMPRESSION uncompressed"
		} else if !staging && typ == "VARCHAR" {
			// View columns are ids, codes and display text that repeat;
			// a dictionary keeps most of what DuckDB's automatic choice
			// saves (files 10% larger on the bench export) while the FSST
			// symbol-table analysis it skips was a third of Commit with
			// the default views (see doc.go, "Measured load paths").
			defs[i] += " USING COMPRESSION dictionary"
		}
		if !staging && !f.Nullable {
			defs[i] += " NOT NULL"
		}
	}
	return strings.Join(defs, ", "), nil
}

// Metadata tables whose shape is fixed by the sink rather than by an Arrow schema.
var metaDDL = []string{
	`CREATE TABLE IF NOT EXISTS ` + quote(schemas.RunsTable) + ` (
		run_id VARCHAR NOT NULL, source VARCHAR NOT NULL, export_id VARCHAR, since VARCHAR,
		transaction_time VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, outcome VARCHAR,
		files BIGINT, bytes BIGINT, resources BIGINT, deleted BIGINT, rejects BIGINT, outcomes BIGINT)`,
	`CREATE TABLE IF NOT EXISTS ` + quote(schemas.CheckTable) + ` (
		source VARCHAR PRIMARY KEY, transaction_time VARCHAR NOT NULL, export_id VARCHAR NOT NULL,
		committed_at TIMESTAMPTZ NOT NULL)`,
	// Warehouses made before runs recorded how a Group's members were learnt.
	`ALTER TABLE ` + quote(schemas.RunsTable) + ` ADD COLUMN IF NOT EXISTS membership VARCHAR`,
	`ALTER TABLE ` + quote(schemas.RunsTable) + ` ADD COLUMN IF NOT EXISTS purged BIGINT`,
	`CREATE TABLE IF NOT EXISTS ` + quote(schemas.GroupMemberTable) + ` (
		namespace VARCHAR NOT NULL, source VARCHAR NOT NULL, group_id VARCHAR NOT NULL,
		patient_id VARCHAR NOT NULL, joined_at TIMESTAMPTZ NOT NULL, left_at TIMESTAMPTZ,
		joined_run VARCHAR NOT NULL, left_run VARCHAR)`,
	`CREATE OR REPLACE VIEW ` + quote(schemas.CurrentMemberView) + ` AS
		SELECT namespace, source, group_id, patient_id, joined_at, joined_run
		FROM ` + quote(schemas.GroupMemberTable) + ` WHERE left_at IS NULL`,
}

// insertRun writes one runs row from runArgs.
var insertRun = `INSERT INTO ` + quote(schemas.RunsTable) + ` (run_id, source, export_id, since, transaction_time,
	started_at, finished_at, outcome, files, bytes, resources, deleted, rejects, outcomes, membership, purged)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

func runArgs(r sinks.RunInfo, sum sinks.RunSummary) []any {
	return []any{r.RunID, r.Source, r.ExportID, r.Since, r.TransactionTime, r.Started.UTC(), sum.Finished.UTC(),
		sum.Outcome, sum.Files, sum.Bytes, sum.Resources, sum.Deleted, sum.Rejects, sum.Outcomes, nullIfEmpty(sum.MembersFrom), sum.Purged}
}

// nullIfEmpty stores "" as NULL: not a Group source's run.
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// execer is what DDL helpers need: a *sql.Tx or *sql.Conn.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// existingColumns returns the columns of main.table, or nil when the table
// does not exist.
func existingColumns(ctx context.Context, db execer, table string) (map[string]bool, error) {
	rows, err := db.QueryContext(ctx,
		`SELECT column_name FROM duckdb_columns() WHERE database_name = current_database()
		 AND schema_name = 'main' AND table_name = ?`, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols map[string]bool
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		if cols == nil {
			cols = map[string]bool{}
		}
		cols[c] = true
	}
	return cols, rows.Err()
}

// comment describes t and its columns (only the columns in cols, when it
// is not nil) with COMMENT ON, so analysts find the descriptions in
// duckdb_tables() and duckdb_columns().
func comment(ctx context.Context, db execer, t *schemas.Table, cols map[string]bool) error {
	var q strings.Builder
	if t.Description != "" && cols == nil {
		q.WriteString("COMMENT ON TABLE " + quote(t.Name) + " IS " + lit(t.Description) + ";\n")
	}
	for _, c := range t.Comments() {
		if cols == nil || cols[c.Column] {
			q.WriteString("COMMENT ON COLUMN " + quote(t.Name) + "." + quote(c.Column) + " IS " + lit(c.Text) + ";\n")
		}
	}
	if q.Len() == 0 {
		return nil
	}
	if _, err := db.ExecContext(ctx, q.String()); err != nil {
		return fmt.Errorf("comment on table %s: %w", t.Name, err)
	}
	return nil
}

// ensureTable creates t's stored table, or adds the columns it lacks. Added
// columns are nullable, since existing rows have no value for them; no
// column is ever dropped or retyped.
func ensureTable(ctx context.Context, db execer, t *schemas.Table) error {
	fields := storedFields(t)
	have, err := existingColumns(ctx, db, t.Name)
	if err != nil {
		return fmt.Errorf("table %s: %w", t.Name, err)
	}
	if have == nil {
		defs, err := columnDefs(fields, false)
		if err != nil {
			return fmt.Errorf("table %s: %w", t.Name, err)
		}
		if _, err := db.ExecContext(ctx, "CREATE TABLE "+quote(t.Name)+" ("+defs+")"); err != nil {
			return fmt.Errorf("create table %s: %w", t.Name, err)
		}
		return comment(ctx, db, t, nil)
	}
	added := map[string]bool{}
	for _, f := range fields {
		if have[f.Name] {
			continue
		}
		added[f.Name] = true
		typ, err := sqlType(f, false)
		if err != nil {
			return fmt.Errorf("table %s: %w", t.Name, err)
		}
		if _, err := db.ExecContext(ctx, "ALTER TABLE "+quote(t.Name)+" ADD COLUMN "+quote(f.Name)+" "+typ); err != nil {
			return fmt.Errorf("table %s: add column %s: %w", t.Name, f.Name, err)
		}
	}
	if len(added) == 0 {
		return nil
	}
	return comment(ctx, db, t, added)
}

// rawExtra are columns of the DuckDB raw table only: the run that loaded
// the row, and the row's position in that run (schemas.ColSeq). A run's
// rows reach the table while the transform runs (see rawStream); these
// let Commit tell them from the stored ones. Rows loaded before they
// existed have NULLs.
var rawExtra = []arrow.Field{
	{Name: "run_id", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: schemas.ColSeq, Type: arrow.PrimitiveTypes.Int64, Nullable: true},
}

// storedFields returns the columns of t's stored table.
func storedFields(t *schemas.Table) []arrow.Field {
	fields := t.StoredFields()
	if t.Kind == schemas.KindRaw {
		fields = append(fields, rawExtra...)
	}
	return fields
}

// stamp is the value of the stamped columns (schemas.Table.Stamped) of the
// rows one INSERT writes: the run's, or a rebuilt batch's.
type stamp struct{ namespace, source string }

func runStamp(r sinks.RunInfo) stamp { return stamp{namespace: r.Namespace, source: r.Source} }

// value is the SQL literal of the stamped column named name.
func (st stamp) value(name string) string {
	if name == schemas.ColSource {
		return lit(st.source)
	}
	return lit(st.namespace)
}

// selectList renders the stored columns of t as read from a staging
// relation aliased s, casting JSON text to the JSON type; the stamped
// columns are st's literals (the namespace and source are the run's, not
// staged per row).
func selectList(t *schemas.Table, st stamp) (cols, sel string) {
	var c, s []string
	stamped := len(t.Stamped())
	for i, f := range t.StoredFields() {
		c = append(c, quote(f.Name))
		if i < stamped {
			s = append(s, st.value(f.Name))
			continue
		}
		if schemas.IsJSON(f) {
			s = append(s, "CAST(s."+quote(f.Name)+" AS JSON)")
		} else {
			s = append(s, "s."+quote(f.Name))
		}
	}
	return strings.Join(c, ", "), strings.Join(s, ", ")
}

// ColumnType is the DuckDB type of the column the sink stores f in.
func ColumnType(f arrow.Field) (string, error) { return sqlType(f, false) }

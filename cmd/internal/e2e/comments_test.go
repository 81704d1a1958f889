package e2e_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/transform"
)

// TestTablesAreDocumented: the views' and columns' descriptions reach the
// SQL catalogs as comments, on creation (Prepare) and when a rebuild
// replaces a table, so an analyst reads them where they query.
func TestTablesAreDocumented(t *testing.T) {
	views := defaultViews(t)
	eng, err := transform.New(transform.Options{Views: views})
	require.NoError(t, err)
	var obs *schemas.Table
	for _, tb := range eng.Tables() {
		if tb.Name == "observation" {
			obs = tb
		}
	}
	require.NotNil(t, obs)
	byName := map[string]string{}
	for _, c := range obs.Comments() {
		byName[c.Column] = c.Text
	}
	require.Contains(t, byName["value_quantity_value"], "quantity")
	require.Contains(t, byName["effective_datetime_precision"], "year, month, day or time")
	require.NotEmpty(t, byName[schemas.ColNamespace])

	queries := map[string]struct{ table, column string }{
		"duckdb": {
			`SELECT comment FROM duckdb_tables() WHERE table_name = $1`,
			`SELECT comment FROM duckdb_columns() WHERE table_name = $1 AND column_name = $2`,
		},
		"postgres": {
			`SELECT obj_description(to_regclass(quote_ident($1)), 'pg_class')`,
			`SELECT col_description(to_regclass(quote_ident($1)), (SELECT attnum FROM pg_attribute
			   WHERE attrelid = to_regclass(quote_ident($1)) AND attname = $2))`,
		},
	}
	for _, k := range sinkKinds {
		q, ok := queries[k.kind]
		if !ok {
			continue
		}
		t.Run(k.kind, func(t *testing.T) {
			s := k.open(t, "wh")
			require.NoError(t, s.sink.Prepare(context.Background(), eng.Tables()))
			db, done := s.read(t)
			defer done()
			var got sql.NullString
			require.NoError(t, db.QueryRow(q.table, "observation").Scan(&got))
			require.Equal(t, obs.Description, got.String)
			for _, col := range []string{"value_quantity_value", "effective_datetime_precision", schemas.ColNamespace, schemas.ColResourceID} {
				require.NoError(t, db.QueryRow(q.column, "observation", col).Scan(&got), col)
				require.Equal(t, byName[col], got.String, col)
			}
			require.NoError(t, db.QueryRow(q.column, schemas.RawTable, "resource").Scan(&got))
			require.Contains(t, got.String, "lossless")
		})
	}
}

// Package e2e holds the end-to-end tests, which run the stages together
// (the bulktest server, the pipeline, the transform and every concrete
// sink), and the checks they and the command's crash tests share: a warehouse's raw landing and view tables compared with the
// bulktest server's ground truth, whatever engine holds them (DuckDB,
// PostgreSQL, or a Parquet lake read through DuckDB). The checks go through
// database/sql with SQL that DuckDB and PostgreSQL both accept, so one
// implementation proves every sink.
package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/transform"
)

// Truth is the server's current state, as bulktest.Server.Truth returns it.
type Truth = map[bulktest.Key]bulktest.TruthRow

// maxListed caps the keys listed in a failure message.
const maxListed = 15

// RequireMatchesTruth fails t unless db's fhir_resources equals truth
// exactly (every current resource once, at its version, lastUpdated and
// JSON; nothing deleted left) and every view table holds exactly the rows
// the views compute from the current resources (RequireViewsMatch).
func RequireMatchesTruth(t testing.TB, db *sql.DB, views []transform.View, truth Truth) {
	t.Helper()
	RequireNamespaceMatchesTruth(t, db, "", views, truth)
}

// RequireNamespaceMatchesTruth is RequireMatchesTruth for the rows of one
// namespace ("" for every row).
func RequireNamespaceMatchesTruth(t testing.TB, db *sql.DB, namespace string, views []transform.View, truth Truth) {
	t.Helper()
	requireRawMatches(t, db, namespace, truth)
	requireViewsMatch(t, db, namespace, views, truth)
}

// inNamespace is the WHERE clause that keeps the rows of namespace ("":
// every row), with $1 its parameter.
func inNamespace(namespace string) (string, []any) {
	if namespace == "" {
		return "", nil
	}
	return " WHERE " + schemas.ColNamespace + " = $1", []any{namespace}
}

// RequireRawMatches compares the raw landing with truth: same keys, no
// duplicate key, current version, lastUpdated and JSON.
func RequireRawMatches(t testing.TB, db *sql.DB, truth Truth) {
	t.Helper()
	requireRawMatches(t, db, "", truth)
}

func requireRawMatches(t testing.TB, db *sql.DB, namespace string, truth Truth) {
	t.Helper()
	ctx := context.Background()
	where, args := inNamespace(namespace)
	rows, err := db.QueryContext(ctx, `SELECT resource_type, id, coalesce(version_id, ''), last_updated, CAST(resource AS VARCHAR) FROM `+schemas.RawTable+where, args...)
	require.NoError(t, err)
	defer rows.Close()
	type stored struct {
		version string
		lu      sql.NullTime
		json    string
	}
	got := map[bulktest.Key]stored{}
	var dups []string
	for rows.Next() {
		var k bulktest.Key
		var s stored
		require.NoError(t, rows.Scan(&k.Type, &k.ID, &s.version, &s.lu, &s.json))
		if _, dup := got[k]; dup {
			dups = append(dups, k.Type+"/"+k.ID)
		}
		got[k] = s
	}
	require.NoError(t, rows.Err())
	var missing, extra, stale []string
	for k, want := range truth {
		g, ok := got[k]
		if !ok {
			missing = append(missing, k.Type+"/"+k.ID)
			continue
		}
		if g.version != want.VersionID || !g.lu.Valid || !g.lu.Time.Equal(want.LastUpdated) || !jsonEqual(t, g.json, want.JSON) {
			stale = append(stale, fmt.Sprintf("%s/%s (have v%s %s, want v%s %s)", k.Type, k.ID, g.version, g.lu.Time.UTC().Format(time.RFC3339Nano), want.VersionID, want.LastUpdated.UTC().Format(time.RFC3339Nano)))
		}
	}
	for k := range got {
		if _, ok := truth[k]; !ok {
			extra = append(extra, k.Type+"/"+k.ID)
		}
	}
	require.Empty(t, head(dups), "duplicate rows in %s", schemas.RawTable)
	require.Empty(t, head(missing), "%d resources missing from %s", len(missing), schemas.RawTable)
	require.Empty(t, head(extra), "%d resources in %s the server no longer has", len(extra), schemas.RawTable)
	require.Empty(t, head(stale), "%d resources not at their current version", len(stale))
	require.Len(t, got, len(truth))
}

func jsonEqual(t testing.TB, a string, b []byte) bool {
	var x, y any
	require.NoError(t, json.Unmarshal([]byte(a), &x))
	require.NoError(t, json.Unmarshal(b, &y))
	return reflect.DeepEqual(x, y)
}

func head(s []string) []string {
	sort.Strings(s)
	if len(s) > maxListed {
		return append(s[:maxListed:maxListed], fmt.Sprintf("... and %d more", len(s)-maxListed))
	}
	return s
}

// ViewRows maps a view table to its rows grouped by resource id; each row
// is its compared columns joined by "|" (see ComparedColumns), and each resource's
// rows are sorted, so equal maps mean equal tables.
type ViewRows map[string]map[string][]string

// ExpectedViews runs views over the current resources of truth, as the
// pipeline would over an export holding exactly them, and returns the rows
// every view table must hold. Arrow memory is checked for leaks.
func ExpectedViews(t testing.TB, views []transform.View, truth Truth) (ViewRows, []*schemas.Table) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	eng, err := transform.New(transform.Options{Views: views, BatchRows: 1000, Alloc: mem})
	require.NoError(t, err)
	var tables []*schemas.Table
	out := ViewRows{}
	for _, tb := range eng.Tables() {
		if tb.Kind == schemas.KindView {
			tables = append(tables, tb)
			out[tb.Name] = map[string][]string{}
		}
	}
	byType := map[string][]bulktest.Key{}
	for k := range truth {
		byType[k.Type] = append(byType[k.Type], k)
	}
	origin := transform.Origin{Source: "truth", ExportID: "truth", TransactionTime: "2000-01-01T00:00:00Z"}
	for i, typ := range slices.Sorted(maps.Keys(byType)) {
		var buf bytes.Buffer
		for _, k := range byType[typ] {
			buf.Write(truth[k].JSON)
			buf.WriteByte('\n')
		}
		emit := func(b schemas.Batch) error {
			defer b.Release()
			if b.Table.Kind != schemas.KindView {
				return nil
			}
			cols := ComparedColumns(b.Table)
			idx := make([]int, len(cols))
			for j, c := range cols {
				idx[j] = b.Rec.Schema().FieldIndices(c.Name)[0]
			}
			rid := b.Rec.Column(b.Rec.Schema().FieldIndices(schemas.ColResourceID)[0]).(*array.String)
			vals := make([]string, len(cols))
			for r := range int(b.Rec.NumRows()) {
				for j, ci := range idx {
					vals[j] = arrowCell(b.Rec.Column(ci), r)
				}
				id := rid.Value(r)
				out[b.Table.Name][id] = append(out[b.Table.Name][id], strings.Join(vals, "|"))
			}
			return nil
		}
		st, err := eng.Process(context.Background(), origin, transform.Input{Name: typ + ".ndjson", Kind: "output", Type: typ, Index: i}, &buf, emit)
		require.NoError(t, err)
		require.Zero(t, st.Rejects, "ground truth of %s has rejected lines", typ)
	}
	for _, m := range out {
		for _, rs := range m {
			sort.Strings(rs)
		}
	}
	return out, tables
}

// ComparedColumns are the columns of a view table the comparison reads:
// the resource id, every plain text column (no ansi/type tag, not JSON),
// whose values every engine stores verbatim, and every typed scalar
// column, read in a form every engine renders alike (see sqlCell).
func ComparedColumns(tb *schemas.Table) []arrow.Field {
	var cols []arrow.Field
	for _, f := range tb.Schema.Fields() { // not the stamped namespace and source
		if f.Name == schemas.ColSeq || schemas.IsJSON(f) {
			continue
		}
		if _, tagged := f.Metadata.GetValue("ansi/type"); tagged {
			continue
		}
		switch f.Type.ID() {
		case arrow.STRING, arrow.INT64, arrow.FLOAT64, arrow.BOOL, arrow.DATE32, arrow.TIMESTAMP:
			if f.Name == schemas.ColResourceID {
				cols = append([]arrow.Field{f}, cols...)
			} else {
				cols = append(cols, f)
			}
		}
	}
	return cols
}

// arrowCell renders row r of a ComparedColumns column as sqlCell reads it.
func arrowCell(a arrow.Array, r int) string {
	if a.IsNull(r) {
		return "NULL"
	}
	switch a := a.(type) {
	case *array.String:
		return a.Value(r)
	case *array.Int64:
		return strconv.FormatInt(a.Value(r), 10)
	case *array.Float64:
		return strconv.FormatInt(int64(math.Round(a.Value(r)*1e6)), 10)
	case *array.Boolean:
		return strconv.FormatBool(a.Value(r))
	case *array.Date32:
		return a.Value(r).FormattedString()
	case *array.Timestamp:
		return strconv.FormatInt(int64(a.Value(r)), 10) // microseconds
	}
	panic("arrowCell: type " + a.DataType().String())
}

// sqlCell is the portable SQL (DuckDB and PostgreSQL) that renders column
// f as arrowCell does: doubles in millionths, instants in epoch
// microseconds.
func sqlCell(f arrow.Field) string {
	switch f.Type.ID() {
	case arrow.FLOAT64:
		return fmt.Sprintf("CAST(CAST(ROUND(%s * 1000000) AS BIGINT) AS VARCHAR)", quote(f.Name))
	case arrow.TIMESTAMP:
		return fmt.Sprintf("CAST(CAST(ROUND(EXTRACT(EPOCH FROM %s) * 1000000) AS BIGINT) AS VARCHAR)", quote(f.Name))
	}
	return fmt.Sprintf("CAST(%s AS VARCHAR)", quote(f.Name))
}

// RequireViewsMatch fails t unless every view table in db holds exactly
// the rows ExpectedViews computes from truth: one group of rows per current
// resource of the view's type that yields rows, none for deleted or other
// resources, with equal text columns.
func RequireViewsMatch(t testing.TB, db *sql.DB, views []transform.View, truth Truth) {
	t.Helper()
	requireViewsMatch(t, db, "", views, truth)
}

func requireViewsMatch(t testing.TB, db *sql.DB, namespace string, views []transform.View, truth Truth) {
	t.Helper()
	want, tables := ExpectedViews(t, views, truth)
	require.NotEmpty(t, tables, "no view tables to compare")
	nonEmpty := 0
	for _, tb := range tables {
		got := readView(t, db, namespace, tb)
		exp := want[tb.Name]
		if len(exp) > 0 {
			nonEmpty++
		}
		var missing, extra, differ []string
		for id, rows := range exp {
			g, ok := got[id]
			switch {
			case !ok:
				missing = append(missing, id)
			case !slices.Equal(g, rows):
				differ = append(differ, fmt.Sprintf("%s: have %q, want %q", id, g, rows))
			}
		}
		for id := range got {
			if _, ok := exp[id]; !ok {
				extra = append(extra, id)
			}
		}
		require.Empty(t, head(missing), "view %s: resources with no rows", tb.Name)
		require.Empty(t, head(extra), "view %s: rows of resources that are not current", tb.Name)
		require.Empty(t, head(differ), "view %s: rows differ", tb.Name)
	}
	require.Positive(t, nonEmpty, "every view table is empty: nothing was compared")
}

// ReadView reads a view table's TextColumns grouped by resource id, each
// group sorted.
func ReadView(t testing.TB, db *sql.DB, tb *schemas.Table) map[string][]string {
	t.Helper()
	return readView(t, db, "", tb)
}

func readView(t testing.TB, db *sql.DB, namespace string, tb *schemas.Table) map[string][]string {
	t.Helper()
	cols := ComparedColumns(tb)
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = sqlCell(c)
	}
	where, args := inNamespace(namespace)
	rows, err := db.QueryContext(context.Background(), "SELECT "+strings.Join(sel, ", ")+" FROM "+quote(tb.Name)+where, args...)
	require.NoError(t, err, "read view %s", tb.Name)
	defer rows.Close()
	got := map[string][]string{}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	parts := make([]string, len(cols))
	for rows.Next() {
		require.NoError(t, rows.Scan(ptrs...))
		for i, v := range vals {
			if v.Valid {
				parts[i] = v.String
			} else {
				parts[i] = "NULL"
			}
		}
		id := parts[0]
		got[id] = append(got[id], strings.Join(parts, "|"))
	}
	require.NoError(t, rows.Err())
	for _, rs := range got {
		sort.Strings(rs)
	}
	return got
}

func quote(ident string) string { return `"` + strings.ReplaceAll(ident, `"`, `""`) + `"` }

// Checkpoint reads a source's stored checkpoint transactionTime through
// SQL, for warehouses written by another process.
func Checkpoint(t testing.TB, db *sql.DB, source string) string {
	t.Helper()
	var tt string
	err := db.QueryRowContext(context.Background(), `SELECT transaction_time FROM `+schemas.CheckTable+` WHERE source = $1`, source).Scan(&tt)
	require.NoError(t, err, "checkpoint of source %s", source)
	return tt
}

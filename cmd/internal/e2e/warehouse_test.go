package e2e_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/builtin"
)

// warehouse is an App with one sink of a kind, built from a config as the
// CLI builds it, and a way to read the sink back with SQL.
type warehouse struct {
	app  *pipeline.App
	kind string
	dir  string
}

// newWarehouse builds a one-sink App; extra is YAML appended at the top
// level of the config. postgres skips t when FHIRFERRY_TEST_POSTGRES is unset.
func newWarehouse(t *testing.T, kind, extra string) *warehouse {
	t.Helper()
	dir := t.TempDir()
	var sink string
	switch kind {
	case "duckdb":
		sink = "duckdb: {path: " + filepath.Join(dir, "w.duckdb") + "}"
	case "parquet":
		sink = "parquet: {dir: " + filepath.Join(dir, "lake") + "}"
	case "postgres":
		dsn, schema := e2e.PostgresSchema(t)
		sink = fmt.Sprintf("postgres: {dsn: %q, schema: %s}", dsn, schema)
	default:
		t.Fatalf("no sink kind %q", kind)
	}
	cfg, err := pipeline.ParseConfig(fmt.Appendf(nil, "data_dir: %s\nsinks:\n  - {name: wh, type: %s, %s}\n%s",
		filepath.Join(dir, "data"), kind, sink, extra))
	require.NoError(t, err)
	a, err := pipeline.Build(context.Background(), cfg, pipeline.Deps{Sinks: builtin.Factories()})
	require.NoError(t, err)
	t.Cleanup(a.Close)
	return &warehouse{app: a, kind: kind, dir: dir}
}

// rows runs q on the sink and returns each row's cells joined by "|".
func (w *warehouse) rows(t *testing.T, q string) []string {
	t.Helper()
	s, ok := w.app.Sink("wh")
	require.True(t, ok)
	r, err := s.(sinks.Querier).Query(t.Context(), q)
	require.NoError(t, err, q)
	return scanRows(t, r)
}

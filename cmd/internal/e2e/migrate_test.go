package e2e_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks/builtin"
)

// TestMigrateVersion1Warehouse: a warehouse written before namespaces
// (schema version 1: no namespace column, text view columns) is migrated
// on the first start of this build: each row gets the namespace of the
// source that wrote it, the migration log says that sources of two
// servers shared one key space, the views are rebuilt from the raw
// landing in the new shape, and a second start changes nothing.
func TestMigrateVersion1Warehouse(t *testing.T) {
	views := defaultViews(t)
	for _, kind := range []string{"duckdb", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			var sinkYAML string
			var open, openRW func(t *testing.T) *sql.DB
			asVersion1 := func(*testing.T) {}
			switch kind {
			case "duckdb":
				path := filepath.Join(dir, "w.duckdb")
				sinkYAML = "type: duckdb\n    duckdb: {path: " + path + "}"
				open = func(t *testing.T) *sql.DB { return e2e.OpenDuckDB(t, path) }
				// Version 1 had one file, written in place: the test
				// downgrades the writer's copy and makes it that file.
				openRW = func(t *testing.T) *sql.DB {
					db, err := sql.Open("duckdb", path+".writer")
					require.NoError(t, err)
					return db
				}
				asVersion1 = func(t *testing.T) { require.NoError(t, os.Rename(path+".writer", path)) }
			case "postgres":
				dsn, schema := e2e.PostgresSchema(t)
				sinkYAML = fmt.Sprintf("type: postgres\n    postgres: {dsn: %q, schema: %s}", dsn, schema)
				open = func(t *testing.T) *sql.DB { return e2e.OpenPostgres(t, dsn, schema) }
				openRW = open
			}
			cfg, err := pipeline.ParseConfig([]byte(fmt.Sprintf(`data_dir: %s
sources:
  - {name: ehr_a, base_url: "https://a.example/fhir"}
  - {name: ehr_b, base_url: "https://b.example/fhir", namespace: ehr_b}
sinks:
  - name: wh
    %s
`, filepath.Join(dir, "data"), sinkYAML)))
			require.NoError(t, err)
			truth := map[string]e2e.Truth{}
			var logs syncBuffer
			build := func() *pipeline.App {
				a, err := pipeline.Build(ctx, cfg, pipeline.Deps{Sinks: builtin.Factories(),
					Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
				require.NoError(t, err)
				return a
			}
			a := build()
			for i, src := range []string{"ehr_a", "ehr_b"} {
				srv, err := bulktest.NewServer(bulktest.Options{Patients: 4, Seed: int64(40 + i), PollsBeforeComplete: -1})
				require.NoError(t, err)
				t.Cleanup(srv.Close)
				data := t.TempDir()
				e2e.WriteExport(t, srv, data)
				ns, _ := cfg.Source(src)
				_, err = a.LoadDir(ctx, pipeline.LoadOptions{Dir: data, Source: src, Namespace: ns.NamespaceOf(),
					TransactionTime: "2025-01-01T00:00:00Z"})
				require.NoError(t, err)
				truth[ns.NamespaceOf()] = srv.Truth("system", "", nil)
			}
			a.Close()
			downgrade(t, kind, openRW(t))
			asVersion1(t)
			// Before namespaces, ehr_b's resources overwrote ehr_a's of the
			// same type and id (the servers' shared pools): they are lost.
			nsA, nsB := "https://a.example/fhir", "ehr_b"
			lost := 0
			for k := range truth[nsA] {
				if _, ok := truth[nsB][k]; ok {
					delete(truth[nsA], k)
					lost++
				}
			}
			require.Positive(t, lost, "the fixture has colliding ids")

			logs.Reset()
			a = build()
			a.Close()
			text := logs.String()
			require.Contains(t, text, "migrated the warehouse to a new table shape")
			require.Contains(t, text, "sources of 2 different servers shared one key space before namespaces")
			require.Contains(t, text, "rebuilt the views of the migrated warehouse")
			db := open(t)
			for ns, tr := range truth {
				e2e.RequireNamespaceMatchesTruth(t, db, ns, views, tr)
			}
			var version string
			require.NoError(t, db.QueryRow(`SELECT value FROM fhirferry_meta WHERE key = 'schema_version'`).Scan(&version))
			require.Equal(t, "2", version)
			require.NoError(t, db.Close())

			logs.Reset()
			build().Close()
			require.NotContains(t, logs.String(), "migrated", "a second start migrates nothing")
		})
	}
}

// downgrade turns a warehouse this build wrote into what version 1 wrote:
// no namespace anywhere, no view source, no schema version, the raw key
// (resource_type, id).
func downgrade(t *testing.T, kind string, db *sql.DB) {
	t.Helper()
	defer db.Close()
	rows, err := db.Query(`SELECT DISTINCT table_name FROM information_schema.columns WHERE column_name = '_resource_id'` +
		map[string]string{"postgres": " AND table_schema = current_schema()"}[kind])
	require.NoError(t, err)
	var stmts []string
	for rows.Next() {
		var v string
		require.NoError(t, rows.Scan(&v))
		stmts = append(stmts, fmt.Sprintf(`ALTER TABLE %q DROP COLUMN namespace`, v), fmt.Sprintf(`ALTER TABLE %q DROP COLUMN source`, v))
	}
	require.NoError(t, rows.Err())
	// Version 1 kept one row per (type, id): the later source's.
	stmts = append(stmts, `DELETE FROM fhir_resources WHERE source = 'ehr_a' AND (resource_type, id) IN
		(SELECT resource_type, id FROM fhir_resources WHERE source = 'ehr_b')`)
	if kind == "postgres" {
		stmts = append(stmts, `ALTER TABLE fhir_resources DROP CONSTRAINT fhir_resources_pkey`)
	}
	for _, tbl := range []string{"fhir_resources", "rejects", "operation_outcomes"} {
		stmts = append(stmts, `ALTER TABLE `+tbl+` DROP COLUMN namespace`)
	}
	if kind == "postgres" {
		stmts = append(stmts, `ALTER TABLE fhir_resources ADD PRIMARY KEY (resource_type, id)`)
	}
	stmts = append(stmts, `DROP TABLE fhirferry_meta`)
	for _, q := range stmts {
		_, err := db.Exec(q)
		require.NoError(t, err, q)
	}
}

package pipelinetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2" // the "duckdb" database/sql driver
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/sinks/parquet"
)

// PostgresEnv names the environment variable holding the test database's
// DSN; tests that need PostgreSQL skip when it is unset.
const PostgresEnv = "FHIRFERRY_TEST_POSTGRES"

// PostgresSchema returns the test DSN and a fresh random schema name,
// dropped (CASCADE) when t ends, so tests can run in parallel. It skips t
// when PostgresEnv is unset.
func PostgresSchema(t testing.TB) (dsn, schema string) {
	t.Helper()
	dsn = os.Getenv(PostgresEnv)
	if dsn == "" {
		t.Skip(PostgresEnv + " is not set")
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema = "ffe2e_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		require.NoError(t, err)
	})
	return dsn, schema
}

// OpenPostgres opens dsn with schema first on the search path, so the
// checks' unqualified table names resolve to the sink's tables. The caller
// closes it.
func OpenPostgres(t testing.TB, dsn, schema string) *sql.DB {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	cfg.RuntimeParams["search_path"] = schema
	return stdlib.OpenDB(*cfg)
}

// OpenDuckDB opens a DuckDB file read-only (no other process may hold it
// for writing meanwhile). The caller closes it.
func OpenDuckDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	_, err := os.Stat(path)
	require.NoError(t, err, "DuckDB file")
	db, err := sql.Open("duckdb", path+"?access_mode=READ_ONLY")
	require.NoError(t, err)
	db.SetMaxOpenConns(1)
	require.NoError(t, db.Ping())
	return db
}

// OpenLake opens an in-memory DuckDB with one view per table of the lake
// over exactly its live files (the lake's own views.sql), as an analyst
// reads it. The caller closes it; reopen after each commit.
func OpenLake(t testing.TB, lake *parquet.Sink) *sql.DB {
	t.Helper()
	var script bytes.Buffer
	require.NoError(t, lake.WriteDuckDBViews(&script))
	db, err := sql.Open("duckdb", "")
	require.NoError(t, err)
	db.SetMaxOpenConns(1) // the views live in this one connection's database
	_, err = db.Exec(script.String())
	require.NoError(t, err, "views.sql:\n%s", script.String())
	return db
}

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
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
// closes it (or leaves it to the end of t).
func OpenPostgres(t testing.TB, dsn, schema string) *sql.DB {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	cfg.RuntimeParams["search_path"] = schema
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// OpenDuckDB opens a DuckDB file read-only (no other process may hold it
// for writing meanwhile). The caller closes it (or leaves it to the end of t).
func OpenDuckDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	_, err := os.Stat(path)
	require.NoError(t, err, "DuckDB file")
	db, err := sql.Open("duckdb", path+"?access_mode=READ_ONLY")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
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
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(1) // the views live in this one connection's database
	_, err = db.Exec(script.String())
	require.NoError(t, err, "views.sql:\n%s", script.String())
	return db
}

// lakeJSON is the part of a lake's _lake.json the checks read.
type lakeJSON struct {
	Checkpoints map[string]struct {
		TransactionTime string `json:"transaction_time"`
	} `json:"checkpoints"`
	Tables map[string]struct {
		Files []struct {
			Path string `json:"path"`
		} `json:"files"`
	} `json:"tables"`
}

func readLakeJSON(t testing.TB, dir string) (*lakeJSON, bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "_lake.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false
	}
	require.NoError(t, err)
	var m lakeJSON
	require.NoError(t, json.Unmarshal(b, &m), "_lake.json")
	return &m, true
}

// OpenLakeDir reads a lake another process writes, from its files alone:
// an in-memory DuckDB running the lake's views.sql. It returns nil when
// the lake has published nothing yet. The caller closes it (or leaves it to the end of t).
func OpenLakeDir(t testing.TB, dir string) *sql.DB {
	t.Helper()
	script, err := os.ReadFile(filepath.Join(dir, "views.sql"))
	if errors.Is(err, os.ErrNotExist) {
		_, ok := readLakeJSON(t, dir)
		require.False(t, ok, "the lake has _lake.json but no views.sql")
		return nil
	}
	require.NoError(t, err)
	db, err := sql.Open("duckdb", "")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(1)
	_, err = db.Exec(string(script))
	require.NoError(t, err, "views.sql:\n%s", script)
	return db
}

// LakeCheckpoint returns a source's checkpoint transactionTime from a
// lake's _lake.json ("" when there is none).
func LakeCheckpoint(t testing.TB, dir, source string) string {
	t.Helper()
	m, ok := readLakeJSON(t, dir)
	if !ok {
		return ""
	}
	return m.Checkpoints[source].TransactionTime
}

// LakeGarbage lists the files under dir that _lake.json does not list
// (besides _lake.json and views.sql): what an unfinished run left.
func LakeGarbage(t testing.TB, dir string) []string {
	t.Helper()
	m, ok := readLakeJSON(t, dir)
	live := map[string]bool{"_lake.json": true, "views.sql": true}
	if ok {
		for _, tb := range m.Tables {
			for _, f := range tb.Files {
				live[filepath.ToSlash(f.Path)] = true
			}
		}
	}
	var garbage []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if !live[filepath.ToSlash(rel)] {
			garbage = append(garbage, rel)
		}
		return nil
	})
	require.NoError(t, err)
	return garbage
}

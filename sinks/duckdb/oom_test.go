package duckdb

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"
)

func TestOutOfMemoryNamesWhatDuckDBHeld(t *testing.T) {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	// A table held in memory with spilling off, and a limit below what it
	// holds: DuckDB refuses with its own out-of-memory error.
	if _, err := db.ExecContext(ctx, `CREATE TABLE big (s VARCHAR)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO big SELECT repeat('x', 100) || i FROM range(200000) t(i)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `SET temp_directory = ''`); err != nil {
		t.Fatal(err)
	}
	_, err = db.ExecContext(ctx, `SET memory_limit = '8MB'`)
	if err == nil || !strings.Contains(err.Error(), "Out of Memory") {
		t.Fatalf("want DuckDB's out-of-memory error, got %v", err)
	}
	got := withMemory(ctx, db, err)
	if !errors.Is(got, err) {
		t.Fatalf("the original error is not wrapped: %v", got)
	}
	if !strings.Contains(got.Error(), "DuckDB memory by tag:") || !strings.Contains(got.Error(), "MiB") {
		t.Fatalf("no breakdown in %q", got)
	}

	other := errors.New("constraint violated")
	if got := withMemory(ctx, db, other); got.Error() != other.Error() {
		t.Fatal("an error that is not out-of-memory must pass unchanged")
	}
}

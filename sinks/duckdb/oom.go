package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// withMemory adds what DuckDB held, by tag, to an out-of-memory error, so
// that an operator (and we) can tell a query that needs more memory from
// one that held what it could not spill. The breakdown is read on a fresh
// connection: the failed statement's transaction is aborted.
func withMemory(ctx context.Context, db *sql.DB, err error) error {
	if err == nil || !strings.Contains(err.Error(), "Out of Memory") {
		return err
	}
	rows, qerr := db.QueryContext(context.WithoutCancel(ctx), `SELECT tag, memory_usage_bytes, temporary_storage_bytes
		FROM duckdb_memory() WHERE memory_usage_bytes > 0 OR temporary_storage_bytes > 0 ORDER BY memory_usage_bytes DESC`)
	if qerr != nil {
		return err
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var tag string
		var mem, tmp int64
		if rows.Scan(&tag, &mem, &tmp) != nil {
			return err
		}
		fmt.Fprintf(&b, " %s=%s", strings.ToLower(tag), mib(mem))
		if tmp > 0 {
			fmt.Fprintf(&b, "(+%s spilled)", mib(tmp))
		}
	}
	if rows.Err() != nil || b.Len() == 0 {
		return err
	}
	return fmt.Errorf("%w (DuckDB memory by tag:%s)", err, b.String())
}

func mib(n int64) string { return fmt.Sprintf("%.0fMiB", float64(n)/(1<<20)) }

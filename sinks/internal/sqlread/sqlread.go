// Package sqlread reads a sink's tables back through database/sql: the row
// counts, the raw landing's resource types and the view_definitions table
// that `fhirferry views rebuild` needs. The SQL is what DuckDB and
// PostgreSQL both accept, so the DuckDB file, PostgreSQL and the Parquet
// lake (read through an in-memory DuckDB) share one implementation.
package sqlread

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

// Reader reads one sink's tables.
type Reader struct {
	DB *sql.DB
	// Rel returns the FROM expression of a table, or false when the sink
	// has no such table.
	Rel func(ctx context.Context, table string) (string, bool, error)
}

// Ident quotes an SQL identifier.
func Ident(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// Rows counts a table's rows: 0 when it does not exist.
func (r Reader) Rows(ctx context.Context, table string) (int64, error) {
	rel, ok, err := r.Rel(ctx, table)
	if err != nil || !ok {
		return 0, err
	}
	var n int64
	if err := r.DB.QueryRowContext(ctx, "SELECT count(*) FROM "+rel).Scan(&n); err != nil {
		return 0, fmt.Errorf("count rows of %s: %w", table, err)
	}
	return n, nil
}

// HasResources reports whether the raw landing holds a resource of typ.
func (r Reader) HasResources(ctx context.Context, typ string) (bool, error) {
	rel, ok, err := r.Rel(ctx, schemas.RawTable)
	if err != nil || !ok {
		return false, err
	}
	var yes bool
	err = r.DB.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM "+rel+" WHERE resource_type = $1)", typ).Scan(&yes)
	return yes, err
}

// ViewDefinitions reads the view_definitions table by view name.
func (r Reader) ViewDefinitions(ctx context.Context) (map[string]sinks.StoredView, error) {
	out := map[string]sinks.StoredView{}
	rel, ok, err := r.Rel(ctx, schemas.ViewDefsTable)
	if err != nil || !ok {
		return out, err
	}
	rows, err := r.DB.QueryContext(ctx, "SELECT name, resource_type, definition_hash, updated_at FROM "+rel)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		var sv sinks.StoredView
		if err := rows.Scan(&n, &sv.ResourceType, &sv.Hash, &sv.UpdatedAt); err != nil {
			return nil, err
		}
		out[n] = sv
	}
	return out, rows.Err()
}

// Tables lists the named tables with their row counts, skipping those the
// sink does not hold.
func (r Reader) Tables(ctx context.Context, names []string) ([]sinks.TableInfo, error) {
	var out []sinks.TableInfo
	for _, n := range names {
		_, ok, err := r.Rel(ctx, n)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		rows, err := r.Rows(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, sinks.TableInfo{Name: n, Rows: rows})
	}
	return out, nil
}

// Reads gives a sink the reads of sinks.Rebuilder (Rows, HasResources,
// ViewDefinitions) when embedded with its Reader set.
type Reads struct {
	// Reader opens (or returns) the sink's Reader.
	Reader func() (Reader, error)
}

// Rows implements sinks.Rebuilder.
func (r Reads) Rows(ctx context.Context, table string) (int64, error) {
	rd, err := r.Reader()
	if err != nil {
		return 0, err
	}
	return rd.Rows(ctx, table)
}

// HasResources implements sinks.Rebuilder.
func (r Reads) HasResources(ctx context.Context, resourceType string) (bool, error) {
	rd, err := r.Reader()
	if err != nil {
		return false, err
	}
	return rd.HasResources(ctx, resourceType)
}

// ViewDefinitions implements sinks.Rebuilder.
func (r Reads) ViewDefinitions(ctx context.Context) (map[string]sinks.StoredView, error) {
	rd, err := r.Reader()
	if err != nil {
		return nil, err
	}
	return rd.ViewDefinitions(ctx)
}

// TablesListed is Tables of the table names query lists (one text column).
func (r Reader) TablesListed(ctx context.Context, query string, args ...any) ([]sinks.TableInfo, error) {
	rows, err := r.DB.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close() // before counting: a reader may have one connection
	return r.Tables(ctx, names)
}

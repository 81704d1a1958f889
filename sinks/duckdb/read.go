package duckdb

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/sqlread"
)

var (
	_ sinks.Rebuilder = (*Sink)(nil)
	_ sinks.Querier   = (*Sink)(nil)
)

func (s *Sink) reader() sqlread.Reader {
	return sqlread.Reader{DB: s.db, Rel: func(ctx context.Context, table string) (string, bool, error) {
		cols, err := existingColumns(ctx, s.db, table)
		return quote(table), cols != nil, err
	}}
}

// Rows implements sinks.Rebuilder.
func (s *Sink) Rows(ctx context.Context, table string) (int64, error) {
	return s.reader().Rows(ctx, table)
}

// HasResources implements sinks.Rebuilder.
func (s *Sink) HasResources(ctx context.Context, resourceType string) (bool, error) {
	return s.reader().HasResources(ctx, resourceType)
}

// ViewDefinitions implements sinks.Rebuilder.
func (s *Sink) ViewDefinitions(ctx context.Context) (map[string]sinks.StoredView, error) {
	return s.reader().ViewDefinitions(ctx)
}

// Query implements sinks.Querier on the warehouse file.
func (s *Sink) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return s.db.QueryContext(ctx, query, args...)
}

// Tables implements sinks.Querier: the tables of the main schema with
// their row counts, by name.
func (s *Sink) Tables(ctx context.Context) ([]sinks.TableInfo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT table_name FROM duckdb_tables()
		WHERE database_name = current_database() AND schema_name = 'main' AND NOT temporary ORDER BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("duckdb sink %s: list tables: %w", s.name, err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out, err := s.reader().Tables(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("duckdb sink %s: %w", s.name, err)
	}
	return out, nil
}

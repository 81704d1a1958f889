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

func (s *Sink) reader() (sqlread.Reader, error) {
	return sqlread.Reader{DB: s.db, Rel: func(ctx context.Context, table string) (string, bool, error) {
		cols, err := existingColumns(ctx, s.db, table)
		return quote(table), cols != nil, err
	}}, nil
}

// Query implements sinks.Querier on the warehouse file.
func (s *Sink) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return s.db.QueryContext(ctx, query, args...)
}

// Tables implements sinks.Querier: the tables of the main schema with
// their row counts, by name.
func (s *Sink) Tables(ctx context.Context) ([]sinks.TableInfo, error) {
	rd, _ := s.reader()
	out, err := rd.TablesListed(ctx, `SELECT table_name FROM duckdb_tables()
		WHERE database_name = current_database() AND schema_name = 'main' AND NOT temporary ORDER BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("duckdb sink %s: %w", s.name, err)
	}
	return out, nil
}

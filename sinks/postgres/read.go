package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/sqlread"
)

var _ sinks.Querier = (*Sink)(nil)

// sqlDB is database/sql over the sink's pool, opened on first use and
// closed with the sink.
type sqlDB struct {
	once sync.Once
	db   *sql.DB
}

func (s *Sink) sqlDB() *sql.DB {
	s.sql.once.Do(func() { s.sql.db = stdlib.OpenDBFromPool(s.pool) })
	return s.sql.db
}

func (s *Sink) reader() (sqlread.Reader, error) {
	db := s.sqlDB()
	return sqlread.Reader{DB: db, Rel: func(ctx context.Context, table string) (string, bool, error) {
		var n int
		err := db.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.tables
			WHERE table_schema = $1 AND table_name = $2`, s.schema, table).Scan(&n)
		return s.ident(table), n > 0, err
	}}, nil
}

// Query implements sinks.Querier. Unqualified names resolve to the sink's
// schema first (the pool's search_path).
func (s *Sink) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return s.sqlDB().QueryContext(ctx, query, args...)
}

// Tables implements sinks.Querier: the schema's tables with their row
// counts, by name.
func (s *Sink) Tables(ctx context.Context) ([]sinks.TableInfo, error) {
	rd, _ := s.reader()
	out, err := rd.TablesListed(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY table_name`, s.schema)
	if err != nil {
		return nil, fmt.Errorf("postgres sink %s: %w", s.name, err)
	}
	return out, nil
}

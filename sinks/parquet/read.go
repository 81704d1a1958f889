package parquet

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"

	_ "github.com/duckdb/duckdb-go/v2" // the "duckdb" driver reads the lake's files

	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/sqlread"
)

// reader reads the published files of the lake through an in-memory
// DuckDB, opened on first use and closed with the sink.
func (s *Sink) reader() (sqlread.Reader, error) {
	db, err := s.duckDB()
	if err != nil {
		return sqlread.Reader{}, err
	}
	return sqlread.Reader{DB: db, Rel: func(_ context.Context, table string) (string, bool, error) {
		files := s.LiveFiles(table)
		if len(files) == 0 {
			return "", false, nil
		}
		q := make([]string, len(files))
		for i, f := range files {
			q[i] = quoteString(f)
		}
		return "read_parquet([" + strings.Join(q, ", ") + "])", true, nil
	}}, nil
}

// duckDB is the in-memory DuckDB that reads the lake, opened on first use.
func (s *Sink) duckDB() (*sql.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.duck == nil {
		db, err := sql.Open("duckdb", "")
		if err != nil {
			return nil, fmt.Errorf("parquet sink %s: open DuckDB to read the lake: %w", s.name, err)
		}
		// One connection: the views Query creates live in its database.
		db.SetMaxOpenConns(1)
		s.duck = db
	}
	return s.duck, nil
}

var _ sinks.Querier = (*Sink)(nil)

// Query implements sinks.Querier in DuckDB's dialect, over one view per
// table of the lake's currently published files (views.sql).
func (s *Sink) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	db, err := s.duckDB()
	if err != nil {
		return nil, err
	}
	var script strings.Builder
	if err := s.WriteDuckDBViews(&script); err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, script.String()); err != nil {
		return nil, fmt.Errorf("parquet sink %s: views over the lake: %w", s.name, err)
	}
	return db.QueryContext(ctx, query, args...)
}

// Tables implements sinks.Querier: the lake's tables with the rows of
// their live files, by name.
func (s *Sink) Tables(ctx context.Context) ([]sinks.TableInfo, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	names := slices.Sorted(maps.Keys(s.meta.Tables))
	s.mu.Unlock()
	var out []sinks.TableInfo
	for _, n := range names {
		rows, err := r.Rows(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("parquet sink %s: %w", s.name, err)
		}
		out = append(out, sinks.TableInfo{Name: n, Rows: rows})
	}
	return out, nil
}

package duckdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/migrate"
)

var _ sinks.Migrator = (*Sink)(nil)

// metaTable holds the warehouse's schema version (key schema_version).
const metaTable = "fhirferry_meta"

// Migrate implements sinks.Migrator. A warehouse of version 1 (no
// namespace column) gets the namespace of each row's source on its raw,
// rejects and outcomes rows, and loses its view tables, which the pipeline
// rebuilds from the raw landing with the current views (typed columns, the
// stamped namespace and source). It runs in one transaction.
func (s *Sink) Migrate(ctx context.Context, m sinks.Migration) (rep sinks.MigrationReport, err error) {
	if err := s.acquire(ctx); err != nil {
		return rep, err
	}
	defer s.release()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return rep, fmt.Errorf("duckdb sink %s: migrate: %w", s.name, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("duckdb sink %s: migrate: %w", s.name, err), ignoreDone(tx.Rollback()))
		}
	}()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+quote(metaTable)+` (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)`); err != nil {
		return rep, err
	}
	if rep.From, err = s.schemaVersion(ctx, tx); err != nil {
		return rep, err
	}
	rep.To = sinks.SchemaVersion
	if rep.From < sinks.SchemaVersion {
		if err := s.migrateV1(ctx, tx, m, &rep); err != nil {
			return rep, err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+quote(metaTable)+` VALUES ('schema_version', ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, strconv.Itoa(sinks.SchemaVersion)); err != nil {
		return rep, err
	}
	if err := tx.Commit(); err != nil {
		return rep, err
	}
	s.dirty.Store(true)
	return rep, nil
}

// schemaVersion is the recorded version; a warehouse with a raw table and
// no record is version 1, an empty one the current version.
func (s *Sink) schemaVersion(ctx context.Context, tx *sql.Tx) (int, error) {
	var v string
	err := tx.QueryRowContext(ctx, `SELECT value FROM `+quote(metaTable)+` WHERE key = 'schema_version'`).Scan(&v)
	if err == nil {
		return strconv.Atoi(v)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	cols, err := existingColumns(ctx, tx, schemas.RawTable)
	if err != nil || cols == nil {
		return sinks.SchemaVersion, err
	}
	if cols[schemas.ColNamespace] {
		return sinks.SchemaVersion, nil
	}
	return 1, nil
}

// migrateV1 adds the namespace to the tables that have a source column
// and drops the view tables (and their recorded definitions).
func (s *Sink) migrateV1(ctx context.Context, tx *sql.Tx, m sinks.Migration, rep *sinks.MigrationReport) error {
	var sources []string
	for _, table := range []string{schemas.RawTable, schemas.RejectsTable, schemas.OutcomesTable} {
		cols, err := existingColumns(ctx, tx, table)
		if err != nil {
			return err
		}
		if cols == nil || cols[schemas.ColNamespace] {
			continue
		}
		found, err := distinct(ctx, tx, `SELECT DISTINCT source FROM `+quote(table))
		if err != nil {
			return err
		}
		if table == schemas.RawTable {
			sources = found
		}
		T := quote(table)
		// The column stays nullable: DuckDB cannot add NOT NULL in the
		// transaction that filled it, and every row has a value.
		for _, q := range []string{
			`ALTER TABLE ` + T + ` ADD COLUMN namespace VARCHAR`,
			`UPDATE ` + T + ` SET namespace = ` + migrate.NamespaceCase(m, found, lit),
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
		}
	}
	rep.Collisions = migrate.Collisions(m, sources)
	views, err := distinct(ctx, tx, `SELECT DISTINCT table_name FROM duckdb_columns()
		WHERE database_name = current_database() AND schema_name = 'main' AND column_name = ?`, schemas.ColResourceID)
	if err != nil {
		return err
	}
	for _, v := range append(views, schemas.ViewDefsTable) {
		if _, err := tx.ExecContext(ctx, `DROP TABLE IF EXISTS `+quote(v)); err != nil {
			return err
		}
	}
	rep.RebuildViews = true
	return nil
}

// distinct returns the one-column result of q.
func distinct(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

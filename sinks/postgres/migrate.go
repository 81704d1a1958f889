package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/migrate"
)

var _ sinks.Migrator = (*Sink)(nil)

// metaTable holds the schema's version (key schema_version).
const metaTable = "fhirferry_meta"

// Migrate implements sinks.Migrator: a schema of version 1 (no namespace
// column) gets each row's namespace from its source on the raw, rejects
// and outcomes tables, the raw landing's key becomes (namespace,
// resource_type, id), and the view tables are dropped for the pipeline to
// rebuild. It runs in one transaction, under the same lock as Prepare.
func (s *Sink) Migrate(ctx context.Context, m sinks.Migration) (rep sinks.MigrationReport, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return rep, fmt.Errorf("postgres sink %s: migrate: %w", s.name, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("postgres sink %s: migrate: %w", s.name, err), tx.Rollback(context.WithoutCancel(ctx)))
		}
	}()
	// The lock Prepare takes: two processes must not migrate at once.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "fhirferry/prepare/"+s.schema); err != nil {
		return rep, err
	}
	if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{s.schema}.Sanitize()); err != nil {
		return rep, err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.ident(metaTable)+` (key text PRIMARY KEY, value text NOT NULL)`); err != nil {
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
	if _, err := tx.Exec(ctx, `INSERT INTO `+s.ident(metaTable)+` VALUES ('schema_version', $1)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, strconv.Itoa(sinks.SchemaVersion)); err != nil {
		return rep, err
	}
	return rep, tx.Commit(ctx)
}

func (s *Sink) columns(ctx context.Context, tx pgx.Tx, table string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT column_name FROM information_schema.columns WHERE table_schema=$1 AND table_name=$2`, s.schema, table)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (s *Sink) schemaVersion(ctx context.Context, tx pgx.Tx) (int, error) {
	var v string
	err := tx.QueryRow(ctx, `SELECT value FROM `+s.ident(metaTable)+` WHERE key = 'schema_version'`).Scan(&v)
	if err == nil {
		return strconv.Atoi(v)
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, err
	}
	cols, err := s.columns(ctx, tx, schemas.RawTable)
	if err != nil || len(cols) == 0 {
		return sinks.SchemaVersion, err
	}
	if slices.Contains(cols, schemas.ColNamespace) {
		return sinks.SchemaVersion, nil
	}
	return 1, nil
}

func (s *Sink) migrateV1(ctx context.Context, tx pgx.Tx, m sinks.Migration, rep *sinks.MigrationReport) error {
	var rawSources []string
	for _, table := range []string{schemas.RawTable, schemas.RejectsTable, schemas.OutcomesTable} {
		cols, err := s.columns(ctx, tx, table)
		if err != nil {
			return err
		}
		if len(cols) == 0 || slices.Contains(cols, schemas.ColNamespace) {
			continue
		}
		rows, err := tx.Query(ctx, `SELECT DISTINCT source FROM `+s.ident(table))
		if err != nil {
			return err
		}
		sources, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if table == schemas.RawTable {
			rawSources = sources
		}
		T := s.ident(table)
		for _, q := range []string{
			`ALTER TABLE ` + T + ` ADD COLUMN namespace text`,
			`UPDATE ` + T + ` SET namespace = ` + migrate.NamespaceCase(m, sources, quoteLiteral),
			`ALTER TABLE ` + T + ` ALTER COLUMN namespace SET NOT NULL`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
		}
	}
	if len(rawSources) > 0 {
		var pk string
		if err := tx.QueryRow(ctx, `SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'`,
			s.ident(schemas.RawTable)).Scan(&pk); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		R := s.ident(schemas.RawTable)
		if pk != "" {
			if _, err := tx.Exec(ctx, `ALTER TABLE `+R+` DROP CONSTRAINT `+pgx.Identifier{pk}.Sanitize()); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `ALTER TABLE `+R+` ADD PRIMARY KEY (namespace, resource_type, id)`); err != nil {
			return err
		}
	}
	rep.Collisions = migrate.Collisions(m, rawSources)
	rows, err := tx.Query(ctx, `SELECT DISTINCT table_name FROM information_schema.columns
		WHERE table_schema = $1 AND column_name = $2`, s.schema, schemas.ColResourceID)
	if err != nil {
		return err
	}
	views, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, v := range append(views, schemas.ViewDefsTable) {
		if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+s.ident(v)); err != nil {
			return err
		}
	}
	rep.RebuildViews = true
	return nil
}

package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/prepared"
	"github.com/fhirferry/fhirferry/sinks/internal/sqlread"
)

// tempBuffers is the session's temp_buffers unless the DSN sets it.
const tempBuffers = "64MB"

// Sink is the PostgreSQL warehouse. It serves one Txn at a time.
type Sink struct {
	// Reads reads the tables back for views rebuild (reader).
	sqlread.Reads
	name   string
	schema string
	pool   *pgxpool.Pool
	sql    sqlDB
	log    *slog.Logger

	tables prepared.Tables
	mu     sync.Mutex
	open   map[*Txn]bool // runs not yet ended, rolled back by Close
}

var _ sinks.Sink = (*Sink)(nil)

// Open is the sinks.Factory of type postgres.
func Open(ctx context.Context, cfg configs.Sink, env sinks.Env) (sinks.Sink, error) {
	return New(ctx, cfg.Postgres, env)
}

// New connects to the DSN and works in cfg.Schema (configs sets its default).
func New(ctx context.Context, cfg configs.PostgresSink, env sinks.Env) (*Sink, error) {
	name, log := env.Name, env.Log()
	if cfg.DSN == "" {
		return nil, fmt.Errorf("postgres sink %s: dsn is required", name)
	}
	if cfg.Schema == "" {
		return nil, fmt.Errorf("postgres sink %s: schema is required", name)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// The DSN may carry a password: do not echo it.
		return nil, fmt.Errorf("postgres sink %s: dsn does not parse", name)
	}
	if _, ok := pcfg.ConnConfig.RuntimeParams["search_path"]; !ok {
		// Analysts' queries (Query) name tables unqualified.
		pcfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{cfg.Schema}.Sanitize() + ", public"
	}
	if _, ok := pcfg.ConnConfig.RuntimeParams["temp_buffers"]; !ok {
		// Staging tables live in temp buffers; the default 8MB spills a
		// run's staging to disk early.
		pcfg.ConnConfig.RuntimeParams["temp_buffers"] = tempBuffers
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres sink %s: %w", name, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres sink %s: connect: %w", name, err)
	}
	s := &Sink{name: name, schema: cfg.Schema, pool: pool, log: log, open: map[*Txn]bool{}}
	s.Reads = sqlread.Reads{Reader: s.reader}
	return s, nil
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Close implements sinks.Sink. A run still open is rolled back first:
// the pool would otherwise wait for its connection forever.
func (s *Sink) Close() error {
	s.mu.Lock()
	open := make([]*Txn, 0, len(s.open))
	for t := range s.open {
		open = append(open, t)
	}
	s.mu.Unlock()
	for _, t := range open {
		_ = t.Rollback(context.Background())
	}
	var err error
	if s.sql.db != nil {
		err = s.sql.db.Close()
	}
	s.pool.Close()
	return err
}

// ident is a schema-qualified, quoted table name.
func (s *Sink) ident(table string) string { return pgx.Identifier{s.schema, table}.Sanitize() }

func tableColumns(t *schemas.Table, stored bool) ([]column, error) {
	fields := t.Schema.Fields()
	if stored {
		fields = t.StoredFields()
	}
	cols := make([]column, 0, len(fields))
	for _, f := range fields {
		c, err := columnFor(f)
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", t.Name, err)
		}
		cols = append(cols, c)
	}
	return cols, nil
}

const metaDDL = `
CREATE TABLE IF NOT EXISTS %[1]s (
	run_id text PRIMARY KEY, source text NOT NULL, export_id text NOT NULL, since text,
	transaction_time text NOT NULL, started_at timestamptz, finished_at timestamptz,
	outcome text NOT NULL, files bigint, bytes bigint, resources bigint, deleted bigint,
	rejects bigint, outcomes bigint);
ALTER TABLE %[1]s ADD COLUMN IF NOT EXISTS membership text;
ALTER TABLE %[1]s ADD COLUMN IF NOT EXISTS purged bigint;
CREATE TABLE IF NOT EXISTS %[2]s (
	source text PRIMARY KEY, transaction_time text NOT NULL, export_id text NOT NULL,
	committed_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS %[3]s (
	namespace text NOT NULL, source text NOT NULL, group_id text NOT NULL, patient_id text NOT NULL,
	joined_at timestamptz NOT NULL, left_at timestamptz, joined_run text NOT NULL, left_run text);
CREATE UNIQUE INDEX IF NOT EXISTS group_member_open ON %[3]s (namespace, source, group_id, patient_id)
	WHERE left_at IS NULL;
CREATE OR REPLACE VIEW %[4]s AS SELECT namespace, source, group_id, patient_id, joined_at, joined_run
	FROM %[3]s WHERE left_at IS NULL;`

// Prepare implements sinks.Sink: it creates the schema, the metadata
// tables and every table given, adds columns a view gained (never dropping
// one), and indexes the resource keys.
func (s *Sink) Prepare(ctx context.Context, tables []*schemas.Table) error {
	all := append(schemas.System(), tables...)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres sink %s: prepare: %w", s.name, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// Two processes preparing the same schema would race on CREATE.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "fhirferry/prepare/"+s.schema); err != nil {
		return fmt.Errorf("postgres sink %s: prepare: %w", s.name, err)
	}
	if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{s.schema}.Sanitize()); err != nil {
		return fmt.Errorf("postgres sink %s: create schema %s: %w", s.name, s.schema, err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(metaDDL, s.ident(schemas.RunsTable), s.ident(schemas.CheckTable),
		s.ident(schemas.GroupMemberTable), s.ident(schemas.CurrentMemberView))); err != nil {
		return fmt.Errorf("postgres sink %s: metadata tables: %w", s.name, err)
	}
	seen := map[string]*schemas.Table{}
	for _, t := range all {
		if prev, ok := seen[t.Name]; ok && prev != t {
			return fmt.Errorf("postgres sink %s: table %s is defined twice", s.name, t.Name)
		}
		seen[t.Name] = t
		if t.Kind == schemas.KindDeleted {
			continue
		}
		if err := s.createTable(ctx, tx, t); err != nil {
			return fmt.Errorf("postgres sink %s: %w", s.name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres sink %s: prepare: %w", s.name, err)
	}
	for _, t := range seen {
		s.tables.Put(t)
	}
	return nil
}

// createTable creates t if missing, adds missing columns, and creates its index.
func (s *Sink) createTable(ctx context.Context, tx pgx.Tx, t *schemas.Table) error {
	cols, err := tableColumns(t, true)
	if err != nil {
		return err
	}
	for _, c := range cols {
		if c.store != c.stage {
			// Let PostgreSQL validate the hinted type before it reaches DDL.
			if _, err := tx.Exec(ctx, "SELECT NULL::"+c.store); err != nil {
				return fmt.Errorf("table %s column %q: ansi/type %q is not a PostgreSQL type: %w", t.Name, c.name, c.store, err)
			}
		}
	}
	defs := make([]string, 0, len(cols)+1)
	for _, c := range cols {
		d := c.quoted() + " " + c.store
		if !c.null {
			d += " NOT NULL"
		}
		defs = append(defs, d)
	}
	if t.Kind == schemas.KindRaw {
		defs = append(defs, "PRIMARY KEY (namespace, resource_type, id)")
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s)", s.ident(t.Name), strings.Join(defs, ", "))); err != nil {
		return fmt.Errorf("create table %s: %w", t.Name, err)
	}
	if t.Kind == schemas.KindRaw {
		// Large JSON is TOASTed; lz4 compresses several times faster than pglz.
		if _, err := tx.Exec(ctx, "SAVEPOINT lz4"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN resource SET COMPRESSION lz4", s.ident(t.Name))); err != nil {
			if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT lz4"); err != nil {
				return err
			}
		}
	}
	rows, err := tx.Query(ctx, `SELECT column_name FROM information_schema.columns WHERE table_schema=$1 AND table_name=$2`, s.schema, t.Name)
	if err != nil {
		return err
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, c := range cols {
		if slices.Contains(have, c.name) {
			continue
		}
		// New columns are nullable: existing rows have no value for them.
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", s.ident(t.Name), c.quoted(), c.store)); err != nil {
			return fmt.Errorf("table %s: add column %q: %w", t.Name, c.name, err)
		}
		s.log.Info("added column", "table", t.Name, "column", c.name)
	}
	if t.Kind == schemas.KindView {
		idx := pgx.Identifier{t.Name + "__ns_resource_id"}.Sanitize()
		if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (namespace, %s)", idx, s.ident(t.Name), pgx.Identifier{schemas.ColResourceID}.Sanitize())); err != nil {
			return fmt.Errorf("index %s: %w", t.Name, err)
		}
	}
	// One round trip describes the table and its columns (\d+ and any
	// catalog browser show them).
	var q strings.Builder
	if t.Description != "" {
		fmt.Fprintf(&q, "COMMENT ON TABLE %s IS %s;\n", s.ident(t.Name), quoteLiteral(t.Description))
	}
	for _, c := range t.Comments() {
		fmt.Fprintf(&q, "COMMENT ON COLUMN %s.%s IS %s;\n", s.ident(t.Name), pgx.Identifier{c.Column}.Sanitize(), quoteLiteral(c.Text))
	}
	if q.Len() > 0 {
		if _, err := tx.Exec(ctx, q.String()); err != nil {
			return fmt.Errorf("comment %s: %w", t.Name, err)
		}
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Checkpoint implements sinks.Sink.
func (s *Sink) Checkpoint(ctx context.Context, source string) (sinks.Checkpoint, bool, error) {
	cp := sinks.Checkpoint{Source: source}
	err := s.pool.QueryRow(ctx, fmt.Sprintf(`SELECT transaction_time, export_id, committed_at FROM %s WHERE source=$1`, s.ident(schemas.CheckTable)), source).
		Scan(&cp.TransactionTime, &cp.ExportID, &cp.CommittedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return sinks.Checkpoint{}, false, nil
	}
	if err != nil {
		return sinks.Checkpoint{}, false, fmt.Errorf("postgres sink %s: checkpoint %s: %w", s.name, source, err)
	}
	cp.CommittedAt = cp.CommittedAt.UTC()
	return cp, true, nil
}

// copyRecord streams rec into table with binary COPY in the staged types.
func copyRecord(ctx context.Context, tx pgx.Tx, table pgx.Identifier, names []string, rec arrow.RecordBatch, cols []column) (int64, error) {
	src, err := newRecordSource(rec, cols)
	if err != nil {
		return 0, err
	}
	return tx.CopyFrom(ctx, table, names, src)
}

// stageDefs is the column list of a staging table.
func stageDefs(cols []column) string {
	defs := make([]string, len(cols))
	for i, c := range cols {
		defs[i] = c.quoted() + " " + c.stage
	}
	return strings.Join(defs, ", ")
}

// stamp is the value of the stamped columns (schemas.Table.Stamped) of the
// rows one INSERT writes: the run's, or a rebuilt batch's.
type stamp struct{ namespace, source string }

func runStamp(r sinks.RunInfo) stamp { return stamp{namespace: r.Namespace, source: r.Source} }

// insertCols returns t's stored columns and the select list that fills
// them from a staging relation aliased alias: the stamped columns are st's
// literals, the others the staged columns cast to their stored types.
func insertCols(t *schemas.Table, st stamp, alias string) (names, sel string, err error) {
	cols, err := tableColumns(t, true)
	if err != nil {
		return "", "", err
	}
	stamped := len(t.Stamped())
	out := make([]string, len(cols))
	for i, c := range cols {
		switch {
		case i >= stamped:
			out[i] = c.selectExpr(alias)
		case c.name == schemas.ColSource:
			out[i] = quoteLiteral(st.source)
		default:
			out[i] = quoteLiteral(st.namespace)
		}
	}
	return colList(cols, ""), strings.Join(out, ", "), nil
}

// colList lists the columns; with an alias, as select expressions cast to
// their stored types.
func colList(cols []column, alias string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		if alias == "" {
			out[i] = c.quoted()
		} else {
			out[i] = c.selectExpr(alias)
		}
	}
	return strings.Join(out, ", ")
}

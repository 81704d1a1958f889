package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	_ "github.com/duckdb/duckdb-go/v2" // the "duckdb" driver, to read the Parquet lake
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
	"github.com/fhirferry/fhirferry/sinks/parquet"
	"github.com/fhirferry/fhirferry/sinks/postgres"
	"github.com/fhirferry/fhirferry/transform"
)

func newViewsRebuildCmd(g *globals) *cobra.Command {
	var cfgPath string
	var names, sinkNames []string
	var all bool
	cmd := &cobra.Command{
		Use:   "rebuild --config FILE [--view NAME ...] [--all] [--sink NAME ...]",
		Short: "Rebuild view tables from the raw landing without a new export",
		Long: `rebuild recomputes view tables from the resources already in each sink's raw
landing, so a new or changed ViewDefinition covers every stored resource, not only
those loaded after the change. Each table is replaced in one transaction: readers see
the old rows until the new ones are complete, and a failure leaves the old table.

Without --view it rebuilds, per sink, exactly the views whose definition is new or
changed since the table was last built (each sink records the hash of the definition
in its view_definitions table). --all rebuilds every view. It prints, per sink and
table, the rows before and after and the time taken, and exits non-zero naming the
sink and view of any failure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			a, err := buildApp(ctx, cfgPath, g.logger(), nil, nil)
			if err != nil {
				return err
			}
			defer a.close()
			return rebuildViews(ctx, cmd.OutOrStdout(), a, rebuildOptions{views: names, sinks: sinkNames, all: all})
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config file (required)")
	cmd.Flags().StringArrayVar(&names, "view", nil, "rebuild this view (repeatable; default: the new and changed views)")
	cmd.Flags().BoolVar(&all, "all", false, "rebuild every view")
	cmd.Flags().StringArrayVar(&sinkNames, "sink", nil, "rebuild in this sink only (repeatable; default: every sink)")
	cmd.MarkFlagsMutuallyExclusive("view", "all")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

type rebuildOptions struct {
	views, sinks []string
	all          bool
}

// viewHashes returns the definition hash of every view the app evaluates.
func (a *app) viewHashes() (map[string]string, error) {
	return transform.ViewHashes(a.cfg.Views.DefaultsOn(), a.cfg.Views.Dir)
}

// viewTables returns the app's view tables by name.
func (a *app) viewTables() map[string]*pipeline.Table {
	out := map[string]*pipeline.Table{}
	for _, t := range a.engine.Tables() {
		if t.Kind == pipeline.KindView {
			out[t.Name] = t
		}
	}
	return out
}

// rebuilders returns the configured sinks that implement pipeline.Rebuilder,
// in config order, limited to only when given.
func (a *app) rebuilders(only []string) ([]configs.Sink, error) {
	var out []configs.Sink
	for _, n := range only {
		if !slices.ContainsFunc(a.cfg.Sinks, func(sc configs.Sink) bool { return sc.Name == n }) {
			return nil, fmt.Errorf("no sink named %q in the config", n)
		}
	}
	for _, sc := range a.cfg.Sinks {
		if len(only) > 0 && !slices.Contains(only, sc.Name) {
			continue
		}
		if _, ok := a.sinks[sc.Name].(pipeline.Rebuilder); ok {
			out = append(out, sc)
		}
	}
	return out, nil
}

func rebuildViews(ctx context.Context, w io.Writer, a *app, o rebuildOptions) error {
	hashes, err := a.viewHashes()
	if err != nil {
		return err
	}
	tables := a.viewTables()
	for _, n := range o.views {
		if tables[n] == nil {
			return fmt.Errorf("no view named %q (see fhirferry views list --config)", n)
		}
	}
	sinks, err := a.rebuilders(o.sinks)
	if err != nil {
		return err
	}
	if len(sinks) == 0 {
		return errors.New("no configured sink can rebuild views")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := false
	var upToDate []string
	var errs []error
	for _, sc := range sinks {
		rb := a.sinks[sc.Name].(pipeline.Rebuilder)
		rd, err := openSinkReader(sc, a.sinks[sc.Name])
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", sc.Name, err))
			continue
		}
		stored, err := rd.definitions(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: read %s: %w", sc.Name, transform.ViewDefinitionsTable.Name, err))
			rd.close()
			continue
		}
		selected := o.views
		switch {
		case o.all:
			selected = sortedKeys(tables)
		case len(selected) == 0:
			for _, n := range sortedKeys(tables) {
				if stored[n].hash != hashes[n] {
					selected = append(selected, n)
				}
			}
		}
		if len(selected) == 0 {
			upToDate = append(upToDate, fmt.Sprintf("sink %s: all %d views are up to date", sc.Name, len(tables)))
		}
		built := map[string]bool{}
		for _, n := range selected {
			if !header {
				fmt.Fprintln(tw, "SINK\tVIEW\tRESOURCE\tROWS BEFORE\tROWS AFTER\tERRORS\tDURATION")
				header = true
			}
			t := tables[n]
			before, err := rd.count(ctx, n)
			if err != nil {
				errs = append(errs, fmt.Errorf("sink %s: view %s: count rows: %w", sc.Name, n, err))
				continue
			}
			t0 := time.Now()
			var st transform.RebuildStats
			err = rb.ReplaceTable(ctx, t, func(emit func(pipeline.Batch) error) error {
				var err error
				st, err = a.engine.RebuildViewStats(ctx, n, func(fn func(string, []byte) error) error {
					return rb.ScanRaw(ctx, t.ResourceType, fn)
				}, emit)
				return err
			})
			dur := time.Since(t0).Round(time.Millisecond)
			if err != nil {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\tfailed\t-\t%s\n", sc.Name, n, t.ResourceType, before, dur)
				errs = append(errs, fmt.Errorf("sink %s: view %s: %w", sc.Name, n, err))
				continue
			}
			after, err := rd.count(ctx, n)
			if err != nil {
				errs = append(errs, fmt.Errorf("sink %s: view %s: count rows: %w", sc.Name, n, err))
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", sc.Name, n, t.ResourceType, before, after, st.Failed, dur)
			built[n] = true
		}
		// Hashes are stored after the tables they describe: a crash in
		// between leaves a view marked changed, and it is rebuilt again.
		if len(built) > 0 {
			if err := writeDefinitions(ctx, rb, stored, hashes, tables, built); err != nil {
				errs = append(errs, fmt.Errorf("sink %s: write %s: %w", sc.Name, transform.ViewDefinitionsTable.Name, err))
			}
		}
		rd.close()
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range upToDate {
		fmt.Fprintln(w, l)
	}
	if len(errs) > 0 {
		return &exitError{1, fmt.Errorf("views rebuild: %w", errors.Join(errs...))}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// storedView is one row of a sink's view_definitions table.
type storedView struct {
	resourceType, hash string
	updatedAt          time.Time
}

// writeDefinitions replaces the sink's view_definitions table: the stored
// rows of views still configured, with the current hash for those in now.
func writeDefinitions(ctx context.Context, rb pipeline.Rebuilder, stored map[string]storedView,
	hashes map[string]string, tables map[string]*pipeline.Table, now map[string]bool) error {
	t := transform.ViewDefinitionsTable
	ts := time.Now().UTC()
	return rb.ReplaceTable(ctx, t, func(emit func(pipeline.Batch) error) error {
		b := array.NewRecordBuilder(memory.DefaultAllocator, t.Schema)
		defer b.Release()
		for _, n := range sortedKeys(tables) {
			sv, ok := stored[n]
			if now[n] {
				sv, ok = storedView{resourceType: tables[n].ResourceType, hash: hashes[n], updatedAt: ts}, true
			}
			if !ok {
				continue
			}
			b.Field(0).(*array.StringBuilder).Append(n)
			b.Field(1).(*array.StringBuilder).Append(sv.resourceType)
			b.Field(2).(*array.StringBuilder).Append(sv.hash)
			b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(sv.updatedAt.UnixMicro()))
		}
		return emit(pipeline.Batch{Table: t, Rec: b.NewRecordBatch()})
	})
}

// sinkReader reads row counts and the view_definitions table of a sink
// through SQL: the DuckDB file itself, PostgreSQL through its DSN, and the
// Parquet lake's published files through an in-memory DuckDB.
type sinkReader struct {
	db     *sql.DB
	own    bool                              // db is ours to close
	rel    func(table string) (string, bool) // a FROM expression; false: no such table or no files
	exists string                            // query: does table $1 exist
	dbName string                            // extra argument of exists (PostgreSQL schema)
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func openSinkReader(sc configs.Sink, s pipeline.Sink) (*sinkReader, error) {
	switch s := s.(type) {
	case *duckdb.Sink:
		r := &sinkReader{db: s.DB(), exists: `SELECT count(*) FROM information_schema.tables WHERE table_name = $1`}
		r.rel = func(t string) (string, bool) { return quoteIdent(t), true }
		return r, nil
	case *postgres.Sink:
		db, err := sql.Open("pgx", sc.Postgres.DSN)
		if err != nil {
			return nil, errors.New("dsn does not parse") // it may hold a password
		}
		schema := sc.Postgres.Schema
		if schema == "" {
			schema = "fhir"
		}
		r := &sinkReader{db: db, own: true, dbName: schema,
			exists: `SELECT count(*) FROM information_schema.tables WHERE table_name = $1 AND table_schema = $2`}
		r.rel = func(t string) (string, bool) { return quoteIdent(schema) + "." + quoteIdent(t), true }
		return r, nil
	case *parquet.Sink:
		db, err := sql.Open("duckdb", "")
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(1)
		r := &sinkReader{db: db, own: true}
		r.rel = func(t string) (string, bool) {
			files := s.LiveFiles(t)
			if len(files) == 0 {
				return "", false
			}
			q := make([]string, len(files))
			for i, f := range files {
				q[i] = "'" + strings.ReplaceAll(f, "'", "''") + "'"
			}
			return "read_parquet([" + strings.Join(q, ", ") + "])", true
		}
		return r, nil
	}
	return nil, fmt.Errorf("sink type %s: reading tables is not supported", sc.Type)
}

func (r *sinkReader) close() {
	if r.own {
		_ = r.db.Close()
	}
}

// table returns the FROM expression of table, or false when the sink has
// no such table (or, in the lake, no files for it).
func (r *sinkReader) table(ctx context.Context, name string) (string, bool, error) {
	rel, ok := r.rel(name)
	if !ok || r.exists == "" {
		return rel, ok, nil
	}
	args := []any{name}
	if r.dbName != "" {
		args = append(args, r.dbName)
	}
	var n int
	if err := r.db.QueryRowContext(ctx, r.exists, args...).Scan(&n); err != nil {
		return "", false, err
	}
	return rel, n > 0, nil
}

func (r *sinkReader) count(ctx context.Context, table string) (int64, error) {
	rel, ok, err := r.table(ctx, table)
	if err != nil || !ok {
		return 0, err
	}
	var n int64
	err = r.db.QueryRowContext(ctx, "SELECT count(*) FROM "+rel).Scan(&n)
	return n, err
}

// hasResources reports whether the raw landing holds a resource of type typ.
func (r *sinkReader) hasResources(ctx context.Context, typ string) (bool, error) {
	rel, ok, err := r.table(ctx, schemas.RawTable)
	if err != nil || !ok {
		return false, err
	}
	var yes bool
	err = r.db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM "+rel+" WHERE resource_type = $1)", typ).Scan(&yes)
	return yes, err
}

func (r *sinkReader) definitions(ctx context.Context) (map[string]storedView, error) {
	out := map[string]storedView{}
	rel, ok, err := r.table(ctx, transform.ViewDefinitionsTable.Name)
	if err != nil || !ok {
		return out, err
	}
	rows, err := r.db.QueryContext(ctx, "SELECT name, resource_type, definition_hash, updated_at FROM "+rel)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		var sv storedView
		if err := rows.Scan(&n, &sv.resourceType, &sv.hash, &sv.updatedAt); err != nil {
			return nil, err
		}
		out[n] = sv
	}
	return out, rows.Err()
}

// staleViews checks, per sink, the views whose table was built from
// another definition than the current one, or is new while the raw landing
// already holds resources of its type: their tables only have rows for
// resources loaded since. A new or changed view with no resources of its
// type yet is current by definition, and its hash is recorded.
func staleViews(ctx context.Context, a *app) (map[string][]string, error) {
	hashes, err := a.viewHashes()
	if err != nil {
		return nil, err
	}
	tables := a.viewTables()
	sinks, err := a.rebuilders(nil)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	var errs []error
	for _, sc := range sinks {
		err := func() error {
			rd, err := openSinkReader(sc, a.sinks[sc.Name])
			if err != nil {
				return err
			}
			defer rd.close()
			stored, err := rd.definitions(ctx)
			if err != nil {
				return err
			}
			current := map[string]bool{}
			for _, n := range sortedKeys(tables) {
				if stored[n].hash == hashes[n] {
					continue
				}
				has, err := rd.hasResources(ctx, tables[n].ResourceType)
				if err != nil {
					return err
				}
				if has {
					out[sc.Name] = append(out[sc.Name], n)
				} else {
					current[n] = true
				}
			}
			if len(current) == 0 {
				return nil
			}
			return writeDefinitions(ctx, a.sinks[sc.Name].(pipeline.Rebuilder), stored, hashes, tables, current)
		}()
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", sc.Name, err))
		}
	}
	return out, errors.Join(errs...)
}

// warnStaleViews prints, once per sink, the views whose tables miss rows
// because their definition is new or changed, and how to fix that. It is
// advice, so a failure to check is a warning too.
func warnStaleViews(ctx context.Context, w io.Writer, a *app, cfgPath string) {
	stale, err := staleViews(ctx, a)
	if err != nil {
		fmt.Fprintf(w, "warning: checking view definitions: %v\n", err)
	}
	for _, sink := range sortedKeys(stale) {
		v := stale[sink]
		msg := "view %s is new or changed since its table was built, so the table only has rows for resources loaded since; " +
			"run `fhirferry views rebuild --config %s` to rebuild it from the raw landing"
		if len(v) > 1 {
			msg = "views %s are new or changed since their tables were built, so the tables only have rows for resources loaded since; " +
				"run `fhirferry views rebuild --config %s` to rebuild them from the raw landing"
		}
		fmt.Fprintf(w, "warning: sink %s: "+msg+"\n", sink, strings.Join(v, ", "), cfgPath)
	}
}

// logStaleViews is warnStaleViews for the daemon, which has a log rather
// than a terminal: without it, a view added or changed in the config of a
// running daemon left its table short of rows with no word to anyone.
func logStaleViews(ctx context.Context, log *slog.Logger, a *app, cfgPath string) {
	stale, err := staleViews(ctx, a)
	if err != nil {
		log.Warn("checking view definitions", "err", err)
	}
	for _, sink := range sortedKeys(stale) {
		log.Warn("view tables only have rows for resources loaded since their view was added or changed",
			"sink", sink, "views", strings.Join(stale[sink], ","),
			"fix", "fhirferry views rebuild --config "+cfgPath)
	}
}

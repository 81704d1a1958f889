package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/transform"
)

// RebuildOptions select what RebuildViews rebuilds.
type RebuildOptions struct {
	// Views to rebuild; empty: the views new or changed on each sink.
	Views []string
	// All rebuilds every view.
	All bool
	// Sinks limits the rebuild to these sinks (default: every sink that can).
	Sinks []string
}

// RebuildRow reports one table's rebuild in one sink.
type RebuildRow struct {
	Sink, View, Resource string
	Before, After        int64
	// Failed counts resources whose view evaluation failed (left without rows).
	Failed   int64
	Duration time.Duration
	Err      error
}

// RebuildReport is what RebuildViews did.
type RebuildReport struct {
	Rows []RebuildRow
	// UpToDate lists the sinks on which no view needed a rebuild.
	UpToDate []string
	// Views is the number of views the App evaluates.
	Views int
}

// viewHashes returns the definition hash of every view the app evaluates.
func (a *App) viewHashes() (map[string]string, error) {
	return transform.ViewHashes(a.cfg.Views.DefaultsOn(), a.cfg.Views.Dir)
}

// viewTables returns the app's view tables by name.
func (a *App) viewTables() map[string]*schemas.Table {
	out := map[string]*schemas.Table{}
	for _, t := range a.engine.Tables() {
		if t.Kind == schemas.KindView {
			out[t.Name] = t
		}
	}
	return out
}

// RebuildViews recomputes view tables from each sink's raw landing, each
// table replaced in one transaction. The returned error joins every
// sink's and view's failure; the report lists what was done regardless.
func (a *App) RebuildViews(ctx context.Context, o RebuildOptions) (*RebuildReport, error) {
	hashes, err := a.viewHashes()
	if err != nil {
		return nil, err
	}
	tables := a.viewTables()
	for _, n := range o.Views {
		if tables[n] == nil {
			return nil, fmt.Errorf("no view named %q (see fhirferry views list --config)", n)
		}
	}
	rbs, err := a.Rebuilders(o.Sinks)
	if err != nil {
		return nil, err
	}
	if len(rbs) == 0 {
		return nil, errors.New("no configured sink can rebuild views")
	}
	rep := &RebuildReport{Views: len(tables)}
	defer a.Flush(ctx)
	var errs []error
	for _, rb := range rbs {
		stored, err := rb.ViewDefinitions(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: read %s: %w", rb.Name, schemas.ViewDefsTable, err))
			continue
		}
		selected := selectViews(o, tables, stored, hashes)
		if len(selected) == 0 {
			rep.UpToDate = append(rep.UpToDate, rb.Name)
			continue
		}
		built := map[string]bool{}
		for _, n := range selected {
			row := a.rebuildOne(ctx, rb, tables[n])
			rep.Rows = append(rep.Rows, row)
			if row.Err != nil {
				errs = append(errs, fmt.Errorf("sink %s: view %s: %w", rb.Name, n, row.Err))
				continue
			}
			built[n] = true
		}
		// Hashes are stored after the tables they describe: a crash in
		// between leaves a view marked changed, and it is rebuilt again.
		if len(built) > 0 {
			if err := writeDefinitions(ctx, rb, stored, hashes, tables, built); err != nil {
				errs = append(errs, fmt.Errorf("sink %s: write %s: %w", rb.Name, schemas.ViewDefsTable, err))
			}
		}
	}
	return rep, errors.Join(errs...)
}

// selectViews is the views to rebuild on a sink: the named ones, all, or
// those whose stored definition differs from the current one.
func selectViews(o RebuildOptions, tables map[string]*schemas.Table, stored map[string]sinks.StoredView, hashes map[string]string) []string {
	switch {
	case o.All:
		return slices.Sorted(maps.Keys(tables))
	case len(o.Views) > 0:
		return o.Views
	}
	var out []string
	for _, n := range slices.Sorted(maps.Keys(tables)) {
		if stored[n].Hash != hashes[n] {
			out = append(out, n)
		}
	}
	return out
}

// rebuildOne replaces one view table in one sink.
func (a *App) rebuildOne(ctx context.Context, rb NamedRebuilder, t *schemas.Table) RebuildRow {
	row := RebuildRow{Sink: rb.Name, View: t.Name, Resource: t.ResourceType}
	var err error
	if row.Before, err = rb.Rows(ctx, t.Name); err != nil {
		row.Err = fmt.Errorf("count rows: %w", err)
		return row
	}
	t0 := time.Now()
	var st transform.RebuildStats
	err = rb.ReplaceTable(ctx, t, func(emit func(schemas.Batch) error) error {
		var err error
		st, err = a.engine.RebuildViewStats(ctx, t.Name, func(fn func(schemas.RawResource) error) error {
			return rb.ScanRaw(ctx, t.ResourceType, fn)
		}, emit)
		return err
	})
	row.Duration, row.Failed = time.Since(t0), st.Failed
	if err != nil {
		row.Err = err
		return row
	}
	if row.After, err = rb.Rows(ctx, t.Name); err != nil {
		row.Err = fmt.Errorf("count rows: %w", err)
	}
	return row
}

// writeDefinitions replaces the sink's view_definitions table: the stored
// rows of views still configured, with the current hash for those in now.
func writeDefinitions(ctx context.Context, rb sinks.Rebuilder, stored map[string]sinks.StoredView,
	hashes map[string]string, tables map[string]*schemas.Table, now map[string]bool) error {
	t := schemas.ViewDefinitions
	ts := time.Now().UTC()
	return rb.ReplaceTable(ctx, t, func(emit func(schemas.Batch) error) error {
		b := array.NewRecordBuilder(memory.DefaultAllocator, t.Schema)
		defer b.Release()
		for _, n := range slices.Sorted(maps.Keys(tables)) {
			sv, ok := stored[n]
			if now[n] {
				sv, ok = sinks.StoredView{ResourceType: tables[n].ResourceType, Hash: hashes[n], UpdatedAt: ts}, true
			}
			if !ok {
				continue
			}
			b.Field(0).(*array.StringBuilder).Append(n)
			b.Field(1).(*array.StringBuilder).Append(sv.ResourceType)
			b.Field(2).(*array.StringBuilder).Append(sv.Hash)
			b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(sv.UpdatedAt.UnixMicro()))
		}
		return emit(schemas.Batch{Table: t, Rec: b.NewRecordBatch()})
	})
}

// StaleViews checks, per sink, the views whose table was built from
// another definition than the current one, or is new while the raw landing
// already holds resources of its type: their tables only have rows for
// resources loaded since. A new or changed view with no resources of its
// type yet is current by definition, and its hash is recorded. It must run
// while no run is in flight.
func (a *App) StaleViews(ctx context.Context) (map[string][]string, error) {
	hashes, err := a.viewHashes()
	if err != nil {
		return nil, err
	}
	tables := a.viewTables()
	rbs, err := a.Rebuilders(nil)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	var errs []error
	defer a.Flush(ctx)
	for _, rb := range rbs {
		stale, err := staleOn(ctx, rb, tables, hashes)
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", rb.Name, err))
		}
		if len(stale) > 0 {
			out[rb.Name] = stale
		}
	}
	return out, errors.Join(errs...)
}

func staleOn(ctx context.Context, rb NamedRebuilder, tables map[string]*schemas.Table, hashes map[string]string) ([]string, error) {
	stored, err := rb.ViewDefinitions(ctx)
	if err != nil {
		return nil, err
	}
	var stale []string
	current := map[string]bool{}
	for _, n := range slices.Sorted(maps.Keys(tables)) {
		if stored[n].Hash == hashes[n] {
			continue
		}
		has, err := rb.HasResources(ctx, tables[n].ResourceType)
		if err != nil {
			return nil, err
		}
		if has {
			stale = append(stale, n)
		} else {
			current[n] = true
		}
	}
	if len(current) == 0 {
		return stale, nil
	}
	return stale, writeDefinitions(ctx, rb, stored, hashes, tables, current)
}

// LogStaleViews logs, per sink, the views StaleViews finds and how to fix
// them: without it, a view added or changed in the config of a running
// daemon left its table short of rows with no word to anyone.
func (a *App) LogStaleViews(ctx context.Context, log *slog.Logger, cfgPath string) {
	stale, err := a.StaleViews(ctx)
	if err != nil {
		log.Warn("checking view definitions", "err", err)
	}
	for _, sink := range slices.Sorted(maps.Keys(stale)) {
		log.Warn("view tables only have rows for resources loaded since their view was added or changed",
			"sink", sink, "views", strings.Join(stale[sink], ","),
			"fix", "fhirferry views rebuild --config "+cfgPath)
	}
}

package parquet

import (
	"context"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/migrate"
)

var _ sinks.Migrator = (*Sink)(nil)

// Migrate implements sinks.Migrator. A lake of version 1 has its raw,
// rejects and outcomes files rewritten with the namespace of each row's
// source, and its view tables (and recorded definitions) dropped for the
// pipeline to rebuild; one publish of _lake.json switches to the result,
// so a crash leaves the lake as it was.
func (s *Sink) Migrate(ctx context.Context, mg sinks.Migration) (rep sinks.MigrationReport, err error) {
	if err := s.acquire(ctx); err != nil {
		return rep, err
	}
	defer s.release()
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.meta.clone()
	rep.From, rep.To = m.SchemaVersion, sinks.SchemaVersion
	if rep.From == 0 {
		rep.From = sinks.SchemaVersion
		if raw := m.Tables[schemas.RawTable]; raw != nil && !slices.ContainsFunc(raw.Columns, func(c columnMeta) bool { return c.Name == schemas.ColNamespace }) {
			rep.From = 1
		}
	}
	if rep.From == sinks.SchemaVersion && m.SchemaVersion == sinks.SchemaVersion {
		return rep, nil
	}
	tag := newTag("migrate")
	var written []string
	if rep.From < sinks.SchemaVersion {
		sources := map[string]bool{}
		for _, name := range []string{schemas.RawTable, schemas.RejectsTable, schemas.OutcomesTable} {
			out, err := s.addNamespace(ctx, m, name, tag, mg, sources)
			written = append(written, out...)
			if err != nil {
				s.deleteAll(ctx, written)
				return rep, fmt.Errorf("parquet sink %s: migrate %s: %w", s.name, name, err)
			}
		}
		rep.Collisions = migrate.Collisions(mg, slices.Sorted(func(yield func(string) bool) {
			for k := range sources {
				if !yield(k) {
					return
				}
			}
		}))
		for name, tm := range m.Tables {
			if tm.Kind == schemas.KindView.String() || name == schemas.ViewDefsTable {
				delete(m.Tables, name)
			}
		}
		rep.RebuildViews = true
	}
	m.SchemaVersion = sinks.SchemaVersion
	m.Version++
	if err := publish(ctx, s.st, m, tag); err != nil {
		s.deleteAll(ctx, written)
		return rep, fmt.Errorf("parquet sink %s: migrate: %w", s.name, err)
	}
	s.published(ctx, m, tag)
	return rep, nil
}

// addNamespace rewrites a table's files with a namespace column computed
// from each row's source, and records the sources it met (raw only).
func (s *Sink) addNamespace(ctx context.Context, m *lakeMeta, name, tag string, mg sinks.Migration, seen map[string]bool) ([]string, error) {
	tm := m.Tables[name]
	if tm == nil || slices.ContainsFunc(tm.Columns, func(c columnMeta) bool { return c.Name == schemas.ColNamespace }) {
		return nil, nil
	}
	tm.Columns = append([]columnMeta{{Name: schemas.ColNamespace, Type: "VARCHAR"}}, tm.Columns...)
	if len(tm.Files) == 0 {
		return nil, nil
	}
	var tbl *schemas.Table
	for _, t := range schemas.System() {
		if t.Name == name {
			tbl = t
		}
	}
	target := arrow.NewSchema(tbl.StoredFields(), nil)
	fs := newFileSet(ctx, s.st, s.mem, s.comp, target, name+"/"+tag)
	for _, f := range tm.Files {
		err := scan(ctx, s.st, s.mem, f.Path, nil, func(rec arrow.RecordBatch) error {
			src := strCol(rec, schemas.ColSource)
			if src == nil {
				return fmt.Errorf("%s: no source column", f.Path)
			}
			b := array.NewStringBuilder(s.mem)
			defer b.Release()
			for i := range int(rec.NumRows()) {
				v := src.Value(i)
				if name == schemas.RawTable && !seen[v] {
					seen[string([]byte(v))] = true
				}
				b.Append(mg.NamespaceOf(v))
			}
			ns := b.NewArray()
			defer ns.Release()
			fields := append([]arrow.Field{{Name: schemas.ColNamespace, Type: arrow.BinaryTypes.String}}, rec.Schema().Fields()...)
			with := array.NewRecordBatch(arrow.NewSchema(fields, nil), append([]arrow.Array{ns}, rec.Columns()...), rec.NumRows())
			defer with.Release()
			out, err := conform(s.mem, with, target, stamp{})
			if err != nil {
				return err
			}
			defer out.Release()
			return fs.write(out)
		})
		if err != nil {
			return paths(fs.abort()), err
		}
	}
	files, err := fs.close()
	if err != nil {
		return paths(fs.abort()), err
	}
	tm.Files = files
	return paths(files), nil
}

package parquet

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/txnguard"
)

var _ sinks.Rebuilder = (*Sink)(nil)

// ReplaceTable implements [sinks.Rebuilder]: table t gets new files
// holding the batches produce emits, and one publish of _lake.json swaps
// them in, so readers see the old files or the new ones; on error the lake
// is unchanged. Like a Txn it marks the sink busy while it runs, so no run
// commits between a [Sink.ScanRaw] that produce makes and the publish.
func (s *Sink) ReplaceTable(ctx context.Context, t *schemas.Table, produce func(emit func(schemas.Batch) error) error) (err error) {
	if err := txnguard.CheckReplaceable("parquet sink "+s.name, t); err != nil {
		return err
	}
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	tag := newTag("replace")
	stored := arrow.NewSchema(t.StoredFields(), nil)
	fs := newFileSet(ctx, s.st, s.mem, s.comp, stored, t.Name+"/"+tag)
	defer func() {
		if err != nil {
			s.deleteAll(ctx, paths(fs.abort()))
			err = fmt.Errorf("parquet sink %s: replace %s: %w", s.name, t.Name, err)
		}
	}()
	err = produce(txnguard.ReplaceEmit(ctx, t, func(b schemas.Batch) error {
		c, err := conform(s.mem, b.Rec, stored, stamp{namespace: b.Namespace, source: b.Source})
		if err != nil {
			return err
		}
		defer c.Release()
		return fs.write(c)
	}))
	if err != nil {
		return err
	}
	files, err := fs.close()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.meta.clone()
	m.Tables[t.Name] = &tableMeta{Kind: t.Kind.String(), ResourceType: t.ResourceType, Columns: columnsOf(t), Files: files}
	m.Version++
	if err := publish(ctx, s.st, m, tag); err != nil {
		s.deleteAll(ctx, paths(files))
		return err
	}
	s.tables.Put(t)
	s.published(ctx, m, tag)
	return nil
}

// ScanRaw implements [sinks.Rebuilder]: it reads the raw landing's
// published files, one record batch at a time: first the namespace and
// source columns, to list the (namespace, source) groups, then the
// resources of each group in turn, so they come in the contract's order.
func (s *Sink) ScanRaw(ctx context.Context, resourceType string, fn func(schemas.RawResource) error) error {
	s.mu.Lock()
	var files []string
	if tm := s.meta.Tables[schemas.RawTable]; tm != nil {
		files = paths(tm.Files)
	}
	s.mu.Unlock()
	groups, err := s.rawGroups(ctx, files, resourceType)
	if err != nil {
		return fmt.Errorf("parquet sink %s: scan %s: %w", s.name, resourceType, err)
	}
	var fnErr error // returned as is
	for _, g := range groups {
		for _, f := range files {
			err := scan(ctx, s.st, s.mem, f, []string{schemas.ColNamespace, schemas.ColSource, "resource_type", "id", "resource"}, func(rec arrow.RecordBatch) error {
				ns, src, rt, id := strCol(rec, schemas.ColNamespace), strCol(rec, schemas.ColSource), strCol(rec, "resource_type"), strCol(rec, "id")
				res, _ := rec.Column(4).(*array.String)
				if ns == nil || src == nil || rt == nil || id == nil || res == nil {
					return fmt.Errorf("%s: unexpected raw column types", f)
				}
				buf := res.ValueBytes()
				for i := range int(rec.NumRows()) {
					if rt.Value(i) != resourceType || ns.Value(i) != g.namespace || src.Value(i) != g.source {
						continue
					}
					r := schemas.RawResource{Namespace: g.namespace, Source: g.source, ID: id.Value(i), JSON: valueBytes(res, buf, i)}
					if fnErr = fn(r); fnErr != nil {
						return fnErr
					}
				}
				return nil
			})
			if fnErr != nil {
				return fnErr
			}
			if err != nil {
				return fmt.Errorf("parquet sink %s: scan %s: %w", s.name, resourceType, err)
			}
		}
	}
	return nil
}

// rawGroups lists the (namespace, source) pairs of the raw rows of typ, sorted.
func (s *Sink) rawGroups(ctx context.Context, files []string, typ string) ([]stamp, error) {
	seen := map[stamp]bool{}
	for _, f := range files {
		err := scan(ctx, s.st, s.mem, f, []string{schemas.ColNamespace, schemas.ColSource, "resource_type"}, func(rec arrow.RecordBatch) error {
			ns, src, rt := strCol(rec, schemas.ColNamespace), strCol(rec, schemas.ColSource), strCol(rec, "resource_type")
			if ns == nil || src == nil || rt == nil {
				return fmt.Errorf("%s: unexpected raw column types", f)
			}
			for i := range int(rec.NumRows()) {
				if rt.Value(i) == typ {
					if k := (stamp{namespace: ns.Value(i), source: src.Value(i)}); !seen[k] {
						// Cloned: the strings point into the record's buffers.
						seen[stamp{namespace: strings.Clone(k.namespace), source: strings.Clone(k.source)}] = true
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	out := slices.Collect(maps.Keys(seen))
	slices.SortFunc(out, func(a, b stamp) int {
		if c := strings.Compare(a.namespace, b.namespace); c != 0 {
			return c
		}
		return strings.Compare(a.source, b.source)
	})
	return out, nil
}

func valueBytes(res *array.String, buf []byte, i int) []byte {
	start := res.ValueOffset(i) - res.ValueOffset(0)
	return buf[start : start+res.ValueLen(i)]
}

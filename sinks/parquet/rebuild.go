package parquet

import (
	"context"
	"fmt"

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
	s.mu.Lock()
	if s.busy {
		s.mu.Unlock()
		return fmt.Errorf("parquet sink %s: replace %s during a run", s.name, t.Name)
	}
	s.busy = true
	s.mu.Unlock()
	tag := newTag("replace")
	stored := arrow.NewSchema(t.StoredFields(), nil)
	fs := newFileSet(ctx, s.st, s.mem, s.comp, stored, t.Name+"/"+tag)
	defer func() {
		if err != nil {
			s.deleteAll(ctx, paths(fs.abort()))
			err = fmt.Errorf("parquet sink %s: replace %s: %w", s.name, t.Name, err)
		}
		s.mu.Lock()
		s.busy = false
		s.mu.Unlock()
	}()
	err = produce(txnguard.ReplaceEmit(ctx, t, func(rec arrow.RecordBatch) error {
		c, err := conform(s.mem, rec, stored)
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
// published files (the resource_type, id and resource columns only), one
// record batch at a time.
func (s *Sink) ScanRaw(ctx context.Context, resourceType string, fn func(id string, resource []byte) error) error {
	s.mu.Lock()
	var files []string
	if tm := s.meta.Tables[schemas.RawTable]; tm != nil {
		files = paths(tm.Files)
	}
	s.mu.Unlock()
	var fnErr error // returned as is
	for _, f := range files {
		err := scan(ctx, s.st, s.mem, f, []string{"resource_type", "id", "resource"}, func(rec arrow.RecordBatch) error {
			rt, id := strCol(rec, "resource_type"), strCol(rec, "id")
			res, _ := rec.Column(2).(*array.String)
			if rt == nil || id == nil || res == nil {
				return fmt.Errorf("%s: unexpected raw column types", f)
			}
			buf := res.ValueBytes()
			for i := range int(rec.NumRows()) {
				if rt.Value(i) != resourceType {
					continue
				}
				if fnErr = fn(id.Value(i), valueBytes(res, buf, i)); fnErr != nil {
					return fnErr
				}
			}
			return ctx.Err()
		})
		if fnErr != nil {
			return fnErr
		}
		if err != nil {
			return fmt.Errorf("parquet sink %s: scan %s: %w", s.name, resourceType, err)
		}
	}
	return nil
}

// valueBytes is res.Value(i) without a copy; buf is res.ValueBytes().
func valueBytes(res *array.String, buf []byte, i int) []byte {
	start := res.ValueOffset(i) - res.ValueOffset(0)
	return buf[start : start+res.ValueLen(i)]
}

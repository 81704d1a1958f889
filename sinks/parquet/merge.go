package parquet

import (
	"context"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/fhirferry/fhirferry/schemas"
)

// maxFiles is the live file count above which a touched table is compacted
// into one new file set instead of getting one more file.
const maxFiles = 16

// merger computes a table's new live file set: files holding an affected
// resource are rewritten without its rows, unaffected files are kept as
// they are, and the run's kept staged rows are added. Memory is bounded by
// one read batch and one buffered row group, whatever the table's size.
type merger struct {
	s   *Sink
	ctx context.Context
	tag string
	t   *schemas.Table
	tm  *tableMeta
	// affected binds a record of stored rows; the function reports whether
	// row i belongs to a resource the run replaces or deletes.
	affected func(rec arrow.RecordBatch) func(i int) bool
	// keyCols are the columns affected reads.
	keyCols []string
	// staged are the staging files of the run's rows, and keep selects
	// those that belong to the winning versions.
	staged []string
	keep   func(rec arrow.RecordBatch) func(i int) bool
	// stamp fills the stamped columns of the staged rows.
	stamp stamp
	// rewriteAll rewrites every file (schema change).
	rewriteAll bool

	out []string // files written, for cleanup on failure
}

func (m *merger) run() error {
	var keepFiles, rewrite []fileMeta
	for _, f := range m.tm.Files {
		hit := m.rewriteAll
		if !hit && m.affected != nil {
			err := scan(m.ctx, m.s.st, m.s.mem, f.Path, m.keyCols, func(rec arrow.RecordBatch) error {
				aff := m.affected(rec)
				for i := range int(rec.NumRows()) {
					if aff(i) {
						hit = true
						return errStop
					}
				}
				return nil
			})
			if err != nil && !errors.Is(err, errStop) {
				return err
			}
		}
		if hit {
			rewrite = append(rewrite, f)
		} else {
			keepFiles = append(keepFiles, f)
		}
	}
	if len(rewrite) == 0 && len(m.staged) == 0 {
		return nil
	}
	if len(keepFiles)+1 > maxFiles {
		rewrite, keepFiles = m.tm.Files, nil
	}
	target, err := m.targetSchema(rewrite)
	if err != nil {
		return err
	}
	fs := newFileSet(m.ctx, m.s.st, m.s.mem, m.s.comp, target, m.t.Name+"/"+m.tag)
	err = m.copy(fs, rewrite, target)
	var files []fileMeta
	if err == nil {
		files, err = fs.close()
	}
	if err != nil {
		m.out = append(m.out, paths(fs.abort())...)
		return err
	}
	m.out = append(m.out, paths(files)...)
	m.tm.Files = append(keepFiles, files...)
	return nil
}

// errStop ends a scan early.
var errStop = fmt.Errorf("stop")

// targetSchema is the table's stored fields followed by fields the
// rewritten files have and the table lost: nothing is dropped.
func (m *merger) targetSchema(rewrite []fileMeta) (*arrow.Schema, error) {
	fields := m.t.StoredFields()
	for _, f := range rewrite {
		sc, err := fileSchema(m.ctx, m.s.st, m.s.mem, f.Path)
		if err != nil {
			return nil, err
		}
		for _, fld := range sc.Fields() {
			if !hasField(fields, fld.Name) {
				fields = append(fields, fld)
			}
		}
	}
	return arrow.NewSchema(fields, nil), nil
}

func hasField(fs []arrow.Field, name string) bool {
	for _, f := range fs {
		if f.Name == name {
			return true
		}
	}
	return false
}

func (m *merger) copy(fs *fileSet, rewrite []fileMeta, target *arrow.Schema) error {
	put := func(rec arrow.RecordBatch, sel func(rec arrow.RecordBatch) func(i int) bool, invert bool, st stamp) error {
		keep := make([]bool, rec.NumRows())
		if sel == nil {
			for i := range keep {
				keep[i] = true
			}
		} else {
			f := sel(rec)
			for i := range keep {
				keep[i] = f(i) != invert
			}
		}
		kept, err := filter(m.ctx, m.s.mem, rec, keep)
		if err != nil {
			return err
		}
		defer kept.Release()
		c, err := conform(m.s.mem, kept, target, st)
		if err != nil {
			return fmt.Errorf("table %s: %w", m.t.Name, err)
		}
		defer c.Release()
		return fs.write(c)
	}
	for _, f := range rewrite {
		if err := scan(m.ctx, m.s.st, m.s.mem, f.Path, nil, func(rec arrow.RecordBatch) error {
			return put(rec, m.affected, true, stamp{})
		}); err != nil {
			return err
		}
	}
	for _, f := range m.staged {
		if err := scan(m.ctx, m.s.st, m.s.mem, f, nil, func(rec arrow.RecordBatch) error {
			return put(rec, m.keep, false, m.stamp)
		}); err != nil {
			return err
		}
	}
	return nil
}

// strCol returns column name of rec as strings, or nil when missing.
func strCol(rec arrow.RecordBatch, name string) *array.String {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil
	}
	s, _ := rec.Column(idx[0]).(*array.String)
	return s
}

func int64Col(rec arrow.RecordBatch, name string) *array.Int64 {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil
	}
	s, _ := rec.Column(idx[0]).(*array.Int64)
	return s
}

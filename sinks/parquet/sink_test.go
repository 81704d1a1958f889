package parquet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/schemas/mempool"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

// tableRows reads a table the way a reader does: only the files the
// published _lake.json lists. Runs and checkpoints come from _lake.json.
func tableRows(t testing.TB, st Store, table string, cols ...string) []string {
	ctx := context.Background()
	m, err := loadMeta(ctx, st)
	require.NoError(t, err)
	switch table {
	case schemas.RunsTable, schemas.CheckTable:
		var recs []map[string]any
		if table == schemas.RunsTable {
			recs = jsonMaps(t, m.Runs)
		} else {
			for src, cp := range m.Checkpoints {
				r := jsonMaps(t, []checkpoint{cp})[0]
				r["source"] = src
				recs = append(recs, r)
			}
		}
		var out []string
		for _, r := range recs {
			vals := make([]string, len(cols))
			for i, c := range cols {
				switch v := r[c].(type) {
				case float64:
					vals[i] = strconv.FormatFloat(v, 'f', -1, 64)
				default:
					vals[i] = fmt.Sprint(v)
				}
			}
			out = append(out, strings.Join(vals, "|"))
		}
		return out
	}
	tm, ok := m.Tables[table]
	require.True(t, ok, "table %s is not in %s", table, lakeFile)
	mem := memory.NewGoAllocator()
	var out []string
	for _, f := range tm.Files {
		require.NoError(t, scan(ctx, st, mem, f.Path, nil, func(rec arrow.RecordBatch) error {
			for i := range int(rec.NumRows()) {
				vals := make([]string, len(cols))
				for j, c := range cols {
					idx := rec.Schema().FieldIndices(c)
					require.NotEmpty(t, idx, "column %s in %s", c, f.Path)
					col := rec.Column(idx[0])
					if col.IsNull(i) {
						vals[j] = "NULL"
					} else {
						vals[j] = col.ValueStr(i)
					}
				}
				out = append(out, strings.Join(vals, "|"))
			}
			return nil
		}))
	}
	return out
}

func jsonMaps[T any](t testing.TB, v []T) []map[string]any {
	data, err := json.Marshal(v)
	require.NoError(t, err)
	var out []map[string]any
	require.NoError(t, json.Unmarshal(data, &out))
	return out
}

func open(t testing.TB, dir string, opts ...Option) *Sink {
	s, err := New(configs.ParquetSink{Dir: dir, Compression: "zstd"}, sinks.Env{Name: "lake"}, opts...)
	require.NoError(t, err)
	return s
}

func TestSemantics(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T) sinks.Sink { return open(t, t.TempDir()) },
		Rows: func(t *testing.T, s sinks.Sink, table string, cols ...string) []string {
			return tableRows(t, s.(*Sink).st, table, cols...)
		},
		NoJSONCheck: true,
	})
}

// failStore fails Rename (the publish step) while armed.
type failStore struct {
	Store
	failRename atomic.Bool
}

func (f *failStore) Rename(ctx context.Context, from, to string) error {
	if f.failRename.Load() {
		return errors.New("injected rename failure")
	}
	return f.Store.Rename(ctx, from, to)
}

func listFiles(t *testing.T, dir string) []string {
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return err
	}))
	return out
}

// TestPublishFailureKeepsPreviousState makes the atomic publish fail and
// checks that the previous state, its files and its checkpoint are intact
// and readable, that the run left no files behind, and that the lake takes
// the next run.
func TestPublishFailureKeepsPreviousState(t *testing.T) {
	ctx := t.Context()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	ds, err := NewDirStore(dir)
	require.NoError(t, err)
	fst := &failStore{Store: ds}
	s := open(t, dir, WithStore(fst), WithAllocator(mem))
	require.NoError(t, s.Prepare(ctx, []*schemas.Table{sinktest.PatientView}))
	run := func(id, tt string, fail bool, batches ...schemas.Batch) error {
		txn, err := s.Begin(ctx, sinks.RunInfo{RunID: id, Source: "src", ExportID: id, TransactionTime: tt})
		require.NoError(t, err)
		for _, b := range batches {
			require.NoError(t, txn.Write(ctx, b))
		}
		fst.failRename.Store(fail)
		defer fst.failRename.Store(false)
		err = txn.Commit(ctx, sinks.RunSummary{Outcome: "success"})
		if err != nil {
			require.NoError(t, txn.Rollback(ctx))
		}
		return err
	}
	p := func(id, v string, h int, seq int64) sinktest.Raw {
		return sinktest.Raw{Type: "Patient", ID: id, VersionID: v, LastUpdated: sinktest.T(h), Seq: seq}
	}
	require.NoError(t, run("r1", "2025-01-10T12:00:00Z", false,
		sinktest.RawBatch(mem, p("a", "1", 1, 1), p("b", "1", 1, 2)),
		sinktest.Build(mem, sinktest.PatientView, []any{"a", int64(1), "Ann"}, []any{"b", int64(2), "Bob"}),
		sinktest.RejectBatch(mem, sinktest.Prov{}, "bad")))
	before := listFiles(t, dir)
	lakeBefore, err := os.ReadFile(filepath.Join(dir, lakeFile))
	require.NoError(t, err)

	err = run("r2", "2025-01-11T12:00:00Z", true,
		sinktest.RawBatch(mem, p("a", "2", 2, 1), p("c", "1", 2, 2)),
		sinktest.Build(mem, sinktest.PatientView, []any{"a", int64(1), "Anne"}, []any{"c", int64(2), "Cy"}),
		sinktest.DeletedBatch(mem, sinktest.Deleted{Type: "Patient", ID: "b"}),
		sinktest.RejectBatch(mem, sinktest.Prov{}, "worse"))
	require.ErrorContains(t, err, "injected rename failure")

	lakeAfter, err := os.ReadFile(filepath.Join(dir, lakeFile))
	require.NoError(t, err)
	require.Equal(t, string(lakeBefore), string(lakeAfter))
	require.Equal(t, before, listFiles(t, dir), "the failed run left files behind")
	require.ElementsMatch(t, []string{"a|Ann", "b|Bob"}, tableRows(t, ds, sinktest.PatientView.Name, "_resource_id", "name"))
	require.ElementsMatch(t, []string{"Patient|a|1", "Patient|b|1"}, tableRows(t, ds, schemas.RawTable, "resource_type", "id", "version_id"))
	require.Equal(t, []string{"bad"}, tableRows(t, ds, schemas.RejectsTable, "reason"))
	cp, ok, err := s.Checkpoint(ctx, "src")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "r1", cp.ExportID)

	// A fresh process over the same directory sees the same state.
	s2 := open(t, dir)
	require.Equal(t, s.LiveFiles(sinktest.PatientView.Name), s2.LiveFiles(sinktest.PatientView.Name))

	require.NoError(t, run("r3", "2025-01-11T12:00:00Z", false,
		sinktest.RawBatch(mem, p("a", "2", 2, 1)),
		sinktest.Build(mem, sinktest.PatientView, []any{"a", int64(1), "Anne"}),
		sinktest.DeletedBatch(mem, sinktest.Deleted{Type: "Patient", ID: "b"})))
	require.ElementsMatch(t, []string{"a|Anne"}, tableRows(t, ds, sinktest.PatientView.Name, "_resource_id", "name"))
	require.ElementsMatch(t, []string{"Patient|a|2"}, tableRows(t, ds, schemas.RawTable, "resource_type", "id", "version_id"))
	// Old snapshot files are garbage-collected after the publish.
	for _, f := range before {
		if strings.HasPrefix(f, sinktest.PatientView.Name+"/") {
			require.NoFileExists(t, filepath.Join(dir, f))
		}
	}
}

// TestCrashLeftoversAreCollected simulates a process killed mid-run: staged
// and unpublished files are on disk; a new Sink removes them and keeps the state.
func TestCrashLeftoversAreCollected(t *testing.T) {
	ctx := t.Context()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	s := open(t, dir, WithAllocator(mem))
	require.NoError(t, s.Prepare(ctx, []*schemas.Table{sinktest.PatientView}))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "src", ExportID: "x", TransactionTime: "2025-01-10T12:00:00Z"})
	require.NoError(t, err)
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "a", Seq: 1})))
	require.NoError(t, txn.Write(ctx, sinktest.RejectBatch(mem, sinktest.Prov{}, "bad")))
	for _, fs := range txn.(*Txn).stages { // "crash": files flushed, never published
		_, err := fs.close()
		require.NoError(t, err)
	}
	require.NotEmpty(t, listFiles(t, filepath.Join(dir, "_staging")))
	s2 := open(t, dir, WithAllocator(mem))
	require.NoDirExists(t, filepath.Join(dir, "_staging", txn.(*Txn).tag))
	for _, f := range listFiles(t, dir) {
		require.False(t, strings.HasSuffix(f, ".parquet"), "leftover %s", f)
	}
	_, ok, err := s2.Checkpoint(ctx, "src")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestViewsSQL(t *testing.T) {
	ctx := t.Context()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	s := open(t, dir, WithAllocator(mem))
	require.NoError(t, s.Prepare(ctx, []*schemas.Table{sinktest.PatientView, sinktest.CodeView}))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "src", ExportID: "x", TransactionTime: "2025-01-10T12:00:00Z"})
	require.NoError(t, err)
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "a", Seq: 1, LastUpdated: time.Now()})))
	require.NoError(t, txn.Write(ctx, sinktest.Build(mem, sinktest.PatientView, []any{"a", int64(1), "Ann"})))
	require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	data, err := os.ReadFile(filepath.Join(dir, viewsFile))
	require.NoError(t, err)
	sql := string(data)
	var b strings.Builder
	require.NoError(t, s.WriteDuckDBViews(&b))
	require.Equal(t, b.String(), sql)
	for _, f := range s.LiveFiles(sinktest.PatientView.Name) {
		require.Contains(t, sql, "'"+f+"'")
		require.FileExists(t, f)
	}
	require.Len(t, s.LiveFiles(sinktest.PatientView.Name), 1)
	require.Contains(t, sql, `CREATE OR REPLACE VIEW "observation_code" AS SELECT CAST(NULL AS VARCHAR) AS "namespace", CAST(NULL AS VARCHAR) AS "source", CAST(NULL AS VARCHAR) AS "_resource_id", CAST(NULL AS VARCHAR) AS "code", CAST(NULL AS INTEGER) AS "idx" WHERE false;`)
}

func TestReplaceTable(t *testing.T) {
	ctx := t.Context()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	s := open(t, dir, WithAllocator(mem))
	require.NoError(t, s.Prepare(ctx, []*schemas.Table{sinktest.PatientView}))
	v := sinktest.PatientView
	seq := func(bs ...schemas.Batch) func(func(schemas.Batch) error) error {
		return func(emit func(schemas.Batch) error) error {
			for i, b := range bs {
				if err := emit(b); err != nil {
					for _, rest := range bs[i+1:] {
						rest.Release()
					}
					return err
				}
			}
			return nil
		}
	}
	require.NoError(t, s.ReplaceTable(ctx, v, seq(
		sinktest.Build(mem, v, []any{"a", int64(1), "Ann"}),
		sinktest.Build(mem, v, []any{"b", int64(2), "Bob"}))))
	require.ElementsMatch(t, []string{"a|Ann", "b|Bob"}, tableRows(t, s.st, v.Name, "_resource_id", "name"))
	old := s.LiveFiles(v.Name)
	failing := func(emit func(schemas.Batch) error) error {
		if err := emit(sinktest.Build(mem, v, []any{"c", int64(1), "Cy"})); err != nil {
			return err
		}
		return errors.New("view evaluation failed")
	}
	require.ErrorContains(t, s.ReplaceTable(ctx, v, failing), "view evaluation failed")
	require.Equal(t, old, s.LiveFiles(v.Name))
	require.ElementsMatch(t, []string{"a|Ann", "b|Bob"}, tableRows(t, s.st, v.Name, "_resource_id", "name"))
	for _, f := range listFiles(t, dir) {
		if strings.HasSuffix(f, ".parquet") {
			require.Contains(t, old, filepath.Join(dir, f), "unlisted file %s left behind", f)
		}
	}
}

// A crash after _lake.json is published but before views.sql is rewritten
// leaves views.sql naming old files; opening the lake rewrites it.
func TestOpenRewritesStaleViewsSQL(t *testing.T) {
	ctx := t.Context()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	s := open(t, dir, WithAllocator(mem))
	require.NoError(t, s.Prepare(ctx, []*schemas.Table{sinktest.PatientView}))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "src", ExportID: "r1", TransactionTime: "2025-01-01T00:00:00Z"})
	require.NoError(t, err)
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "a", VersionID: "1", LastUpdated: sinktest.T(1), Seq: 1})))
	require.NoError(t, txn.Write(ctx, sinktest.Build(mem, sinktest.PatientView, []any{"a", int64(1), "Ann"})))
	require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	var want bytes.Buffer
	require.NoError(t, s.WriteDuckDBViews(&want))
	require.Contains(t, want.String(), ".parquet")
	stale := "CREATE OR REPLACE VIEW patient AS SELECT * FROM read_parquet(['gone.parquet']);\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "views.sql"), []byte(stale), 0o644))

	open(t, dir, WithAllocator(mem))
	got, err := os.ReadFile(filepath.Join(dir, "views.sql"))
	require.NoError(t, err)
	require.Equal(t, want.String(), string(got))
}

// TestStatisticsOutliveReleasedBatches: the min/max statistics of the
// lake's files are those of the rows written, even though the writer
// encodes a row group's statistics only when it closes the group (at the
// next one, or at the file's end), after the batches were released and
// their buffers (mempool.PoolAllocator) handed out again for other rows.
func TestStatisticsOutliveReleasedBatches(t *testing.T) {
	ctx := t.Context()
	pool := mempool.NewPoolAllocator(64 << 20)
	st, err := NewDirStore(t.TempDir())
	require.NoError(t, err)
	schema := arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	// Long, distinct values: past the dictionary page limit the column
	// falls back to plain encoding, whose statistics point into the batch.
	pad := strings.Repeat("x", 1000)
	batch := func(prefix string) arrow.RecordBatch {
		b := array.NewRecordBuilder(pool, schema)
		defer b.Release()
		for i := range 2000 {
			b.Field(0).(*array.StringBuilder).Append(fmt.Sprintf("%s%04d", prefix, i) + pad)
		}
		return b.NewRecordBatch()
	}
	fs := newFileSet(ctx, st, memory.DefaultAllocator, compress.Codecs.Snappy, schema, "t")
	rec := batch("m")
	require.NoError(t, fs.write(rec))
	rec.Release()
	// Row groups are written at finish; reuse the freed buffers before the
	// file is closed, as the transform's next batches would.
	require.NoError(t, fs.group.WriteTo(fs.fw, schema, nil))
	batch("z").Release()
	files, err := fs.close()
	require.NoError(t, err)
	require.Len(t, files, 1)

	obj, err := st.Open(ctx, files[0].Path)
	require.NoError(t, err)
	defer obj.Close()
	f, err := file.NewParquetReader(obj)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, 1, f.NumRowGroups())
	cc, err := f.MetaData().RowGroup(0).ColumnChunk(0)
	require.NoError(t, err)
	stats, err := cc.Statistics()
	require.NoError(t, err)
	require.True(t, stats.HasMinMax())
	bs := stats.(*metadata.ByteArrayStatistics)
	require.Equal(t, "m0000"+pad, string(bs.Min()))
	require.Equal(t, "m1999"+pad, string(bs.Max()))
}

package duckdb

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

var modes = []stageMode{stageParquetPlain, stageParquetSnappy}

func checked(t *testing.T) *memory.CheckedAllocator {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { mem.AssertSize(t, 0) })
	return mem
}

var typedView = sinktest.ViewTable("typed", "Patient",
	arrow.Field{Name: "flag", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	arrow.Field{Name: "n32", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	arrow.Field{Name: "f", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	arrow.Field{Name: "birth", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
	arrow.Field{Name: "at", Type: schemas.Timestamp, Nullable: true},
	arrow.Field{Name: "given", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
	arrow.Field{Name: "select", Type: arrow.BinaryTypes.String, Nullable: true}, // a keyword
)

// TestTypesRoundTrip checks every column type through both staging paths,
// and the JSON type of the raw resource column.
func TestTypesRoundTrip(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			mem, s, ctx := checked(t), open(t, mode), t.Context()
			defer s.Close()
			require.NoError(t, s.Prepare(ctx, []*schemas.Table{typedView}))
			at := time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)
			txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "s", ExportID: "e", TransactionTime: "2025-03-05T00:00:00+01:00"})
			require.NoError(t, err)
			require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "p1", LastUpdated: at, Seq: 9})))
			require.NoError(t, txn.Write(ctx, sinktest.Build(mem, typedView,
				[]any{"p1", int64(9), true, int32(-7), 2.5, time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC), at, []any{"Ann", nil, "Lee"}, "x"},
				[]any{"p1", int64(9), nil, nil, nil, nil, nil, nil, nil})))
			require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
			require.ElementsMatch(t, []string{
				"true|-7|2.5|1970-01-02T00:00:00Z|2025-03-04T05:06:07.123456Z|[Ann <nil> Lee]|x",
				"NULL|NULL|NULL|NULL|NULL|NULL|NULL",
			}, rows(t, s, "typed", "flag", "n32", "f", "birth", "at", "given", "select"))
			var typ, rt string
			require.NoError(t, s.DB().QueryRowContext(ctx,
				`SELECT typeof(resource), resource->>'$.resourceType' FROM fhir_resources`).Scan(&typ, &rt))
			require.Equal(t, "JSON", typ)
			require.Equal(t, "Patient", rt)
			require.Equal(t, []string{"2025-03-04T05:06:07.123456Z"}, rows(t, s, schemas.RawTable, "last_updated"))
			entries, err := os.ReadDir(s.spool)
			if err == nil {
				require.Empty(t, entries, "the run's spool folder is removed")
			}
		})
	}
}

func TestWriteErrorsReleaseBatch(t *testing.T) {
	mem, s, ctx := checked(t), open(t, stageParquetPlain), t.Context()
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, nil))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "s"})
	require.NoError(t, err)
	defer func() { require.NoError(t, txn.Rollback(ctx)) }()
	err = txn.Write(ctx, sinktest.Build(mem, sinktest.PatientView, []any{"p", int64(1), "n"}))
	require.ErrorContains(t, err, "table patient_view was not prepared")
	wrong := sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "p"})
	wrong.Table = schemas.Rejects
	require.ErrorContains(t, txn.Write(ctx, wrong), "table rejects: batch has 12 columns, table has 9")
}

func TestOneWriterAtATime(t *testing.T) {
	s, ctx := open(t, stageParquetPlain), t.Context()
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, nil))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "s"})
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = s.Begin(short, sinks.RunInfo{RunID: "r2", Source: "s"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, s.Prepare(short, nil), context.DeadlineExceeded)
	require.NoError(t, txn.Rollback(ctx))
	txn, err = s.Begin(ctx, sinks.RunInfo{RunID: "r3", Source: "s"})
	require.NoError(t, err)
	require.NoError(t, txn.Commit(ctx, sinks.RunSummary{}))
}

func TestBeginRejectsBadTransactionTime(t *testing.T) {
	s := open(t, stageParquetPlain)
	defer s.Close()
	_, err := s.Begin(t.Context(), sinks.RunInfo{RunID: "r1", Source: "s", TransactionTime: "yesterday"})
	require.ErrorContains(t, err, `transaction_time "yesterday" is not an instant`)
}

// TestFailureAtEveryStep fails Commit before each of its statements and
// checks that nothing of the run is visible, then that the sink recovers.
func TestFailureAtEveryStep(t *testing.T) {
	mem, s, ctx := checked(t), open(t, stageParquetPlain), t.Context()
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, sinktest.Tables()))
	batches := func(vid string) []schemas.Batch {
		return []schemas.Batch{
			sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "p1", VersionID: vid, LastUpdated: sinktest.T(len(vid)), Seq: 1}),
			sinktest.Build(mem, sinktest.PatientView, []any{"p1", int64(1), "name-" + vid}),
			sinktest.RejectBatch(mem, sinktest.Prov{}, "r-"+vid),
			sinktest.DeletedBatch(mem, sinktest.Deleted{Type: "Patient", ID: "gone"}),
		}
	}
	apply := func(run, vid, failBefore string) error {
		txn, err := s.Begin(ctx, sinks.RunInfo{RunID: run, Source: "s", ExportID: run, TransactionTime: "2025-02-01T00:00:00Z"})
		require.NoError(t, err)
		txn.(*Txn).failBefore = failBefore
		for _, b := range batches(vid) {
			require.NoError(t, txn.Write(ctx, b))
		}
		err = txn.Commit(ctx, sinks.RunSummary{Outcome: "success"})
		require.NoError(t, txn.Rollback(ctx))
		return err
	}
	require.NoError(t, apply("r0", "1", ""))
	steps := (&Txn{s: s, stages: map[string]*stage{}}).steps("del", sinks.RunSummary{})
	require.Greater(t, len(steps), 8)
	for _, st := range steps {
		err := apply("bad", "22", st.name)
		require.ErrorContains(t, err, "injected failure before "+st.name)
		require.Equal(t, []string{"1"}, rows(t, s, schemas.RawTable, "version_id"), st.name)
		require.Equal(t, []string{"name-1"}, rows(t, s, sinktest.PatientView.Name, "name"), st.name)
		require.Equal(t, []string{"r-1"}, rows(t, s, schemas.RejectsTable, "reason"), st.name)
		require.Equal(t, []string{"r0"}, rows(t, s, schemas.RunsTable, "run_id"), st.name)
		require.Equal(t, []string{"r0"}, rows(t, s, schemas.CheckTable, "export_id"), st.name)
	}
	require.NoError(t, apply("r1", "22", ""))
	require.Equal(t, []string{"name-22"}, rows(t, s, sinktest.PatientView.Name, "name"))
}

// TestDurableAcrossReopen closes the sink and opens the file again.
func TestDurableAcrossReopen(t *testing.T) {
	mem, ctx := checked(t), t.Context()
	cfg := configs.DuckDBSink{Path: filepath.Join(t.TempDir(), "w.duckdb")}
	s, err := New(cfg, sinks.Env{Name: "d"})
	require.NoError(t, err)
	_, ok, err := s.Checkpoint(ctx, "s")
	require.NoError(t, err)
	require.False(t, ok, "no checkpoint before Prepare")
	require.NoError(t, s.Prepare(ctx, sinktest.Tables()))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "s", ExportID: "e1", TransactionTime: "2025-01-20T10:11:12-05:00"})
	require.NoError(t, err)
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "p1", Seq: 1})))
	require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	require.NoError(t, s.Close())
	// The published file is in the storage format DuckDB 1.x reads
	// (version 64, STORAGE_VERSION 'v1.0.0'), not DuckDB 2.0's own.
	head := make([]byte, 20)
	f, err := os.Open(cfg.Path)
	require.NoError(t, err)
	_, err = io.ReadFull(f, head)
	require.NoError(t, f.Close())
	require.NoError(t, err)
	require.Equal(t, "DUCK", string(head[8:12]))
	require.Equal(t, uint64(64), binary.LittleEndian.Uint64(head[12:20]))

	s, err = New(cfg, sinks.Env{Name: "d"})
	require.NoError(t, err)
	defer s.Close()
	cp, ok, err := s.Checkpoint(ctx, "s")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "2025-01-20T10:11:12-05:00", cp.TransactionTime)
	tables, err := s.Tables(ctx)
	require.NoError(t, err)
	counts := map[string]int64{}
	for _, ti := range tables {
		counts[ti.Name] = ti.Rows
	}
	require.Equal(t, map[string]int64{"checkpoints": 1, "fhir_resources": 1, "group_member": 0, "observation_code": 0,
		"operation_outcomes": 0, "patient_view": 0, "rejects": 0, "runs": 1}, counts)
}

func TestReplaceTable(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			mem, s, ctx := checked(t), open(t, mode), t.Context()
			defer s.Close()
			require.NoError(t, s.Prepare(ctx, sinktest.Tables()))
			emitAll := func(rows ...[]any) func(func(schemas.Batch) error) error {
				return func(emit func(schemas.Batch) error) error {
					for _, r := range rows {
						if err := emit(sinktest.Build(mem, sinktest.PatientView, r)); err != nil {
							return err
						}
					}
					return nil
				}
			}
			require.NoError(t, s.ReplaceTable(ctx, sinktest.PatientView, emitAll([]any{"a", int64(1), "x"}, []any{"b", int64(2), "y"})))
			require.ElementsMatch(t, []string{"a|x", "b|y"}, rows(t, s, "patient_view", "_resource_id", "name"))

			// A failing producer leaves the old table.
			boom := errors.New("boom")
			err := s.ReplaceTable(ctx, sinktest.PatientView, func(emit func(schemas.Batch) error) error {
				if err := emitAll([]any{"c", int64(3), "z"})(emit); err != nil {
					return err
				}
				return boom
			})
			require.ErrorIs(t, err, boom)
			require.ElementsMatch(t, []string{"a|x", "b|y"}, rows(t, s, "patient_view", "_resource_id", "name"))

			// A narrower schema replaces the columns too.
			narrow := sinktest.ViewTable("patient_view", "Patient")
			require.NoError(t, s.ReplaceTable(ctx, narrow, func(emit func(schemas.Batch) error) error {
				return emit(sinktest.Build(mem, narrow, []any{"c", int64(3)}))
			}))
			require.Equal(t, []string{"c"}, rows(t, s, "patient_view", "_resource_id"))
			cols, err := existingColumns(ctx, s.DB(), "patient_view")
			require.NoError(t, err)
			require.Equal(t, map[string]bool{"namespace": true, "source": true, "_resource_id": true}, cols)
		})
	}
}

func TestConfigApplied(t *testing.T) {
	s := open(t, stageParquetPlain) // Threads: 2, MemoryLimit: 1GB
	defer s.Close()
	var threads int64
	var limit string
	require.NoError(t, s.DB().QueryRowContext(t.Context(),
		"SELECT current_setting('threads'), current_setting('memory_limit')").Scan(&threads, &limit))
	require.Equal(t, int64(2), threads)
	require.Contains(t, limit, "953.6 MiB") // 1GB in DuckDB's binary units
	var flush string
	var background bool
	require.NoError(t, s.DB().QueryRowContext(t.Context(),
		"SELECT current_setting('allocator_flush_threshold'), current_setting('allocator_background_threads')").Scan(&flush, &background))
	require.Contains(t, []string{"15.2 MiB", "16MB"}, flush) // 16MB, as DuckDB 1.x and 2.0 print it
	require.True(t, background)
	_, err := New(configs.DuckDBSink{Path: filepath.Join(t.TempDir(), "x.duckdb"), MemoryLimit: "lots"}, sinks.Env{Name: "bad"})
	require.ErrorContains(t, err, "duckdb sink bad: open")
}

// TestLargeRunUnderMemoryLimit stages and commits a run larger than
// DuckDB's memory limit through both staging paths, generating batches on
// the fly: staging must spill or stream to disk rather than accumulate in
// memory, and Commit must not need the run in memory (the Parquet path
// once ran out of memory casting the staged text to JSON).
func TestLargeRunUnderMemoryLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("writes about 100 MB per staging path")
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			mem, ctx := checked(t), t.Context()
			dir := t.TempDir()
			s, err := New(configs.DuckDBSink{Path: filepath.Join(dir, "w.duckdb"), MemoryLimit: "100MB", Threads: 1}, sinks.Env{Name: "big"})
			require.NoError(t, err)
			defer s.Close()
			s.stg.mode = mode
			require.NoError(t, s.Prepare(ctx, []*schemas.Table{benchObsView}))
			txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "big", Source: "s", ExportID: "e", TransactionTime: "2025-02-01T00:00:00Z"})
			require.NoError(t, err)
			const n, per = 19200, 1600
			var jsonBytes int64
			for start := 0; start < n; start += per {
				batches, b := benchBatchesFrom(mem, start, per, per)
				jsonBytes += b
				for _, bt := range batches {
					require.NoError(t, txn.Write(ctx, bt))
				}
			}
			require.Greater(t, jsonBytes, int64(100<<20))
			require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
			var raws, views, ids int64
			require.NoError(t, s.DB().QueryRowContext(ctx, `SELECT (SELECT count(*) FROM fhir_resources),
				count(*), count(DISTINCT _resource_id) FROM observation_bench`).Scan(&raws, &views, &ids))
			require.Equal(t, [3]int64{n, n, n}, [3]int64{raws, views, ids})
		})
	}
}

// TestEmptyBatchesAndMemoryDB commits runs whose batches have no rows, in
// both staging paths, and a run into an in-memory database.
func TestEmptyBatchesAndMemoryDB(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			mem, ctx := checked(t), t.Context()
			s, err := New(configs.DuckDBSink{Path: ":memory:"}, sinks.Env{Name: "m"})
			require.NoError(t, err)
			s.stg.mode = mode
			require.NoError(t, s.Prepare(ctx, sinktest.Tables()))
			txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "s", ExportID: "e", TransactionTime: "2025-02-01T00:00:00Z"})
			require.NoError(t, err)
			require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem)))
			require.NoError(t, txn.Write(ctx, sinktest.Build(mem, sinktest.PatientView)))
			require.NoError(t, txn.Write(ctx, sinktest.RejectBatch(mem, sinktest.Prov{})))
			require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "p", Seq: 1})))
			require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
			require.Equal(t, []string{"p"}, rows(t, s, schemas.RawTable, "id"))
			require.Empty(t, rows(t, s, schemas.RejectsTable, "reason"))
			spool := s.spool
			require.NoError(t, s.Close())
			_, err = os.Stat(spool)
			require.True(t, os.IsNotExist(err), "the temporary spool folder is removed")
		})
	}
}

// TestInvalidJSONFailsCommit: a resource that is not valid JSON (here a bad
// escape, which the transform's parser lets through) fails the commit in
// both staging paths, whether DuckDB casts the text (Appender) or reads a
// Parquet JSON column (which it validates on read), and the sink stays
// usable.
func TestInvalidJSONFailsCommit(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			mem, s, ctx := checked(t), open(t, mode), t.Context()
			defer s.Close()
			require.NoError(t, s.Prepare(ctx, nil))
			run := sinks.RunInfo{RunID: "bad", Source: "s", ExportID: "e1", TransactionTime: "2025-02-01T00:00:00Z"}
			txn, err := s.Begin(ctx, run)
			require.NoError(t, err)
			require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem,
				sinktest.Raw{Type: "Patient", ID: "ok", Seq: 1},
				sinktest.Raw{Type: "Patient", ID: "bad", Seq: 2, Resource: `{"resourceType":"Patient","id":"bad","x":"\q"}`})))
			err = txn.Commit(ctx, sinks.RunSummary{Outcome: "success"})
			require.ErrorContains(t, err, "JSON")
			require.Empty(t, rows(t, s, schemas.RawTable, "id"))
			_, ok, err := s.Checkpoint(ctx, "s")
			require.NoError(t, err)
			require.False(t, ok)

			run.RunID, run.ExportID = "good", "e2"
			txn, err = s.Begin(ctx, run)
			require.NoError(t, err)
			require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "ok", Seq: 1})))
			require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
			require.Equal(t, []string{"ok"}, rows(t, s, schemas.RawTable, "id"))
		})
	}
}

// TestRawStreamsIntoOpenTransaction: raw rows reach the raw table through
// Parquet parts while the run is open, typed JSON by the part's logical
// type (no VARCHAR-to-JSON cast, which once held a run's text in memory),
// tagged with the run and their _seq, and invisible to readers until
// Commit; a Rollback leaves nothing behind.
func TestRawStreamsIntoOpenTransaction(t *testing.T) {
	for _, commit := range []bool{false, true} {
		t.Run(fmt.Sprint("commit=", commit), func(t *testing.T) {
			mem, s, ctx := checked(t), open(t, stageParquetSnappy), t.Context()
			defer s.Close()
			require.NoError(t, s.Prepare(ctx, nil))
			txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r", Source: "s", ExportID: "e", TransactionTime: "2025-02-01T00:00:00Z"})
			require.NoError(t, err)
			require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "p", Seq: 7})))
			require.Equal(t, "1", setting(t, s, "threads"), "DuckDB streams with stream_threads")
			defer func() { require.Equal(t, "2", setting(t, s, "threads"), "threads restored") }()
			tx := txn.(*Txn)
			require.NoError(t, tx.raw.flush(ctx))
			// A second part after the first is queued.
			require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "q", Seq: 8})))
			require.NoError(t, tx.raw.finish(ctx))
			var typ, ids, run string
			var seqs int64
			require.NoError(t, tx.tx.QueryRowContext(ctx, `SELECT any_value(typeof(resource)), string_agg(resource->>'id', ',' ORDER BY id),
				any_value(run_id), sum(_seq) FROM fhir_resources`).Scan(&typ, &ids, &run, &seqs))
			require.Equal(t, []any{"JSON", "p,q", "r", int64(15)}, []any{typ, ids, run, seqs})
			require.Empty(t, rows(t, s, schemas.RawTable, "id"), "uncommitted rows are invisible")
			parts, err := filepath.Glob(filepath.Join(tx.dir, "raw_*.parquet"))
			require.NoError(t, err)
			require.Empty(t, parts, "loaded parts are removed")
			if commit {
				require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
				require.ElementsMatch(t, []string{"p|r|7", "q|r|8"}, rows(t, s, schemas.RawTable, "id", "run_id", "_seq"))
				return
			}
			require.NoError(t, txn.Rollback(ctx))
			require.Empty(t, rows(t, s, schemas.RawTable, "id"))
		})
	}
}

func setting(t *testing.T, s *Sink, name string) string {
	t.Helper()
	var v string
	require.NoError(t, s.DB().QueryRowContext(t.Context(), "SELECT current_setting(?)::VARCHAR", name).Scan(&v))
	return v
}

// TestRawStreamFailure: a part DuckDB refuses fails the run at the next
// Write or at Commit, names the part, leaves nothing visible, restores the
// thread count and frees the sink for the next run.
func TestRawStreamFailure(t *testing.T) {
	mem, s, ctx := checked(t), open(t, stageParquetPlain), t.Context()
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, nil))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r", Source: "s", ExportID: "e"})
	require.NoError(t, err)
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "p", Seq: 1, Resource: `{"resourceType":`})))
	err = txn.Commit(ctx, sinks.RunSummary{Outcome: "success"})
	require.ErrorContains(t, err, "load raw part raw_0000.parquet")
	require.Empty(t, rows(t, s, schemas.RawTable, "id"))
	require.Empty(t, rows(t, s, schemas.RunsTable, "run_id"))
	require.Equal(t, "2", setting(t, s, "threads"))
	txn, err = s.Begin(ctx, sinks.RunInfo{RunID: "r2", Source: "s", ExportID: "e2"})
	require.NoError(t, err)
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "q", Seq: 1})))
	require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	require.Equal(t, []string{"q"}, rows(t, s, schemas.RawTable, "id"))
}

// TestStringCompression: the raw resource column is created without
// string compression, which cost more than the rest of a load (see
// columnDefs); text that FSST or a dictionary would compress stays
// uncompressed after a checkpoint. Other text columns are dictionary
// compressed, and one of unique values (id) still loads whole.
func TestStringCompression(t *testing.T) {
	mem, s, ctx := checked(t), open(t, stageParquetSnappy), t.Context()
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, nil))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r", Source: "s", ExportID: "e", TransactionTime: "2025-02-01T00:00:00Z"})
	require.NoError(t, err)
	body := strings.Repeat(`"text":"the same words again and again",`, 30)
	raws := make([]sinktest.Raw, 4000)
	for i := range raws {
		id := fmt.Sprintf("p%d", i)
		raws[i] = sinktest.Raw{Type: "Patient", ID: id, Seq: int64(i + 1),
			Resource: `{"resourceType":"Patient","id":"` + id + `",` + body + `"n":1}`}
	}
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, raws...)))
	require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	_, err = s.DB().ExecContext(ctx, "CHECKPOINT")
	require.NoError(t, err)
	methods := func(col string) []string {
		rs, err := s.DB().QueryContext(ctx, `SELECT DISTINCT compression FROM pragma_storage_info('fhir_resources')
			WHERE column_name = ? AND segment_type <> 'VALIDITY' ORDER BY 1`, col)
		require.NoError(t, err)
		defer rs.Close()
		var out []string
		for rs.Next() {
			var m string
			require.NoError(t, rs.Scan(&m))
			out = append(out, m)
		}
		require.NoError(t, rs.Err())
		return out
	}
	require.Equal(t, []string{"Uncompressed"}, methods("resource"))
	require.Equal(t, []string{"Dictionary"}, methods("resource_type"))
	require.Equal(t, []string{"Uncompressed"}, methods("id"), "a resource key (schemas.KeyMetadata)")
	var n, distinct int
	require.NoError(t, s.DB().QueryRowContext(ctx, `SELECT count(*), count(DISTINCT id) FROM fhir_resources
		WHERE id LIKE 'p%'`).Scan(&n, &distinct))
	require.Equal(t, []int{len(raws), len(raws)}, []int{n, distinct})
}

// TestStageSpansFiles: a staged table continues in a new Parquet file every
// staging.fileRowGroups row groups (bounding the writer's metadata), and
// Commit loads the rows of all its files.
func TestStageSpansFiles(t *testing.T) {
	mem, ctx := checked(t), t.Context()
	s := openTuned(t, func(stg *staging) { stg.mode, stg.fileRowGroups = stageParquetPlain, 2 })
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, []*schemas.Table{sinktest.PatientView}))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "s", ExportID: "e", TransactionTime: "2025-02-01T00:00:00Z"})
	require.NoError(t, err)
	var raws []sinktest.Raw
	var want []string
	for i := range 7 {
		id := fmt.Sprintf("p%d", i)
		raws = append(raws, sinktest.Raw{Type: "Patient", ID: id, Seq: int64(i + 1)})
		want = append(want, id+"|n"+id)
		require.NoError(t, txn.Write(ctx, sinktest.Build(mem, sinktest.PatientView, []any{id, int64(i + 1), "n" + id})))
		require.NoError(t, txn.(*Txn).stages[sinktest.PatientView.Name].flush())
	}
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, raws...)))
	files, err := filepath.Glob(filepath.Join(txn.(*Txn).dir, "*patient_view*.parquet"))
	require.NoError(t, err)
	require.Len(t, files, 4, "7 row groups, 2 per file")
	require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	require.ElementsMatch(t, want, rows(t, s, sinktest.PatientView.Name, "_resource_id", "name"))
}

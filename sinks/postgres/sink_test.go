package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

// testDSN skips the test unless FHIRFERRY_TEST_POSTGRES names a database.
func testDSN(t testing.TB) string {
	dsn := os.Getenv("FHIRFERRY_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("FHIRFERRY_TEST_POSTGRES is not set")
	}
	return dsn
}

// openSink opens a sink on a fresh random schema, dropped at cleanup, so
// tests can run in parallel.
func openSink(t testing.TB) *Sink {
	dsn := testDSN(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "fftest_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		require.NoError(t, err)
	})
	var log *slog.Logger
	if os.Getenv("FHIRFERRY_TEST_DEBUG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(context.Background(), configs.PostgresSink{DSN: dsn, Schema: schema}, sinks.Env{Name: "pg", Logger: log})
	require.NoError(t, err)
	return s
}

// rows formats every row of table as cols joined by "|".
func rows(t testing.TB, s *Sink, table string, cols ...string) []string {
	exprs := make([]string, len(cols))
	for i, c := range cols {
		exprs[i] = fmt.Sprintf("coalesce(%s::text, 'NULL')", pgx.Identifier{c}.Sanitize())
	}
	r, err := s.pool.Query(context.Background(), fmt.Sprintf("SELECT concat_ws('|', %s) FROM %s", strings.Join(exprs, ", "), s.ident(table)))
	require.NoError(t, err)
	out, err := pgx.CollectRows(r, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

func TestSemantics(t *testing.T) {
	testDSN(t)
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T) sinks.Sink { return openSink(t) },
		Rows: func(t *testing.T, s sinks.Sink, table string, cols ...string) []string {
			return rows(t, s.(*Sink), table, cols...)
		},
	})
}

// typedView exercises every mapped type, a list, a JSON-marked column and an
// ansi/type hint.
var typedView = sinktest.ViewTable("typed", "Patient",
	arrow.Field{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "b", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	arrow.Field{Name: "i", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	arrow.Field{Name: "l", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	arrow.Field{Name: "f", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	arrow.Field{Name: "d", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
	arrow.Field{Name: "ts", Type: schemas.Timestamp, Nullable: true},
	arrow.Field{Name: "tags", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
	arrow.Field{Name: "j", Type: arrow.BinaryTypes.String, Nullable: true, Metadata: schemas.JSONMetadata},
	arrow.Field{Name: "amount", Type: arrow.BinaryTypes.String, Nullable: true,
		Metadata: arrow.NewMetadata([]string{"ansi/type"}, []string{"DECIMAL(10,2)"})},
)

func TestTypesRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	s := openSink(t)
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, []*schemas.Table{typedView}))

	var types []string
	r, err := s.pool.Query(ctx, `SELECT column_name || ' ' || format_type(a.atttypid, a.atttypmod)
		FROM information_schema.columns c JOIN pg_attribute a ON a.attrelid = ($1||'.'||'typed')::regclass AND a.attname = c.column_name
		WHERE table_schema = $1 AND table_name = 'typed' ORDER BY ordinal_position`, s.schema)
	require.NoError(t, err)
	types, err = pgx.CollectRows(r, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"namespace text", "source text", "_resource_id text", "s text", "b boolean", "i integer", "l bigint",
		"f double precision", "d date", "ts timestamp with time zone", "tags text[]", "j jsonb",
		"amount numeric(10,2)"}, types)

	ts := time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "src", ExportID: "x1", TransactionTime: "2025-03-05T00:00:00Z"})
	require.NoError(t, err)
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "p1", VersionID: "1", LastUpdated: ts, Seq: 1,
		Resource: `{"resourceType":"Patient","id":"p1","name":[{"family":"O'Brien"}]}`})))
	require.NoError(t, txn.Write(ctx, sinktest.Build(mem, typedView,
		[]any{"p1", int64(1), "x", true, int32(-7), int64(1) << 40, 2.5, ts, ts, []any{"a", nil, "c"}, `{"k":[1,2]}`, "12.345"},
		[]any{"p1", int64(1), nil, nil, nil, nil, nil, nil, nil, nil, nil, nil})))
	require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))

	require.ElementsMatch(t, []string{
		`x|true|-7|1099511627776|2.5|2025-03-04|2025-03-04 05:06:07.123456+00|{a,NULL,c}|{"k": [1, 2]}|12.35`,
		`NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL`,
	}, rowsSQL(t, s, `SELECT concat_ws('|', coalesce(s,'NULL'), coalesce(b::text,'NULL'), coalesce(i::text,'NULL'),
		coalesce(l::text,'NULL'), coalesce(f::text,'NULL'), coalesce(d::text,'NULL'),
		coalesce((ts AT TIME ZONE 'UTC')::text || '+00','NULL'), coalesce(tags::text,'NULL'), coalesce(j::text,'NULL'),
		coalesce(amount::text,'NULL')) FROM %s`, "typed"))
	// The raw JSON is queryable with jsonb operators.
	require.Equal(t, []string{"O'Brien"}, rowsSQL(t, s, `SELECT resource->'name'->0->>'family' FROM %s`, schemas.RawTable))
	require.Equal(t, []string{"2025-03-04 05:06:07.123456+00"},
		rowsSQL(t, s, `SELECT (last_updated AT TIME ZONE 'UTC')::text || '+00' FROM %s`, schemas.RawTable))
}

func rowsSQL(t *testing.T, s *Sink, q, table string) []string {
	r, err := s.pool.Query(t.Context(), fmt.Sprintf(q, s.ident(table)))
	require.NoError(t, err)
	out, err := pgx.CollectRows(r, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

func TestBadAnsiTypeIsRejected(t *testing.T) {
	t.Parallel()
	s := openSink(t)
	defer s.Close()
	for _, hint := range []string{"int; DROP TABLE x", "NOSUCHTYPE"} {
		v := sinktest.ViewTable("bad", "Patient", arrow.Field{Name: "c", Type: arrow.BinaryTypes.String, Nullable: true,
			Metadata: arrow.NewMetadata([]string{"ansi/type"}, []string{hint})})
		err := s.Prepare(t.Context(), []*schemas.Table{v})
		require.ErrorContains(t, err, `"c"`, hint)
	}
}

// TestSameExportIsNoop checks that a sink holding an export applies it again
// as a no-op: appended rejects are not doubled and the checkpoint stays.
func TestSameExportIsNoop(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	s := openSink(t)
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, nil))
	apply := func(runID, exportID string) {
		txn, err := s.Begin(ctx, sinks.RunInfo{RunID: runID, Source: "src", ExportID: exportID, TransactionTime: "T-" + exportID})
		require.NoError(t, err)
		require.NoError(t, txn.Write(ctx, sinktest.RejectBatch(mem, sinktest.Prov{}, "bad "+runID)))
		require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: runID, Seq: 1})))
		require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	}
	apply("r1", "x1")
	apply("r2", "x1")
	require.Equal(t, []string{"bad r1"}, rows(t, s, schemas.RejectsTable, "reason"))
	require.Equal(t, []string{"r1"}, rows(t, s, schemas.RawTable, "id"))
	require.ElementsMatch(t, []string{"r1|x1", "r2|x1"}, rows(t, s, schemas.RunsTable, "run_id", "export_id"))
	apply("r3", "x2")
	require.ElementsMatch(t, []string{"bad r1", "bad r3"}, rows(t, s, schemas.RejectsTable, "reason"))
	cp, ok, err := s.Checkpoint(ctx, "src")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "x2", cp.ExportID)
	require.Equal(t, "T-x2", cp.TransactionTime)
}

// TestConcurrentRunsOfOneSource checks the per-source lock: a second Begin
// for the same source fails fast instead of interleaving two runs.
func TestConcurrentRunsOfOneSource(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openSink(t)
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, nil))
	t1, err := s.Begin(ctx, sinks.RunInfo{RunID: "a", Source: "src", ExportID: "x"})
	require.NoError(t, err)
	_, err = s.Begin(ctx, sinks.RunInfo{RunID: "b", Source: "src", ExportID: "y"})
	require.ErrorContains(t, err, "another run")
	t3, err := s.Begin(ctx, sinks.RunInfo{RunID: "c", Source: "other", ExportID: "y"})
	require.NoError(t, err)
	require.NoError(t, t1.Rollback(ctx))
	require.NoError(t, t3.Rollback(ctx))
	t2, err := s.Begin(ctx, sinks.RunInfo{RunID: "b", Source: "src", ExportID: "y"})
	require.NoError(t, err)
	require.NoError(t, t2.Rollback(ctx))
}

// TestWriteErrorReleasesAndPoisons checks that a batch for an unprepared
// table is released and fails the run, which then rolls back cleanly.
func TestWriteErrorReleasesAndPoisons(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	s := openSink(t)
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, nil))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "a", Source: "src", ExportID: "x", TransactionTime: "t"})
	require.NoError(t, err)
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "p", Seq: 1})))
	err = txn.Write(ctx, sinktest.Build(mem, typedView))
	require.NoError(t, err, "an empty batch is a no-op")
	err = txn.Write(ctx, sinktest.Build(mem, typedView, []any{"p", int64(1), nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}))
	require.ErrorContains(t, err, "not prepared")
	require.Error(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "q", Seq: 2})))
	require.Error(t, txn.Commit(ctx, sinks.RunSummary{}))
	require.NoError(t, txn.Rollback(ctx))
	require.Empty(t, rows(t, s, schemas.RawTable, "id"))
}

func TestReplaceTable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	s := openSink(t)
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, []*schemas.Table{sinktest.PatientView}))
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
	v2 := sinktest.ViewTable(sinktest.PatientView.Name, "Patient",
		arrow.Field{Name: "family", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "amount", Type: arrow.BinaryTypes.String, Nullable: true,
			Metadata: arrow.NewMetadata([]string{"ansi/type"}, []string{"NUMERIC(6,1)"})})
	require.NoError(t, s.ReplaceTable(ctx, v2, seq(
		sinktest.Build(mem, v2, []any{"p1", int64(1), "Smith", "1.26"}),
		sinktest.Build(mem, v2, []any{"p2", int64(9), "Jones", nil}))))
	require.ElementsMatch(t, []string{"p1|Smith|1.3", "p2|Jones|NULL"}, rows(t, s, v2.Name, "_resource_id", "family", "amount"))

	// A failing iterator leaves the previous table in place.
	failing := func(emit func(schemas.Batch) error) error {
		if err := emit(sinktest.Build(mem, v2, []any{"p3", int64(1), "Doe", "2"})); err != nil {
			return err
		}
		return fmt.Errorf("view evaluation failed")
	}
	require.ErrorContains(t, s.ReplaceTable(ctx, v2, failing), "view evaluation failed")
	require.ElementsMatch(t, []string{"p1|Smith|1.3", "p2|Jones|NULL"}, rows(t, s, v2.Name, "_resource_id", "family", "amount"))
}

package sinktest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

// Harness adapts a sink to the semantic suite.
type Harness struct {
	// Open returns a new sink over empty storage (e.g. under t.TempDir()).
	// The suite closes it.
	Open func(t *testing.T) sinks.Sink
	// Rows returns every row of table, each formatted as the values of cols
	// joined by "|" (NULL for a null, strings verbatim, integers in base
	// 10), in any order.
	Rows func(t *testing.T, s sinks.Sink, table string, cols ...string) []string
	// NoJSONCheck is set by sinks that store the resource column without
	// parsing it; the suite then injects the failing commit only through a
	// cancelled context, not through a resource that is not JSON.
	NoJSONCheck bool
}

// Namespace is the namespace of the suite's runs, unless a case says otherwise.
const Namespace = "https://test.example/fhir"

// Base is the time T(0) of the suite's lastUpdated values.
var Base = time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)

// T returns Base plus h hours.
func T(h int) time.Time { return Base.Add(time.Duration(h) * time.Hour) }

// PatientView is a one-row-per-resource view used by the suite.
var PatientView = ViewTable("patient_view", "Patient",
	arrow.Field{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true})

// CodeView is a one-row-per-coding view used by the suite.
var CodeView = ViewTable("observation_code", "Observation",
	arrow.Field{Name: "code", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "idx", Type: arrow.PrimitiveTypes.Int32, Nullable: true})

// Tables returns the tables the suite prepares.
func Tables() []*schemas.Table {
	return append(schemas.System(), PatientView, CodeView)
}

type env struct {
	t   *testing.T
	h   Harness
	s   sinks.Sink
	mem *memory.CheckedAllocator
	ctx context.Context
	n   int
}

func newEnv(t *testing.T, h Harness) *env {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { mem.AssertSize(t, 0) })
	s := h.Open(t)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	e := &env{t: t, h: h, s: s, mem: mem, ctx: t.Context()}
	require.NoError(t, s.Prepare(e.ctx, Tables()))
	return e
}

// run returns a RunInfo for export id with transaction time tt.
func (e *env) run(exportID, tt string) sinks.RunInfo {
	return e.runOf("test", Namespace, exportID, tt)
}

// runOf is run for another source and namespace.
func (e *env) runOf(source, namespace, exportID, tt string) sinks.RunInfo {
	e.n++
	return sinks.RunInfo{RunID: fmt.Sprintf("run-%d", e.n), Source: source, Namespace: namespace, ExportID: exportID,
		TransactionTime: tt, Started: Base}
}

func (e *env) write(run sinks.RunInfo, batches ...schemas.Batch) sinks.Txn {
	txn, err := e.s.Begin(e.ctx, run)
	require.NoError(e.t, err)
	for _, b := range batches {
		require.NoError(e.t, txn.Write(e.ctx, b))
	}
	return txn
}

// apply commits one run made of batches.
func (e *env) apply(exportID, tt string, batches ...schemas.Batch) {
	e.t.Helper()
	e.applyRun(e.run(exportID, tt), batches...)
}

// applyRun commits run made of batches.
func (e *env) applyRun(run sinks.RunInfo, batches ...schemas.Batch) {
	e.t.Helper()
	txn := e.write(run, batches...)
	require.NoError(e.t, txn.Commit(e.ctx, sinks.RunSummary{Finished: Base, Outcome: "success", Resources: 1}))
}

func (e *env) rows(table string, cols ...string) []string {
	e.t.Helper()
	r := e.h.Rows(e.t, e.s, table, cols...)
	slices.Sort(r)
	if r == nil {
		r = []string{}
	}
	return r
}

func (e *env) raw() []string   { return e.rows(schemas.RawTable, "resource_type", "id", "version_id") }
func (e *env) names() []string { return e.rows(PatientView.Name, schemas.ColResourceID, "name") }
func (e *env) codes() []string { return e.rows(CodeView.Name, schemas.ColResourceID, "code", "idx") }

func (e *env) pat(id, vid string, lu time.Time, seq int64) Raw {
	return Raw{Type: "Patient", ID: id, VersionID: vid, LastUpdated: lu, Seq: seq}
}

func (e *env) rawB(rows ...Raw) schemas.Batch { return RawBatch(e.mem, rows...) }

// names builds PatientView rows: id, seq, name triples.
func (e *env) nameB(vals ...any) schemas.Batch {
	var rows [][]any
	for i := 0; i+2 < len(vals); i += 3 {
		rows = append(rows, []any{vals[i], vals[i+1], vals[i+2]})
	}
	return Build(e.mem, PatientView, rows...)
}

// codeB builds CodeView rows: id, seq, code, idx quads.
func (e *env) codeB(vals ...any) schemas.Batch {
	var rows [][]any
	for i := 0; i+3 < len(vals); i += 4 {
		rows = append(rows, []any{vals[i], vals[i+1], vals[i+2], vals[i+3]})
	}
	return Build(e.mem, CodeView, rows...)
}

func (e *env) del(ids ...string) schemas.Batch {
	var d []Deleted
	for _, id := range ids {
		d = append(d, Deleted{Type: "Patient", ID: id})
	}
	return DeletedBatch(e.mem, d...)
}

const tt1, tt2, tt3 = "2025-01-10T12:00:00Z", "2025-01-11T12:00:00Z", "2025-01-12T12:00:00Z"

// Run checks the sink semantics every fhirferry sink implements: each
// case on a fresh sink from h.
func Run(t *testing.T, h Harness) {
	for _, c := range []struct {
		name string
		run  func(*testing.T, *env, Harness)
	}{
		{"UpsertByLastUpdated", caseUpsertByLastUpdated},
		{"DuplicatesWithinRun", caseDuplicatesWithinRun},
		{"SubsettedGuard", caseSubsettedGuard},
		{"Delete", caseDelete},
		{"DeleteWithinRun", caseDeleteWithinRun},
		{"FirstLoadWithLosers", caseFirstLoadWithLosers},
		{"MultiRowViewReplaced", caseMultiRowViewReplaced},
		{"RollbackLeavesNothing", caseRollbackLeavesNothing},
		{"FailedCommitKeepsPreviousState", caseFailedCommitKeepsPreviousState},
		{"ReapplyIsIdempotent", caseReapplyIsIdempotent},
		{"CheckpointVerbatim", caseCheckpointVerbatim},
		{"PrepareAddsColumn", casePrepareAddsColumn},
		{"NamespacesKeepTheirRows", caseNamespacesKeepTheirRows},
		{"SourcesShareANamespace", caseSourcesShareANamespace},
		{"GroupMembership", caseGroupMembership},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, newEnv(t, h), h) })
	}
}

func caseUpsertByLastUpdated(t *testing.T, e *env, h Harness) {
	e.apply("e1", tt1,
		e.rawB(e.pat("newer", "1", T(1), 1), e.pat("older", "1", T(1), 2), e.pat("equal", "1", T(1), 3),
			e.pat("nullin", "1", T(1), 4), e.pat("nullstored", "1", time.Time{}, 5)),
		e.nameB("newer", int64(1), "n1", "older", int64(2), "o1", "equal", int64(3), "e1",
			"nullin", int64(4), "u1", "nullstored", int64(5), "s1"))
	e.apply("e2", tt2,
		e.rawB(e.pat("newer", "2", T(2), 1), e.pat("older", "0", T(0), 2), e.pat("equal", "1b", T(1), 3),
			e.pat("nullin", "2", time.Time{}, 4), e.pat("nullstored", "2", T(0), 5)),
		e.nameB("newer", int64(1), "n2", "older", int64(2), "o0", "equal", int64(3), "e1b",
			"nullin", int64(4), "u2", "nullstored", int64(5), "s2"))
	require.Equal(t, []string{"Patient|equal|1b", "Patient|newer|2", "Patient|nullin|2",
		"Patient|nullstored|2", "Patient|older|1"}, e.raw())
	require.Equal(t, []string{"equal|e1b", "newer|n2", "nullin|u2", "nullstored|s2", "older|o1"}, e.names())
}

func caseDuplicatesWithinRun(t *testing.T, e *env, h Harness) {
	// p1: two files, the later lastUpdated wins; on a tie the greater _seq.
	// p2: a NULL lastUpdated loses to any instant within a run.
	e.apply("e1", tt1,
		e.rawB(e.pat("p1", "1", T(1), Seq(0, 1)), e.pat("p2", "b", T(1), Seq(0, 2))),
		e.nameB("p1", Seq(0, 1), "v1", "p2", Seq(0, 2), "b"),
		e.rawB(e.pat("p1", "3", T(2), Seq(1, 9)), e.pat("p1", "2", T(2), Seq(1, 5)),
			e.pat("p2", "a", time.Time{}, Seq(1, 1))),
		e.nameB("p1", Seq(1, 9), "v3", "p1", Seq(1, 5), "v2", "p2", Seq(1, 1), "a"),
		e.codeB("o1", Seq(2, 1), "x", int32(0)))
	require.Equal(t, []string{"Patient|p1|3", "Patient|p2|b"}, e.raw())
	require.Equal(t, []string{"p1|v3", "p2|b"}, e.names())
	// A view row whose resource has no raw row in the run is dropped.
	require.Equal(t, []string{}, e.codes())
}

func caseSubsettedGuard(t *testing.T, e *env, h Harness) {
	sub := func(id, vid string, lu time.Time, seq int64) Raw {
		r := e.pat(id, vid, lu, seq)
		r.Subsetted = true
		return r
	}
	e.apply("e1", tt1, e.rawB(e.pat("full", "1", T(1), 1), sub("sub", "1", T(1), 2)),
		e.nameB("full", int64(1), "f1", "sub", int64(2), "s1"))
	e.apply("e2", tt2, e.rawB(sub("full", "2", T(2), 1), sub("sub", "2", T(2), 2)),
		e.nameB("full", int64(1), "f2", "sub", int64(2), "s2"))
	require.Equal(t, []string{"Patient|full|1", "Patient|sub|2"}, e.raw())
	require.Equal(t, []string{"full|f1", "sub|s2"}, e.names())
	require.Equal(t, []string{"Patient|full|false", "Patient|sub|true"},
		e.rows(schemas.RawTable, "resource_type", "id", "subsetted"))
	e.apply("e3", tt3, e.rawB(e.pat("sub", "3", T(3), 1)), e.nameB("sub", int64(1), "s3"))
	require.Equal(t, []string{"Patient|full|1", "Patient|sub|3"}, e.raw())
	require.Equal(t, []string{"full|f1", "sub|s3"}, e.names())
}

func caseDelete(t *testing.T, e *env, h Harness) {
	// "later" was updated after run 2's transaction time: its delete is stale.
	e.apply("e1", tt1,
		e.rawB(e.pat("p1", "1", T(1), 1), e.pat("p2", "1", T(1), 2), e.pat("later", "1", T(100), 3),
			Raw{Type: "Observation", ID: "p1", VersionID: "1", LastUpdated: T(1), Seq: 4}),
		e.nameB("p1", int64(1), "a", "p1", int64(1), "b", "p2", int64(2), "c", "later", int64(3), "l"),
		e.codeB("p1", int64(4), "obs-of-same-id", int32(0)))
	e.apply("e2", tt2, e.del("p1", "missing", "later"))
	require.Equal(t, []string{"Observation|p1|1", "Patient|later|1", "Patient|p2|1"}, e.raw())
	require.Equal(t, []string{"later|l", "p2|c"}, e.names())
	require.Equal(t, []string{"p1|obs-of-same-id|0"}, e.codes(), "other types' rows are kept")
	e.apply("e3", tt3, e.rawB(e.pat("p1", "2", T(30), 1)), e.nameB("p1", int64(1), "again"))
	require.Equal(t, []string{"Observation|p1|1", "Patient|later|1", "Patient|p1|2", "Patient|p2|1"}, e.raw())
	require.Equal(t, []string{"later|l", "p1|again", "p2|c"}, e.names())
}

func caseDeleteWithinRun(t *testing.T, e *env, h Harness) {
	// A run that sends a resource and also deletes it (updated, then
	// deleted, within the export's window) ends without it, in the
	// views too; every raw row of the run still wins.
	e.apply("e1", tt1,
		e.rawB(e.pat("p1", "1", T(1), 1), e.pat("p2", "1", T(1), 2)),
		e.nameB("p1", int64(1), "a", "p2", int64(2), "b"),
		e.del("p1"))
	require.Equal(t, []string{"Patient|p2|1"}, e.raw())
	require.Equal(t, []string{"p2|b"}, e.names())
}

func caseFirstLoadWithLosers(t *testing.T, e *env, h Harness) {
	// The view table is empty when run 2 begins (run 1 gave "stored"
	// no view rows): run 2's rows for a version that loses to the
	// stored one, for the older of two duplicates, and for a resource
	// it deletes must not be left behind, whichever batch they came in.
	e.apply("e1", tt1, e.rawB(e.pat("stored", "5", T(5), 1)))
	e.apply("e2", tt2,
		e.rawB(e.pat("stored", "1", T(1), Seq(0, 1)), e.pat("dup", "1", T(1), Seq(0, 2)),
			e.pat("gone", "1", T(1), Seq(0, 3)), e.pat("kept", "1", T(1), Seq(0, 4))),
		e.nameB("stored", Seq(0, 1), "old", "dup", Seq(0, 2), "d1", "gone", Seq(0, 3), "g",
			"kept", Seq(0, 4), "k1"),
		e.nameB("kept", Seq(0, 4), "k2"),
		e.rawB(e.pat("dup", "2", T(2), Seq(1, 1))),
		e.nameB("dup", Seq(1, 1), "d2a", "dup", Seq(1, 1), "d2b"),
		e.del("gone"))
	require.Equal(t, []string{"Patient|dup|2", "Patient|kept|1", "Patient|stored|5"}, e.raw())
	require.Equal(t, []string{"dup|d2a", "dup|d2b", "kept|k1", "kept|k2"}, e.names())
}

func caseMultiRowViewReplaced(t *testing.T, e *env, h Harness) {
	obs := func(id, vid string, lu time.Time, seq int64) Raw {
		return Raw{Type: "Observation", ID: id, VersionID: vid, LastUpdated: lu, Seq: seq}
	}
	e.apply("e1", tt1, e.rawB(obs("o1", "1", T(1), 1), obs("o2", "1", T(1), 2)),
		e.codeB("o1", int64(1), "a", int32(0), "o1", int64(1), "b", int32(1), "o1", int64(1), "c", int32(2),
			"o2", int64(2), "z", int32(0)))
	e.apply("e2", tt2, e.rawB(obs("o1", "2", T(2), 7)),
		e.codeB("o1", int64(7), "b", int32(0), "o1", int64(7), "d", int32(1)))
	require.Equal(t, []string{"o1|b|0", "o1|d|1", "o2|z|0"}, e.codes())
	e.apply("e3", tt3, e.rawB(obs("o1", "3", T(3), 1)))
	require.Equal(t, []string{"o2|z|0"}, e.codes(), "a winner without view rows has none")
	require.Equal(t, []string{"Observation|o1|3", "Observation|o2|1"}, e.raw())
}

func caseRollbackLeavesNothing(t *testing.T, e *env, h Harness) {
	txn := e.write(e.run("e1", tt1), e.rawB(e.pat("p1", "1", T(1), 1)), e.nameB("p1", int64(1), "a"),
		RejectBatch(e.mem, Prov{}, "bad json"))
	require.NoError(t, txn.Rollback(e.ctx))
	require.NoError(t, txn.Rollback(e.ctx), "a second Rollback is harmless")
	require.ErrorIs(t, txn.Write(e.ctx, e.rawB(e.pat("p9", "1", T(1), 1))), sinks.ErrTxnDone)
	require.ErrorIs(t, txn.Commit(e.ctx, sinks.RunSummary{}), sinks.ErrTxnDone)
	require.Equal(t, []string{}, e.raw())
	require.Equal(t, []string{}, e.names())
	require.Equal(t, []string{}, e.rows(schemas.RejectsTable, "reason"))
	require.Equal(t, []string{}, e.rows(schemas.RunsTable, "run_id"))
	_, ok, err := e.s.Checkpoint(e.ctx, "test")
	require.NoError(t, err)
	require.False(t, ok)
	e.apply("e2", tt2, e.rawB(e.pat("p2", "1", T(1), 1)), e.nameB("p2", int64(1), "b"))
	require.Equal(t, []string{"Patient|p2|1"}, e.raw())
	require.Equal(t, []string{"p2|b"}, e.names())
}

func caseFailedCommitKeepsPreviousState(t *testing.T, e *env, h Harness) {
	e.apply("e1", tt1, e.rawB(e.pat("p1", "1", T(1), 1)), e.nameB("p1", int64(1), "a"))
	check := func() {
		t.Helper()
		require.Equal(t, []string{"Patient|p1|1"}, e.raw())
		require.Equal(t, []string{"p1|a"}, e.names())
		require.Equal(t, []string{"run-1"}, e.rows(schemas.RunsTable, "run_id"))
		cp, ok, err := e.s.Checkpoint(e.ctx, "test")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, tt1, cp.TransactionTime)
		require.Equal(t, "e1", cp.ExportID)
	}
	if !h.NoJSONCheck {
		// p1's update is valid, p2's resource is not JSON: the commit
		// fails part way through and must leave run 1's state.
		bad := e.pat("p2", "1", T(2), 2)
		bad.Resource = `{"resourceType":"Patient",`
		txn := e.write(e.run("e2", tt2), e.rawB(e.pat("p1", "2", T(2), 1), bad),
			e.nameB("p1", int64(1), "b", "p2", int64(2), "x"), e.del("p1"))
		require.Error(t, txn.Commit(e.ctx, sinks.RunSummary{Outcome: "success"}))
		require.NoError(t, txn.Rollback(e.ctx))
		check()
	}
	ctx, cancel := context.WithCancel(e.ctx)
	txn := e.write(e.run("e2", tt2), e.rawB(e.pat("p1", "2", T(2), 1)), e.nameB("p1", int64(1), "b"))
	cancel()
	require.Error(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	require.NoError(t, txn.Rollback(e.ctx))
	check()
	e.apply("e3", tt3, e.rawB(e.pat("p1", "3", T(3), 1)), e.nameB("p1", int64(1), "c"))
	require.Equal(t, []string{"Patient|p1|3"}, e.raw())
	require.Equal(t, []string{"p1|c"}, e.names())
}

func caseReapplyIsIdempotent(t *testing.T, e *env, h Harness) {
	batches := func() []schemas.Batch {
		return []schemas.Batch{
			e.rawB(e.pat("p1", "1", T(1), 1), e.pat("p2", "1", T(1), 2), e.pat("p1", "0", T(0), 3)),
			e.nameB("p1", int64(1), "a", "p2", int64(2), "b", "p1", int64(3), "old"),
			e.del("p3"),
		}
	}
	e.apply("e1", tt1, batches()...)
	raw, names := e.rows(schemas.RawTable, "resource_type", "id", "version_id", "resource", "line"), e.names()
	e.apply("e1", tt1, batches()...)
	require.Equal(t, raw, e.rows(schemas.RawTable, "resource_type", "id", "version_id", "resource", "line"))
	require.Equal(t, names, e.names())
	require.Equal(t, []string{"p1|a", "p2|b"}, names)
}

func caseCheckpointVerbatim(t *testing.T, e *env, h Harness) {
	_, ok, err := e.s.Checkpoint(e.ctx, "test")
	require.NoError(t, err)
	require.False(t, ok)
	const tt = "2025-01-20T10:11:12-05:00"
	e.apply("e1", tt, e.rawB(e.pat("p1", "1", T(1), 1)), RejectBatch(e.mem, Prov{Line: 7}, "not json"))
	cp, ok, err := e.s.Checkpoint(e.ctx, "test")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, tt, cp.TransactionTime)
	require.Equal(t, "e1", cp.ExportID)
	require.Equal(t, "test", cp.Source)
	require.False(t, cp.CommittedAt.IsZero())
	require.Equal(t, []string{"run-1|test|e1|" + tt + "|success|1"},
		e.rows(schemas.RunsTable, "run_id", "source", "export_id", "transaction_time", "outcome", "resources"))
	require.Equal(t, []string{"not json|7"}, e.rows(schemas.RejectsTable, "reason", "line"))
	e.apply("e2", tt2)
	cp, _, err = e.s.Checkpoint(e.ctx, "test")
	require.NoError(t, err)
	require.Equal(t, tt2, cp.TransactionTime)
	require.Len(t, e.rows(schemas.CheckTable, "source"), 1)
}

func casePrepareAddsColumn(t *testing.T, e *env, h Harness) {
	e.apply("e1", tt1, e.rawB(e.pat("p1", "1", T(1), 1)), e.nameB("p1", int64(1), "a"))
	wider := ViewTable(PatientView.Name, "Patient",
		arrow.Field{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "Gender Code", Type: arrow.BinaryTypes.String, Nullable: true})
	require.NoError(t, e.s.Prepare(e.ctx, append(schemas.System(), wider, CodeView)))
	require.Equal(t, []string{"p1|a|NULL"}, e.rows(PatientView.Name, schemas.ColResourceID, "name", "Gender Code"))
	e.apply("e2", tt2, e.rawB(e.pat("p2", "1", T(1), 1)), Build(e.mem, wider, []any{"p2", int64(1), "b", "female"}))
	require.Equal(t, []string{"p1|a|NULL", "p2|b|female"},
		e.rows(PatientView.Name, schemas.ColResourceID, "name", "Gender Code"))
}

// caseNamespacesKeepTheirRows: two servers use the same ids. Each run's
// upserts, lastUpdated guard, deletes and view replacements touch only its
// own namespace's rows, and every row says whose it is.
func caseNamespacesKeepTheirRows(t *testing.T, e *env, _ Harness) {
	const a, b = "https://a.example/fhir", "https://b.example/fhir"
	raw := func() []string {
		return e.rows(schemas.RawTable, schemas.ColNamespace, "resource_type", "id", "version_id")
	}
	names := func() []string {
		return e.rows(PatientView.Name, schemas.ColNamespace, schemas.ColSource, schemas.ColResourceID, "name")
	}
	e.applyRun(e.runOf("ehr_a", a, "a1", tt1), e.rawB(e.pat("p1", "1", T(1), 1), e.pat("p2", "1", T(1), 2)),
		e.nameB("p1", int64(1), "alice", "p2", int64(2), "anna"), RejectBatch(e.mem, Prov{Source: "ehr_a"}, "bad a"))
	e.applyRun(e.runOf("ehr_b", b, "b1", tt1), e.rawB(e.pat("p1", "1", T(5), 1)),
		e.nameB("p1", int64(1), "bob"), RejectBatch(e.mem, Prov{Source: "ehr_b"}, "bad b"))
	require.Equal(t, []string{a + "|Patient|p1|1", a + "|Patient|p2|1", b + "|Patient|p1|1"}, raw(),
		"the same type and id on two servers are two resources")
	require.Equal(t, []string{a + "|ehr_a|p1|alice", a + "|ehr_a|p2|anna", b + "|ehr_b|p1|bob"}, names())
	require.Equal(t, []string{a + "|bad a", b + "|bad b"}, e.rows(schemas.RejectsTable, schemas.ColNamespace, "reason"))

	// b's p1 has the newer lastUpdated; a's update is not older than a's
	// own row, so it wins in a and leaves b alone.
	e.applyRun(e.runOf("ehr_a", a, "a2", tt2), e.rawB(e.pat("p1", "2", T(2), 1)), e.nameB("p1", int64(1), "alice2"))
	require.Equal(t, []string{a + "|Patient|p1|2", a + "|Patient|p2|1", b + "|Patient|p1|1"}, raw())
	require.Equal(t, []string{a + "|ehr_a|p1|alice2", a + "|ehr_a|p2|anna", b + "|ehr_b|p1|bob"}, names())

	// A delete on b removes b's p1 only; a delete on a of p2 leaves b alone.
	e.applyRun(e.runOf("ehr_b", b, "b2", tt3), e.del("p1", "p2"))
	require.Equal(t, []string{a + "|Patient|p1|2", a + "|Patient|p2|1"}, raw(), "a delete on one server removes nothing of another")
	require.Equal(t, []string{a + "|ehr_a|p1|alice2", a + "|ehr_a|p2|anna"}, names())
	e.applyRun(e.runOf("ehr_b", b, "b3", tt3), e.rawB(e.pat("p1", "3", T(6), 1)), e.nameB("p1", int64(1), "bob3"))
	e.applyRun(e.runOf("ehr_a", a, "a3", tt3), e.del("p2"))
	require.Equal(t, []string{a + "|Patient|p1|2", b + "|Patient|p1|3"}, raw())
	require.Equal(t, []string{a + "|ehr_a|p1|alice2", b + "|ehr_b|p1|bob3"}, names())
}

// caseSourcesShareANamespace: two sources of one server (a system export
// and a Group of it) store a resource once; the lastUpdated guard holds
// across them and the row says which source wrote it last.
func caseSourcesShareANamespace(t *testing.T, e *env, _ Harness) {
	raw := func() []string {
		return e.rows(schemas.RawTable, schemas.ColNamespace, "id", "version_id")
	}
	e.applyRun(e.runOf("all", Namespace, "x1", tt1), e.rawB(e.pat("p1", "2", T(2), 1)), e.nameB("p1", int64(1), "v2"))
	e.applyRun(e.runOf("cohort", Namespace, "y1", tt1), e.rawB(e.pat("p1", "1", T(1), 1)), e.nameB("p1", int64(1), "v1"))
	require.Equal(t, []string{Namespace + "|p1|2"}, raw(), "the older copy from the other source loses")
	require.Equal(t, []string{Namespace + "|all|p1|v2"}, e.rows(PatientView.Name, schemas.ColNamespace, schemas.ColSource, schemas.ColResourceID, "name"))
	e.applyRun(e.runOf("cohort", Namespace, "y2", tt2), e.rawB(e.pat("p1", "3", T(3), 1)), e.nameB("p1", int64(1), "v3"))
	require.Equal(t, []string{Namespace + "|p1|3"}, raw())
	require.Equal(t, []string{Namespace + "|cohort|p1|v3"}, e.rows(PatientView.Name, schemas.ColNamespace, schemas.ColSource, schemas.ColResourceID, "name"))
}

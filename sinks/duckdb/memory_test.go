package duckdb

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

// TestCommitBorrowsTheTransformsMemory: while a run commits DuckDB gets
// the commit's memory_limit, and whether the commit succeeds or fails the
// sink's own limit is back afterwards.
func TestCommitBorrowsTheTransformsMemory(t *testing.T) {
	mem, ctx := checked(t), t.Context()
	s, err := New(configs.DuckDBSink{Path: filepath.Join(t.TempDir(), "w.duckdb"), MemoryLimit: "64MiB", CommitMemoryLimit: "192MiB"},
		sinks.Env{Name: "test"})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, sinktest.Tables()))
	limit := func() string {
		var v string
		require.NoError(t, s.DB().QueryRowContext(ctx, "SELECT current_setting('memory_limit')").Scan(&v))
		return v
	}
	require.Equal(t, "64.0 MiB", limit())

	raised, err := s.commitMemoryOn(ctx)
	require.NoError(t, err)
	require.True(t, raised)
	require.Equal(t, "192.0 MiB", limit())
	require.NoError(t, s.commitMemoryOff(raised))
	require.Equal(t, "64.0 MiB", limit())

	apply := func(run, failBefore string) error {
		txn, err := s.Begin(ctx, sinks.RunInfo{RunID: run, Source: "s", ExportID: run, TransactionTime: "2025-02-01T00:00:00Z"})
		require.NoError(t, err)
		txn.(*Txn).failBefore = failBefore
		require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Patient", ID: "p-" + run, VersionID: "1", Seq: 1})))
		err = txn.Commit(ctx, sinks.RunSummary{Outcome: "success"})
		require.NoError(t, txn.Rollback(ctx))
		return err
	}
	require.NoError(t, apply("r1", ""))
	require.Equal(t, "64.0 MiB", limit(), "restored after a commit")
	steps := (&Txn{s: s, stages: map[string]*stage{}}).steps("del", sinks.RunSummary{})
	require.Error(t, apply("r2", steps[len(steps)/2].name))
	require.Equal(t, "64.0 MiB", limit(), "restored after a failed commit")
	require.Equal(t, []string{"p-r1"}, rows(t, s, schemas.RawTable, "id"))

	// Without a commit limit of its own the sink leaves memory_limit alone.
	same, err := New(configs.DuckDBSink{Path: filepath.Join(t.TempDir(), "x.duckdb"), MemoryLimit: "64MiB", CommitMemoryLimit: "64MiB"},
		sinks.Env{Name: "same"})
	require.NoError(t, err)
	defer same.Close()
	raised, err = same.commitMemoryOn(ctx)
	require.NoError(t, err)
	require.False(t, raised)
}

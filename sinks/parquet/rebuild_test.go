package parquet

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

// loadScanFixture commits two runs: p1 updated, p2 deleted, p3 and an
// Observation o1 unchanged.
func loadScanFixture(t *testing.T, s *Sink, mem memory.Allocator) {
	ctx := t.Context()
	require.NoError(t, s.Prepare(ctx, sinktest.Tables()))
	pat := func(id, vid string, h int, seq int64) sinktest.Raw {
		return sinktest.Raw{Type: "Patient", ID: id, VersionID: vid, LastUpdated: sinktest.T(h), Seq: seq}
	}
	for i, batches := range [][]pipeline.Batch{
		{sinktest.RawBatch(mem, pat("p1", "1", 0, 1), pat("p2", "1", 0, 2), pat("p3", "1", 0, 3),
			sinktest.Raw{Type: "Observation", ID: "o1", VersionID: "1", Seq: 4})},
		{sinktest.RawBatch(mem, pat("p1", "2", 1, 1)), sinktest.DeletedBatch(mem, sinktest.Deleted{Type: "Patient", ID: "p2"})},
	} {
		txn, err := s.Begin(ctx, pipeline.RunInfo{RunID: fmt.Sprint("r", i), Source: "s", ExportID: fmt.Sprint("e", i),
			TransactionTime: sinktest.T(2 + i).Format(time.RFC3339)})
		require.NoError(t, err)
		for _, b := range batches {
			require.NoError(t, txn.Write(ctx, b))
		}
		require.NoError(t, txn.Commit(ctx, pipeline.RunSummary{Outcome: "success"}))
	}
}

func scanAll(t *testing.T, s pipeline.Rebuilder, typ string) map[string]string {
	got := map[string]string{}
	require.NoError(t, s.ScanRaw(t.Context(), typ, func(id string, res []byte) error {
		got[id] = string(res)
		return nil
	}))
	return got
}

func TestScanRaw(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	s := open(t, t.TempDir(), WithAllocator(mem))
	require.Empty(t, scanAll(t, s, "Patient"), "an empty lake has no raw files")
	loadScanFixture(t, s, mem)
	require.Equal(t, map[string]string{
		"p1": `{"resourceType":"Patient","id":"p1","meta":{"versionId":"2"}}`,
		"p3": `{"resourceType":"Patient","id":"p3","meta":{"versionId":"1"}}`,
	}, scanAll(t, s, "Patient"), "current versions only, deleted resources gone")
	require.Equal(t, map[string]string{"o1": `{"resourceType":"Observation","id":"o1","meta":{"versionId":"1"}}`}, scanAll(t, s, "Observation"))
	require.Empty(t, scanAll(t, s, "Encounter"))

	stop := errors.New("stop")
	calls := 0
	err := s.ScanRaw(t.Context(), "Patient", func(string, []byte) error { calls++; return stop })
	require.Same(t, stop, err, "the callback's error comes back as is")
	require.Equal(t, 1, calls)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.Error(t, s.ScanRaw(ctx, "Patient", func(string, []byte) error { return nil }))
}

// TestReplaceTableFromScan rebuilds a view from the landing inside
// ReplaceTable, as `views rebuild` does, and checks that a run cannot
// begin meanwhile and that a batch for another table is refused.
func TestReplaceTableFromScan(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ctx := t.Context()
	s := open(t, t.TempDir(), WithAllocator(mem))
	loadScanFixture(t, s, mem)
	require.NoError(t, s.ReplaceTable(ctx, sinktest.PatientView, func(emit func(pipeline.Batch) error) error {
		_, err := s.Begin(ctx, pipeline.RunInfo{RunID: "x", Source: "s", ExportID: "x"})
		require.ErrorContains(t, err, "a run is already in progress")
		return s.ScanRaw(ctx, "Patient", func(id string, _ []byte) error {
			return emit(sinktest.Build(mem, sinktest.PatientView, []any{id, int64(0), "n-" + id}))
		})
	}))
	require.ElementsMatch(t, []string{"p1|n-p1", "p3|n-p3"}, tableRows(t, s.st, "patient_view", "_resource_id", "name"))

	err := s.ReplaceTable(ctx, sinktest.PatientView, func(emit func(pipeline.Batch) error) error {
		return emit(sinktest.Build(mem, sinktest.CodeView, []any{"o1", int64(0), "c", int32(1)}))
	})
	require.ErrorContains(t, err, "batch for table observation_code, not patient_view")
	require.ElementsMatch(t, []string{"p1|n-p1", "p3|n-p3"}, tableRows(t, s.st, "patient_view", "_resource_id", "name"))

	// The sink is free again.
	txn, err := s.Begin(ctx, pipeline.RunInfo{RunID: "y", Source: "s", ExportID: "y"})
	require.NoError(t, err)
	require.NoError(t, txn.Rollback(ctx))
}

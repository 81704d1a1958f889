package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

// loadScanFixture commits two runs: p1 updated, p2 deleted, p3 and an
// Observation o1 unchanged, plus n more Patients (to cross cursor fetches).
func loadScanFixture(t *testing.T, s *Sink, mem memory.Allocator, n int) {
	ctx := t.Context()
	require.NoError(t, s.Prepare(ctx, sinktest.Tables()))
	pat := func(id, vid string, h int, seq int64) sinktest.Raw {
		return sinktest.Raw{Type: "Patient", ID: id, VersionID: vid, LastUpdated: sinktest.T(h), Seq: seq}
	}
	first := []sinktest.Raw{pat("p1", "1", 0, 1), pat("p2", "1", 0, 2), pat("p3", "1", 0, 3),
		{Type: "Observation", ID: "o1", VersionID: "1", Seq: 4}}
	for i := range n {
		first = append(first, pat(fmt.Sprintf("x%04d", i), "1", 0, int64(10+i)))
	}
	for i, batches := range [][]pipeline.Batch{
		{sinktest.RawBatch(mem, first...)},
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
	t.Parallel()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	s := openSink(t)
	defer s.Close()
	const extra = 2*scanFetch + 7
	loadScanFixture(t, s, mem, extra)
	pats := scanAll(t, s, "Patient")
	require.Len(t, pats, 2+extra, "current versions only, deleted resources gone, every cursor page read")
	require.NotContains(t, pats, "p2")
	require.JSONEq(t, `{"resourceType":"Patient","id":"p1","meta":{"versionId":"2"}}`, pats["p1"])
	require.JSONEq(t, `{"resourceType":"Patient","id":"x0999","meta":{"versionId":"1"}}`, pats["x0999"])
	obs := scanAll(t, s, "Observation")
	require.Len(t, obs, 1)
	require.JSONEq(t, `{"resourceType":"Observation","id":"o1","meta":{"versionId":"1"}}`, obs["o1"])
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
// ReplaceTable, as `views rebuild` does, and checks that a run's commit
// waits for the replacement (here until its deadline, so it fails and
// changes nothing) and that a batch for another table is refused.
func TestReplaceTableFromScan(t *testing.T) {
	t.Parallel()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ctx := t.Context()
	s := openSink(t)
	defer s.Close()
	loadScanFixture(t, s, mem, 0)
	require.NoError(t, s.ReplaceTable(ctx, sinktest.PatientView, func(emit func(pipeline.Batch) error) error {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		txn, err := s.Begin(cctx, pipeline.RunInfo{RunID: "x", Source: "other", ExportID: "x", TransactionTime: sinktest.T(9).Format(time.RFC3339)})
		require.NoError(t, err)
		require.NoError(t, txn.Write(cctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Observation", ID: "late", Seq: 1})))
		require.Error(t, txn.Commit(cctx, pipeline.RunSummary{Outcome: "success"}), "the raw landing is locked")
		return s.ScanRaw(ctx, "Patient", func(id string, _ []byte) error {
			return emit(sinktest.Build(mem, sinktest.PatientView, []any{id, int64(0), "n-" + id}))
		})
	}))
	require.ElementsMatch(t, []string{"p1|n-p1", "p3|n-p3"}, rows(t, s, "patient_view", "_resource_id", "name"))
	require.NotContains(t, rows(t, s, schemas.RawTable, "id"), "late")

	err := s.ReplaceTable(ctx, sinktest.PatientView, func(emit func(pipeline.Batch) error) error {
		return emit(sinktest.Build(mem, sinktest.CodeView, []any{"o1", int64(0), "c", int32(1)}))
	})
	require.ErrorContains(t, err, "batch for table observation_code, not patient_view")
	require.ElementsMatch(t, []string{"p1|n-p1", "p3|n-p3"}, rows(t, s, "patient_view", "_resource_id", "name"))
}

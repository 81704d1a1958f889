package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

func TestScanRaw(t *testing.T) {
	t.Parallel()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	s := openSink(t)
	defer s.Close()
	const extra = 2*scanFetch + 7
	var more []sinktest.Raw
	for i := range extra {
		more = append(more, sinktest.Patient(fmt.Sprintf("x%04d", i), "1", 0, int64(10+i)))
	}
	sinktest.LoadScanFixture(t, s, mem, more...)
	pats := sinktest.ScanAll(t, s, "Patient")
	require.Len(t, pats, 2+extra, "current versions only, deleted resources gone, every cursor page read")
	require.NotContains(t, pats, "p2")
	require.JSONEq(t, `{"resourceType":"Patient","id":"p1","meta":{"versionId":"2"}}`, pats["p1"])
	require.JSONEq(t, `{"resourceType":"Patient","id":"x0999","meta":{"versionId":"1"}}`, pats["x0999"])
	obs := sinktest.ScanAll(t, s, "Observation")
	require.Len(t, obs, 1)
	require.JSONEq(t, `{"resourceType":"Observation","id":"o1","meta":{"versionId":"1"}}`, obs["o1"])
	require.Empty(t, sinktest.ScanAll(t, s, "Encounter"))

	stop := errors.New("stop")
	calls := 0
	err := s.ScanRaw(t.Context(), "Patient", func(schemas.RawResource) error { calls++; return stop })
	require.Same(t, stop, err, "the callback's error comes back as is")
	require.Equal(t, 1, calls)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.Error(t, s.ScanRaw(ctx, "Patient", func(schemas.RawResource) error { return nil }))
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
	sinktest.LoadScanFixture(t, s, mem)
	require.NoError(t, s.ReplaceTable(ctx, sinktest.PatientView, func(emit func(schemas.Batch) error) error {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		txn, err := s.Begin(cctx, sinks.RunInfo{RunID: "x", Source: "other", ExportID: "x", TransactionTime: sinktest.T(9).Format(time.RFC3339)})
		require.NoError(t, err)
		require.NoError(t, txn.Write(cctx, sinktest.RawBatch(mem, sinktest.Raw{Type: "Observation", ID: "late", Seq: 1})))
		require.Error(t, txn.Commit(cctx, sinks.RunSummary{Outcome: "success"}), "the raw landing is locked")
		return s.ScanRaw(ctx, "Patient", func(r schemas.RawResource) error {
			b := sinktest.Build(mem, sinktest.PatientView, []any{r.ID, int64(0), "n-" + r.ID})
			b.Namespace, b.Source = r.Namespace, r.Source
			return emit(b)
		})
	}))
	require.ElementsMatch(t, []string{"p1|n-p1", "p3|n-p3"}, rows(t, s, "patient_view", "_resource_id", "name"))
	require.NotContains(t, rows(t, s, schemas.RawTable, "id"), "late")

	err := s.ReplaceTable(ctx, sinktest.PatientView, func(emit func(schemas.Batch) error) error {
		return emit(sinktest.Build(mem, sinktest.CodeView, []any{"o1", int64(0), "c", int32(1)}))
	})
	require.ErrorContains(t, err, "batch for table observation_code, not patient_view")
	require.ElementsMatch(t, []string{"p1|n-p1", "p3|n-p3"}, rows(t, s, "patient_view", "_resource_id", "name"))
}

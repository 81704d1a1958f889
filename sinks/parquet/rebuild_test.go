package parquet

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

func TestScanRaw(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	s := open(t, t.TempDir(), WithAllocator(mem))
	require.Empty(t, sinktest.ScanAll(t, s, "Patient"), "an empty lake has no raw files")
	sinktest.LoadScanFixture(t, s, mem)
	require.Equal(t, map[string]string{
		"p1": `{"resourceType":"Patient","id":"p1","meta":{"versionId":"2"}}`,
		"p3": `{"resourceType":"Patient","id":"p3","meta":{"versionId":"1"}}`,
	}, sinktest.ScanAll(t, s, "Patient"), "current versions only, deleted resources gone")
	require.Equal(t, map[string]string{"o1": `{"resourceType":"Observation","id":"o1","meta":{"versionId":"1"}}`}, sinktest.ScanAll(t, s, "Observation"))
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
// ReplaceTable, as `views rebuild` does, and checks that a run cannot
// begin meanwhile and that a batch for another table is refused.
func TestReplaceTableFromScan(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ctx := t.Context()
	s := open(t, t.TempDir(), WithAllocator(mem))
	sinktest.LoadScanFixture(t, s, mem)
	require.NoError(t, s.ReplaceTable(ctx, sinktest.PatientView, func(emit func(schemas.Batch) error) error {
		// The writer slot is held: a run waits (here, until its deadline).
		bctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err := s.Begin(bctx, sinks.RunInfo{RunID: "x", Source: "s", ExportID: "x"})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		return s.ScanRaw(ctx, "Patient", func(r schemas.RawResource) error {
			b := sinktest.Build(mem, sinktest.PatientView, []any{r.ID, int64(0), "n-" + r.ID})
			b.Namespace, b.Source = r.Namespace, r.Source
			return emit(b)
		})
	}))
	require.ElementsMatch(t, []string{"p1|n-p1", "p3|n-p3"}, tableRows(t, s.st, "patient_view", "_resource_id", "name"))

	err := s.ReplaceTable(ctx, sinktest.PatientView, func(emit func(schemas.Batch) error) error {
		return emit(sinktest.Build(mem, sinktest.CodeView, []any{"o1", int64(0), "c", int32(1)}))
	})
	require.ErrorContains(t, err, "batch for table observation_code, not patient_view")
	require.ElementsMatch(t, []string{"p1|n-p1", "p3|n-p3"}, tableRows(t, s.st, "patient_view", "_resource_id", "name"))

	// The sink is free again.
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "y", Source: "s", ExportID: "y"})
	require.NoError(t, err)
	require.NoError(t, txn.Rollback(ctx))
}

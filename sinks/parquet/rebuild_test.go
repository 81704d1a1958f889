package parquet

import (
	"context"
	"errors"
	"testing"

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
	sinktest.LoadScanFixture(t, s, mem)
	require.NoError(t, s.ReplaceTable(ctx, sinktest.PatientView, func(emit func(schemas.Batch) error) error {
		_, err := s.Begin(ctx, sinks.RunInfo{RunID: "x", Source: "s", ExportID: "x"})
		require.ErrorContains(t, err, "a run is already in progress")
		return s.ScanRaw(ctx, "Patient", func(id string, _ []byte) error {
			return emit(sinktest.Build(mem, sinktest.PatientView, []any{id, int64(0), "n-" + id}))
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

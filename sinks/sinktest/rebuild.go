package sinktest

import (
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

// LoadScanFixture commits two runs to s for the ScanRaw and rebuild tests:
// Patients p1, p2, p3 and Observation o1 (plus extra rows), then p1 at
// version 2 and p2 deleted. A scan of Patient then yields p1 (v2), p3 and
// the extra Patients.
func LoadScanFixture(t testing.TB, s sinks.Sink, mem memory.Allocator, extra ...Raw) {
	t.Helper()
	ctx := t.Context()
	require.NoError(t, s.Prepare(ctx, Tables()))
	first := append([]Raw{Patient("p1", "1", 0, 1), Patient("p2", "1", 0, 2), Patient("p3", "1", 0, 3),
		{Type: "Observation", ID: "o1", VersionID: "1", Seq: 4}}, extra...)
	for i, batches := range [][]schemas.Batch{
		{RawBatch(mem, first...)},
		{RawBatch(mem, Patient("p1", "2", 1, 1)), DeletedBatch(mem, Deleted{Type: "Patient", ID: "p2"})},
	} {
		txn, err := s.Begin(ctx, sinks.RunInfo{RunID: fmt.Sprint("r", i), Source: "s", Namespace: Namespace, ExportID: fmt.Sprint("e", i),
			TransactionTime: T(2 + i).Format(time.RFC3339)})
		require.NoError(t, err)
		for _, b := range batches {
			require.NoError(t, txn.Write(ctx, b))
		}
		require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	}
}

// Patient is a raw Patient row with lastUpdated T(h).
func Patient(id, versionID string, h int, seq int64) Raw {
	return Raw{Type: "Patient", ID: id, VersionID: versionID, LastUpdated: T(h), Seq: seq}
}

// ScanAll collects a ScanRaw of one resource type by id.
func ScanAll(t testing.TB, s sinks.Rebuilder, typ string) map[string]string {
	t.Helper()
	got := map[string]string{}
	require.NoError(t, s.ScanRaw(t.Context(), typ, func(r schemas.RawResource) error {
		require.Equal(t, Namespace, r.Namespace)
		require.NotEmpty(t, r.Source)
		got[r.ID] = string(r.JSON)
		return nil
	}))
	return got
}

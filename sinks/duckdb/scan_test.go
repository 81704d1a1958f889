package duckdb

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

// TestScanRawSeesEveryResourceOnce: ScanRaw reads in windows of row ids;
// across windows (and other types' rows between them) every resource of
// the type comes exactly once.
func TestScanRawSeesEveryResourceOnce(t *testing.T) {
	mem, s, ctx := checked(t), open(t, stageParquetPlain), t.Context()
	defer s.Close()
	require.NoError(t, s.Prepare(ctx, sinktest.Tables()))
	txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r", Source: "s", Namespace: "ns", ExportID: "r", TransactionTime: "2025-02-01T00:00:00Z"})
	require.NoError(t, err)
	const n = scanWindow*2 + 100
	var raws []sinktest.Raw
	for i := range n {
		typ := "Patient"
		if i%3 == 0 {
			typ = "Observation"
		}
		raws = append(raws, sinktest.Raw{Type: typ, ID: fmt.Sprint(i), VersionID: "1", Seq: int64(i + 1)})
	}
	require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, raws...)))
	require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	seen := map[string]int{}
	require.NoError(t, s.ScanRaw(ctx, "Patient", func(r schemas.RawResource) error {
		require.Equal(t, "ns", r.Namespace)
		seen[r.ID]++
		return nil
	}))
	require.Len(t, seen, n-(n+2)/3)
	for id, c := range seen {
		require.Equal(t, 1, c, id)
	}
}

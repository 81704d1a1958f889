package parquet

import (
	"fmt"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

// TestStagingBudgetBoundsHeldRowGroups: however many tables a run writes,
// the Arrow bytes the lake holds for unwritten row groups (and for the
// statistics of written ones) stay within its staging budget, give or
// take the batch just written, and every row is still committed.
func TestStagingBudgetBoundsHeldRowGroups(t *testing.T) {
	const budget = 256 << 10
	ctx := t.Context()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	s, err := New(configs.ParquetSink{Dir: t.TempDir(), Compression: "zstd"}, sinks.Env{Name: "lake", StagingBytes: budget}, WithAllocator(mem))
	require.NoError(t, err)
	defer s.Close()
	var views []*schemas.Table
	for i := range 12 {
		views = append(views, sinktest.ViewTable(fmt.Sprintf("v%d", i), "Observation",
			arrow.Field{Name: "text", Type: arrow.BinaryTypes.String, Nullable: true}))
	}
	require.NoError(t, s.Prepare(ctx, append(schemas.System(), views...)))
	tx, err := s.Begin(ctx, sinks.RunInfo{RunID: "r1", Source: "test", Namespace: sinktest.Namespace, ExportID: "e1", TransactionTime: "2025-01-01T00:00:00Z"})
	require.NoError(t, err)
	pad := strings.Repeat("x", 200)
	var largest int64
	for b := range 40 {
		var raws []sinktest.Raw
		for i := range 50 {
			raws = append(raws, sinktest.Raw{Type: "Observation", ID: fmt.Sprintf("o%d-%d", b, i), VersionID: "1", Seq: sinktest.Seq(1, int64(b*50+i))})
		}
		batch := sinktest.RawBatch(mem, raws...)
		largest = max(largest, batch.Rec.NumRows())
		require.NoError(t, tx.Write(ctx, batch))
		for _, v := range views {
			rows := make([][]any, 50)
			for i := range rows {
				rows[i] = []any{fmt.Sprintf("o%d-%d", b, i), sinktest.Seq(1, int64(b*50+i)), pad}
			}
			vb := sinktest.Build(mem, v, rows...)
			require.NoError(t, tx.Write(ctx, vb))

			var held int64
			for _, fs := range tx.(*Txn).stages {
				held += fs.group.Held()
			}
			require.LessOrEqual(t, held, int64(budget+64<<10), "held row groups within the budget (+ one batch)")
		}
	}
	require.NoError(t, tx.Commit(ctx, sinks.RunSummary{}))
	for _, v := range views {
		require.Len(t, tableRows(t, s.st, v.Name, schemas.ColResourceID), 40*50)
	}
	require.Len(t, tableRows(t, s.st, schemas.RawTable, "id"), 40*50)
}

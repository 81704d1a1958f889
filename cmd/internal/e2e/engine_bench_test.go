package e2e_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/transform"
)

// BenchmarkEngine is the view throughput of the default pack on generated
// data: NDJSON parse, raw landing rows and every default view's rows built
// as Arrow batches (released at once: no sink), on one goroutine, as one
// of the pipeline's transform.workers runs it. views=none is the raw
// landing's share of the cost. FHIRFERRY_BENCH_PATIENTS sizes the export.
func BenchmarkEngine(b *testing.B) {
	data, size := e2e.BenchExport(b)
	files, err := filepath.Glob(filepath.Join(data, "*.ndjson"))
	require.NoError(b, err)
	for _, pack := range []string{"none", "default"} {
		b.Run("views="+pack, func(b *testing.B) {
			var views []transform.View
			if pack == "default" {
				views, err = transform.LoadViews(true, "")
				require.NoError(b, err)
			}
			eng, err := transform.New(transform.Options{Views: views})
			require.NoError(b, err)
			origin := transform.Origin{Source: "bench", ExportID: "e", TransactionTime: "2025-01-01T00:00:00Z"}
			var resources, rawRows, viewRows int64
			emit := func(bt schemas.Batch) error {
				switch bt.Table.Kind {
				case schemas.KindRaw:
					rawRows += bt.Rec.NumRows()
				case schemas.KindView:
					viewRows += bt.Rec.NumRows()
				}
				bt.Release()
				return nil
			}
			b.SetBytes(size)
			for b.Loop() {
				for i, f := range files {
					name := filepath.Base(f)
					typ := strings.Split(name, ".")[1]
					st, err := eng.ProcessFile(context.Background(), origin,
						transform.Input{Path: f, Name: name, Kind: "output", Type: typ, Index: i}, emit)
					require.NoError(b, err)
					require.Zero(b, st.Rejects, name)
					require.Positive(b, st.Bytes)
					resources += st.Resources
				}
			}
			require.Equal(b, resources, rawRows, "one raw row per resource")
			if pack == "default" {
				require.Positive(b, viewRows)
			}
			s := b.Elapsed().Seconds()
			b.ReportMetric(float64(resources)/s, "resources/s")
			b.ReportMetric(float64(viewRows)/s, "view-rows/s")
		})
	}
}

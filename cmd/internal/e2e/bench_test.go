package e2e_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
	"github.com/fhirferry/fhirferry/transform"
)

// benchRun loads one export into a fresh DuckDB file the way `fhirferry
// load` (client = LocalExport) or `fhirferry run` (client = fetch.Client)
// does, with the bench's memory settings, and returns the result.
func benchRun(b *testing.B, client pipeline.Exporter, views bool) *pipeline.Result {
	ctx := context.Background()
	dir := b.TempDir()
	sink, err := duckdb.New(configs.DuckDBSink{Path: filepath.Join(dir, "w.duckdb"), MemoryLimit: "64MB"}, sinks.Env{Name: "duck"})
	require.NoError(b, err)
	defer sink.Close()
	var vs []transform.View
	if views {
		vs, err = transform.LoadViews(true, "")
		require.NoError(b, err)
	}
	eng, err := transform.New(transform.Options{Views: vs})
	require.NoError(b, err)
	require.NoError(b, sink.Prepare(ctx, eng.Tables()))
	r := &pipeline.Runner{
		Source: "bench", Request: fetch.Request{Level: fetch.LevelSystem}, Client: client, Engine: eng,
		Sinks: []sinks.Sink{sink}, DataDir: dir, Workers: 2, QueueDepth: 4, FailOnErrorOutcomes: true,
	}
	res, err := r.Run(ctx)
	require.NoError(b, err)
	var rows int64
	require.NoError(b, sink.DB().QueryRow("SELECT count(*) FROM fhir_resources").Scan(&rows))
	require.Equal(b, res.Stats.Resources, rows, "every resource landed once")
	require.Zero(b, res.Stats.Rejects)
	return res
}

func report(b *testing.B, bytes, resources int64) {
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(bytes)/1e6/s, "MB/s")
	b.ReportMetric(float64(resources)/s, "resources/s")
}

// BenchmarkPipelineLoad loads the same NDJSON files from disk, as `fhirferry
// load` does (the comparison `fhirferry bench` makes with DuckDB's own
// read_json), into a fresh DuckDB file per iteration.
func BenchmarkPipelineLoad(b *testing.B) {
	data, size := e2e.BenchExport(b)
	for _, views := range []bool{false, true} {
		b.Run(map[bool]string{false: "views=none", true: "views=default"}[views], func(b *testing.B) {
			var bytes, resources int64
			for b.Loop() {
				res := benchRun(b, &pipeline.LocalExport{Dir: data, TransactionTime: "2025-01-01T00:00:00Z"}, views)
				require.Equal(b, size, res.Stats.Bytes)
				bytes += res.Stats.Bytes
				resources += res.Stats.Resources
			}
			report(b, bytes, resources)
		})
	}
}

// BenchmarkPipelineExport runs a full $export from the in-process test
// server over loopback: kick-off, downloads spooled gzip-compressed, the
// transform and the DuckDB commit. The server's rendering shares the CPU.
func BenchmarkPipelineExport(b *testing.B) {
	srv, err := bulktest.NewServer(bulktest.Options{Patients: e2e.BenchPatients(b), Seed: 1, PollsBeforeComplete: -1})
	require.NoError(b, err)
	defer srv.Close()
	var bytes, resources int64
	for b.Loop() {
		c, err := fetch.New(fetch.Options{BaseURL: srv.BaseURL(), MinWait: 5 * time.Millisecond, MaxWait: 100 * time.Millisecond, Parallel: 2})
		require.NoError(b, err)
		res := benchRun(b, c, false)
		bytes += res.Stats.Bytes
		resources += res.Stats.Resources
	}
	report(b, bytes, resources)
}

package duckdb

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

// benchObsView is shaped like the default observation view: ids, codes,
// a value, an instant, a date and a list column.
var benchObsView = sinktest.ViewTable("observation_bench", "Observation",
	arrow.Field{Name: "status", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "code_system", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "code", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "code_display", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "value", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	arrow.Field{Name: "unit", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "effective", Type: schemas.Timestamp, Nullable: true},
	arrow.Field{Name: "issued_date", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
	arrow.Field{Name: "subject_id", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "categories", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
	arrow.Field{Name: "interp_count", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
)

var words = strings.Fields(`patient observation vital signs blood pressure systolic diastolic heart rate
	body temperature respiratory weight height laboratory glucose hemoglobin creatinine normal high low
	final amended preliminary encounter practitioner organization the of and with within range`)

// benchJSON returns an Observation of 2–10 KB: a realistic head plus a
// narrative of words, which compresses like real FHIR JSON.
func benchJSON(r *rand.Rand, id string, lu time.Time) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `{"resourceType":"Observation","id":%q,"meta":{"versionId":"1","lastUpdated":%q},`+
		`"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],`+
		`"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}]},`+
		`"subject":{"reference":"Patient/%d"},"effectiveDateTime":%q,"valueQuantity":{"value":%.1f,"unit":"/min"},`+
		`"text":{"status":"generated","div":"<div>`, id, lu.Format(time.RFC3339), r.IntN(100000), lu.Format(time.RFC3339), 40+r.Float64()*100)
	target := 2000 + r.IntN(8000)
	for sb.Len() < target {
		sb.WriteString(words[r.IntN(len(words))])
		sb.WriteByte(' ')
		if r.IntN(12) == 0 {
			sb.WriteString(strconv.Itoa(r.IntN(1000)))
			sb.WriteByte(' ')
		}
	}
	sb.WriteString(`</div>"}}`)
	return sb.String()
}

// benchBatches builds n resources in raw batches of batchRows rows (about
// the transform's 8 MiB cut) and their view batches, and the JSON bytes.
func benchBatches(mem memory.Allocator, n, batchRows int) ([]schemas.Batch, int64) {
	return benchBatchesFrom(mem, 0, n, batchRows)
}

// benchBatchesFrom builds resources first .. first+n-1.
func benchBatchesFrom(mem memory.Allocator, first, n, batchRows int) ([]schemas.Batch, int64) {
	r := rand.New(rand.NewPCG(1, uint64(first)))
	var out []schemas.Batch
	var bytes int64
	n += first
	for start := first; start < n; start += batchRows {
		var raws []sinktest.Raw
		var views [][]any
		for i := start; i < min(n, start+batchRows); i++ {
			id := fmt.Sprintf("obs-%08d", i)
			lu := sinktest.Base.Add(time.Duration(r.IntN(1e6)) * time.Second)
			js := benchJSON(r, id, lu)
			bytes += int64(len(js))
			seq := sinktest.Seq(int64(i/50000), int64(i%50000+1))
			raws = append(raws, sinktest.Raw{Type: "Observation", ID: id, VersionID: "1", LastUpdated: lu,
				Resource: js, Seq: seq, Prov: sinktest.Prov{File: "https://example.org/files/Observation.ndjson", Line: int64(i + 1)}})
			views = append(views, []any{id, seq, "final", "http://loinc.org", "8867-4", "Heart rate",
				40 + r.Float64()*100, "/min", lu, lu, fmt.Sprint("Patient/", r.IntN(1e5)), []any{"vital-signs"}, int32(0)})
		}
		out = append(out, sinktest.RawBatch(mem, raws...), sinktest.Build(mem, benchObsView, views...))
	}
	return out, bytes
}

func benchRows() int {
	if v, err := strconv.Atoi(os.Getenv("FHIRFERRY_BENCH_ROWS")); err == nil && v > 0 {
		return v
	}
	return 20000
}

// BenchmarkLoad measures one initial run of benchRows resources (raw
// landing and one view), staging plus Commit, for each staging path. Set
// FHIRFERRY_BENCH_ROWS for larger runs and FHIRFERRY_BENCH_MEMORY (e.g.
// 128MB) to load under a DuckDB memory_limit.
func BenchmarkLoad(b *testing.B) {
	mem := memory.NewGoAllocator()
	n := benchRows()
	batches, jsonBytes := benchBatches(mem, n, 1600)
	defer func() {
		for _, bt := range batches {
			bt.Release()
		}
	}()
	for _, mode := range []stageMode{stageParquetPlain, stageParquetSnappy} {
		b.Run(mode.String(), func(b *testing.B) {
			var write, commit, cpu time.Duration
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				s, err := New(configs_(b, i), sinks.Env{Name: "bench", Logger: benchLog()})
				require.NoError(b, err)
				s.stg.mode = mode
				ctx := b.Context()
				require.NoError(b, s.Prepare(ctx, []*schemas.Table{benchObsView}))
				b.StartTimer()
				c0 := cpuTime()
				t0 := time.Now()
				txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r", Source: "s", ExportID: "e",
					TransactionTime: "2025-02-01T00:00:00Z", Started: t0})
				require.NoError(b, err)
				for _, bt := range batches {
					bt.Rec.Retain()
					require.NoError(b, txn.Write(ctx, bt))
				}
				t1 := time.Now()
				require.NoError(b, txn.Commit(ctx, sinks.RunSummary{Finished: t1, Outcome: "success"}))
				write += t1.Sub(t0)
				commit += time.Since(t1)
				cpu += cpuTime() - c0
				b.StopTimer()
				var got int64
				require.NoError(b, s.DB().QueryRowContext(ctx, "SELECT count(*) FROM observation_bench").Scan(&got))
				require.Equal(b, int64(n), got)
				require.NoError(b, s.Close())
				b.StartTimer()
			}
			total := (write + commit).Seconds()
			b.ReportMetric(float64(n)*float64(b.N)/total, "rows/s")
			b.ReportMetric(float64(jsonBytes)*float64(b.N)/total/1e6, "MB/s")
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
			b.ReportMetric(write.Seconds()/float64(b.N), "write-s/op")
			b.ReportMetric(commit.Seconds()/float64(b.N), "commit-s/op")
		})
	}
}

func configs_(b *testing.B, i int) configs.DuckDBSink {
	return configs.DuckDBSink{Path: fmt.Sprintf("%s/b%d.duckdb", b.TempDir(), i),
		MemoryLimit: os.Getenv("FHIRFERRY_BENCH_MEMORY")}
}

func benchLog() *slog.Logger {
	if os.Getenv("FHIRFERRY_BENCH_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// cpuTime is the process's user+system CPU time: on a shared machine it
// measures a path's cost better than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

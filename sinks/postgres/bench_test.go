package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

// benchView is an observation-like view: one row per resource, typed columns.
var benchView = sinktest.ViewTable("observation", "Observation",
	arrow.Field{Name: "status", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "code_system", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "code", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "subject_id", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "effective", Type: schemas.Timestamp, Nullable: true},
	arrow.Field{Name: "value", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	arrow.Field{Name: "unit", Type: arrow.BinaryTypes.String, Nullable: true},
)

// fakeObservation returns 2–5 KB of Observation-shaped JSON.
func fakeObservation(r *rand.Rand, id string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"resourceType":"Observation","id":%q,"meta":{"versionId":"1","lastUpdated":"2025-01-10T08:00:00Z"},"status":"final",`, id)
	b.WriteString(`"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory","display":"Laboratory"}]}],`)
	fmt.Fprintf(&b, `"code":{"coding":[{"system":"http://loinc.org","code":"%d-%d","display":"Measurement %x"}]},`, r.IntN(99999), r.IntN(9), r.Uint64())
	fmt.Fprintf(&b, `"subject":{"reference":"Patient/%x"},"effectiveDateTime":"2024-0%d-1%dT10:00:00Z",`, r.Uint64(), 1+r.IntN(9), r.IntN(9))
	fmt.Fprintf(&b, `"valueQuantity":{"value":%.3f,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"},"note":[`, r.Float64()*100)
	n := 6 + r.IntN(14)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"authorString":"Practitioner %x","time":"2024-01-01T00:00:00Z","text":"%x %x %x observation note with some free text %d"}`,
			r.Uint32(), r.Uint64(), r.Uint64(), r.Uint64(), i)
	}
	b.WriteString(`]}`)
	return b.String()
}

// benchBatches builds n Observation rows in batches of 2,000: raw rows and
// one view row each.
func benchBatches(mem memory.Allocator, n int, lu time.Time) (batches []schemas.Batch, jsonBytes int) {
	r := rand.New(rand.NewPCG(1, 2))
	for start := 0; start < n; start += 2000 {
		var raws []sinktest.Raw
		var views [][]any
		for i := start; i < min(n, start+2000); i++ {
			id := fmt.Sprintf("obs-%07d", i)
			js := fakeObservation(r, id)
			jsonBytes += len(js)
			seq := sinktest.Seq(int64(i/2000), int64(i%2000+1))
			raws = append(raws, sinktest.Raw{Type: "Observation", ID: id, VersionID: "1", LastUpdated: lu, Resource: js, Seq: seq})
			views = append(views, []any{id, seq, "final", "http://loinc.org", fmt.Sprint(r.IntN(99999)), fmt.Sprintf("p%d", r.IntN(1000)), lu, r.Float64() * 100, "mg/dL"})
		}
		batches = append(batches, sinktest.RawBatch(mem, raws...), sinktest.Build(mem, benchView, views...))
	}
	return batches, jsonBytes
}

// BenchmarkPostgresLoad compares a run through the sink (staged COPY,
// dedup, guarded upsert into the indexed raw table, view replacement,
// checkpoint) with a bare binary COPY of the same rows into unindexed
// tables of the same column types.
func BenchmarkPostgresLoad(b *testing.B) {
	ctx := context.Background()
	const n = 20000
	mem := memory.NewGoAllocator()
	lu := time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)
	batches, jsonBytes := benchBatches(mem, n, lu)
	upd, _ := benchBatches(mem, n, lu.Add(time.Hour))
	defer func() {
		for _, bt := range append(batches, upd...) {
			bt.Release()
		}
	}()
	rows := float64(2 * n) // raw + view rows per run
	var sinkDur, updDur, copyDur time.Duration
	for i := 0; i < b.N; i++ {
		s := openSink(b)
		require.NoError(b, s.Prepare(ctx, []*schemas.Table{benchView}))
		run := func(exportID string, bs []schemas.Batch) time.Duration {
			t0 := time.Now()
			txn, err := s.Begin(ctx, sinks.RunInfo{RunID: exportID, Source: "bench", ExportID: exportID, TransactionTime: "2025-01-11T00:00:00Z"})
			require.NoError(b, err)
			for _, bt := range bs {
				bt.Rec.Retain()
				require.NoError(b, txn.Write(ctx, bt))
			}
			require.NoError(b, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
			return time.Since(t0)
		}
		sinkDur += run("initial", batches)
		updDur += run("update", upd)

		// Baseline: the same rows, binary COPY into unindexed tables of the
		// stored types (resource as jsonb).
		rawCols, err := tableColumns(schemas.Raw, true)
		require.NoError(b, err)
		viewCols, err := tableColumns(benchView, true)
		require.NoError(b, err)
		for _, cols := range [][]column{rawCols, viewCols} {
			for j := range cols {
				cols[j].stage = cols[j].store
			}
		}
		for _, ddl := range []string{
			fmt.Sprintf("CREATE TABLE %s (%s)", s.ident("bare_raw"), stageDefs(rawCols)),
			fmt.Sprintf("CREATE TABLE %s (%s)", s.ident("bare_view"), stageDefs(viewCols)),
		} {
			_, err := s.pool.Exec(ctx, ddl)
			require.NoError(b, err)
		}
		t0 := time.Now()
		tx, err := s.pool.Begin(ctx)
		require.NoError(b, err)
		for _, bt := range batches {
			tbl, cols := "bare_raw", rawCols
			if bt.Table == benchView {
				tbl, cols = "bare_view", viewCols
			}
			names := make([]string, len(cols))
			for j, c := range cols {
				names[j] = c.name
			}
			_, err := copyRecord(ctx, tx, pgx.Identifier{s.schema, tbl}, names, bt.Rec, cols)
			require.NoError(b, err)
		}
		require.NoError(b, tx.Commit(ctx))
		copyDur += time.Since(t0)
		require.NoError(b, s.Close())
	}
	sinkRate := rows * float64(b.N) / sinkDur.Seconds()
	updRate := rows * float64(b.N) / updDur.Seconds()
	copyRate := rows * float64(b.N) / copyDur.Seconds()
	b.ReportMetric(sinkRate, "sink_rows/s")
	b.ReportMetric(updRate, "sink_update_rows/s")
	b.ReportMetric(copyRate, "copy_rows/s")
	b.ReportMetric(sinkRate/copyRate*100, "load_%_of_copy")
	b.ReportMetric(updRate/copyRate*100, "update_%_of_copy")
	b.ReportMetric(float64(jsonBytes)/float64(n), "json_bytes/row")
}

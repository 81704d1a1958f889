package transform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/klauspost/compress/gzip"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fastjson"

	"github.com/fhirferry/fhirferry/schemas"
)

// codingView emits one row per Observation.code.coding and fails on a
// coding without a code, like a view whose value does not fit its column.
type codingView struct{}

func (codingView) ArrowSchema() *arrow.Schema {
	return arrow.NewSchema([]arrow.Field{{Name: "code", Type: arrow.BinaryTypes.String, Nullable: true}}, nil)
}

func (codingView) AppendRows(res *fastjson.Value, b *array.RecordBuilder, off int, onRow func()) (int, error) {
	n := 0
	for _, c := range res.GetArray("code", "coding") {
		code := c.GetStringBytes("code")
		if code == nil {
			// Half of the rows are already appended: the engine must drop them.
			return n, errors.New("column code: missing")
		}
		onRow()
		b.Field(off).(*array.StringBuilder).Append(string(code))
		n++
	}
	return n, nil
}

type collected struct {
	rows map[string][]map[string]any
}

func collect(t *testing.T, mem memory.Allocator) (*collected, func(schemas.Batch) error) {
	c := &collected{rows: map[string][]map[string]any{}}
	return c, func(b schemas.Batch) error {
		defer b.Release()
		require.Equal(t, b.Table.Schema.NumFields(), int(b.Rec.NumCols()))
		for r := 0; r < int(b.Rec.NumRows()); r++ {
			row := map[string]any{}
			for i, f := range b.Rec.Schema().Fields() {
				col := b.Rec.Column(i)
				if col.IsNull(r) {
					row[f.Name] = nil
					continue
				}
				row[f.Name] = col.ValueStr(r)
			}
			c.rows[b.Table.Name] = append(c.rows[b.Table.Name], row)
		}
		return nil
	}
}

func newEngine(t *testing.T, mem memory.Allocator, batchRows int) *Engine {
	e, err := New(Options{
		Views:        []View{{Name: "obs_code", Resource: "Observation", Runner: codingView{}}},
		BatchRows:    batchRows,
		MaxLineBytes: 4096,
		Alloc:        mem,
	})
	require.NoError(t, err)
	return e
}

func TestProcessOutputFile(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	lines := []string{
		`{"resourceType":"Observation","id":"o1","meta":{"versionId":"3","lastUpdated":"2025-01-20T10:11:12.345-05:00"},"code":{"coding":[{"code":"a"},{"code":"b"}]}}`,
		`{"resourceType":"Observation","id":"o2","code":{"coding":[{"code":"c"},{"system":"x"}]}}`, // view fails half-way
		``,
		`not json`,
		`{"resourceType":"Patient","id":"p1"}`,
		`{"resourceType":"Observation"}`,
		`{"resourceType":"Observation","id":"o3","meta":{"lastUpdated":"yesterday"}}`,
		`{"resourceType":"Observation","id":"o4","meta":{"tag":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}]}}`,
		`{"resourceType":"Observation","id":"o5","text":"` + strings.Repeat("x", 5000) + `"}`,
		"{\"resourceType\":\"Observation\",\"id\":\"o6\"}\r",
	}
	for _, batchRows := range []int{1, 2, 100} {
		t.Run(fmt.Sprint("batch", batchRows), func(t *testing.T) {
			e := newEngine(t, mem, batchRows)
			c, emit := collect(t, mem)
			in := Input{Name: "1.Observation.ndjson", Kind: "output", Type: "Observation", Index: 3}
			st, err := e.Process(context.Background(), Origin{Source: "s", ExportID: "x", TransactionTime: "T"}, in,
				strings.NewReader(strings.Join(lines, "\n")), emit)
			require.NoError(t, err)
			require.Equal(t, int64(4), st.Resources) // o1 o2 o4 o6
			require.Equal(t, int64(6), st.Rejects)   // not json, Patient, no id, bad lastUpdated, too long, o2's view
			raw := c.rows[schemas.RawTable]
			require.Len(t, raw, 4)
			require.Equal(t, "o1", raw[0]["id"])
			require.Equal(t, "3", raw[0]["version_id"])
			require.Equal(t, "2025-01-20T15:11:12.345Z", raw[0]["last_updated"])
			require.Equal(t, fmt.Sprint(int64(3)<<32|1), raw[0]["_seq"])
			require.Equal(t, "1", raw[0]["line"])
			require.Equal(t, "T", raw[0]["transaction_time"])
			require.Nil(t, raw[1]["last_updated"])
			require.Equal(t, "true", raw[2]["subsetted"])
			require.Equal(t, "o6", raw[3]["id"])
			require.Equal(t, "10", raw[3]["line"])
			require.Equal(t, lines[0], raw[0]["resource"], "raw landing is the line as received")

			view := c.rows["obs_code"]
			var codes []string
			for _, r := range view {
				codes = append(codes, r[schemas.ColResourceID].(string)+":"+r["code"].(string))
			}
			require.Equal(t, []string{"o1:a", "o1:b"}, codes, "o2's partial rows are dropped")

			reasons := map[string]string{}
			for _, r := range c.rows[schemas.RejectsTable] {
				reasons[r["line"].(string)] = r["reason"].(string)
			}
			require.Contains(t, reasons["2"], "view obs_code: column code")
			require.Contains(t, reasons["4"], "malformed JSON")
			require.Contains(t, reasons["5"], "does not match the file's type Observation")
			require.Contains(t, reasons["6"], "missing id")
			require.Contains(t, reasons["7"], "meta.lastUpdated")
			require.Contains(t, reasons["9"], "max_line_bytes")
		})
	}
}

func TestProcessDeletedAndErrorFiles(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	e := newEngine(t, mem, 10)
	c, emit := collect(t, mem)
	del := `{"resourceType":"Bundle","type":"transaction","entry":[` +
		`{"request":{"method":"DELETE","url":"Observation/o1"}},` +
		`{"request":{"method":"DELETE","url":"https://h/fhir/Patient/p9/_history/2"}},` +
		`{"request":{"method":"PUT","url":"Patient/p2"}}]}` + "\n" + `{"resourceType":"Patient","id":"x"}`
	st, err := e.Process(context.Background(), Origin{Source: "s"}, Input{Name: "d", Kind: "deleted", Type: "Bundle"}, strings.NewReader(del), emit)
	require.NoError(t, err)
	require.Equal(t, int64(2), st.Deleted)
	require.Equal(t, map[string]int64{"Observation": 1, "Patient": 1}, st.DeletedByType)
	require.Equal(t, int64(2), st.Rejects)
	got := c.rows[schemas.DeletedTable]
	require.Equal(t, "Observation", got[0]["resource_type"])
	require.Equal(t, "o1", got[0]["id"])
	require.Equal(t, "Patient", got[1]["resource_type"])
	require.Equal(t, "p9", got[1]["id"])

	oo := `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"ignored _typeFilter"},` +
		`{"severity":"error","code":"processing","details":{"text":"Failed to export Observation file 3"}}]}`
	st, err = e.Process(context.Background(), Origin{Source: "s"}, Input{Name: "e", Kind: "error", Type: "OperationOutcome"}, strings.NewReader(oo), emit)
	require.NoError(t, err)
	require.Equal(t, int64(2), st.Outcomes)
	require.Equal(t, int64(1), st.ErrorIssues)
	require.Equal(t, "error: Failed to export Observation file 3", st.FirstIssue)
	require.Len(t, c.rows[schemas.OutcomesTable], 2)
}

func TestProcessGzipFileAndEmitError(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for i := 0; i < 50; i++ {
		fmt.Fprintf(zw, `{"resourceType":"Observation","id":"o%d","code":{"coding":[{"code":"c"}]}}`+"\n", i)
	}
	require.NoError(t, zw.Close())
	path := filepath.Join(t.TempDir(), "0.Observation.ndjson.gz")
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
	e := newEngine(t, mem, 7)
	c, emit := collect(t, mem)
	st, err := e.ProcessFile(context.Background(), Origin{}, Input{Path: path, Kind: "output", Type: "Observation"}, emit)
	require.NoError(t, err)
	require.Equal(t, int64(50), st.Resources)
	require.Len(t, c.rows[schemas.RawTable], 50)
	require.Len(t, c.rows["obs_code"], 50)

	// A failing consumer stops the file and every builder is still released.
	boom := errors.New("sink down")
	calls := 0
	_, err = e.ProcessFile(context.Background(), Origin{}, Input{Path: path, Kind: "output", Type: "Observation"}, func(b schemas.Batch) error {
		b.Release()
		calls++
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, 1, calls)
}

func TestRefKey(t *testing.T) {
	for in, want := range map[string]string{
		"Patient/1": "Patient/1", "https://x/fhir/Observation/a-b": "Observation/a-b",
		"Patient/1/_history/4": "Patient/1", "1": "", "patient/1": "",
	} {
		typ, id, ok := refKey(in)
		if want == "" {
			require.False(t, ok, in)
			continue
		}
		require.True(t, ok, in)
		require.Equal(t, want, typ+"/"+id)
	}
}

// TestBatchesCutByBytes streams resources of varying size through batches
// cut by BatchBytes (the path that reserves the raw JSON buffer of the
// next batch): every line lands once, in order and unchanged, no batch
// holds much more than BatchBytes of JSON, and all memory is released.
func TestBatchesCutByBytes(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	const batchBytes = 4 << 10
	e, err := New(Options{BatchRows: 1 << 20, BatchBytes: batchBytes, MaxLineBytes: 1 << 20, Alloc: mem})
	require.NoError(t, err)
	var lines []string
	for i := range 300 {
		lines = append(lines, fmt.Sprintf(`{"resourceType":"Patient","id":"p%d","text":"%s"}`, i, strings.Repeat("y", (i*37)%900)))
	}
	var got []string
	var batches int
	emit := func(b schemas.Batch) error {
		defer b.Release()
		require.Equal(t, schemas.RawTable, b.Table.Name)
		col := b.Rec.Column(rawJSONCol).(*array.String)
		var n int
		for i := range col.Len() {
			got = append(got, col.Value(i))
			n += len(col.Value(i))
		}
		require.Less(t, n, batchBytes+1000, "a batch is cut once it reaches BatchBytes")
		batches++
		return nil
	}
	st, err := e.Process(t.Context(), Origin{Source: "s"}, Input{Name: "Patient.ndjson", Kind: "output", Type: "Patient"},
		strings.NewReader(strings.Join(lines, "\n")), emit)
	require.NoError(t, err)
	require.Equal(t, int64(300), st.Resources)
	require.Equal(t, lines, got)
	require.Greater(t, batches, 20)
}

// TestResourceKeyColumns: the engine marks the columns that hold the
// resource's own key (schemas.KeyMetadata), which sinks store without
// trying to compress them, and no others.
func TestResourceKeyColumns(t *testing.T) {
	views, err := LoadViews(true, "")
	require.NoError(t, err)
	eng, err := New(Options{Views: views})
	require.NoError(t, err)
	keys := map[string][]string{}
	for _, tbl := range eng.Tables() {
		for _, f := range tbl.Schema.Fields() {
			if schemas.IsKey(f) {
				keys[tbl.Name] = append(keys[tbl.Name], f.Name)
			}
		}
	}
	require.Equal(t, []string{"id"}, keys[schemas.RawTable])
	require.Equal(t, []string{schemas.ColResourceID, "id"}, keys["observation"])
	require.Equal(t, []string{schemas.ColResourceID, "id"}, keys["patient"])
	for name, cols := range keys {
		require.NotContains(t, cols, "patient_id", name)
	}
}

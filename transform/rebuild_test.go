package transform

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fastjson"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/transform/view"
)

const rebuildInput = `{"resourceType":"Observation","id":"o1","code":{"coding":[{"code":"a"},{"code":"b"}]}}
{"resourceType":"Observation","id":"o2","code":{"coding":[{"code":"c"},{"system":"no-code"}]}}
{"resourceType":"Observation","id":"o3","code":{"coding":[{"code":"d"},{"code":"e"},{"code":"f"}]}}
{"resourceType":"Patient","id":"p1"}
{"resourceType":"Observation","id":"o4"}
`

// scanLines yields the Observation lines of in as a sink's ScanRaw would.
func scanLines(in string) func(fn func(schemas.RawResource) error) error {
	return func(fn func(schemas.RawResource) error) error {
		for _, l := range strings.Split(strings.TrimSpace(in), "\n") {
			v := fastjson.MustParse(l)
			if string(v.GetStringBytes("resourceType")) != "Observation" {
				continue
			}
			if err := fn(schemas.RawResource{Namespace: "ns", Source: "s", ID: string(v.GetStringBytes("id")), JSON: []byte(l)}); err != nil {
				return err
			}
		}
		return nil
	}
}

// withoutSeq drops _seq, which a rebuild sets to 0.
func withoutSeq(rows []map[string]any) []map[string]any {
	for _, r := range rows {
		delete(r, schemas.ColSeq)
	}
	return rows
}

// TestRebuildViewMatchesLoad checks a rebuild emits exactly the rows a run
// gives for the same resources, cut into batches the same way, with a
// failing resource left without rows.
func TestRebuildViewMatchesLoad(t *testing.T) {
	for _, batchRows := range []int{1, 2, 1000} {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		e := newEngine(t, mem, batchRows)
		loaded, emitLoaded := collect(t, mem)
		var loadBatches int
		_, err := e.Process(t.Context(), Origin{Source: "s"}, Input{Name: "f", Kind: "output"}, strings.NewReader(rebuildInput), func(b schemas.Batch) error {
			if b.Table.Name == "obs_code" {
				loadBatches++
			}
			return emitLoaded(b)
		})
		require.NoError(t, err)

		rebuilt, emit := collect(t, mem)
		var batches int
		st, err := e.RebuildViewStats(t.Context(), "obs_code", scanLines(rebuildInput), func(b schemas.Batch) error {
			batches++
			require.Same(t, e.ViewTable("obs_code"), b.Table)
			return emit(b)
		})
		require.NoError(t, err)
		require.Equal(t, RebuildStats{Resources: 4, Rows: 5, Failed: 1}, st)
		require.Equal(t, withoutSeq(loaded.rows["obs_code"]), withoutSeq(rebuilt.rows["obs_code"]))
		require.Len(t, rebuilt.rows, 1, "only the view's table is emitted")
		for _, r := range rebuilt.rows["obs_code"] {
			require.NotEqual(t, "o2", r[schemas.ColResourceID], "rows of a failing resource are dropped")
		}
		require.Equal(t, loadBatches, batches, "batches are cut as in a run")
		mem.AssertSize(t, 0)
	}
}

// TestRebuildViewCompiled rebuilds a compiled SQL-on-FHIR view, changed
// between load and rebuild (a filter and a column added), and compares
// with a fresh load under the new definition.
func TestRebuildViewCompiled(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	v2, err := view.Compile([]byte(`{"resourceType":"ViewDefinition","name":"obs","resource":"Observation",
		"where":[{"path":"code.coding.exists()"}],
		"select":[{"column":[{"name":"id","path":"id","type":"id"}]},
		          {"forEach":"code.coding","column":[{"name":"code","path":"code","type":"code"},{"name":"system","path":"system","type":"uri"}]}]}`))
	require.NoError(t, err)
	e, err := New(Options{Views: []View{{Name: "obs", Resource: "Observation", Runner: v2}}, Alloc: mem, BatchRows: 3})
	require.NoError(t, err)
	fresh, emit := collect(t, mem)
	_, err = e.Process(t.Context(), Origin{Source: "s"}, Input{Name: "f", Kind: "output"}, strings.NewReader(rebuildInput), emit)
	require.NoError(t, err)
	rebuilt, emit := collect(t, mem)
	st, err := e.RebuildViewStats(t.Context(), "obs", scanLines(rebuildInput), emit)
	require.NoError(t, err)
	require.Equal(t, RebuildStats{Resources: 4, Rows: 7}, st)
	require.Len(t, fresh.rows["obs"], 7)
	require.Equal(t, withoutSeq(fresh.rows["obs"]), withoutSeq(rebuilt.rows["obs"]))
}

func TestRebuildViewErrors(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	e := newEngine(t, mem, 1)
	drop := func(b schemas.Batch) error { b.Release(); return nil }

	err := e.RebuildView(t.Context(), "nope", scanLines(rebuildInput), drop)
	require.ErrorContains(t, err, `no view named "nope"`)

	// Corrupt JSON in the landing names the resource.
	err = e.RebuildView(t.Context(), "obs_code", func(fn func(schemas.RawResource) error) error {
		return fn(schemas.RawResource{Namespace: "ns", Source: "s", ID: "bad", JSON: []byte(`{"resourceType":`)})
	}, drop)
	require.ErrorContains(t, err, "stored Observation bad is not JSON")

	// An emit error stops the scan and is returned as is.
	boom := errors.New("sink full")
	calls := 0
	err = e.RebuildView(t.Context(), "obs_code", scanLines(rebuildInput), func(b schemas.Batch) error {
		b.Release()
		calls++
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, 1, calls)

	// A scan error is returned, and the rows built so far are released.
	scanErr := errors.New("disk gone")
	err = e.RebuildView(t.Context(), "obs_code", func(fn func(schemas.RawResource) error) error {
		if err := scanLines(rebuildInput)(fn); err != nil {
			return err
		}
		return scanErr
	}, drop)
	require.ErrorIs(t, err, scanErr)

	// A cancelled context stops the scan.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = e.RebuildView(ctx, "obs_code", scanLines(rebuildInput), drop)
	require.ErrorIs(t, err, context.Canceled)
}

func TestViewHash(t *testing.T) {
	a, err := ViewHash([]byte(`{"name":"v","resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]}]}`))
	require.NoError(t, err)
	b, err := ViewHash([]byte("{\n  \"resource\": \"Patient\",\n  \"name\": \"v\",\n  \"select\": [{\"column\": [{\"path\": \"id\", \"name\": \"id\"}]}]\n}\n"))
	require.NoError(t, err)
	require.Equal(t, a, b, "formatting and key order do not change the hash")
	c, err := ViewHash([]byte(`{"name":"v","resource":"Patient","select":[{"column":[{"name":"id","path":"id.first()"}]}]}`))
	require.NoError(t, err)
	require.NotEqual(t, a, c)
	require.Len(t, a, 64)
	_, err = ViewHash([]byte(`{"name":`))
	require.Error(t, err)

	hs, err := ViewHashes(true, "")
	require.NoError(t, err)
	require.Contains(t, hs, "patient")
	require.Len(t, hs["patient"], 64)
}

// TestRebuildViewStampsEachNamespace: a rebuild's batches each hold the
// rows of one (namespace, source), in the scan's order, so a sink stamps
// every row with the resource's own namespace.
func TestRebuildViewStampsEachNamespace(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	e := newEngine(t, mem, 100)
	type group struct {
		ns, src string
		rows    int64
	}
	var got []group
	err := e.RebuildView(t.Context(), "obs_code", func(fn func(schemas.RawResource) error) error {
		for _, r := range []schemas.RawResource{
			{Namespace: "https://a/fhir", Source: "a", ID: "o1"}, {Namespace: "https://a/fhir", Source: "a", ID: "o2"},
			{Namespace: "https://a/fhir", Source: "a2", ID: "o3"}, {Namespace: "https://b/fhir", Source: "b", ID: "o1"},
		} {
			r.JSON = []byte(`{"resourceType":"Observation","id":"` + r.ID + `","code":{"coding":[{"code":"c"}]}}`)
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}, func(b schemas.Batch) error {
		defer b.Release()
		got = append(got, group{b.Namespace, b.Source, b.Rec.NumRows()})
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []group{{"https://a/fhir", "a", 2}, {"https://a/fhir", "a2", 1}, {"https://b/fhir", "b", 1}}, got)
}

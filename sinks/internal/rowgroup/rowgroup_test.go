package rowgroup

import (
	"bytes"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/require"
)

// TestBatchesMakeOneRowGroup: held batches are written as one row group,
// in order, and every reference is released (checked allocator).
func TestBatchesMakeOneRowGroup(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	schema := arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	var out bytes.Buffer
	pw, err := pqarrow.NewFileWriter(schema, &out, parquet.NewWriterProperties(), pqarrow.DefaultWriterProps())
	require.NoError(t, err)
	var b Batches
	for _, vals := range [][]string{{"a", "b"}, {"c"}, {"d", "e", "f"}} {
		bld := array.NewRecordBuilder(mem, schema)
		bld.Field(0).(*array.StringBuilder).AppendValues(vals, nil)
		rec := bld.NewRecordBatch()
		bld.Release()
		require.Equal(t, Size(rec), b.Add(rec))
		rec.Release()
	}
	require.EqualValues(t, 6, b.Rows)
	require.NoError(t, b.WriteTo(pw, schema, nil))
	require.Zero(t, b.Rows)
	require.Zero(t, b.Bytes)
	require.NoError(t, b.WriteTo(pw, schema, nil), "nothing held: no row group")
	require.NoError(t, pw.Close())

	f, err := file.NewParquetReader(bytes.NewReader(out.Bytes()))
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, 1, f.NumRowGroups())
	fr, err := pqarrow.NewFileReader(f, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	require.NoError(t, err)
	tbl, err := fr.ReadTable(t.Context())
	require.NoError(t, err)
	defer tbl.Release()
	var got []string
	for _, c := range tbl.Column(0).Data().Chunks() {
		for i := range c.Len() {
			got = append(got, c.(*array.String).Value(i))
		}
	}
	require.Equal(t, []string{"a", "b", "c", "d", "e", "f"}, got)
}

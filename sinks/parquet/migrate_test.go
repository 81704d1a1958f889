package parquet

import (
	"context"
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

// TestMigrateVersion1Lake: a lake written before namespaces gets each raw
// row's namespace from its source in one publish, loses its view tables
// (the pipeline rebuilds them) and says that sources of two servers shared
// a key space; a second Migrate changes nothing.
func TestMigrateVersion1Lake(t *testing.T) {
	ctx := context.Background()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	s := open(t, dir, WithAllocator(mem))
	require.NoError(t, s.Prepare(ctx, sinktest.Tables()))
	for i, src := range []string{"a", "b"} {
		txn, err := s.Begin(ctx, sinks.RunInfo{RunID: "r" + src, Source: src, Namespace: "ignored", ExportID: "e" + src,
			TransactionTime: "2025-02-01T00:00:00Z"})
		require.NoError(t, err)
		r := sinktest.Patient("p"+src, "1", i, 1)
		r.Prov = sinktest.Prov{Source: src}
		require.NoError(t, txn.Write(ctx, sinktest.RawBatch(mem, r)))
		require.NoError(t, txn.Write(ctx, sinktest.Build(mem, sinktest.PatientView, []any{"p" + src, int64(1), "n"})))
		require.NoError(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success"}))
	}
	require.NoError(t, s.Close())
	downgradeLake(t, dir, mem)

	s = open(t, dir, WithAllocator(mem))
	mg := sinks.Migration{Namespaces: map[string]string{"a": "https://a.example/fhir", "b": "ns_b"}}
	rep, err := s.Migrate(ctx, mg)
	require.NoError(t, err)
	require.Equal(t, 1, rep.From)
	require.Equal(t, sinks.SchemaVersion, rep.To)
	require.True(t, rep.RebuildViews)
	require.Len(t, rep.Collisions, 1)
	require.Contains(t, rep.Collisions[0], "a (namespace https://a.example/fhir); b (namespace ns_b)")
	require.ElementsMatch(t, []string{"https://a.example/fhir|a|pa", "ns_b|b|pb"},
		tableRows(t, s.st, schemas.RawTable, schemas.ColNamespace, "source", "id"))
	m, err := loadMeta(ctx, s.st)
	require.NoError(t, err)
	require.Equal(t, sinks.SchemaVersion, m.SchemaVersion)
	require.NotContains(t, m.Tables, sinktest.PatientView.Name, "view tables are dropped for the rebuild")

	rep, err = s.Migrate(ctx, mg)
	require.NoError(t, err)
	require.Equal(t, sinks.SchemaVersion, rep.From)
	require.False(t, rep.RebuildViews)
	require.NoError(t, s.Close())
}

// downgradeLake rewrites a lake this build wrote as version 1 did: no
// namespace column in the raw, rejects and outcomes files, no schema version.
func downgradeLake(t *testing.T, dir string, mem memory.Allocator) {
	ctx := context.Background()
	st, err := NewDirStore(dir)
	require.NoError(t, err)
	m, err := loadMeta(ctx, st)
	require.NoError(t, err)
	for _, name := range []string{schemas.RawTable, schemas.RejectsTable, schemas.OutcomesTable} {
		tm := m.Tables[name]
		tm.Columns = slices.DeleteFunc(tm.Columns, func(c columnMeta) bool { return c.Name == schemas.ColNamespace })
		var fs *fileSet
		for _, f := range tm.Files {
			require.NoError(t, scan(ctx, st, mem, f.Path, nil, func(rec arrow.RecordBatch) error {
				var fields []arrow.Field
				for _, fl := range rec.Schema().Fields() {
					if fl.Name != schemas.ColNamespace {
						fields = append(fields, fl)
					}
				}
				target := arrow.NewSchema(fields, nil)
				if fs == nil {
					fs = newFileSet(ctx, st, mem, codecZstd(t), target, name+"/v1")
				}
				c, err := conform(mem, rec, target, stamp{})
				if err != nil {
					return err
				}
				defer c.Release()
				return fs.write(c)
			}))
		}
		tm.Files = nil
		if fs != nil {
			out, err := fs.close()
			require.NoError(t, err)
			tm.Files = out
		}
	}
	m.SchemaVersion = 0
	m.Version++
	require.NoError(t, publish(ctx, st, m, "v1"))
}

func codecZstd(t *testing.T) compress.Compression {
	c, err := codec("zstd")
	require.NoError(t, err)
	return c
}

package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/parquet"
)

// The lake's Parquet files carry the column descriptions in their stored
// Arrow schema, for readers that show field metadata (Arrow, Spark).
func TestLakeFilesCarryDescriptions(t *testing.T) {
	srv, err := bulktest.NewServer(bulktest.Options{Patients: 3, Seed: 5, PollsBeforeComplete: -1})
	require.NoError(t, err)
	defer srv.Close()
	dir := filepath.Join(t.TempDir(), "lake")
	s, err := parquet.New(configs.ParquetSink{Dir: dir, Compression: "snappy"}, sinks.Env{Name: "lake"})
	require.NoError(t, err)
	defer s.Close()
	_, err = e2eRunner(t, srv, defaultViews(t), t.TempDir(), "system", "", s).Run(context.Background())
	require.NoError(t, err)

	var files []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && filepath.Ext(p) == ".parquet" && filepath.Base(filepath.Dir(p)) == "observation" {
			files = append(files, p)
		}
		return err
	}))
	require.NotEmpty(t, files, "the lake has observation files")
	f, err := file.OpenParquetFile(files[0], false)
	require.NoError(t, err)
	defer f.Close()
	fr, err := pqarrow.NewFileReader(f, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	require.NoError(t, err)
	sch, err := fr.Schema()
	require.NoError(t, err)
	idx := sch.FieldIndices("value_quantity_value")
	require.NotEmpty(t, idx)
	d, ok := sch.Field(idx[0]).Metadata.GetValue(schemas.MetaDescription)
	require.True(t, ok, "value_quantity_value has no description in the file's schema")
	require.Contains(t, d, "quantity")
}

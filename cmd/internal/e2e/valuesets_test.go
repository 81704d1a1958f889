package e2e_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/transform"
)

// valueSetsDir is the eCQM kit's value sets; tests that need them skip
// when FHIRFERRY_VALUESETS_DIR is unset.
func valueSetsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FHIRFERRY_VALUESETS_DIR")
	if dir == "" {
		t.Skip("FHIRFERRY_VALUESETS_DIR is not set")
	}
	return dir
}

// TestLoadValueSetsIntoEverySink loads the kit's value sets into each
// sink kind, then a folder of two of them: the table holds exactly what
// was loaded last, with the code-system versions kept.
func TestLoadValueSetsIntoEverySink(t *testing.T) {
	dir := valueSetsDir(t)
	want, err := transform.ReadValueSets(dir)
	require.NoError(t, err)
	codes := 0
	for _, vs := range want.Sets {
		codes += len(vs.Codes)
	}
	const a1c, office = "2.16.840.1.113883.3.464.1003.198.12.1013", "2.16.840.1.113883.3.464.1003.101.12.1001"
	small := t.TempDir()
	for _, oid := range []string{a1c, office} {
		b, err := os.ReadFile(filepath.Join(dir, "valueset-"+oid+".json"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(small, oid+".json"), b, 0o644))
	}
	for _, kind := range []string{"duckdb", "parquet", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			w := newWarehouse(t, kind, "")
			rep, err := w.app.LoadValueSets(t.Context(), dir)
			require.NoError(t, err)
			require.Equal(t, len(want.Sets), rep.Sets)
			require.Equal(t, codes, rep.Codes)
			require.Equal(t, []string{"wh"}, rep.Sinks)
			require.Equal(t, []string{strconv.Itoa(len(want.Sets)) + "|" + strconv.Itoa(codes)},
				w.rows(t, "SELECT count(DISTINCT url), count(*) FROM valueset_code"))
			require.Equal(t, []string{"HbA1cLaboratoryTest|http://loinc.org|4548-4"},
				w.rows(t, "SELECT name, system, code FROM valueset_code WHERE oid = '"+a1c+"' AND code = '4548-4'"))
			require.Equal(t, []string{"0"},
				w.rows(t, "SELECT count(*) FROM valueset_code WHERE url IS NULL OR system IS NULL OR code IS NULL OR oid IS NULL"))

			_, err = w.app.LoadValueSets(t.Context(), small)
			require.NoError(t, err)
			require.Equal(t, []string{a1c, office},
				w.rows(t, "SELECT DISTINCT oid FROM valueset_code ORDER BY oid DESC"))
		})
	}
}

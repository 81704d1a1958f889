package main

import (
	"bufio"
	"bytes"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"
	"github.com/stretchr/testify/require"
)

// TestLoadSampleExport loads the real 10-patient Synthea Group export
// with `fhirferry load` and checks every line landed once, typed views
// included, and that loading the same folder again changes nothing.
func TestLoadSampleExport(t *testing.T) {
	sample := os.Getenv("FHIRFERRY_SAMPLE_DIR")
	if sample == "" {
		t.Skip("FHIRFERRY_SAMPLE_DIR is not set")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "fhirferry.yaml")
	db := filepath.Join(dir, "warehouse.duckdb")
	require.NoError(t, os.WriteFile(cfg, []byte("data_dir: "+dir+"\nsinks:\n  - type: duckdb\n    duckdb: {path: "+db+"}\n"), 0o600))

	want := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(sample, "*.ndjson"))
	require.NotEmpty(t, files)
	for _, f := range files {
		fh, err := os.Open(f)
		require.NoError(t, err)
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) > 0 {
				want[strings.TrimSuffix(filepath.Base(f), ".ndjson")]++
			}
		}
		require.NoError(t, sc.Err())
		fh.Close()
	}

	run := func() string {
		var out bytes.Buffer
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs([]string{"load", sample, "--config", cfg, "--source", "sample", "--log-level", "warn"})
		require.NoError(t, root.Execute(), out.String())
		return out.String()
	}
	out := run()
	require.Contains(t, out, "sample  success")

	conn, err := sql.Open("duckdb", db+"?access_mode=READ_ONLY")
	require.NoError(t, err)
	got := map[string]int{}
	rows, err := conn.Query(`SELECT resource_type, count(*) FROM fhir_resources GROUP BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var typ string
		var n int
		require.NoError(t, rows.Scan(&typ, &n))
		got[typ] = n
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want, got, "every resource of the sample landed exactly once")
	var rejects, patients, tt int
	var checkpoint string
	require.NoError(t, conn.QueryRow(`SELECT count(*) FROM rejects`).Scan(&rejects))
	require.Zero(t, rejects)
	require.NoError(t, conn.QueryRow(`SELECT count(*) FROM patient`).Scan(&patients))
	require.Equal(t, want["Patient"], patients)
	require.NoError(t, conn.QueryRow(`SELECT transaction_time, (SELECT count(*) FROM runs) FROM checkpoints WHERE source = 'sample'`).Scan(&checkpoint, &tt))
	require.Equal(t, "2026-11-22T20:41:30+00:00", checkpoint, "the manifest's transactionTime, verbatim")
	require.NoError(t, conn.Close())

	out = run()
	require.Contains(t, out, "already loaded", "the same folder is a no-op the second time")
}

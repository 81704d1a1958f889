package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

// WriteExport runs a full system export on srv and writes its output
// as plain <n>.<Type>.ndjson files (what `fhirferry load` reads), returning
// their total size.
func WriteExport(b testing.TB, srv *bulktest.Server, dir string) int64 {
	ctx := context.Background()
	c, err := fetch.New(fetch.Options{BaseURL: srv.BaseURL(), MinWait: 5 * time.Millisecond, MaxWait: 100 * time.Millisecond})
	require.NoError(b, err)
	status, err := c.KickOff(ctx, fetch.Request{Level: fetch.LevelSystem})
	require.NoError(b, err)
	m, err := c.Wait(ctx, status)
	require.NoError(b, err)
	var total int64
	for i, f := range m.Output {
		resp, err := http.Get(f.URL)
		require.NoError(b, err)
		require.Equal(b, http.StatusOK, resp.StatusCode)
		out, err := os.Create(filepath.Join(dir, fmt.Sprintf("%03d.%s.ndjson", i, f.Type)))
		require.NoError(b, err)
		w := bufio.NewWriterSize(out, 1<<20)
		n, err := io.Copy(w, resp.Body)
		require.NoError(b, err)
		require.NoError(b, w.Flush())
		require.NoError(b, out.Close())
		resp.Body.Close()
		total += n
	}
	return total
}

// BenchPatients sizes the pipeline and transform benchmarks: FHIRFERRY_BENCH_PATIENTS,
// default 150 (about 13 MB of NDJSON; `fhirferry bench` runs the 500 MB
// and 1 GB versions with peak RSS measured in a child process).
func BenchPatients(b testing.TB) int {
	if v := os.Getenv("FHIRFERRY_BENCH_PATIENTS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(b, err)
		return n
	}
	return 150
}

// BenchExport writes a generated export of BenchPatients patients into a
// temporary folder and returns the folder and the export's size.
func BenchExport(b testing.TB) (dir string, size int64) {
	srv, err := bulktest.NewServer(bulktest.Options{Patients: BenchPatients(b), Seed: 1, PollsBeforeComplete: -1})
	require.NoError(b, err)
	defer srv.Close()
	dir = b.TempDir()
	return dir, WriteExport(b, srv, dir)
}

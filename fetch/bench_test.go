package fetch_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

// BenchmarkDownload compares Client.Download (gzip on the wire, decoded,
// every line counted and type-checked, stored to disk with fsync) with a
// bare io.Copy to io.Discard of the same gzip bytes from the same bulktest
// server on loopback, in one run. Both sides pay the server's on-the-fly
// generation and compression, so the ratio is the client's own overhead.
func BenchmarkDownload(b *testing.B) {
	s, err := bulktest.NewServer(bulktest.Options{Patients: 1500, FileMaxResources: 1 << 20, PollsBeforeComplete: -1})
	require.NoError(b, err)
	defer s.Close()
	c, err := fetch.New(fetch.Options{BaseURL: s.BaseURL(), MinWait: time.Millisecond, MaxWait: 10 * time.Millisecond})
	require.NoError(b, err)
	status, err := c.KickOff(b.Context(), fetch.Request{Level: fetch.LevelSystem, Types: []string{"Observation"}})
	require.NoError(b, err)
	m, err := c.Wait(b.Context(), status)
	require.NoError(b, err)
	require.Len(b, m.Output, 1)
	f := m.Output[0]
	dir := b.TempDir()

	rawCopy := func() int64 {
		req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, f.URL, nil)
		require.NoError(b, err)
		req.Header.Set("Accept", "application/fhir+ndjson")
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(b, err)
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		require.NoError(b, err)
		return n
	}
	var rawDur, cliDur time.Duration
	var wire, plain int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var n int64
		raw := func() {
			t0 := time.Now()
			n = rawCopy()
			rawDur += time.Since(t0)
		}
		if i%2 == 0 { // alternate the order so neither side always runs warm
			raw()
		}
		t0 := time.Now()
		sp, err := c.Download(b.Context(), m, f, filepath.Join(dir, "o.ndjson.gz"))
		cliDur += time.Since(t0)
		require.NoError(b, err)
		if i%2 == 1 {
			raw()
		}
		require.Equal(b, n, sp.WireBytes)
		require.Equal(b, f.Count, sp.Lines)
		wire, plain = sp.WireBytes, sp.Bytes
		require.NoError(b, os.Remove(sp.Path))
	}
	b.StopTimer()
	mb := func(n int64, d time.Duration) float64 { return float64(n) * float64(b.N) / 1e6 / d.Seconds() }
	b.ReportMetric(mb(plain, cliDur), "client-ndjson-MB/s")
	b.ReportMetric(mb(wire, cliDur), "client-wire-MB/s")
	b.ReportMetric(mb(wire, rawDur), "copy-wire-MB/s")
	b.ReportMetric(rawDur.Seconds()/cliDur.Seconds(), "ratio")
	b.Logf("file: %d lines, %.1f MB NDJSON, %.1f MB gzip; client %.1f MB/s (NDJSON) = %.1f MB/s wire, io.Copy %.1f MB/s wire, ratio %.0f%%",
		f.Count, float64(plain)/1e6, float64(wire)/1e6, mb(plain, cliDur), mb(wire, cliDur), mb(wire, rawDur), 100*rawDur.Seconds()/cliDur.Seconds())
}

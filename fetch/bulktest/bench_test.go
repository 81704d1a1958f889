package bulktest

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// drain downloads every output file and returns the NDJSON bytes and lines.
func drain(t testing.TB, m manifest, gz bool) (bytesN, lines int64) {
	for _, it := range m.Output {
		req, err := http.NewRequest(http.MethodGet, it.URL, nil)
		require.NoError(t, err)
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		require.NoError(t, err)
		var rd io.Reader = resp.Body
		if gz {
			zr, err := gzip.NewReader(resp.Body)
			require.NoError(t, err)
			rd = zr
		}
		buf := make([]byte, 256<<10)
		for {
			n, err := rd.Read(buf)
			bytesN += int64(n)
			lines += int64(bytes.Count(buf[:n], []byte{'\n'}))
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		resp.Body.Close()
	}
	return bytesN, lines
}

// BenchmarkRender measures the generator alone (no HTTP).
func BenchmarkRender(b *testing.B) {
	s, err := New(Options{Patients: 200, Seed: 1})
	require.NoError(b, err)
	st := s.st.Load()
	sc := &scope{level: levelSystem}
	buf := make([]byte, 0, 1<<20)
	b.ReportAllocs()
	var total int64
	for b.Loop() {
		for typ := 0; typ <= tLocation; typ++ {
			s.gen.scan(st, sc, typ, cursor{}, "http://x/fhir", func(r *res, _ cursor) bool {
				buf = s.gen.render(buf[:0], r, renderOpts{})
				total += int64(len(buf)) + 1
				return true
			})
		}
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds()/1e6, "MB/s")
}

// BenchmarkStreamExport serves a whole system export over loopback.
func BenchmarkStreamExport(b *testing.B) {
	for _, gz := range []bool{false, true} {
		name := "identity"
		if gz {
			name = "gzip"
		}
		b.Run(name, func(b *testing.B) {
			s := newTestServer(b, Options{Patients: 500, Seed: 1, PollsBeforeComplete: -1})
			m := waitManifest(b, kickOff(b, s, "/$export", nil))
			b.ReportAllocs()
			var total, lines int64
			for b.Loop() {
				n, l := drain(b, m, gz)
				total += n
				lines += l
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds()/1e6, "MB/s")
			b.ReportMetric(float64(lines)/b.Elapsed().Seconds(), "resources/s")
			b.ReportMetric(float64(total)/float64(lines), "B/resource")
		})
	}
}

// TestMemoryFlat streams an export 8x larger than a small one and checks
// the server's heap does not grow with it.
func TestMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("streams ~150 MB")
	}
	peak := func(patients int) (uint64, int64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		s := newTestServer(t, Options{Patients: patients, Seed: 3, PollsBeforeComplete: -1})
		m := waitManifest(t, kickOff(t, s, "/$export", nil))
		var max atomic.Uint64
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(2 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-done:
					return
				case <-tk.C:
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > base && ms.HeapInuse-base > max.Load() {
						max.Store(ms.HeapInuse - base)
					}
				}
			}
		}()
		start := time.Now()
		n, _ := drain(t, m, false)
		close(done)
		wg.Wait()
		t.Logf("patients=%d: %.1f MB in %v (%.0f MB/s), peak heap growth %.1f MB",
			patients, float64(n)/1e6, time.Since(start).Round(time.Millisecond),
			float64(n)/1e6/time.Since(start).Seconds(), float64(max.Load())/1e6)
		return max.Load(), n
	}
	small, nSmall := peak(250)
	large, nLarge := peak(2000)
	require.Greater(t, nLarge, 7*nSmall)
	require.Less(t, large, small+16<<20, "heap grew with export size: %d vs %d", large, small)
}

func TestSinceExportScansWithoutRendering(t *testing.T) {
	// A narrow _since over a large population must be quick: planning
	// scans metadata only.
	s := newTestServer(t, Options{Patients: 2000, Seed: 4, PollsBeforeComplete: -1})
	s.Advance(time.Minute, Mutation{UpdatedResources: 10})
	start := time.Now()
	m := waitManifest(t, kickOff(t, s, "/$export", url.Values{"_since": {"2025-01-01T00:00:00Z"}}))
	got := collect(t, m, false)
	require.Equal(t, 10, len(got))
	t.Logf("_since export over 2000 patients: %v", time.Since(start))
}

package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/stretchr/testify/require"
)

func manifestFor(statusURL string, rat bool, files ...File) *Manifest {
	m := &Manifest{StatusURL: statusURL, TransactionTime: "T", RequiresAccessToken: rat}
	for _, f := range files {
		switch f.Kind {
		case KindDeleted:
			m.Deleted = append(m.Deleted, f)
		case KindError:
			m.Error = append(m.Error, f)
		default:
			f.Kind = KindOutput
			m.Output = append(m.Output, f)
		}
	}
	m.reindex()
	return m
}

func TestDownloadParsesAndSpools(t *testing.T) {
	long := `{"resourceType":"Patient","id":"big","text":{"div":"` + strings.Repeat("x", 3<<20) + `"}}`
	body := "\r\n" + `{"resourceType":"Patient","id":"1"}` + "\r\n\r\n" + long + "\n" + `{"id":"2","resourceType":"Patient"}` + "\n" +
		`{"resourceType":"Observation","id":"3"}` + "\n   \n" + `{"resourceType":"Patient","id":"4"}` // no trailing newline
	for _, enc := range []string{"identity", "gzip"} {
		t.Run(enc, func(t *testing.T) {
			var hdr http.Header
			s := server(t, func(w http.ResponseWriter, r *http.Request) {
				hdr = r.Header.Clone()
				w.Header().Set("Content-Type", "application/fhir+ndjson")
				if enc == "gzip" {
					w.Header().Set("Content-Encoding", "gzip")
					w.Write(gz(t, []byte(body)))
					return
				}
				io.WriteString(w, body)
			})
			obs := &recObserver{}
			c := testClient(t, s.URL, func(o *Options) { o.Auth = &fakeTokens{}; o.Observer = obs })
			m := manifestFor(s.URL+"/status", false, File{Type: "Patient", URL: s.URL + "/f/1", Count: 5})
			path := filepath.Join(t.TempDir(), "spool", "a.ndjson.gz")
			sp, err := c.Download(t.Context(), m, m.Output[0], path)
			require.NoError(t, err)
			require.Equal(t, "application/fhir+ndjson", hdr.Get("Accept"))
			require.Equal(t, "gzip", hdr.Get("Accept-Encoding"))
			require.Empty(t, hdr.Get("Authorization"), "C34: no token when requiresAccessToken=false")
			require.EqualValues(t, 5, sp.Lines)
			require.EqualValues(t, 1, sp.MismatchedTypes)
			require.EqualValues(t, len(body), sp.Bytes)
			require.Equal(t, path, sp.Path)
			require.Equal(t, body, readSpool(t, path))
			require.Equal(t, sp.WireBytes, obs.bytes["file"])
			if enc == "gzip" {
				require.Less(t, sp.WireBytes, sp.Bytes)
				raw, err := os.ReadFile(path)
				require.NoError(t, err)
				require.Equal(t, gz(t, []byte(body)), raw, "gzip responses are stored as received")
			}
			entries, err := os.ReadDir(filepath.Dir(path))
			require.NoError(t, err)
			require.Len(t, entries, 1, "no temp files left")
		})
	}
}

// TestDownloadLineLimit: a line over max_line_bytes does not fail the
// file: it is stored as received (the transform rejects it, naming the
// line) and the lines after it are read, whether the line fits the read
// buffer or not.
func TestDownloadLineLimit(t *testing.T) {
	for _, n := range []int{5000, 600 << 10} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			long := `{"resourceType":"Patient","id":"` + strings.Repeat("x", n) + `"}`
			body := `{"resourceType":"Patient","id":"a"}` + "\n" + long + "\n" + `{"resourceType":"Patient","id":"b"}` + "\n"
			s := server(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
			c := testClient(t, s.URL, func(o *Options) { o.MaxLineBytes = 4096 })
			m := manifestFor("", false, File{Type: "Patient", URL: s.URL + "/f", Count: -1})
			path := filepath.Join(t.TempDir(), "x.gz")
			sp, err := c.Download(t.Context(), m, m.Output[0], path)
			require.NoError(t, err)
			require.EqualValues(t, 3, sp.Lines)
			require.EqualValues(t, 1, sp.LongLines)
			f, err := os.Open(path)
			require.NoError(t, err)
			defer f.Close()
			zr, err := gzip.NewReader(f)
			require.NoError(t, err)
			got, err := io.ReadAll(zr)
			require.NoError(t, err)
			require.Equal(t, body, string(got), "stored as received")
		})
	}
}

// flaky serves body, but the first `bad` answers are broken by fault.
func flaky(t *testing.T, bad int, fault func(w http.ResponseWriter, body string), body string) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		if int(n.Add(1)) <= bad {
			fault(w, body)
			return
		}
		io.WriteString(w, body)
	})
	return s, &n
}

func TestDownloadRetriesTruncation(t *testing.T) {
	body := ndjson("Observation", 2000)
	cut := func(w http.ResponseWriter, b []byte) {
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	faults := map[string]func(w http.ResponseWriter, body string){
		"gzip cut": func(w http.ResponseWriter, body string) {
			w.Header().Set("Content-Encoding", "gzip")
			cut(w, gz(t, []byte(body)))
		},
		"content-length short": func(w http.ResponseWriter, body string) { cut(w, []byte(body)) },
		"chunked cut mid-line": func(w http.ResponseWriter, body string) {
			io.WriteString(w, body[:len(body)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		},
		"clean close mid-line": func(w http.ResponseWriter, body string) { io.WriteString(w, body[:len(body)/2+7]) },
		"5xx":                  func(w http.ResponseWriter, _ string) { w.WriteHeader(503) },
		"429":                  func(w http.ResponseWriter, _ string) { w.Header().Set("Retry-After", "0"); w.WriteHeader(429) },
		"gzip bad": func(w http.ResponseWriter, body string) {
			w.Header().Set("Content-Encoding", "gzip")
			io.WriteString(w, "not gzip at all")
		},
	}
	for name, fault := range faults {
		t.Run(name, func(t *testing.T) {
			s, n := flaky(t, 2, fault, body)
			obs := &recObserver{}
			c := testClient(t, s.URL, func(o *Options) { o.Observer = obs })
			m := manifestFor("", false, File{Type: "Observation", URL: s.URL + "/f", Count: 2000})
			path := filepath.Join(t.TempDir(), "o.gz")
			sp, err := c.Download(t.Context(), m, m.Output[0], path)
			require.NoError(t, err)
			require.EqualValues(t, 3, n.Load())
			require.Len(t, obs.Retries(), 2)
			require.EqualValues(t, 2000, sp.Lines)
			require.Equal(t, body, readSpool(t, path))
		})
	}
	t.Run("gives up", func(t *testing.T) {
		s, n := flaky(t, 100, faults["gzip cut"], body)
		c := testClient(t, s.URL, nil)
		m := manifestFor("", false, File{Type: "Observation", URL: s.URL + "/f", Count: -1})
		path := filepath.Join(t.TempDir(), "o.gz")
		_, err := c.Download(t.Context(), m, m.Output[0], path)
		require.ErrorContains(t, err, "truncated")
		require.ErrorContains(t, err, "gave up after 3 retries")
		require.EqualValues(t, 4, n.Load())
		require.NoFileExists(t, path)
		entries, _ := os.ReadDir(filepath.Dir(path))
		require.Empty(t, entries)
	})
	t.Run("cut at line boundary, count short", func(t *testing.T) {
		s, n := flaky(t, 1, func(w http.ResponseWriter, body string) { io.WriteString(w, body[:strings.Index(body, "\n")+1]) }, body)
		c := testClient(t, s.URL, nil)
		m := manifestFor("", false, File{Type: "Observation", URL: s.URL + "/f", Count: 2000})
		sp, err := c.Download(t.Context(), m, m.Output[0], filepath.Join(t.TempDir(), "o.gz"))
		require.NoError(t, err)
		require.EqualValues(t, 2000, sp.Lines)
		require.EqualValues(t, 2, n.Load())
	})
	t.Run("consistently short count is accepted", func(t *testing.T) {
		s, n := flaky(t, 0, nil, ndjson("Patient", 3))
		c := testClient(t, s.URL, nil)
		m := manifestFor("", false, File{Type: "Patient", URL: s.URL + "/f", Count: 10})
		sp, err := c.Download(t.Context(), m, m.Output[0], filepath.Join(t.TempDir(), "p.gz"))
		require.NoError(t, err)
		require.EqualValues(t, 3, sp.Lines)
		require.EqualValues(t, 2, n.Load(), "re-downloaded once")
	})
}

func TestDownloadFatalAndAuth(t *testing.T) {
	t.Run("413 is not retried", func(t *testing.T) {
		s, n := flaky(t, 100, func(w http.ResponseWriter, _ string) { w.WriteHeader(413) }, "")
		m := manifestFor("", false, File{Type: "Patient", URL: s.URL + "/f", Count: -1})
		_, err := testClient(t, s.URL, nil).Download(t.Context(), m, m.Output[0], filepath.Join(t.TempDir(), "p.gz"))
		var he *HTTPError
		require.ErrorAs(t, err, &he)
		require.Equal(t, 413, he.StatusCode)
		require.EqualValues(t, 1, n.Load())
	})
	t.Run("401 invalidates and retries once", func(t *testing.T) {
		var auths []string
		s := server(t, func(w http.ResponseWriter, r *http.Request) {
			auths = append(auths, r.Header.Get("Authorization"))
			w.WriteHeader(401)
			io.WriteString(w, "Token expired")
		})
		ts := &fakeTokens{}
		m := manifestFor("", true, File{Type: "Patient", URL: s.URL + "/f", Count: -1})
		_, err := testClient(t, s.URL, func(o *Options) { o.Auth = ts }).Download(t.Context(), m, m.Output[0], filepath.Join(t.TempDir(), "p.gz"))
		require.ErrorContains(t, err, "HTTP 401")
		require.Equal(t, []string{"Bearer tok-a", "Bearer tok-b"}, auths)
		require.Equal(t, []string{"tok-a"}, ts.invalidated)
	})
	t.Run("context cancel stops retries", func(t *testing.T) {
		s, _ := flaky(t, 100, func(w http.ResponseWriter, _ string) { w.Header().Set("Retry-After", "60"); w.WriteHeader(503) }, "")
		c := testClient(t, s.URL, func(o *Options) { o.MaxWait = time.Minute })
		m := manifestFor("", false, File{Type: "Patient", URL: s.URL + "/f", Count: -1})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := c.Download(ctx, m, m.Output[0], filepath.Join(t.TempDir(), "p.gz"))
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

func TestDownloadRefreshesExpiredLinks(t *testing.T) {
	var mu sync.Mutex
	gen := 0
	var srv *httptest.Server
	srv = server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.URL.Path == "/status":
			gen++
			fmt.Fprintf(w, `{"transactionTime":"T","requiresAccessToken":false,"output":[{"type":"Patient","url":"%s/f?gen=%d"}]}`, srv.URL, gen)
		case r.URL.Query().Get("gen") == "1":
			io.WriteString(w, ndjson("Patient", 4))
		default:
			w.WriteHeader(http.StatusGone)
			io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"expired","diagnostics":"file expired"}]}`)
		}
	})
	c := testClient(t, srv.URL, nil)
	m := manifestFor(srv.URL+"/status", false, File{Type: "Patient", URL: srv.URL + "/f?gen=0", Count: 4})
	sp, err := c.Download(t.Context(), m, m.Output[0], filepath.Join(t.TempDir(), "p.gz"))
	require.NoError(t, err)
	require.EqualValues(t, 4, sp.Lines)
	require.Equal(t, 1, gen)

	// 403 before Expires is a plain refusal, not an expiry.
	m.Expires = time.Now().Add(time.Hour)
	s403, n := flaky(t, 100, func(w http.ResponseWriter, _ string) { w.WriteHeader(403) }, "")
	m.Output[0].URL = s403.URL + "/f"
	_, err = c.Download(t.Context(), m, m.Output[0], filepath.Join(t.TempDir(), "p.gz"))
	require.ErrorContains(t, err, "HTTP 403")
	require.EqualValues(t, 1, n.Load())
	require.Equal(t, 1, gen)
}

func TestTokenRules(t *testing.T) {
	type seen struct{ path, auth string }
	var mu sync.Mutex
	var got []seen
	rec := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.URL.Path, r.Header.Get("Authorization")})
		mu.Unlock()
	}
	other := server(t, func(w http.ResponseWriter, r *http.Request) {
		rec(w, r)
		io.WriteString(w, ndjson("Patient", 1))
	})
	// "localhost" is the same machine but another origin than 127.0.0.1.
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	mainSrv := server(t, func(w http.ResponseWriter, r *http.Request) {
		rec(w, r)
		switch r.URL.Path {
		case "/same-origin-redirect":
			http.Redirect(w, r, "/file", http.StatusTemporaryRedirect)
		case "/cross-origin-redirect":
			http.Redirect(w, r, otherURL+"/signed", http.StatusTemporaryRedirect)
		default:
			io.WriteString(w, ndjson("Patient", 1))
		}
	})
	c := testClient(t, mainSrv.URL, func(o *Options) { o.Auth = &fakeTokens{} })
	m := manifestFor("", true,
		File{Type: "Patient", URL: otherURL + "/listed-elsewhere", Count: 1},
		File{Type: "Patient", URL: mainSrv.URL + "/same-origin-redirect", Count: 1},
		File{Type: "Patient", URL: mainSrv.URL + "/cross-origin-redirect", Count: 1})
	for _, f := range m.Files() {
		_, err := c.Download(t.Context(), m, f, filepath.Join(t.TempDir(), "x.gz"))
		require.NoError(t, err)
	}
	require.Equal(t, []seen{
		{"/listed-elsewhere", "Bearer tok-a"}, // C33: listed in the manifest, even on another host
		{"/same-origin-redirect", "Bearer tok-a"}, {"/file", "Bearer tok-a"},
		{"/cross-origin-redirect", "Bearer tok-a"}, {"/signed", ""}, // C35: dropped on origin change
	}, got)
}

func TestDownloadAll(t *testing.T) {
	var cur, peak atomic.Int32
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		v := cur.Add(1)
		defer cur.Add(-1)
		for p := peak.Load(); v > p && !peak.CompareAndSwap(p, v); p = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond) // hold the slot so overlap is observable
		typ := strings.TrimPrefix(r.URL.Path, "/")
		if r.URL.Path == "/fail" {
			w.WriteHeader(404)
			return
		}
		io.WriteString(w, ndjson(typ, 3))
	})
	var files []File
	for i := 0; i < 12; i++ {
		files = append(files, File{Type: "Observation", URL: s.URL + "/Observation", Count: 3})
	}
	files = append(files, File{Kind: KindDeleted, Type: "Bundle", URL: s.URL + "/Bundle", Count: 3},
		File{Kind: KindError, Type: "OperationOutcome", URL: s.URL + "/OperationOutcome", Count: 99})
	m := manifestFor("", false, files...)
	c := testClient(t, s.URL, func(o *Options) { o.Parallel = 3 })
	dir := t.TempDir()
	var got []Spooled
	skip := func(f File) (Spooled, bool) { return Spooled{File: f, Path: "kept"}, f.Index == 0 }
	err := c.DownloadAll(t.Context(), m, dir, skip, func(sp Spooled) error { got = append(got, sp); return nil })
	require.NoError(t, err)
	require.Len(t, got, 14)
	require.LessOrEqual(t, peak.Load(), int32(3))
	require.GreaterOrEqual(t, peak.Load(), int32(2))
	idx := map[int]bool{}
	for _, sp := range got {
		idx[sp.File.Index] = true
		if sp.File.Index == 0 {
			require.Equal(t, "kept", sp.Path)
			continue
		}
		require.Equal(t, filepath.Join(dir, SpoolName(sp.File)), sp.Path)
		require.EqualValues(t, 3, sp.Lines)
		require.Zero(t, sp.MismatchedTypes)
	}
	require.Len(t, idx, 14)
	require.FileExists(t, filepath.Join(dir, "error-0013.OperationOutcome.ndjson.gz"))

	t.Run("done error stops the run", func(t *testing.T) {
		stop := errors.New("sink full")
		calls := 0
		err := c.DownloadAll(t.Context(), m, t.TempDir(), nil, func(Spooled) error { calls++; return stop })
		require.ErrorIs(t, err, stop)
		require.Equal(t, 1, calls)
	})
	t.Run("download error stops the run", func(t *testing.T) {
		bad := manifestFor("", false, append([]File{{Type: "x", URL: s.URL + "/fail", Count: -1}}, files...)...)
		err := c.DownloadAll(t.Context(), bad, t.TempDir(), nil, func(Spooled) error { return nil })
		require.ErrorContains(t, err, "output file 0 (x)")
		require.ErrorContains(t, err, "HTTP 404")
	})
}

package bulktest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newTestServer(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := NewServer(opts)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

type manifest struct {
	TransactionTime     string `json:"transactionTime"`
	Request             string `json:"request"`
	RequiresAccessToken *bool  `json:"requiresAccessToken"`
	Output              []item `json:"output"`
	Deleted             []item `json:"deleted"`
	Error               []item `json:"error"`
	Link                []struct {
		Relation, URL string
	} `json:"link"`
}

type item struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count int    `json:"count"`
}

func do(t testing.TB, method, u string, hdr map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

var kickHdr = map[string]string{"Accept": "application/fhir+json", "Prefer": "respond-async"}

// kickOff starts an export with GET and returns the status URL.
func kickOff(t testing.TB, s *Server, path string, q url.Values) string {
	t.Helper()
	u := s.BaseURL() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	resp, body := do(t, http.MethodGet, u, kickHdr, "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	loc := resp.Header.Get("Content-Location")
	require.True(t, strings.HasPrefix(loc, "http://"), loc)
	return loc
}

// waitManifest polls until 200 and returns the manifest.
func waitManifest(t testing.TB, status string) manifest {
	t.Helper()
	for i := 0; i < 20; i++ {
		resp, body := do(t, http.MethodGet, status, map[string]string{"Accept": "application/json"}, "")
		if resp.StatusCode == http.StatusAccepted {
			require.NotEmpty(t, resp.Header.Get("X-Progress"))
			require.NotEmpty(t, resp.Header.Get("Retry-After"))
			continue
		}
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		require.Contains(t, resp.Header.Get("Content-Type"), "application/json")
		require.NotEmpty(t, resp.Header.Get("Expires"))
		var m manifest
		require.NoError(t, json.Unmarshal(body, &m))
		require.NotNil(t, m.Error, "error[] must be present")
		return m
	}
	t.Fatal("export never completed")
	return manifest{}
}

// download fetches a file (with gzip when gz) and returns its lines.
func download(t testing.TB, u string, gz bool) []string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "application/fhir+ndjson")
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/fhir+ndjson", resp.Header.Get("Content-Type"))
	var rd io.Reader = resp.Body
	if gz {
		require.Equal(t, "gzip", resp.Header.Get("Content-Encoding"))
		zr, err := gzip.NewReader(resp.Body)
		require.NoError(t, err)
		rd = zr
	} else {
		require.Empty(t, resp.Header.Get("Content-Encoding"))
	}
	b, err := io.ReadAll(rd)
	require.NoError(t, err)
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	require.NoError(t, sc.Err())
	return lines
}

type resourceHead struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Meta         struct {
		VersionID   string    `json:"versionId"`
		LastUpdated time.Time `json:"lastUpdated"`
		Tag         []struct{ Code string }
	} `json:"meta"`
}

// collect downloads every output file and returns resources by key, the
// raw JSON, failing on duplicates and type mismatches.
func collect(t testing.TB, m manifest, gz bool) map[Key]string {
	t.Helper()
	out := map[Key]string{}
	for _, it := range m.Output {
		lines := download(t, it.URL, gz)
		require.Len(t, lines, it.Count, it.URL)
		for _, l := range lines {
			var h resourceHead
			require.NoError(t, json.Unmarshal([]byte(l), &h), l)
			require.Equal(t, it.Type, h.ResourceType)
			k := Key{h.ResourceType, h.ID}
			_, dup := out[k]
			require.False(t, dup, "duplicate %v", k)
			out[k] = l
		}
	}
	return out
}

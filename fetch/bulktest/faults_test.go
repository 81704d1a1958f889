package bulktest

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestKickOffFaults(t *testing.T) {
	s := newTestServer(t, Options{Patients: 2, Seed: 20, Faults: Faults{KickOffErrors: 1, KickOff429: 2, RetryAfterStyle: "malformed"}})
	u := s.BaseURL() + "/$export"
	resp, body := do(t, "GET", u, kickHdr, "")
	require.Equal(t, 500, resp.StatusCode)
	require.Contains(t, string(body), "OperationOutcome")
	var ras []int64
	for range 2 {
		resp, _ = do(t, "GET", u, kickHdr, "")
		require.Equal(t, 429, resp.StatusCode)
		n, err := strconv.ParseInt(resp.Header.Get("Retry-After"), 10, 64)
		require.NoError(t, err)
		ras = append(ras, n)
	}
	now := time.Now()
	require.InDelta(t, now.Unix(), ras[0], 400, "epoch seconds")
	require.InDelta(t, now.UnixMilli(), ras[1], 400_000, "epoch milliseconds")
	resp, _ = do(t, "GET", u, kickHdr, "")
	require.Equal(t, 202, resp.StatusCode)

	s.SetFaults(Faults{KickOffNoContentLocation: true})
	resp, _ = do(t, "GET", u, kickHdr, "")
	require.Equal(t, 202, resp.StatusCode)
	require.Empty(t, resp.Header.Get("Content-Location"))

	s.SetFaults(Faults{KickOffRelativeContentLocation: true})
	resp, _ = do(t, "GET", u, kickHdr, "")
	require.Equal(t, 202, resp.StatusCode)
	loc := resp.Header.Get("Content-Location")
	require.True(t, strings.HasPrefix(loc, "/fhir/bulkstatus/"), loc)
	ref, _ := url.Parse(u)
	abs, _ := ref.Parse(loc)
	waitManifest(t, abs.String())
	st := s.Stats()
	require.Equal(t, map[string]int{"KickOffErrors": 1, "KickOff429": 2, "KickOffNoContentLocation": 1, "KickOffRelativeContentLocation": 1}, st.Faults)
	require.Equal(t, 6, st.KickOffs)
}

func TestStatusFaults(t *testing.T) {
	s := newTestServer(t, Options{Patients: 2, Seed: 21, PollsBeforeComplete: -1})
	status := kickOff(t, s, "/$export", nil)
	s.SetFaults(Faults{StatusGateway: 1, Status429: 1, RetryAfterStyle: "http-date", StatusTransient: 1})
	resp, body := do(t, "GET", status, nil, "")
	require.Equal(t, 502, resp.StatusCode)
	require.Equal(t, "text/html", resp.Header.Get("Content-Type"))
	require.Contains(t, string(body), "Bad Gateway")
	resp, _ = do(t, "GET", status, nil, "")
	require.Equal(t, 429, resp.StatusCode)
	_, err := http.ParseTime(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	resp, body = do(t, "GET", status, nil, "")
	require.Equal(t, 500, resp.StatusCode)
	require.Contains(t, string(body), `"code":"transient"`)
	waitManifest(t, status) // the job survived all of them

	s.SetFaults(Faults{FailJob: true})
	resp, body = do(t, "GET", status, nil, "")
	require.Equal(t, 500, resp.StatusCode)
	require.Contains(t, string(body), `"code":"processing"`)
	require.NotContains(t, string(body), "transient")
	f := s.Stats().Faults
	require.Equal(t, 1, f["StatusGateway"])
	require.Equal(t, 1, f["Status429"])
	require.Equal(t, 1, f["StatusTransient"])
	require.Equal(t, 1, f["FailJob"])
}

func TestErrorFiles(t *testing.T) {
	s := newTestServer(t, Options{Patients: 4, Seed: 22, Faults: Faults{ErrorFiles: 2}})
	m := waitManifest(t, kickOff(t, s, "/$export", nil))
	require.Len(t, m.Error, 2)
	for _, e := range m.Error {
		require.Equal(t, "OperationOutcome", e.Type)
		lines := download(t, e.URL, false)
		require.Len(t, lines, 1)
		require.Contains(t, lines[0], `"resourceType":"OperationOutcome"`)
	}
	got := collect(t, m, false)
	require.Less(t, len(got), len(s.Truth("system", "", nil)), "error files' resources are missing")
	require.Zero(t, s.Faults().ErrorFiles)
	m2 := waitManifest(t, kickOff(t, s, "/$export", nil))
	require.Empty(t, m2.Error, "counter consumed")
}

func TestExpiredDownloadRefreshesManifest(t *testing.T) {
	s := newTestServer(t, Options{Patients: 2, Seed: 23})
	status := kickOff(t, s, "/Patient/$export", url.Values{"_type": {"Patient"}})
	m := waitManifest(t, status)
	s.SetFaults(Faults{ExpiredDownloads: 1})
	resp, body := do(t, "GET", m.Output[0].URL, nil, "")
	require.Equal(t, http.StatusGone, resp.StatusCode)
	require.Contains(t, string(body), "OperationOutcome")
	resp, _ = do(t, "GET", m.Output[0].URL, nil, "")
	require.Equal(t, http.StatusGone, resp.StatusCode, "old URLs stay expired")
	m2 := waitManifest(t, status)
	require.NotEqual(t, m.Output[0].URL, m2.Output[0].URL)
	require.Len(t, download(t, m2.Output[0].URL, false), 2)
	require.Equal(t, 1, s.Stats().Faults["ExpiredDownloads"])
}

func TestTruncatedDownload(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run("gzip="+strconv.FormatBool(gz), func(t *testing.T) {
			s := newTestServer(t, Options{Patients: 10, Seed: 24, Faults: Faults{TruncateDownloads: 1}})
			m := waitManifest(t, kickOff(t, s, "/Patient/$export", url.Values{"_type": {"Observation"}}))
			req, _ := http.NewRequest("GET", m.Output[0].URL, nil)
			if gz {
				req.Header.Set("Accept-Encoding", "gzip")
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			require.NoError(t, err)
			require.Equal(t, 200, resp.StatusCode)
			var rd io.Reader = resp.Body
			if gz {
				zr, err := gzip.NewReader(resp.Body)
				require.NoError(t, err)
				rd = zr
			}
			b, err := io.ReadAll(rd)
			resp.Body.Close()
			require.Error(t, err)
			require.True(t, errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "EOF"), err.Error())
			require.Less(t, strings.Count(string(b), "\n"), m.Output[0].Count)
			// the retry succeeds
			require.Len(t, download(t, m.Output[0].URL, gz), m.Output[0].Count)
		})
	}
}

func TestFileErrorsAndInjectedLines(t *testing.T) {
	s := newTestServer(t, Options{Patients: 3, Seed: 25})
	m := waitManifest(t, kickOff(t, s, "/Patient/$export", url.Values{"_type": {"Condition,Patient"}}))
	u := m.Output[0].URL
	s.SetFaults(Faults{File5xx: 1, File429: 1, RetryAfterStyle: "zero"})
	resp, _ := do(t, "GET", u, nil, "")
	require.Equal(t, 500, resp.StatusCode)
	resp, _ = do(t, "GET", u, nil, "")
	require.Equal(t, 429, resp.StatusCode)
	require.Equal(t, "0", resp.Header.Get("Retry-After"))
	require.Len(t, download(t, u, false), m.Output[0].Count)

	s.SetFaults(Faults{WrongTypeLines: 2, MalformedLines: 3, VeryLongLine: 5 << 20})
	lines := download(t, u, true)
	require.Len(t, lines, m.Output[0].Count+5)
	wrong, malformed, long := 0, 0, 0
	for _, l := range lines {
		var h resourceHead
		if json.Unmarshal([]byte(l), &h) != nil {
			malformed++
			continue
		}
		if h.ResourceType != m.Output[0].Type {
			wrong++
		}
		if len(l) > 5<<20 {
			long++
		}
	}
	require.Equal(t, 2, wrong)
	require.Equal(t, 3, malformed)
	require.Equal(t, 1, long)
	require.Len(t, download(t, u, false), m.Output[0].Count, "injections are consumed")
	require.Equal(t, 5, s.Stats().Downloads[strings.TrimPrefix(u, strings.TrimSuffix(s.BaseURL(), "/fhir"))])
}

func TestSlowFirstByte(t *testing.T) {
	s := newTestServer(t, Options{Patients: 1, Seed: 26, Faults: Faults{SlowFirstByte: 300 * time.Millisecond}})
	m := waitManifest(t, kickOff(t, s, "/$export", url.Values{"_type": {"Patient"}}))
	start := time.Now()
	download(t, m.Output[0].URL, false)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
}

// tokenAuth accepts "Bearer good".
type tokenAuth struct{}

func (tokenAuth) Routes(mux *http.ServeMux, base string) {
	mux.HandleFunc("/fhir/.well-known/smart-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"token_endpoint":"` + strings.TrimSuffix(base, "/fhir") + `/auth/token"}`))
	})
}

func (tokenAuth) Authorize(r *http.Request) error {
	if r.Header.Get("Authorization") != "Bearer good" {
		return errors.New("invalid token")
	}
	return nil
}

func TestAuthAndOrigins(t *testing.T) {
	good := map[string]string{"Accept": "application/fhir+json", "Prefer": "respond-async", "Authorization": "Bearer good"}
	tests := []struct {
		name       string
		opts       Options
		fileHdr    map[string]string
		wantStatus int
		wantHost   string
	}{
		{"same origin, token", Options{Auth: tokenAuth{}}, map[string]string{"Authorization": "Bearer good"}, 200, "127.0.0.1"},
		{"same origin, no token", Options{Auth: tokenAuth{}}, nil, 401, "127.0.0.1"},
		{"cross origin, token", Options{Auth: tokenAuth{}, CrossOriginFiles: true}, map[string]string{"Authorization": "Bearer good"}, 200, "localhost"},
		{"cross origin, capability URLs", Options{Auth: tokenAuth{}, CrossOriginFiles: true, FilesRequireToken: new(false)}, nil, 200, "localhost"},
		{"redirect, token dropped", Options{Auth: tokenAuth{}, RedirectFiles: true}, map[string]string{"Authorization": "Bearer good"}, 200, "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Patients, tt.opts.Seed = 2, 27
			s := newTestServer(t, tt.opts)
			resp, _ := do(t, "GET", s.BaseURL()+"/$export", kickHdr, "")
			require.Equal(t, 401, resp.StatusCode)
			resp, body := do(t, "GET", s.BaseURL()+"/.well-known/smart-configuration", nil, "")
			require.Equal(t, 200, resp.StatusCode)
			require.Contains(t, string(body), "token_endpoint")
			resp, _ = do(t, "GET", s.BaseURL()+"/$export?_type=Patient", good, "")
			require.Equal(t, 202, resp.StatusCode)
			status := resp.Header.Get("Content-Location")
			resp, _ = do(t, "GET", status, nil, "")
			require.Equal(t, 401, resp.StatusCode)
			var m manifest
			for range 3 {
				resp, body = do(t, "GET", status, good, "")
			}
			require.Equal(t, 200, resp.StatusCode)
			require.NoError(t, json.Unmarshal(body, &m))
			require.Equal(t, tt.opts.FilesRequireToken == nil, *m.RequiresAccessToken)
			fu, _ := url.Parse(m.Output[0].URL)
			require.Equal(t, tt.wantHost, fu.Hostname())
			resp, body = do(t, "GET", m.Output[0].URL, tt.fileHdr, "")
			require.Equal(t, tt.wantStatus, resp.StatusCode, string(body))
			if tt.wantStatus == 200 {
				require.Equal(t, 2, strings.Count(string(body), "\n"))
			}
			st := s.Stats()
			if tt.opts.RedirectFiles {
				require.Equal(t, 1, st.Faults["Redirect"])
				require.Zero(t, st.AuthHeadersSeenOnFilesOrigin, "Go drops Authorization on a cross-host redirect")
				// the signed URL without its signature is refused
				resp, _ = do(t, "GET", "http://localhost:"+portOf(t, s.filesOrigin)+fu.Path, nil, "")
				require.Equal(t, 403, resp.StatusCode)
			}
			if tt.opts.CrossOriginFiles && tt.fileHdr != nil {
				require.Equal(t, 1, st.AuthHeadersSeenOnFilesOrigin)
			}
			if tt.fileHdr == nil {
				require.Equal(t, 1, st.TokenlessFileRequests)
			}
			var kinds []string
			for _, r := range st.Requests {
				kinds = append(kinds, r.Kind)
			}
			require.Contains(t, kinds, KindFile)
			require.Contains(t, kinds, KindKickOff)
		})
	}
}

func portOf(t *testing.T, origin string) string {
	u, err := url.Parse(origin)
	require.NoError(t, err)
	return u.Port()
}

func TestDeterministic(t *testing.T) {
	a := newTestServer(t, Options{Patients: 12, Seed: 99})
	b := newTestServer(t, Options{Patients: 12, Seed: 99})
	c := newTestServer(t, Options{Patients: 12, Seed: 100})
	ra := a.Advance(time.Hour, Mutation{NewPatients: 2, UpdatedResources: 10, DeletedResources: 5, AddGroupMembers: 1})
	rb := b.Advance(time.Hour, Mutation{NewPatients: 2, UpdatedResources: 10, DeletedResources: 5, AddGroupMembers: 1})
	require.Equal(t, ra, rb)
	ta, tb := a.Truth("system", "", nil), b.Truth("system", "", nil)
	require.Equal(t, len(ta), len(tb))
	for k, row := range ta {
		// attachment URLs carry each server's own base URL
		require.Equal(t, strings.ReplaceAll(string(row.JSON), a.BaseURL(), "BASE"), strings.ReplaceAll(string(tb[k].JSON), b.BaseURL(), "BASE"))
	}
	tc := c.Truth("system", "", []string{"Patient"})
	for k := range tc {
		_, same := ta[k]
		require.False(t, same, "another seed gives other ids")
	}
	// ids parse back, made-up ones don't
	for k := range ta {
		if k.Type == "Group" {
			continue
		}
		typ, _, _, ok := a.gen.parseID(k.ID)
		require.True(t, ok)
		require.Equal(t, k.Type, typeNames[typ])
	}
	_, _, _, ok := a.gen.parseID("3b077e09-b51b-46db-b5e4-92938bfe391c")
	require.False(t, ok)
}

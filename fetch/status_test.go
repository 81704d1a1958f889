package fetch

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 120 * time.Second, true},
		{" 1 ", time.Second, true},
		{"0", 0, true},
		{"Wed, 01 Jan 2025 00:00:30 GMT", 30 * time.Second, true},
		{fmt.Sprint(now.Add(5 * time.Minute).Unix()), 5 * time.Minute, true},      // epoch seconds
		{fmt.Sprint(now.Add(5 * time.Minute).UnixMilli()), 5 * time.Minute, true}, // epoch ms
		{"soon", 0, false},
		{"", 0, false},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		require.Equal(t, tc.ok, ok, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
	c := testClient(t, "http://x", func(o *Options) { o.MinWait, o.MaxWait = 2*time.Second, 15*time.Minute })
	require.Equal(t, 2*time.Second, c.clamp(time.Second))
	require.Equal(t, 15*time.Minute, c.clamp(50*365*24*time.Hour))
	require.Equal(t, 2*time.Second, c.clamp(-time.Hour), "an epoch in the past")
	for n := 0; n < 6; n++ {
		d := c.backoff(n, 5*time.Minute)
		base := min(2*time.Second<<n, 5*time.Minute)
		require.GreaterOrEqual(t, d, max(2*time.Second, base*8/10), "n=%d", n)
		require.LessOrEqual(t, d, base*12/10, "n=%d", n)
	}
}

const manifestJSON = `{"transactionTime":"2025-01-20T10:11:12-05:00","request":"x","requiresAccessToken":true,
 "output":[{"type":"Patient","url":"/files/1.Patient.ndjson","count":2,"extension":{"a":1}}],
 "error":[],"extension":{"https://vendor":"east"}}`

// scripted serves status answers from a list, then the last one forever.
func scripted(t *testing.T, steps ...func(w http.ResponseWriter, r *http.Request)) (*atomic.Int32, string) {
	var n atomic.Int32
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		steps[min(i, len(steps)-1)](w, r)
	})
	return &n, s.URL
}

func reply(code int, ctype, body string, hdr ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		if ctype != "" {
			w.Header().Set("Content-Type", ctype)
		}
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func TestWaitSurvivesTransientFaults(t *testing.T) {
	var accepts []string
	steps := []func(http.ResponseWriter, *http.Request){
		reply(202, "", "", "X-Progress", "10% complete", "Retry-After", "1"),
		reply(500, "application/fhir+json", ooTransient),
		reply(502, "text/html", "<html>gateway</html>"),
		reply(429, "text/plain", "slow down", "Retry-After", fmt.Sprint(time.Now().Add(time.Hour).Unix())),
		reply(202, "", "", "X-Progress", "90% complete"),
		reply(200, "application/json", manifestJSON, "Expires", "Wed, 01 Jan 2031 00:00:00 GMT"),
	}
	var n atomic.Int32
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		accepts = append(accepts, r.Header.Get("Accept"))
		steps[min(int(n.Add(1))-1, len(steps)-1)](w, r)
	})
	obs := &recObserver{}
	c := testClient(t, s.URL, func(o *Options) { o.Observer = obs })
	start := time.Now()
	m, err := c.Wait(t.Context(), s.URL+"/status/1")
	require.NoError(t, err)
	require.Less(t, time.Since(start), 2*time.Second, "an epoch Retry-After is clamped to MaxWait")
	require.EqualValues(t, 6, n.Load())
	require.Equal(t, "application/json", accepts[0])
	require.Equal(t, []string{"10% complete", "90% complete"}, obs.progress)
	require.Equal(t, []string{"5xx", "5xx", "429"}, obs.Retries())
	require.Equal(t, "2025-01-20T10:11:12-05:00", m.TransactionTime)
	require.True(t, m.RequiresAccessToken)
	require.Equal(t, s.URL+"/status/1", m.StatusURL)
	require.Equal(t, []File{{Kind: KindOutput, Type: "Patient", URL: s.URL + "/files/1.Patient.ndjson", Count: 2}}, m.Output)
	require.Empty(t, m.Error)
	require.Equal(t, time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), m.Expires)
}

func TestWaitFailures(t *testing.T) {
	cases := []struct {
		name  string
		steps []func(http.ResponseWriter, *http.Request)
		check func(t *testing.T, err error)
	}{
		{"404 is job gone", []func(http.ResponseWriter, *http.Request){reply(404, "application/fhir+json", oo400)},
			func(t *testing.T, err error) { require.ErrorIs(t, err, ErrExportGone) }},
		{"job failure carries issues", []func(http.ResponseWriter, *http.Request){reply(202, "", ""), reply(500, "application/fhir+json", oo400)},
			func(t *testing.T, err error) {
				var je *JobError
				require.ErrorAs(t, err, &je)
				require.Equal(t, []Issue{{Severity: "error", Code: "invalid", Diagnostics: "Invalid _since"}}, je.Issues)
			}},
		{"non-FHIR 4xx is readable", []func(http.ResponseWriter, *http.Request){reply(413, "text/plain", "Too many files")},
			func(t *testing.T, err error) {
				var je *JobError
				require.ErrorAs(t, err, &je)
				require.ErrorContains(t, err, `HTTP 413 (text/plain): "Too many files"`)
			}},
		{"gateway 5xx gives up after Retries", []func(http.ResponseWriter, *http.Request){reply(503, "text/html", "<h1>down</h1>")},
			func(t *testing.T, err error) { require.ErrorContains(t, err, "gave up after 3 retries") }},
		{"manifest missing output", []func(http.ResponseWriter, *http.Request){reply(200, "application/json", `{"transactionTime":"t","requiresAccessToken":false}`)},
			func(t *testing.T, err error) { require.ErrorContains(t, err, "lacks required field(s) output") }},
		{"second 401 fails", []func(http.ResponseWriter, *http.Request){reply(401, "text/plain", "Invalid token")},
			func(t *testing.T, err error) {
				var he *HTTPError
				require.ErrorAs(t, err, &he)
				require.Equal(t, 401, he.StatusCode)
				require.ErrorContains(t, err, "Invalid token")
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, base := scripted(t, tc.steps...)
			_, err := testClient(t, base, func(o *Options) { o.Auth = &fakeTokens{} }).Wait(t.Context(), base+"/status")
			require.Error(t, err)
			tc.check(t, err)
		})
	}
}

func TestWaitTimeoutDeletesJob(t *testing.T) {
	var deletes atomic.Int32
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			deletes.Add(1)
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	c := testClient(t, s.URL, func(o *Options) { o.ExportTimeout = 100 * time.Millisecond })
	_, err := c.Wait(t.Context(), s.URL+"/status")
	require.ErrorIs(t, err, ErrExportTimeout)
	require.EqualValues(t, 1, deletes.Load())
}

func TestWaitFollowsManifestPages(t *testing.T) {
	page1 := `{"transactionTime":"T","requiresAccessToken":false,"output":[{"type":"Patient","url":"/f/1"}],
	  "deleted":[{"type":"Bundle","url":"/f/d1","count":"3"}],"link":[{"relation":"next","url":"/status?page=2"}]}`
	page2 := `{"transactionTime":"T","requiresAccessToken":false,"output":[{"type":"Observation","url":"/f/2"}],"outcome":[{"url":"/f/e1"}]}`
	var pages []string
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		pages = append(pages, r.URL.RawQuery)
		switch {
		case r.URL.RawQuery == "":
			reply(200, "application/json", page1)(w, r)
		case len(pages) == 2:
			reply(202, "", "")(w, r) // a page may still be in progress
		default:
			reply(200, "application/json", page2)(w, r)
		}
	})
	m, err := testClient(t, s.URL, nil).Wait(t.Context(), s.URL+"/status")
	require.NoError(t, err)
	require.Equal(t, []string{"", "page=2", "page=2"}, pages)
	got := m.Files()
	require.Len(t, got, 4)
	require.Equal(t, File{Kind: KindOutput, Index: 1, Type: "Observation", URL: s.URL + "/f/2", Count: -1}, got[1])
	require.Equal(t, File{Kind: KindDeleted, Index: 2, Type: "Bundle", URL: s.URL + "/f/d1", Count: 3}, got[2])
	require.Equal(t, File{Kind: KindError, Index: 3, Type: "OperationOutcome", URL: s.URL + "/f/e1", Count: -1}, got[3])
}

func TestManifest2018Header(t *testing.T) {
	_, base := scripted(t, reply(200, "application/json", `{"transactionTime":"T","output":[]}`, "X-FHIR-Links-Require-Authorization", "true"))
	m, err := testClient(t, base, nil).Wait(t.Context(), base+"/s")
	require.NoError(t, err)
	require.True(t, m.RequiresAccessToken)
	require.Empty(t, m.Files())
}

func TestDelete(t *testing.T) {
	_, base := scripted(t, reply(503, "", ""), reply(202, "application/fhir+json", `{"resourceType":"OperationOutcome","issue":[]}`))
	require.NoError(t, testClient(t, base, nil).Delete(t.Context(), base+"/s"))
	_, base = scripted(t, reply(404, "application/fhir+json", oo400))
	err := testClient(t, base, nil).Delete(t.Context(), base+"/s")
	require.True(t, errors.Is(err, ErrExportGone), err)
}

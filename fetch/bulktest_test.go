package fetch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/auth"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

// These tests drive the real client against the real bulktest server over
// HTTP on loopback, one test case per fault of the client digest §7.3 that
// the server can inject, and assert exact outcomes.

func newBulk(t testing.TB, o bulktest.Options) *bulktest.Server {
	t.Helper()
	if o.Patients == 0 {
		o.Patients = 12
	}
	if o.FileMaxResources == 0 {
		o.FileMaxResources = 40 // several files per type
	}
	s, err := bulktest.NewServer(o)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

func newClient(t testing.TB, base string, mod func(*fetch.Options)) *fetch.Client {
	t.Helper()
	o := fetch.Options{BaseURL: base, MinWait: time.Millisecond, MaxWait: 20 * time.Millisecond, Retries: 3, RequestTimeout: 10 * time.Second, Parallel: 4}
	if mod != nil {
		mod(&o)
	}
	c, err := fetch.New(o)
	require.NoError(t, err)
	return c
}

// result is a downloaded export.
type result struct {
	m        *fetch.Manifest
	spooled  map[int]fetch.Spooled // by file index
	keys     map[bulktest.Key]int  // output resources seen (count)
	lines    int64
	invalid  int64 // output lines that are not JSON
	longest  int
	mismatch int64
	dir      string
}

func runExport(t *testing.T, c *fetch.Client, req fetch.Request) (*result, error) {
	t.Helper()
	ctx := t.Context()
	status, err := c.KickOff(ctx, req)
	if err != nil {
		return nil, err
	}
	m, err := c.Wait(ctx, status)
	if err != nil {
		return nil, err
	}
	r := &result{m: m, spooled: map[int]fetch.Spooled{}, keys: map[bulktest.Key]int{}, dir: t.TempDir()}
	var mu sync.Mutex
	err = c.DownloadAll(ctx, m, r.dir, nil, func(sp fetch.Spooled) error {
		mu.Lock()
		defer mu.Unlock()
		r.spooled[sp.File.Index] = sp
		r.mismatch += sp.MismatchedTypes
		if sp.File.Kind == fetch.KindOutput {
			r.lines += sp.Lines
			scanSpool(t, sp.Path, func(line []byte) {
				r.longest = max(r.longest, len(line))
				var v struct{ ResourceType, ID string }
				if json.Unmarshal(line, &v) != nil {
					r.invalid++
					return
				}
				r.keys[bulktest.Key{Type: v.ResourceType, ID: v.ID}]++
			})
		}
		return nil
	})
	return r, err
}

func scanSpool(t *testing.T, path string, fn func([]byte)) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	b, err := io.ReadAll(zr)
	require.NoError(t, err)
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			fn(l)
		}
	}
}

func truthKeys(s *bulktest.Server, level, group string) map[bulktest.Key]int {
	out := map[bulktest.Key]int{}
	for k := range s.Truth(level, group, nil) {
		out[k] = 1
	}
	return out
}

// requireExact checks the export holds exactly the server's truth: every
// resource once, every file's line count equal to its manifest count.
func requireExact(t *testing.T, s *bulktest.Server, r *result, level, group string) {
	t.Helper()
	require.Equal(t, truthKeys(s, level, group), r.keys)
	require.Zero(t, r.invalid)
	require.Zero(t, r.mismatch)
	require.Len(t, r.spooled, len(r.m.Files()))
	for _, f := range r.m.Files() {
		sp := r.spooled[f.Index]
		require.Equal(t, f, sp.File)
		if f.Count >= 0 {
			require.Equal(t, f.Count, sp.Lines, "file %d (%s)", f.Index, f.Type)
		}
	}
	requireNoPartials(t, r.dir)
}

func requireNoPartials(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		require.NotContains(t, e.Name(), ".part-", "temp file left behind")
	}
}

var groupReq = fetch.Request{Level: fetch.LevelGroup, GroupID: "cohort"}

func TestBulkFullGroupExportIsExact(t *testing.T) {
	s := newBulk(t, bulktest.Options{PollsBeforeComplete: 3})
	obs := &countingObserver{}
	c := newClient(t, s.BaseURL(), func(o *fetch.Options) { o.Observer = obs })
	r, err := runExport(t, c, groupReq)
	require.NoError(t, err)
	requireExact(t, s, r, "group", "cohort")
	require.Greater(t, len(r.m.Output), 10, "several files per type")
	require.Equal(t, 4, s.Stats().StatusPolls)
	require.Len(t, obs.progress, 3, "X-Progress surfaced")
	var wire int64
	for _, sp := range r.spooled {
		wire += sp.WireBytes
	}
	require.Equal(t, wire, obs.bytes)

	require.NoError(t, c.Delete(t.Context(), r.m.StatusURL))
	_, err = c.Wait(t.Context(), r.m.StatusURL)
	require.ErrorIs(t, err, fetch.ErrExportGone)
}

func TestBulkSurvivableFaults(t *testing.T) {
	cases := []struct {
		name   string
		faults bulktest.Faults
		check  func(t *testing.T, st bulktest.Stats)
	}{
		{"kick-off 5xx", bulktest.Faults{KickOffErrors: 2}, func(t *testing.T, st bulktest.Stats) { require.Equal(t, 3, st.KickOffs) }},
		{"kick-off 429 with malformed Retry-After", bulktest.Faults{KickOff429: 2, RetryAfterStyle: "malformed"}, func(t *testing.T, st bulktest.Stats) { require.Equal(t, 3, st.KickOffs) }},
		{"relative Content-Location", bulktest.Faults{KickOffRelativeContentLocation: true}, nil},
		{"status transient OperationOutcome", bulktest.Faults{StatusTransient: 3}, func(t *testing.T, st bulktest.Stats) { require.Equal(t, 3, st.Faults["StatusTransient"]) }},
		{"status 429 http-date", bulktest.Faults{Status429: 2, RetryAfterStyle: "http-date"}, func(t *testing.T, st bulktest.Stats) { require.Equal(t, 2, st.Faults["Status429"]) }},
		{"status 429 zero", bulktest.Faults{Status429: 2, RetryAfterStyle: "zero"}, nil},
		{"status gateway 502", bulktest.Faults{StatusGateway: 2}, func(t *testing.T, st bulktest.Stats) { require.Equal(t, 2, st.Faults["StatusGateway"]) }},
		{"file 5xx", bulktest.Faults{File5xx: 3}, func(t *testing.T, st bulktest.Stats) { require.Equal(t, 3, st.Faults["File5xx"]) }},
		{"file 429", bulktest.Faults{File429: 3}, func(t *testing.T, st bulktest.Stats) { require.Equal(t, 3, st.Faults["File429"]) }},
		{"truncated after 200", bulktest.Faults{TruncateDownloads: 3}, func(t *testing.T, st bulktest.Stats) { require.Equal(t, 3, st.Faults["TruncateDownloads"]) }},
		{"expired links (410)", bulktest.Faults{ExpiredDownloads: 1}, func(t *testing.T, st bulktest.Stats) {
			require.Equal(t, 1, st.Faults["ExpiredDownloads"])
			require.GreaterOrEqual(t, st.StatusPolls, 3, "the status URL was re-read for fresh links")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newBulk(t, bulktest.Options{Faults: tc.faults})
			r, err := runExport(t, newClient(t, s.BaseURL(), nil), groupReq)
			require.NoError(t, err)
			requireExact(t, s, r, "group", "cohort")
			if tc.check != nil {
				tc.check(t, s.Stats())
			}
		})
	}
}

func TestBulkDataFaults(t *testing.T) {
	t.Run("wrong resourceType lines are counted", func(t *testing.T) {
		s := newBulk(t, bulktest.Options{Faults: bulktest.Faults{WrongTypeLines: 3}})
		r, err := runExport(t, newClient(t, s.BaseURL(), nil), groupReq)
		require.NoError(t, err)
		require.EqualValues(t, 3, r.mismatch)
		truth := truthKeys(s, "group", "cohort")
		require.EqualValues(t, len(truth)+3, r.lines)
		total := 0
		for k, n := range r.keys {
			total += n
			if truth[k] == 0 {
				require.Equal(t, "Practitioner", k.Type, "only the injected lines are extra")
			}
		}
		for k := range truth {
			require.Positive(t, r.keys[k], "%v", k)
		}
		require.Equal(t, len(truth)+3, total)
	})
	t.Run("malformed lines are kept for the transform to reject", func(t *testing.T) {
		s := newBulk(t, bulktest.Options{Faults: bulktest.Faults{MalformedLines: 2}})
		r, err := runExport(t, newClient(t, s.BaseURL(), nil), groupReq)
		require.NoError(t, err)
		require.EqualValues(t, 2, r.invalid)
		require.Equal(t, truthKeys(s, "group", "cohort"), r.keys)
		require.EqualValues(t, len(r.keys)+2, r.lines)
	})
	t.Run("very long line", func(t *testing.T) {
		s := newBulk(t, bulktest.Options{Faults: bulktest.Faults{VeryLongLine: 12 << 20}})
		r, err := runExport(t, newClient(t, s.BaseURL(), nil), groupReq)
		require.NoError(t, err)
		requireExact(t, s, r, "group", "cohort")
		require.Greater(t, r.longest, 12<<20)
	})
	t.Run("line over the configured limit is kept for the transform to reject", func(t *testing.T) {
		s := newBulk(t, bulktest.Options{Faults: bulktest.Faults{VeryLongLine: 2 << 20}})
		r, err := runExport(t, newClient(t, s.BaseURL(), func(o *fetch.Options) { o.MaxLineBytes = 1 << 20 }), groupReq)
		require.NoError(t, err)
		var long int64
		for _, sp := range r.spooled {
			long += sp.LongLines
		}
		require.EqualValues(t, 1, long)
		requireExact(t, s, r, "group", "cohort")
	})
	t.Run("error files (partial success)", func(t *testing.T) {
		s := newBulk(t, bulktest.Options{Faults: bulktest.Faults{ErrorFiles: 2}})
		r, err := runExport(t, newClient(t, s.BaseURL(), nil), groupReq)
		require.NoError(t, err)
		require.Len(t, r.m.Error, 2)
		for _, f := range r.m.Error {
			sp := r.spooled[f.Index]
			require.EqualValues(t, 1, sp.Lines)
			require.Zero(t, sp.MismatchedTypes)
			scanSpool(t, sp.Path, func(l []byte) { require.Contains(t, string(l), `"resourceType":"OperationOutcome"`) })
		}
		truth := truthKeys(s, "group", "cohort")
		require.Less(t, len(r.keys), len(truth))
		for k := range r.keys {
			require.Contains(t, truth, k)
		}
	})
}

func TestBulkFatalFaults(t *testing.T) {
	cases := []struct {
		name   string
		faults bulktest.Faults
		opts   func(*fetch.Options)
		check  func(t *testing.T, r *result, err error)
	}{
		{"202 without Content-Location", bulktest.Faults{KickOffNoContentLocation: true}, nil,
			func(t *testing.T, _ *result, err error) { require.ErrorContains(t, err, "without Content-Location") }},
		{"kick-off 5xx forever", bulktest.Faults{KickOffErrors: 100}, nil,
			func(t *testing.T, _ *result, err error) {
				var he *fetch.HTTPError
				require.ErrorAs(t, err, &he)
				require.Equal(t, 500, he.StatusCode)
				require.ErrorContains(t, err, "gave up after 3 retries")
			}},
		{"job failure", bulktest.Faults{FailJob: true}, nil,
			func(t *testing.T, _ *result, err error) {
				var je *fetch.JobError
				require.ErrorAs(t, err, &je)
				require.Equal(t, "fatal", je.Issues[0].Severity)
				require.ErrorContains(t, err, "the export job failed")
			}},
		{"file 5xx forever", bulktest.Faults{File5xx: 1000}, nil,
			func(t *testing.T, r *result, err error) {
				require.ErrorContains(t, err, "HTTP 500")
				require.Empty(t, r.spooled, "no file is passed on")
				requireNoPartials(t, r.dir)
			}},
		{"truncated forever", bulktest.Faults{TruncateDownloads: 1000}, nil,
			func(t *testing.T, r *result, err error) {
				require.ErrorContains(t, err, "truncated")
				require.Empty(t, r.spooled)
				requireNoPartials(t, r.dir)
			}},
		{"slow first byte beyond the request timeout", bulktest.Faults{SlowFirstByte: time.Second},
			func(o *fetch.Options) { o.RequestTimeout, o.Retries = 100*time.Millisecond, 1 },
			func(t *testing.T, r *result, err error) {
				require.ErrorIs(t, err, context.Canceled)
				require.Empty(t, r.spooled)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newBulk(t, bulktest.Options{Faults: tc.faults})
			r, err := runExport(t, newClient(t, s.BaseURL(), tc.opts), groupReq)
			require.Error(t, err)
			tc.check(t, r, err)
		})
	}
}

func TestBulkExpiredManifestAndPurgedJob(t *testing.T) {
	s := newBulk(t, bulktest.Options{})
	c := newClient(t, s.BaseURL(), nil)
	status, err := c.KickOff(t.Context(), groupReq)
	require.NoError(t, err)
	m, err := c.Wait(t.Context(), status)
	require.NoError(t, err)
	require.NoError(t, c.Delete(t.Context(), status)) // purged before download
	f := m.Files()[0]
	_, err = c.Download(t.Context(), m, f, filepath.Join(t.TempDir(), "x.gz"))
	require.ErrorIs(t, err, fetch.ErrExportGone, "404 file -> status re-read -> job gone: re-export with the same _since")
}

func TestBulkPagedManifest(t *testing.T) {
	s := newBulk(t, bulktest.Options{ManifestPageSize: 3})
	req := groupReq
	req.AllowPartialManifests = true
	r, err := runExport(t, newClient(t, s.BaseURL(), nil), req)
	require.NoError(t, err)
	require.Greater(t, len(r.m.Output), 6)
	requireExact(t, s, r, "group", "cohort")
}

func TestBulkSinceRoundTripAnd2018(t *testing.T) {
	s := newBulk(t, bulktest.Options{TransactionTimeOffset: time.FixedZone("", -5*3600), Compat2018: true, FilesRequireToken: ptr(true)})
	c := newClient(t, s.BaseURL(), nil)
	req := fetch.Request{Level: fetch.LevelSystem, Compat: "2018-draft"}
	r, err := runExport(t, c, req)
	// requiresAccessToken=true via the 2018 header, but no token is configured.
	require.ErrorContains(t, err, "requiresAccessToken=true")
	require.True(t, r.m.RequiresAccessToken)
	require.True(t, strings.HasSuffix(r.m.TransactionTime, "-05:00"), r.m.TransactionTime)

	s2 := newBulk(t, bulktest.Options{TransactionTimeOffset: time.FixedZone("", 2*3600)})
	c2 := newClient(t, s2.BaseURL(), nil)
	first, err := runExport(t, c2, fetch.Request{Level: fetch.LevelSystem})
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(first.m.TransactionTime, "+02:00"))
	mut := s2.Advance(time.Hour, bulktest.Mutation{UpdatedResources: 5})
	second, err := runExport(t, c2, fetch.Request{Level: fetch.LevelSystem, Since: first.m.TransactionTime})
	require.NoError(t, err, "a +hh:mm _since must reach the server intact")
	require.Len(t, mut.Updated, 5)
	for _, k := range mut.Updated {
		require.Equal(t, 1, second.keys[k])
	}
	require.Less(t, len(second.keys), len(first.keys)/2)
}

func ptr[T any](v T) *T { return &v }

// smartEnv is a bulktest server protected by the bulktest SMART server,
// and a fetch/auth SMART token source registered with it.
func smartEnv(t *testing.T, o bulktest.Options) (*bulktest.Server, *bulktest.SMARTServer, fetch.TokenSource) {
	t.Helper()
	as := bulktest.NewSMARTServer(bulktest.SMARTServerOptions{})
	o.Auth = as
	s := newBulk(t, o)
	g, err := auth.GenerateKey(auth.ES384, "")
	require.NoError(t, err)
	set, err := jwk.Parse(g.PublicJWKS)
	require.NoError(t, err)
	require.NoError(t, as.Register("ferry", set))
	p := filepath.Join(t.TempDir(), "key.pem")
	require.NoError(t, os.WriteFile(p, g.PrivatePEM, 0o600))
	key, err := auth.LoadKey(p, "")
	require.NoError(t, err)
	ts, err := auth.NewSMART(auth.SMARTConfig{BaseURL: s.BaseURL(), ClientID: "ferry", Key: key, Alg: auth.ES384, Scopes: []string{"system/*.rs"}})
	require.NoError(t, err)
	return s, as, ts
}

func TestBulkTokenRules(t *testing.T) {
	t.Run("files on another origin listed in the manifest get the token", func(t *testing.T) {
		s, _, ts := smartEnv(t, bulktest.Options{CrossOriginFiles: true})
		r, err := runExport(t, newClient(t, s.BaseURL(), func(o *fetch.Options) { o.Auth = ts }), groupReq)
		require.NoError(t, err)
		requireExact(t, s, r, "group", "cohort")
		st := s.Stats()
		require.Equal(t, len(r.m.Files()), st.AuthHeadersSeenOnFilesOrigin)
		require.Zero(t, st.TokenlessFileRequests)
	})
	t.Run("redirect to a signed URL on another origin drops the token", func(t *testing.T) {
		s, _, ts := smartEnv(t, bulktest.Options{RedirectFiles: true})
		r, err := runExport(t, newClient(t, s.BaseURL(), func(o *fetch.Options) { o.Auth = ts }), groupReq)
		require.NoError(t, err)
		requireExact(t, s, r, "group", "cohort")
		st := s.Stats()
		require.Zero(t, st.AuthHeadersSeenOnFilesOrigin)
		require.Equal(t, len(r.m.Files()), st.AuthHeadersSeenOnFiles, "the listed URL itself gets the token")
		require.Equal(t, len(r.m.Files()), st.Faults["Redirect"])
	})
	t.Run("requiresAccessToken=false sends no token to files", func(t *testing.T) {
		s, _, ts := smartEnv(t, bulktest.Options{FilesRequireToken: ptr(false)})
		r, err := runExport(t, newClient(t, s.BaseURL(), func(o *fetch.Options) { o.Auth = ts }), groupReq)
		require.NoError(t, err)
		require.False(t, r.m.RequiresAccessToken)
		requireExact(t, s, r, "group", "cohort")
		st := s.Stats()
		require.Zero(t, st.AuthHeadersSeenOnFiles)
		require.Equal(t, len(r.m.Files()), st.TokenlessFileRequests)
	})
	t.Run("token expiry mid-run renews once per request", func(t *testing.T) {
		s, as, ts := smartEnv(t, bulktest.Options{})
		c := newClient(t, s.BaseURL(), func(o *fetch.Options) { o.Auth = ts; o.Parallel = 1 })
		status, err := c.KickOff(t.Context(), groupReq)
		require.NoError(t, err)
		as.ExpireAllTokens()
		m, err := c.Wait(t.Context(), status)
		require.NoError(t, err)
		as.ExpireAllTokens()
		dir := t.TempDir()
		n := 0
		require.NoError(t, c.DownloadAll(t.Context(), m, dir, nil, func(fetch.Spooled) error { n++; return nil }))
		require.Equal(t, len(m.Files()), n)
		as.ExpireAllTokens()
		require.NoError(t, c.Delete(t.Context(), status))
		require.Equal(t, 3, s.Stats().AuthFailures, "one 401 per expiry, each followed by a renewed token")
	})
}

func TestBulkAttachments(t *testing.T) {
	s, _, ts := smartEnv(t, bulktest.Options{Patients: 3})
	c := newClient(t, s.BaseURL(), func(o *fetch.Options) { o.Auth = ts })
	req := groupReq
	req.Types = []string{"DocumentReference"}
	r, err := runExport(t, c, req)
	require.NoError(t, err)
	require.NotEmpty(t, r.keys)
	var sps []fetch.Spooled
	for _, sp := range r.spooled {
		sps = append(sps, sp)
	}
	dir := t.TempDir()
	atts, err := c.Attachments(t.Context(), r.m, sps, dir)
	require.NoError(t, err)
	require.Len(t, atts, len(r.keys), "one attachment per DocumentReference")
	for _, a := range atts {
		b, err := os.ReadFile(a.Path)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(string(b), "Clinical note"), a.Path)
		require.EqualValues(t, len(b), a.Bytes)
		require.Equal(t, "text/plain; charset=utf-8", a.ContentType)
		require.True(t, strings.HasPrefix(a.Resource, "DocumentReference/"))
	}
	require.Zero(t, s.Stats().TokenlessFileRequests, "attachments get the token when files need it")
}

// countingObserver tallies Observer events.
type countingObserver struct {
	mu       sync.Mutex
	progress []string
	bytes    int64
	retries  []string
}

func (o *countingObserver) Retry(r string) {
	o.mu.Lock()
	o.retries = append(o.retries, r)
	o.mu.Unlock()
}
func (o *countingObserver) HTTPStatus(string, int) {}
func (o *countingObserver) Bytes(kind string, n int64) {
	if kind == "file" {
		o.mu.Lock()
		o.bytes += n
		o.mu.Unlock()
	}
}
func (o *countingObserver) Progress(_, t string) {
	o.mu.Lock()
	o.progress = append(o.progress, t)
	o.mu.Unlock()
}

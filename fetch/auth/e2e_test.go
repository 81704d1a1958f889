package auth_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/auth"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

// bulkEnv is a bulktest server protected by a SMARTServer, optionally
// fronted by a handler that answers 401 for bad tokens with the reference
// server's plain-text bodies.
type bulkEnv struct {
	smart *bulktest.SMARTServer
	bulk  *bulktest.Server
	base  string
}

func newBulkEnv(t *testing.T, plain401 bool, o bulktest.Options) *bulkEnv {
	t.Helper()
	e := &bulkEnv{smart: bulktest.NewSMARTServer(bulktest.SMARTServerOptions{PlainText401: plain401, TokenLifetime: time.Hour})}
	for alg, kp := range testKeys(t) {
		set, err := jwk.Parse(kp.gen.PublicJWKS)
		require.NoError(t, err)
		require.NoError(t, e.smart.Register("client-"+alg, set))
	}
	o.Auth = e.smart
	hs := httptest.NewUnstartedServer(nil)
	o.PublicURL = "http://" + hs.Listener.Addr().String()
	var err error
	e.bulk, err = bulktest.New(o)
	require.NoError(t, err)
	h := e.bulk.Handler()
	if plain401 {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Like the reference server's request_*_token errors: a bad
			// token on a FHIR request gets a text/plain 401.
			if r.Header.Get("Authorization") != "" && strings.HasPrefix(r.URL.Path, "/fhir/") &&
				!strings.Contains(r.URL.Path, ".well-known") {
				if err := e.smart.Authorize(r); err != nil {
					e.smart.WriteUnauthorized(w, err)
					return
				}
			}
			inner.ServeHTTP(w, r)
		})
	}
	hs.Config.Handler = h
	hs.Start()
	t.Cleanup(hs.Close)
	e.base = e.bulk.BaseURL()
	require.Equal(t, o.PublicURL+"/fhir", e.base)
	return e
}

func (e *bulkEnv) client(t *testing.T, ts fetch.TokenSource) *fetch.Client {
	t.Helper()
	c, err := fetch.New(fetch.Options{
		BaseURL: e.base, Auth: ts, Parallel: 4,
		MinWait: 5 * time.Millisecond, MaxWait: 50 * time.Millisecond, RequestTimeout: 10 * time.Second,
	})
	require.NoError(t, err)
	return c
}

func rawGet(t *testing.T, method, u, tok string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "application/fhir+json")
	req.Header.Set("Prefer", "respond-async")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestE2ERequestsWithoutTokenGet401(t *testing.T) {
	e := newBulkEnv(t, false, bulktest.Options{Patients: 3, PollsBeforeComplete: -1})
	s, err := auth.NewSMART(auth.SMARTConfig{BaseURL: e.base, ClientID: "client-ES384",
		Key: testKeys(t)[auth.ES384].key, Alg: auth.ES384, Retry: fastRetry})
	require.NoError(t, err)
	ctx := context.Background()
	c := e.client(t, s)

	code, _ := rawGet(t, http.MethodGet, e.base+"/Patient/$export", "")
	require.Equal(t, http.StatusUnauthorized, code, "kick-off without a token")
	code, _ = rawGet(t, http.MethodGet, e.base+"/Patient/$export", "forged")
	require.Equal(t, http.StatusUnauthorized, code, "kick-off with a forged token")

	statusURL, err := c.KickOff(ctx, fetch.Request{Level: fetch.LevelPatient})
	require.NoError(t, err)
	code, _ = rawGet(t, http.MethodGet, statusURL, "")
	require.Equal(t, http.StatusUnauthorized, code, "status without a token")
	m, err := c.Wait(ctx, statusURL)
	require.NoError(t, err)
	require.True(t, m.RequiresAccessToken)
	require.NotEmpty(t, m.Output)
	code, _ = rawGet(t, http.MethodGet, m.Output[0].URL, "")
	require.Equal(t, http.StatusUnauthorized, code, "file without a token")
	tok, err := s.Token(ctx)
	require.NoError(t, err)
	code, body := rawGet(t, http.MethodGet, m.Output[0].URL, tok)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `"resourceType"`)
	code, _ = rawGet(t, http.MethodDelete, statusURL, "")
	require.Equal(t, http.StatusUnauthorized, code, "DELETE without a token")
	require.NoError(t, c.Delete(ctx, statusURL))

	require.Equal(t, 5, e.bulk.Stats().AuthFailures)
	require.Equal(t, 5, e.smart.Stats().Unauthorized)
	require.Equal(t, 1, e.smart.Stats().TokensIssued)
}

// TestE2EExportWithTokenExpiringMidRun completes an export through the
// fetch client while the server expires every token twice: once before the
// status poll and once before the parallel downloads. Each time the client
// renews exactly once, even with four downloads hitting 401 together. Both
// 401 styles (OperationOutcome from bulktest, plain text like the reference
// server) are covered.
func TestE2EExportWithTokenExpiringMidRun(t *testing.T) {
	for _, plain := range []bool{false, true} {
		name := "operation outcome 401"
		if plain {
			name = "plain text 401"
		}
		t.Run(name, func(t *testing.T) {
			e := newBulkEnv(t, plain, bulktest.Options{Patients: 6, FileMaxResources: 4, PollsBeforeComplete: 1, RetryAfter: "0"})
			s, err := auth.NewSMART(auth.SMARTConfig{BaseURL: e.base, ClientID: "client-RS384",
				Key: testKeys(t)[auth.RS384].key, Alg: auth.RS384, Retry: fastRetry})
			require.NoError(t, err)
			ctx := context.Background()
			c := e.client(t, s)

			statusURL, err := c.KickOff(ctx, fetch.Request{Level: fetch.LevelSystem})
			require.NoError(t, err)
			require.Equal(t, 1, e.smart.Stats().TokensIssued)

			e.smart.ExpireAllTokens()
			m, err := c.Wait(ctx, statusURL)
			require.NoError(t, err)
			require.Equal(t, 2, e.smart.Stats().TokensIssued, "one renewal after the 401 on status")
			require.Greater(t, len(m.Files()), 4, "enough files for parallel 401s")

			e.smart.ExpireAllTokens()
			var lines int64
			err = c.DownloadAll(ctx, m, t.TempDir(), nil, func(sp fetch.Spooled) error {
				lines += sp.Lines
				return nil
			})
			require.NoError(t, err)
			require.Positive(t, lines)
			require.NoError(t, c.Delete(ctx, statusURL))

			st := e.smart.Stats()
			require.Equal(t, 3, st.TokensIssued, "exactly one renewal per expiry, however many requests saw 401")
			require.Equal(t, 3, st.TokenRequests)
			require.Zero(t, st.ReusedJTIs)
			require.GreaterOrEqual(t, st.Unauthorized, 2)
			require.EqualValues(t, 3, s.Refreshes())
		})
	}
}

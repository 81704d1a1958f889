package auth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch/auth"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

// keyPair is a generated key and the files written for it.
type keyPair struct {
	gen     *auth.GeneratedKey
	pemPath string
	key     jwk.Key
}

var (
	keysOnce sync.Once
	keys     map[string]keyPair
	keysErr  error
)

// testKeys generates one key per algorithm for the whole test binary (RSA
// generation is slow).
func testKeys(t *testing.T) map[string]keyPair {
	t.Helper()
	keysOnce.Do(func() {
		dir, err := os.MkdirTemp("", "authkeys")
		if err != nil {
			keysErr = err
			return
		}
		keys = map[string]keyPair{}
		for _, alg := range []string{auth.ES384, auth.RS384} {
			g, err := auth.GenerateKey(alg, "")
			if err != nil {
				keysErr = err
				return
			}
			p := filepath.Join(dir, alg+".pem")
			if keysErr = os.WriteFile(p, g.PrivatePEM, 0o600); keysErr != nil {
				return
			}
			k, err := auth.LoadKey(p, "")
			if err != nil {
				keysErr = err
				return
			}
			keys[alg] = keyPair{gen: g, pemPath: p, key: k}
		}
	})
	require.NoError(t, keysErr)
	return keys
}

// env is a SMART server on a real listener, with a protected FHIR path and
// a capture of every token request form.
type env struct {
	srv   *bulktest.SMARTServer
	hs    *httptest.Server
	base  string
	delay atomic.Int64 // token endpoint latency, ns

	mu    sync.Mutex
	forms []url.Values
}

func newEnv(t *testing.T, o bulktest.SMARTServerOptions) *env {
	t.Helper()
	e := &env{srv: bulktest.NewSMARTServer(o)}
	mux := http.NewServeMux()
	e.hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/auth/token" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if v, err := url.ParseQuery(string(body)); err == nil {
				e.mu.Lock()
				e.forms = append(e.forms, v)
				e.mu.Unlock()
			}
			if d := time.Duration(e.delay.Load()); d > 0 {
				timer := time.NewTimer(d)
				select {
				case <-timer.C:
				case <-r.Context().Done():
					timer.Stop()
				}
			}
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(e.hs.Close)
	e.base = e.hs.URL + "/fhir"
	e.srv.Routes(mux, e.base)
	mux.Handle("/fhir/", e.srv.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})))
	for alg, kp := range testKeys(t) {
		set, err := jwk.Parse(kp.gen.PublicJWKS)
		require.NoError(t, err)
		require.NoError(t, e.srv.Register("client-"+alg, set))
	}
	return e
}

func (e *env) assertions() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, f := range e.forms {
		if a := f.Get("client_assertion"); a != "" {
			out = append(out, a)
		}
	}
	return out
}

var fastRetry = auth.Retry{Attempts: 4, MinWait: 5 * time.Millisecond, MaxWait: 20 * time.Millisecond}

func (e *env) smart(t *testing.T, alg string, mod func(*auth.SMARTConfig)) *auth.SMART {
	t.Helper()
	cfg := auth.SMARTConfig{
		BaseURL: e.base, ClientID: "client-" + alg, Key: testKeys(t)[alg].key, Alg: alg,
		Scopes: []string{"system/*.rs"}, Retry: fastRetry,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := auth.NewSMART(cfg)
	require.NoError(t, err)
	return s
}

// get requests the protected path with tok and returns the status.
func (e *env) get(t *testing.T, tok string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.base+"/Patient/$export", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func decodeSegment(t *testing.T, seg string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func TestSMARTEndToEndBothAlgs(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{})
	for _, alg := range []string{auth.ES384, auth.RS384} {
		t.Run(alg, func(t *testing.T) {
			before := e.srv.Stats()
			s := e.smart(t, alg, nil)
			tok, err := s.Token(context.Background())
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, e.get(t, tok))
			tok2, err := s.Token(context.Background())
			require.NoError(t, err)
			require.Equal(t, tok, tok2, "the cached token is reused")
			require.Equal(t, []string{"system/*.rs"}, s.GrantedScopes())
			require.Equal(t, e.srv.TokenURL(), s.TokenURL())

			st := e.srv.Stats()
			require.Equal(t, 1, st.TokenRequests-before.TokenRequests)
			require.Equal(t, 1, st.DiscoveryRequests-before.DiscoveryRequests)

			e.mu.Lock()
			form := e.forms[len(e.forms)-1]
			e.mu.Unlock()
			require.Equal(t, "client_credentials", form.Get("grant_type"))
			require.Equal(t, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", form.Get("client_assertion_type"))
			require.Equal(t, "system/*.rs", form.Get("scope"))
			parts := strings.Split(form.Get("client_assertion"), ".")
			require.Len(t, parts, 3)
			h := decodeSegment(t, parts[0])
			require.Equal(t, alg, h["alg"])
			require.Equal(t, "JWT", h["typ"])
			require.Equal(t, testKeys(t)[alg].gen.KeyID, h["kid"])
			require.NotContains(t, h, "jku")
			c := decodeSegment(t, parts[1])
			require.Equal(t, "client-"+alg, c["iss"])
			require.Equal(t, c["iss"], c["sub"])
			require.Equal(t, e.srv.TokenURL(), c["aud"])
			life := c["exp"].(float64) - c["iat"].(float64)
			require.GreaterOrEqual(t, life, 240.0)
			require.LessOrEqual(t, life, 300.0)
			jti, err := hex.DecodeString(c["jti"].(string))
			require.NoError(t, err)
			require.GreaterOrEqual(t, len(jti), 16, "128+ bit jti")
			sig, err := base64.RawURLEncoding.DecodeString(parts[2])
			require.NoError(t, err)
			if alg == auth.ES384 {
				require.Len(t, sig, 96, "ES384 signatures are raw R||S, not DER")
			} else {
				require.Len(t, sig, 384, "RSA 3072-bit signature")
			}
		})
	}
}

func TestSMARTOAuthErrorsAreNotRetried(t *testing.T) {
	tests := []struct {
		name   string
		faults bulktest.SMARTFaults
		code   string
		status int
		desc   string
	}{
		{"invalid client", bulktest.SMARTFaults{InvalidClient: 5}, "invalid_client", 401, "client registration is no longer valid"},
		{"invalid grant", bulktest.SMARTFaults{InvalidGrant: 5}, "invalid_grant", 400, "registration token expired"},
		{"invalid scope", bulktest.SMARTFaults{InvalidScope: 5}, "invalid_scope", 400, "requested scope is not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, bulktest.SMARTServerOptions{Faults: tt.faults})
			s := e.smart(t, auth.ES384, nil)
			_, err := s.Token(context.Background())
			var oe *auth.OAuthError
			require.ErrorAs(t, err, &oe)
			require.Equal(t, tt.code, oe.Code)
			require.Equal(t, tt.status, oe.Status)
			require.Contains(t, oe.Description, tt.desc)
			require.Contains(t, err.Error(), tt.desc)
			require.Equal(t, 1, e.srv.Stats().TokenRequests, "a configuration error is not retried")
		})
	}
	t.Run("unregistered client and bad scope from real validation", func(t *testing.T) {
		e := newEnv(t, bulktest.SMARTServerOptions{})
		s := e.smart(t, auth.ES384, func(c *auth.SMARTConfig) { c.ClientID = "stranger" })
		_, err := s.Token(context.Background())
		var oe *auth.OAuthError
		require.ErrorAs(t, err, &oe)
		require.Equal(t, "invalid_client", oe.Code)
		require.Contains(t, oe.Description, `"stranger" is not registered`)

		s = e.smart(t, auth.ES384, func(c *auth.SMARTConfig) { c.Scopes = []string{"user/*.rs"} })
		_, err = s.Token(context.Background())
		require.ErrorAs(t, err, &oe)
		require.Equal(t, "invalid_scope", oe.Code)

		s = e.smart(t, auth.ES384, func(c *auth.SMARTConfig) { c.KeyID = "not-registered" })
		_, err = s.Token(context.Background())
		require.ErrorAs(t, err, &oe)
		require.Equal(t, "invalid_client", oe.Code)
		require.Contains(t, oe.Description, `kid "not-registered"`)
		require.Equal(t, 3, e.srv.Stats().TokenRequests)
	})
}

func TestSMARTRetries5xxWithFreshJTI(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{Faults: bulktest.SMARTFaults{TokenEndpoint5xx: 2}})
	s := e.smart(t, auth.RS384, nil)
	tok, err := s.Token(context.Background())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, e.get(t, tok))
	st := e.srv.Stats()
	require.Equal(t, 3, st.TokenRequests)
	require.Equal(t, 2, st.Errors["server_error"])
	require.Len(t, st.JTIs, 3, "every attempt has its own jti")
	require.Zero(t, st.ReusedJTIs)
	a := e.assertions()
	require.Len(t, a, 3)
	require.NotEqual(t, a[0], a[1])
	require.NotEqual(t, a[1], a[2])

	// A server that stays down: bounded attempts, then a clear error.
	e.srv.SetFaults(bulktest.SMARTFaults{TokenEndpoint5xx: 100})
	s = e.smart(t, auth.ES384, nil)
	_, err = s.Token(context.Background())
	require.ErrorContains(t, err, "giving up after 4 attempts")
	require.ErrorContains(t, err, "HTTP 503")
	require.Equal(t, 3+4, e.srv.Stats().TokenRequests)
}

func TestSMARTRetriesNetworkErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now
	s, err := auth.NewSMART(auth.SMARTConfig{
		TokenURL: "http://" + addr + "/auth/token", ClientID: "c", Key: testKeys(t)[auth.ES384].key,
		Alg: auth.ES384, Retry: auth.Retry{Attempts: 3, MinWait: time.Millisecond, MaxWait: time.Millisecond},
	})
	require.NoError(t, err)
	_, err = s.Token(context.Background())
	require.ErrorContains(t, err, "giving up after 3 attempts")
	require.ErrorContains(t, err, "connection refused")
}

func TestSMARTProactiveRenewal(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{TokenLifetime: 2 * time.Second})
	s := e.smart(t, auth.ES384, nil)
	seen := map[string]bool{}
	deadline := time.Now().Add(4500 * time.Millisecond)
	for time.Now().Before(deadline) {
		tok, err := s.Token(context.Background())
		require.NoError(t, err)
		seen[tok] = true
		// Use the token 300 ms later, like a slow request would: a token
		// renewed only at expiry would be rejected here.
		timer := time.NewTimer(300 * time.Millisecond)
		<-timer.C
		require.Equal(t, http.StatusOK, e.get(t, tok), "token handed out too close to its expiry")
	}
	st := e.srv.Stats()
	require.Zero(t, st.Unauthorized)
	// 2 s tokens renewed 0.5 s early: a few tokens in 4.5 s, not one per call.
	require.GreaterOrEqual(t, len(seen), 2)
	require.LessOrEqual(t, len(seen), 4)
	require.Equal(t, len(seen), st.TokensIssued)
	require.EqualValues(t, len(seen), s.Refreshes())
}

func TestSMARTSingleFlightOnExpiredToken(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{TokenLifetime: time.Second})
	s := e.smart(t, auth.ES384, nil)
	first, err := s.Token(context.Background())
	require.NoError(t, err)
	timer := time.NewTimer(1100 * time.Millisecond) // let it expire
	<-timer.C
	require.Equal(t, http.StatusUnauthorized, e.get(t, first))

	e.delay.Store(int64(200 * time.Millisecond)) // callers pile up on one request
	before := e.srv.Stats().TokenRequests
	const n = 64
	start := make(chan struct{})
	toks := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			toks[i], errs[i] = s.Token(context.Background())
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, toks[0], toks[i])
	}
	require.NotEqual(t, first, toks[0])
	require.Equal(t, 1, e.srv.Stats().TokenRequests-before, "exactly one refresh for %d callers", n)
	require.Equal(t, http.StatusOK, e.get(t, toks[0]))
}

func TestSMARTInvalidateRenewsOnce(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{TokenLifetime: time.Hour})
	s := e.smart(t, auth.ES384, nil)
	t1, err := s.Token(context.Background())
	require.NoError(t, err)
	e.srv.ExpireAllTokens() // the server revokes mid-run; the client still thinks t1 is fine
	again, err := s.Token(context.Background())
	require.NoError(t, err)
	require.Equal(t, t1, again)
	require.Equal(t, http.StatusUnauthorized, e.get(t, t1))

	before := e.srv.Stats().TokenRequests
	const n = 16
	var wg sync.WaitGroup
	toks := make([]string, n)
	for i := range n { // a burst of parallel 401s on the same token
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Invalidate(t1)
			tok, err := s.Token(context.Background())
			if err == nil {
				toks[i] = tok
			}
		}()
	}
	wg.Wait()
	t2 := toks[0]
	require.NotEqual(t, t1, t2)
	for _, tok := range toks {
		require.Equal(t, t2, tok)
	}
	require.Equal(t, 1, e.srv.Stats().TokenRequests-before)
	require.Equal(t, http.StatusOK, e.get(t, t2))

	s.Invalidate(t1) // a late 401 for the old token changes nothing
	t3, err := s.Token(context.Background())
	require.NoError(t, err)
	require.Equal(t, t2, t3)
	require.Equal(t, 1, e.srv.Stats().TokenRequests-before)
}

func TestSMARTGrantedScopesNarrower(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{GrantableScopes: []string{"system/Patient.rs", "system/Group.rs"}})
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	s := e.smart(t, auth.ES384, func(c *auth.SMARTConfig) {
		c.Scopes = []string{"system/Patient.rs", "system/Observation.rs"}
		c.Logger = log
	})
	_, err := s.Token(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"system/Patient.rs"}, s.GrantedScopes())
	require.Contains(t, buf.String(), "server granted fewer scopes than requested")
	require.Contains(t, buf.String(), "missing=system/Observation.rs")
}

func TestSMARTJWKSURLAndJKU(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{})
	kp := testKeys(t)[auth.ES384]
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(kp.gen.PublicJWKS)
	}))
	defer jwksSrv.Close()
	e.srv.RegisterURL("by-url", jwksSrv.URL+"/jwks.json")

	s := e.smart(t, auth.ES384, func(c *auth.SMARTConfig) { c.ClientID = "by-url"; c.JKU = jwksSrv.URL + "/jwks.json" })
	tok, err := s.Token(context.Background())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, e.get(t, tok))
	h := decodeSegment(t, strings.Split(e.assertions()[0], ".")[0])
	require.Equal(t, jwksSrv.URL+"/jwks.json", h["jku"])

	s = e.smart(t, auth.ES384, func(c *auth.SMARTConfig) { c.ClientID = "by-url"; c.JKU = jwksSrv.URL + "/other.json" })
	_, err = s.Token(context.Background())
	var oe *auth.OAuthError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "invalid_grant", oe.Code)
	require.Contains(t, oe.Description, "jku_not_whitelisted")
}

func TestSMARTCallerContext(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{})
	e.delay.Store(int64(500 * time.Millisecond))
	s := e.smart(t, auth.ES384, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := s.Token(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(began), 400*time.Millisecond, "the caller is released at its deadline")

	// The shared request carried on for other callers: no second request.
	tok, err := s.Token(context.Background())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, e.get(t, tok))
	require.Equal(t, 1, e.srv.Stats().TokenRequests)
}

func TestSMARTDiscoveryAndConfigErrors(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{})
	s := e.smart(t, auth.ES384, func(c *auth.SMARTConfig) { c.BaseURL = e.hs.URL + "/elsewhere" })
	_, err := s.Token(context.Background())
	require.ErrorContains(t, err, "smart discovery")
	require.ErrorContains(t, err, "HTTP 404")
	require.ErrorContains(t, err, "auth.token_url")

	s = e.smart(t, auth.ES384, func(c *auth.SMARTConfig) { c.BaseURL = ""; c.TokenURL = e.srv.TokenURL() })
	_, err = s.Token(context.Background())
	require.NoError(t, err)
	require.Zero(t, e.srv.Stats().DiscoveryRequests, "a configured token URL skips discovery")

	_, err = auth.NewSMART(auth.SMARTConfig{BaseURL: e.base, ClientID: "c", Key: testKeys(t)[auth.RS384].key, Alg: auth.ES384})
	require.ErrorContains(t, err, "ES384 needs an EC P-384 private key, got RSA 3072-bit")
	_, err = auth.NewSMART(auth.SMARTConfig{BaseURL: e.base, Key: testKeys(t)[auth.ES384].key})
	require.ErrorContains(t, err, "client_id")
	_, err = auth.NewSMART(auth.SMARTConfig{TokenURL: "/relative", ClientID: "c", Key: testKeys(t)[auth.ES384].key})
	require.ErrorContains(t, err, "not an absolute")
}

func TestClientSecretAgainstServer(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{})
	e.srv.RegisterSecret("app", "s3cr:et")
	cs, err := auth.NewClientSecret(e.srv.TokenURL(), "app", "s3cr:et", []string{"system/*.read"})
	require.NoError(t, err)
	tok, err := cs.Token(context.Background())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, e.get(t, tok))
	require.Equal(t, []string{"system/*.read"}, cs.GrantedScopes())

	bad, err := auth.NewClientSecret(e.srv.TokenURL(), "app", "wrong", nil)
	require.NoError(t, err)
	_, err = bad.Token(context.Background())
	var oe *auth.OAuthError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "invalid_client", oe.Code)
	require.Equal(t, 2, e.srv.Stats().TokenRequests)
}

// TestNoSecretsInLogs runs an authenticated sequence with every log line
// captured at debug level and checks that no token, assertion, secret or
// private key material appears in it.
func TestNoSecretsInLogs(t *testing.T) {
	e := newEnv(t, bulktest.SMARTServerOptions{
		TokenLifetime: time.Second, GrantableScopes: []string{"system/Patient.rs"},
		Faults: bulktest.SMARTFaults{TokenEndpoint5xx: 1},
	})
	var buf bytes.Buffer
	var bufMu sync.Mutex
	log := slog.New(slog.NewJSONHandler(lockedWriter{&buf, &bufMu}, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// A world-readable copy of the key, to trigger the permissions warning.
	kp := testKeys(t)[auth.ES384]
	loose := filepath.Join(t.TempDir(), "loose.pem")
	require.NoError(t, os.WriteFile(loose, kp.gen.PrivatePEM, 0o644))
	require.NoError(t, os.Chmod(loose, 0o644))
	src, err := auth.FromConfig(context.Background(), configsSMART(loose), e.base, nil, log)
	require.NoError(t, err)
	s := src.(*auth.SMART)

	var tokens []string
	t1, err := s.Token(context.Background()) // discovery, 503, retry, token
	require.NoError(t, err)
	tokens = append(tokens, t1)
	s.Invalidate(t1)
	t2, err := s.Token(context.Background())
	require.NoError(t, err)
	tokens = append(tokens, t2)
	timer := time.NewTimer(1100 * time.Millisecond)
	<-timer.C
	t3, err := s.Token(context.Background()) // proactive renewal
	require.NoError(t, err)
	tokens = append(tokens, t3)
	e.srv.SetFaults(bulktest.SMARTFaults{InvalidClient: 1})
	s.Invalidate(t3)
	_, err = s.Token(context.Background())
	require.Error(t, err)

	e.srv.RegisterSecret("app", "very-secret-value")
	cs, err := auth.FromConfig(context.Background(), configsSecret(e.srv.TokenURL(), "very-secret-value"), e.base, nil, log)
	require.NoError(t, err)
	t4, err := cs.Token(context.Background())
	require.NoError(t, err)
	tokens = append(tokens, t4)
	cs.Invalidate(t4)
	_, err = cs.Token(context.Background())
	require.NoError(t, err)

	bufMu.Lock()
	logs := buf.String()
	bufMu.Unlock()
	// The log is not empty: the sequence produced warnings and debug lines.
	for _, want := range []string{"readable by group or others", "retrying", "access token obtained",
		"fewer scopes", "rejected by server"} {
		require.Contains(t, logs, want)
	}
	var secrets []string
	secrets = append(secrets, tokens...)
	for _, a := range e.assertions() {
		parts := strings.Split(a, ".")
		secrets = append(secrets, a, parts[2], parts[0]+"."+parts[1])
	}
	require.GreaterOrEqual(t, len(e.assertions()), 4)
	secrets = append(secrets, "very-secret-value", base64.StdEncoding.EncodeToString([]byte("app:very-secret-value")))
	for _, line := range strings.Split(string(kp.gen.PrivatePEM), "\n") {
		if len(line) > 20 && !strings.HasPrefix(line, "-----") {
			secrets = append(secrets, line)
		}
	}
	priv, err := json.Marshal(kp.key)
	require.NoError(t, err)
	var members map[string]any
	require.NoError(t, json.Unmarshal(priv, &members))
	secrets = append(secrets, members["d"].(string))
	for _, sec := range secrets {
		require.NotEmpty(t, sec)
		if strings.Contains(logs, sec) {
			t.Fatalf("log output contains secret material %.12q…", sec)
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

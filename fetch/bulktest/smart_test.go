package bulktest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

type smartFixture struct {
	srv      *bulktest.SMARTServer
	hs       *httptest.Server
	base     string
	tokenURL string
	ec, rsa  jwk.Key // registered for client "c1" with kids "ec1", "rsa1"
}

func newSMARTFixture(t *testing.T, o bulktest.SMARTServerOptions) *smartFixture {
	t.Helper()
	srv := bulktest.NewSMARTServer(o)
	mux := http.NewServeMux()
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	base := hs.URL + "/fhir"
	srv.Routes(mux, base)
	mux.Handle("/fhir/", srv.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "protected")
	})))
	f := &smartFixture{srv: srv, hs: hs, base: base, tokenURL: srv.TokenURL()}
	ecRaw, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	rsaRaw, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	f.ec = mustKey(t, ecRaw, "ec1")
	f.rsa = mustKey(t, rsaRaw, "rsa1")
	set := jwk.NewSet()
	require.NoError(t, set.AddKey(f.ec))
	require.NoError(t, set.AddKey(f.rsa))
	require.NoError(t, srv.Register("c1", set))
	return f
}

func mustKey(t *testing.T, raw any, kid string) jwk.Key {
	t.Helper()
	k, err := jwk.FromRaw(raw)
	require.NoError(t, err)
	require.NoError(t, k.Set(jwk.KeyIDKey, kid))
	return k
}

var jtiCounter int

// claims returns valid claims for client c1.
func (f *smartFixture) claims() map[string]any {
	jtiCounter++
	now := time.Now()
	return map[string]any{
		"iss": "c1", "sub": "c1", "aud": f.tokenURL,
		"exp": now.Add(4 * time.Minute).Unix(), "iat": now.Unix(),
		"jti": "jti-" + time.Now().Format("150405.000000000") + "-" + string(rune('a'+jtiCounter%26)),
	}
}

func sign(t *testing.T, key jwk.Key, alg jwa.SignatureAlgorithm, hdr map[string]any, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	require.NoError(t, err)
	var raw any // a raw key, so jwx adds no kid of its own
	require.NoError(t, key.Raw(&raw))
	h := jws.NewHeaders()
	for k, v := range hdr {
		require.NoError(t, h.Set(k, v))
	}
	out, err := jws.Sign(payload, jws.WithKey(alg, raw, jws.WithProtectedHeaders(h)))
	require.NoError(t, err)
	return string(out)
}

func (f *smartFixture) form(assertion string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
		"scope":                 {"system/*.rs"},
	}
}

func (f *smartFixture) post(t *testing.T, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(f.tokenURL, form)
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return resp.StatusCode, m
}

func (f *smartFixture) get(t *testing.T, token string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.base+"/Patient/$export", nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestSMARTServerIssuesTokenForBothAlgs(t *testing.T) {
	f := newSMARTFixture(t, bulktest.SMARTServerOptions{})
	for _, tc := range []struct {
		key jwk.Key
		alg jwa.SignatureAlgorithm
	}{{f.ec, jwa.ES384}, {f.rsa, jwa.RS384}} {
		a := sign(t, tc.key, tc.alg, map[string]any{"kid": tc.key.KeyID(), "typ": "JWT"}, f.claims())
		status, m := f.post(t, f.form(a))
		require.Equal(t, http.StatusOK, status, "%v", m)
		require.Equal(t, "bearer", m["token_type"])
		require.Equal(t, "system/*.rs", m["scope"])
		require.InDelta(t, 240, m["expires_in"], 1, "capped at the assertion's remaining life")
		tok := m["access_token"].(string)
		code, _, body := f.get(t, tok)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "protected", body)
	}
	st := f.srv.Stats()
	require.Equal(t, 2, st.TokensIssued)
	require.Equal(t, 2, st.Authorized)
	require.Len(t, st.JTIs, 2)
}

func TestSMARTServerRejectsBadTokenRequests(t *testing.T) {
	f := newSMARTFixture(t, bulktest.SMARTServerOptions{})
	otherRaw, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	impostor := mustKey(t, otherRaw, "ec1") // same kid, different key
	hdr := func(kid string) map[string]any { return map[string]any{"kid": kid, "typ": "JWT"} }
	with := func(k string, v any) map[string]any {
		c := f.claims()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	valid := func() string { return sign(t, f.ec, jwa.ES384, hdr("ec1"), f.claims()) }
	tests := []struct {
		name   string
		form   func() url.Values
		status int
		code   string
		desc   string
	}{
		{"bad grant_type", func() url.Values { v := f.form(valid()); v.Set("grant_type", "password"); return v }, 400, "unsupported_grant_type", "client_credentials"},
		{"bad assertion type", func() url.Values { v := f.form(valid()); v.Set("client_assertion_type", "x"); return v }, 400, "invalid_request", "client_assertion_type"},
		{"no assertion", func() url.Values { v := f.form(""); return v }, 400, "invalid_request", "client_assertion is required"},
		{"refresh token", func() url.Values { v := f.form(valid()); v.Set("refresh_token", "r"); return v }, 400, "invalid_request", "refresh"},
		{"typ missing", func() url.Values {
			return f.form(sign(t, f.ec, jwa.ES384, map[string]any{"kid": "ec1"}, f.claims()))
		}, 400, "invalid_grant", "typ must be JWT"},
		{"typ wrong", func() url.Values {
			return f.form(sign(t, f.ec, jwa.ES384, map[string]any{"kid": "ec1", "typ": "at+jwt"}, f.claims()))
		}, 400, "invalid_grant", "typ must be JWT"},
		{"alg PS384", func() url.Values { return f.form(sign(t, f.rsa, jwa.PS384, hdr("rsa1"), f.claims())) }, 400, "invalid_grant", "not RS384 or ES384"},
		{"no kid", func() url.Values { return f.form(sign(t, f.ec, jwa.ES384, map[string]any{"typ": "JWT"}, f.claims())) }, 400, "invalid_grant", "no kid"},
		{"unknown kid", func() url.Values { return f.form(sign(t, f.ec, jwa.ES384, hdr("nope"), f.claims())) }, 401, "invalid_client", `kid "nope"`},
		{"wrong key", func() url.Values { return f.form(sign(t, impostor, jwa.ES384, hdr("ec1"), f.claims())) }, 401, "invalid_client", "signature"},
		{"unregistered client", func() url.Values {
			return f.form(sign(t, f.ec, jwa.ES384, hdr("ec1"), with("iss", "c2")))
		}, 400, "invalid_grant", "sub"},
		{"unregistered iss=sub", func() url.Values {
			c := f.claims()
			c["iss"], c["sub"] = "c2", "c2"
			return f.form(sign(t, f.ec, jwa.ES384, hdr("ec1"), c))
		}, 401, "invalid_client", "not registered"},
		{"aud wrong", func() url.Values { return f.form(sign(t, f.ec, jwa.ES384, hdr("ec1"), with("aud", f.base))) }, 400, "invalid_grant", "aud"},
		{"aud other scheme", func() url.Values {
			return f.form(sign(t, f.ec, jwa.ES384, hdr("ec1"), with("aud", strings.Replace(f.tokenURL, "http:", "https:", 1))))
		}, 400, "invalid_grant", "aud"},
		{"expired", func() url.Values {
			return f.form(sign(t, f.ec, jwa.ES384, hdr("ec1"), with("exp", time.Now().Add(-time.Minute).Unix())))
		}, 400, "invalid_grant", "expired"},
		{"exp too far", func() url.Values {
			return f.form(sign(t, f.ec, jwa.ES384, hdr("ec1"), with("exp", time.Now().Add(6*time.Minute).Unix())))
		}, 400, "invalid_grant", "5 minutes"},
		{"no exp", func() url.Values { return f.form(sign(t, f.ec, jwa.ES384, hdr("ec1"), with("exp", nil))) }, 400, "invalid_grant", "no exp"},
		{"no jti", func() url.Values { return f.form(sign(t, f.ec, jwa.ES384, hdr("ec1"), with("jti", nil))) }, 400, "invalid_grant", "no jti"},
		{"jku not registered", func() url.Values {
			return f.form(sign(t, f.ec, jwa.ES384, map[string]any{"kid": "ec1", "typ": "JWT", "jku": "https://evil.example/jwks"}, f.claims()))
		}, 400, "invalid_grant", "jku_not_whitelisted"},
		{"patient scope", func() url.Values { v := f.form(valid()); v.Set("scope", "patient/*.rs"); return v }, 400, "invalid_scope", "system/"},
		{"write scope", func() url.Values { v := f.form(valid()); v.Set("scope", "system/*.cruds"); return v }, 400, "invalid_scope", "more than read"},
		{"empty scope", func() url.Values { v := f.form(valid()); v.Set("scope", " "); return v }, 400, "invalid_scope", "required"},
		{"not a JWS", func() url.Values { return f.form("abc.def") }, 400, "invalid_grant", "compact JWS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := f.post(t, tt.form())
			require.Equal(t, tt.status, status, "%v", m)
			require.Equal(t, tt.code, m["error"])
			require.Contains(t, m["error_description"], tt.desc)
		})
	}
	require.Zero(t, f.srv.Stats().TokensIssued)

	// A JSON body instead of a form.
	resp, err := http.Post(f.tokenURL, "application/json", strings.NewReader(`{}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

func TestSMARTServerRejectsReusedJTI(t *testing.T) {
	f := newSMARTFixture(t, bulktest.SMARTServerOptions{})
	a := sign(t, f.ec, jwa.ES384, map[string]any{"kid": "ec1", "typ": "JWT"}, f.claims())
	status, _ := f.post(t, f.form(a))
	require.Equal(t, http.StatusOK, status)
	status, m := f.post(t, f.form(a))
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "invalid_grant", m["error"])
	require.Contains(t, m["error_description"], "jti")
	st := f.srv.Stats()
	require.Equal(t, 1, st.ReusedJTIs)
	require.Equal(t, 1, st.TokensIssued)
	require.Len(t, st.JTIs, 1)

	// A jti seen on a request that failed with an injected 5xx is burnt too.
	f.srv.SetFaults(bulktest.SMARTFaults{TokenEndpoint5xx: 1})
	b := sign(t, f.ec, jwa.ES384, map[string]any{"kid": "ec1", "typ": "JWT"}, f.claims())
	status, _ = f.post(t, f.form(b))
	require.Equal(t, http.StatusServiceUnavailable, status)
	status, m = f.post(t, f.form(b))
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "invalid_grant", m["error"])
}

func TestSMARTServerFaultCountersAndStats(t *testing.T) {
	f := newSMARTFixture(t, bulktest.SMARTServerOptions{Faults: bulktest.SMARTFaults{
		TokenEndpoint5xx: 1, InvalidClient: 1, InvalidGrant: 1, InvalidScope: 1,
	}})
	var got []string
	for range 5 {
		status, m := f.post(t, f.form(sign(t, f.ec, jwa.ES384, map[string]any{"kid": "ec1", "typ": "JWT"}, f.claims())))
		got = append(got, http.StatusText(status)+" "+strOf(m["error"]))
	}
	require.Equal(t, []string{
		"Service Unavailable server_error", "Unauthorized invalid_client", "Bad Request invalid_grant",
		"Bad Request invalid_scope", "OK ",
	}, got)
	require.Equal(t, bulktest.SMARTFaults{}, f.srv.Faults())
	st := f.srv.Stats()
	require.Equal(t, 5, st.TokenRequests)
	require.Equal(t, map[string]int{"server_error": 1, "invalid_client": 1, "invalid_grant": 1, "invalid_scope": 1}, st.Errors)
}

func strOf(v any) string {
	s, _ := v.(string)
	return s
}

func TestSMARTServerAuthorizeAndExpiry(t *testing.T) {
	for _, plain := range []bool{false, true} {
		f := newSMARTFixture(t, bulktest.SMARTServerOptions{PlainText401: plain, TokenLifetime: time.Hour})
		_, m := f.post(t, f.form(sign(t, f.ec, jwa.ES384, map[string]any{"kid": "ec1", "typ": "JWT"}, f.claims())))
		tok := m["access_token"].(string)

		code, _, _ := f.get(t, tok)
		require.Equal(t, http.StatusOK, code)
		code, ctype, body := f.get(t, "")
		require.Equal(t, http.StatusUnauthorized, code)
		code, _, body2 := f.get(t, "not-a-token")
		require.Equal(t, http.StatusUnauthorized, code)
		f.srv.ExpireAllTokens()
		code, _, body3 := f.get(t, tok)
		require.Equal(t, http.StatusUnauthorized, code)
		if plain {
			require.Equal(t, "text/plain; charset=utf-8", ctype)
			require.Equal(t, "missing bearer token", body)
			require.Equal(t, "Invalid token", body2)
			require.Equal(t, "Token expired", body3)
		} else {
			require.Equal(t, "application/fhir+json", ctype)
			var oo struct {
				ResourceType string `json:"resourceType"`
				Issue        []struct{ Code, Diagnostics string }
			}
			require.NoError(t, json.Unmarshal([]byte(body3), &oo))
			require.Equal(t, "OperationOutcome", oo.ResourceType)
			require.Equal(t, "Token expired", oo.Issue[0].Diagnostics)
			require.NotContains(t, body3, tok)
		}
		st := f.srv.Stats()
		require.Equal(t, 1, st.Authorized)
		require.Equal(t, 3, st.Unauthorized)
	}
}

func TestSMARTServerShortLifetime(t *testing.T) {
	f := newSMARTFixture(t, bulktest.SMARTServerOptions{TokenLifetime: time.Second})
	_, m := f.post(t, f.form(sign(t, f.ec, jwa.ES384, map[string]any{"kid": "ec1", "typ": "JWT"}, f.claims())))
	require.EqualValues(t, 1, m["expires_in"])
	tok := m["access_token"].(string)
	code, _, _ := f.get(t, tok)
	require.Equal(t, http.StatusOK, code)
	timer := time.NewTimer(1100 * time.Millisecond)
	<-timer.C
	code, _, _ = f.get(t, tok)
	require.Equal(t, http.StatusUnauthorized, code)
}

func TestSMARTServerDiscoveryJWKSURLAndSecret(t *testing.T) {
	f := newSMARTFixture(t, bulktest.SMARTServerOptions{})
	resp, err := http.Get(f.base + "/.well-known/smart-configuration")
	require.NoError(t, err)
	var d map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&d))
	resp.Body.Close()
	require.Equal(t, f.tokenURL, d["token_endpoint"])
	require.Equal(t, f.hs.URL+"/auth/token", f.tokenURL)
	require.Contains(t, d["token_endpoint_auth_methods_supported"], "private_key_jwt")
	require.Contains(t, d["token_endpoint_auth_signing_alg_values_supported"], "ES384")
	require.Contains(t, d["capabilities"], "client-confidential-asymmetric")

	// JWKS by URL, with a jku header naming it.
	pub, err := jwk.PublicKeyOf(f.ec)
	require.NoError(t, err)
	set := jwk.NewSet()
	require.NoError(t, set.AddKey(pub))
	jwksHits := 0
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		jwksHits++
		_ = json.NewEncoder(w).Encode(set)
	}))
	defer jwksSrv.Close()
	f.srv.RegisterURL("c3", jwksSrv.URL)
	c := f.claims()
	c["iss"], c["sub"] = "c3", "c3"
	status, m := f.post(t, f.form(sign(t, f.ec, jwa.ES384, map[string]any{"kid": "ec1", "typ": "JWT", "jku": jwksSrv.URL}, c)))
	require.Equal(t, http.StatusOK, status, "%v", m)
	require.Equal(t, 1, jwksHits)

	// client_secret_basic.
	f.srv.RegisterSecret("s1", "p@ss word")
	for _, tc := range []struct {
		secret string
		status int
	}{{"p@ss word", 200}, {"wrong", 401}} {
		req, err := http.NewRequest(http.MethodPost, f.tokenURL, strings.NewReader("grant_type=client_credentials&scope=system%2F*.read"))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("s1", url.QueryEscape(tc.secret))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode)
	}
}

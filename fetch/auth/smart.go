package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Assertion constants (SMART Backend Services).
const (
	GrantClientCredentials = "client_credentials"
	AssertionTypeJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// assertionLifetime stays under the 5-minute ceiling with room for
	// modest clock skew.
	assertionLifetime = 270 * time.Second
)

// SMARTConfig configures a SMART Backend Services token source.
type SMARTConfig struct {
	// BaseURL is the FHIR base; discovery reads
	// [BaseURL]/.well-known/smart-configuration when TokenURL is empty.
	BaseURL string
	// TokenURL skips discovery. It is also the assertion's aud, exactly.
	TokenURL string
	// ClientID is the client_id the server assigned at registration.
	ClientID string
	// Key is the private signing key (see LoadKey).
	Key jwk.Key
	// Alg is ES384 (default) or RS384.
	Alg string
	// KeyID overrides the key's kid in the assertion header.
	KeyID string
	// JKU, if set, is sent as the jku header; it must equal the JWKS URL
	// registered with the server. Leave empty unless the server needs it.
	JKU string
	// Scopes are requested space-joined. Empty means system/*.rs, or
	// system/*.read when discovery shows a SMART v1-only server.
	Scopes []string
	// HTTPClient defaults to a client with TLS defaults (Go's minimum is
	// TLS 1.2, as SMART requires).
	HTTPClient *http.Client
	// Logger receives warnings and debug lines; never tokens or keys.
	Logger *slog.Logger
	// RenewBefore renews a token this long before it expires (default
	// 60s, capped at a quarter of the token's lifetime).
	RenewBefore time.Duration
	// RequestTimeout bounds one token or discovery request (default 30s).
	RequestTimeout time.Duration
	// Retry bounds retries of 5xx, 429 and network failures.
	Retry Retry
}

// SMART is a TokenSource using SMART Backend Services: every token request
// carries a newly signed client assertion. It is safe for concurrent use.
type SMART struct {
	*source
	cfg SMARTConfig
	alg jwa.SignatureAlgorithm
	// key is the raw private key: signing with a jwk.Key would let jwx
	// overwrite the kid header with the key's own kid.
	key any

	discoverMu sync.Mutex
	tokenURL   string
}

// NewSMART checks cfg and returns a token source. It makes no network
// calls: discovery and the first token request happen on the first Token.
func NewSMART(cfg SMARTConfig) (*SMART, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("smart auth: client_id is required")
	}
	if cfg.Key == nil {
		return nil, errors.New("smart auth: a private key is required")
	}
	if cfg.TokenURL == "" && cfg.BaseURL == "" {
		return nil, errors.New("smart auth: need a base URL for discovery or a token URL")
	}
	if cfg.TokenURL != "" {
		if err := checkAbsURL(cfg.TokenURL); err != nil {
			return nil, fmt.Errorf("smart auth: token_url: %w", err)
		}
	}
	if cfg.Alg == "" {
		cfg.Alg = ES384
	}
	if err := checkKeyAlg(cfg.Key, cfg.Alg); err != nil {
		return nil, fmt.Errorf("smart auth: %w", err)
	}
	if ok, _ := jwk.IsPrivateKey(cfg.Key); !ok {
		return nil, errors.New("smart auth: key is not a private key")
	}
	if cfg.KeyID == "" {
		cfg.KeyID = cfg.Key.KeyID()
	}
	if cfg.KeyID == "" {
		return nil, errors.New("smart auth: key has no kid; set auth.kid to the kid registered with the server")
	}
	var raw any
	if err := cfg.Key.Raw(&raw); err != nil {
		return nil, fmt.Errorf("smart auth: private key: %w", err)
	}
	s := &SMART{cfg: cfg, alg: jwa.SignatureAlgorithm(cfg.Alg), key: raw, tokenURL: cfg.TokenURL}
	s.source = newSource("smart", cfg.HTTPClient, cfg.Logger, cfg.Retry, cfg.RequestTimeout, cfg.RenewBefore, cfg.Scopes)
	s.source.endpoint = s.endpoint
	s.source.form = s.form
	return s, nil
}

func newSource(kind string, hc *http.Client, log *slog.Logger, r Retry, reqTimeout, renewBefore time.Duration, scopes []string) *source {
	if hc == nil {
		hc = &http.Client{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reqTimeout <= 0 {
		reqTimeout = defaultRequestTimeout
	}
	if renewBefore <= 0 {
		renewBefore = defaultRenewBefore
	}
	r = r.withDefaults()
	return &source{
		kind: kind, hc: hc, log: log, retry: r, requestTimeout: reqTimeout,
		renewBefore: renewBefore, scopes: slices.Clone(scopes),
		// One flight may take every attempt at full timeout plus waits.
		flightTimeout: time.Duration(r.Attempts)*(reqTimeout+r.MaxWait) + reqTimeout,
	}
}

// TokenURL returns the token endpoint in use ("" before discovery).
func (s *SMART) TokenURL() string {
	s.discoverMu.Lock()
	defer s.discoverMu.Unlock()
	return s.tokenURL
}

// endpoint returns the token URL, discovering it once on first use. A
// failed discovery is not cached, so the next Token tries again.
func (s *SMART) endpoint(ctx context.Context) (string, error) {
	s.discoverMu.Lock()
	defer s.discoverMu.Unlock()
	if s.tokenURL != "" {
		return s.tokenURL, nil
	}
	d, err := s.discover(ctx)
	if err != nil {
		return "", err
	}
	s.tokenURL = d.TokenEndpoint
	if len(s.scopes) == 0 {
		s.scopes = defaultScopes(d)
		s.log.Debug("scopes chosen from smart-configuration", "scope", strings.Join(s.scopes, " "))
	}
	return s.tokenURL, nil
}

// smartConfiguration is the part of .well-known/smart-configuration we use.
type smartConfiguration struct {
	TokenEndpoint       string   `json:"token_endpoint"`
	AuthMethods         []string `json:"token_endpoint_auth_methods_supported"`
	SigningAlgs         []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	ScopesSupported     []string `json:"scopes_supported"`
	Capabilities        []string `json:"capabilities"`
	GrantTypesSupported []string `json:"grant_types_supported"`
}

func defaultScopes(d smartConfiguration) []string {
	v1Only := slices.Contains(d.Capabilities, "permission-v1") && !slices.Contains(d.Capabilities, "permission-v2")
	if v1Only || (slices.Contains(d.ScopesSupported, "system/*.read") && !slices.Contains(d.ScopesSupported, "system/*.rs")) {
		return []string{"system/*.read"}
	}
	return []string{"system/*.rs"}
}

func (s *SMART) discover(ctx context.Context) (smartConfiguration, error) {
	u := strings.TrimRight(s.cfg.BaseURL, "/") + "/.well-known/smart-configuration"
	var d smartConfiguration
	wait := s.retry.MinWait
	for attempt := 1; ; attempt++ {
		err := s.discoverOnce(ctx, u, &d)
		var re *retryableError
		if err == nil || !errors.As(err, &re) || attempt >= s.retry.Attempts {
			if err != nil {
				return d, fmt.Errorf("smart discovery %s: %w (set auth.token_url to skip discovery)", u, err)
			}
			break
		}
		d2 := min(wait, s.retry.MaxWait)
		s.log.Warn("smart discovery failed; retrying", "attempt", attempt, "wait", d2.String(), "error", err.Error())
		t := time.NewTimer(d2)
		select {
		case <-ctx.Done():
			t.Stop()
			return d, fmt.Errorf("smart discovery %s: %w", u, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, s.retry.MaxWait)
	}
	if err := checkAbsURL(d.TokenEndpoint); err != nil {
		return d, fmt.Errorf("smart discovery %s: token_endpoint: %w", u, err)
	}
	if len(d.AuthMethods) > 0 && !slices.Contains(d.AuthMethods, "private_key_jwt") {
		s.log.Warn("server does not list private_key_jwt in token_endpoint_auth_methods_supported",
			"supported", strings.Join(d.AuthMethods, " "))
	}
	if len(d.SigningAlgs) > 0 && !slices.Contains(d.SigningAlgs, s.cfg.Alg) {
		s.log.Warn("server does not list the configured alg in token_endpoint_auth_signing_alg_values_supported",
			"alg", s.cfg.Alg, "supported", strings.Join(d.SigningAlgs, " "))
	}
	return d, nil
}

func (s *SMART) discoverOnce(ctx context.Context, u string, d *smartConfiguration) error {
	rctx, cancel := context.WithTimeout(ctx, s.requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &retryableError{redactURLError(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody))
	if err != nil {
		return &retryableError{err}
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return &retryableError{fmt.Errorf("HTTP %d", resp.StatusCode)}
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if err := json.Unmarshal(body, d); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if d.TokenEndpoint == "" {
		return errors.New("no token_endpoint")
	}
	return nil
}

func checkAbsURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", raw)
	}
	return nil
}

// form builds the token request with a new assertion (and jti).
func (s *SMART) form(tokenURL string) (url.Values, error) {
	a, err := s.assertion(tokenURL, time.Now())
	if err != nil {
		return nil, err
	}
	return url.Values{
		"grant_type":            {GrantClientCredentials},
		"client_assertion_type": {AssertionTypeJWTBearer},
		"client_assertion":      {a},
		"scope":                 {strings.Join(s.scopes, " ")},
	}, nil
}

// assertion signs a client assertion JWT for aud at now.
func (s *SMART) assertion(aud string, now time.Time) (string, error) {
	jti, err := newJTI()
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"iss": s.cfg.ClientID,
		"sub": s.cfg.ClientID,
		"aud": aud,
		"exp": now.Add(assertionLifetime).Unix(),
		"iat": now.Unix(),
		"jti": jti,
	})
	if err != nil {
		return "", err
	}
	h := jws.NewHeaders()
	for k, v := range map[string]any{jws.KeyIDKey: s.cfg.KeyID, jws.TypeKey: "JWT"} {
		if err := h.Set(k, v); err != nil {
			return "", err
		}
	}
	if s.cfg.JKU != "" {
		if err := h.Set(jws.JWKSetURLKey, s.cfg.JKU); err != nil {
			return "", err
		}
	}
	signed, err := jws.Sign(claims, jws.WithKey(s.alg, s.key, jws.WithProtectedHeaders(h)))
	if err != nil {
		return "", fmt.Errorf("sign client assertion: %w", err)
	}
	return string(signed), nil
}

// newJTI returns 128 random bits, hex encoded.
func newJTI() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

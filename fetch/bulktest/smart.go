package bulktest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
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

// SMARTServerOptions configures a SMARTServer. Zero values take the
// defaults listed on each field.
type SMARTServerOptions struct {
	// TokenLifetime is the access token lifetime (default 5m). As on the
	// reference server, a token never outlives the client assertion that
	// obtained it. Seconds are allowed, to test renewal quickly.
	TokenLifetime time.Duration
	// TokenPath is the token endpoint path on the server's origin
	// (default /auth/token).
	TokenPath string
	// GrantableScopes, when set, limits what is granted: a requested scope
	// is granted only if listed here (exact match). Requests whose scopes
	// are all outside the list fail with invalid_scope, so a test can make
	// the server grant less than asked.
	GrantableScopes []string
	// PlainText401 makes Middleware answer 401 with the reference server's
	// plain-text bodies ("Invalid token", "Token expired") instead of an
	// OperationOutcome.
	PlainText401 bool
	// HTTPClient fetches JWKS URLs registered with RegisterURL (default: a
	// client with a 10 s timeout).
	HTTPClient *http.Client
	// Faults are the initial token-endpoint faults.
	Faults SMARTFaults
}

// SMARTFaults are "next N" counters for injected token-endpoint failures.
// Each matching token request consumes one, in arrival order. An injected
// failure happens after the form is checked but before the assertion is
// verified, so its jti is still recorded (a retry must use a new one).
type SMARTFaults struct {
	// TokenEndpoint5xx: the next N token requests get 503.
	TokenEndpoint5xx int
	// InvalidClient: the next N token requests get 401 invalid_client.
	InvalidClient int
	// InvalidGrant: the next N token requests get 400 invalid_grant.
	InvalidGrant int
	// InvalidScope: the next N token requests get 400 invalid_scope.
	InvalidScope int
}

// SMARTStats counts what the SMART server saw.
type SMARTStats struct {
	DiscoveryRequests int
	// TokenRequests counts every request to the token endpoint.
	TokenRequests int
	TokensIssued  int
	// JTIs lists every distinct assertion jti received, in order.
	JTIs []string
	// ReusedJTIs counts assertions rejected for a repeated jti.
	ReusedJTIs int
	// Errors counts token-endpoint error responses by OAuth error code
	// ("server_error" for injected 5xx).
	Errors map[string]int
	// Authorized and Unauthorized count Authorize results; every
	// Unauthorized is a 401 sent to the client.
	Authorized   int
	Unauthorized int
}

// SMARTServer is a SMART Backend Services authorization server for tests:
// it implements Authorizer, verifies client assertions strictly (what
// Inferno's client suite checks) and injects the reference server's auth
// faults. It is safe for concurrent use.
type SMARTServer struct {
	opts SMARTServerOptions
	hc   *http.Client

	mu       sync.Mutex
	baseURL  string
	tokenURL string
	clients  map[string]*smartClient
	tokens   map[string]smartToken
	jtis     map[string]time.Time // iss+"\x00"+jti -> assertion exp
	lifetime time.Duration
	faults   SMARTFaults
	stats    SMARTStats
}

type smartClient struct {
	jwks    jwk.Set
	jwksURL string
	secret  string
}

type smartToken struct {
	client string
	exp    time.Time
	scopes []string
}

// Errors returned by Authorize; their text goes to the client in the 401.
var (
	ErrSMARTNoToken      = errors.New("missing bearer token")
	ErrSMARTInvalidToken = errors.New("Invalid token") //nolint:staticcheck // the reference server's exact wording
	ErrSMARTTokenExpired = errors.New("Token expired") //nolint:staticcheck // the reference server's exact wording
)

// Assertion rules.
const (
	smartAssertionType  = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	smartMaxAssertion   = 5 * time.Minute
	smartClockSkew      = 10 * time.Second
	smartDefaultLife    = 5 * time.Minute
	smartMaxFormBytes   = 64 << 10
	smartMaxJWKSBytes   = 1 << 20
	smartPruneThreshold = 1024
)

// NewSMARTServer returns a server with no registered clients.
func NewSMARTServer(o SMARTServerOptions) *SMARTServer {
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = smartDefaultLife
	}
	if o.TokenPath == "" {
		o.TokenPath = "/auth/token"
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &SMARTServer{
		opts: o, hc: hc, lifetime: o.TokenLifetime, faults: o.Faults,
		clients: map[string]*smartClient{}, tokens: map[string]smartToken{},
		jtis: map[string]time.Time{}, stats: SMARTStats{Errors: map[string]int{}},
	}
}

// Register registers clientID with an inline JWKS (its public keys; private
// members are ignored).
func (s *SMARTServer) Register(clientID string, jwks jwk.Set) error {
	pub, err := jwk.PublicSetOf(jwks)
	if err != nil {
		return fmt.Errorf("register %s: %w", clientID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client(clientID).jwks = pub
	return nil
}

// RegisterURL registers clientID with a JWKS URL, fetched on every token
// request (so key rotation at the URL takes effect at once). An assertion
// with a jku header must name exactly this URL.
func (s *SMARTServer) RegisterURL(clientID, jwksURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client(clientID).jwksURL = jwksURL
}

// RegisterSecret lets clientID authenticate with HTTP Basic and secret
// (client_secret_basic) instead of an assertion.
func (s *SMARTServer) RegisterSecret(clientID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client(clientID).secret = secret
}

func (s *SMARTServer) client(id string) *smartClient {
	c := s.clients[id]
	if c == nil {
		c = &smartClient{}
		s.clients[id] = c
	}
	return c
}

// SetFaults replaces the fault counters.
func (s *SMARTServer) SetFaults(f SMARTFaults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Faults returns the fault counters as consumed so far.
func (s *SMARTServer) Faults() SMARTFaults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// SetTokenLifetime changes the lifetime of tokens issued from now on.
func (s *SMARTServer) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = d
}

// ExpireAllTokens makes every token issued so far expired, as if a long
// export outlived them: the next request with one gets 401.
func (s *SMARTServer) ExpireAllTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := time.Now().Add(-time.Second)
	for k, t := range s.tokens {
		t.exp = past
		s.tokens[k] = t
	}
}

// Stats returns a copy of the counters.
func (s *SMARTServer) Stats() SMARTStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.stats
	c.JTIs = slices.Clone(c.JTIs)
	c.Errors = make(map[string]int, len(s.stats.Errors))
	for k, v := range s.stats.Errors {
		c.Errors[k] = v
	}
	return c
}

// TokenURL returns the token endpoint ("" before Routes).
func (s *SMARTServer) TokenURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenURL
}

// Routes mounts [base]/.well-known/smart-configuration and the token
// endpoint (TokenPath on baseURL's origin) on mux.
func (s *SMARTServer) Routes(mux *http.ServeMux, baseURL string) {
	u, err := url.Parse(baseURL)
	if err != nil {
		panic(fmt.Sprintf("bulktest: SMART server base URL %q: %v", baseURL, err))
	}
	base := strings.TrimRight(u.Path, "/")
	tok := *u
	tok.Path, tok.RawQuery = s.opts.TokenPath, ""
	s.mu.Lock()
	s.baseURL = strings.TrimRight(baseURL, "/")
	s.tokenURL = tok.String()
	s.mu.Unlock()
	mux.HandleFunc(base+"/.well-known/smart-configuration", s.serveConfiguration)
	mux.HandleFunc(s.opts.TokenPath, s.serveToken)
}

// Handler returns a mux with only the SMART endpoints, for tests that
// need no FHIR server. baseURL is as for Routes.
func (s *SMARTServer) Handler(baseURL string) *http.ServeMux {
	mux := http.NewServeMux()
	s.Routes(mux, baseURL)
	return mux
}

// Middleware protects next: requests without a valid token get 401
// (plain text with PlainText401, else an OperationOutcome). The SMART
// endpoints themselves should be routed around it (mount next on the mux
// given to Routes).
func (s *SMARTServer) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.Authorize(r); err != nil {
			s.WriteUnauthorized(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteUnauthorized writes the 401 for an Authorize error, in the style
// chosen by PlainText401.
func (s *SMARTServer) WriteUnauthorized(w http.ResponseWriter, err error) {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	if s.opts.PlainText401 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"resourceType": "OperationOutcome",
		"issue": []any{map[string]any{
			"severity": "error", "code": "login", "diagnostics": err.Error(),
		}},
	})
}

// Authorize returns nil when r carries a valid, unexpired token issued by
// this server; the error never contains the token.
func (s *SMARTServer) Authorize(r *http.Request) error {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		err = ErrSMARTNoToken
	} else if t, found := s.tokens[strings.TrimSpace(tok)]; !found {
		err = ErrSMARTInvalidToken
	} else if !time.Now().Before(t.exp) {
		err = ErrSMARTTokenExpired
	}
	if err != nil {
		s.stats.Unauthorized++
		return err
	}
	s.stats.Authorized++
	return nil
}

func (s *SMARTServer) serveConfiguration(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	s.stats.DiscoveryRequests++
	tokenURL := s.tokenURL
	scopes := s.opts.GrantableScopes
	s.mu.Unlock()
	if len(scopes) == 0 {
		scopes = []string{"system/*.rs", "system/*.read"}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token_endpoint":                                   tokenURL,
		"token_endpoint_auth_methods_supported":            []string{"private_key_jwt", "client_secret_basic"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"RS384", "ES384"},
		"grant_types_supported":                            []string{"client_credentials"},
		"scopes_supported":                                 scopes,
		"capabilities":                                     []string{"client-confidential-asymmetric", "permission-v2", "permission-v1"},
	})
}

// smartOAuthError is a token-endpoint failure.
type smartOAuthError struct {
	status      int
	code        string
	description string
}

func (e *smartOAuthError) Error() string { return e.code + ": " + e.description }

func oauthErr(status int, code, format string, args ...any) *smartOAuthError {
	return &smartOAuthError{status: status, code: code, description: fmt.Sprintf(format, args...)}
}

func (s *SMARTServer) serveToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.stats.TokenRequests++
	s.mu.Unlock()
	body, err := s.token(r)
	if err != nil {
		var oe *smartOAuthError
		if !errors.As(err, &oe) {
			oe = oauthErr(http.StatusInternalServerError, "server_error", "%v", err)
		}
		s.mu.Lock()
		s.stats.Errors[oe.code]++
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(oe.status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": oe.code, "error_description": oe.description})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(body)
}

// token validates one token request and issues a token.
func (s *SMARTServer) token(r *http.Request) (map[string]any, error) {
	if r.Method != http.MethodPost {
		return nil, oauthErr(http.StatusMethodNotAllowed, "invalid_request", "token requests must be POST")
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(nil, r.Body, smartMaxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "cannot parse form: %v", err)
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" {
		return nil, oauthErr(http.StatusBadRequest, "unsupported_grant_type", "grant_type must be client_credentials, got %q", f.Get("grant_type"))
	}
	if f.Has("refresh_token") {
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "refresh tokens are not used with client_credentials")
	}
	requested := strings.Fields(f.Get("scope"))
	if user, pass, ok := r.BasicAuth(); ok {
		return s.tokenForSecret(user, pass, requested)
	}
	if f.Get("client_assertion_type") != smartAssertionType {
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "client_assertion_type must be %s", smartAssertionType)
	}
	assertion := f.Get("client_assertion")
	if assertion == "" {
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "client_assertion is required")
	}
	msg, claims, err := smartParseAssertion(assertion)
	if err != nil {
		return nil, err
	}
	// Record the jti before injected faults, so a client that retries a
	// failed request with the same assertion is caught.
	reused := s.recordJTI(claims)
	if err := s.injectedFault(); err != nil {
		return nil, err
	}
	clientID := claims.Iss
	if err := s.verifyAssertion(r, msg, assertion, claims); err != nil {
		return nil, err
	}
	if reused {
		s.mu.Lock()
		s.stats.ReusedJTIs++
		s.mu.Unlock()
		return nil, oauthErr(http.StatusBadRequest, "invalid_grant", "Invalid 'jti' value: %q was already used", claims.Jti)
	}
	return s.issue(clientID, requested, time.Unix(claims.Exp, 0))
}

func (s *SMARTServer) tokenForSecret(user, pass string, requested []string) (map[string]any, error) {
	if err := s.injectedFault(); err != nil {
		return nil, err
	}
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	s.mu.Lock()
	c := s.clients[id]
	s.mu.Unlock()
	if err1 != nil || err2 != nil || c == nil || c.secret == "" ||
		subtle.ConstantTimeCompare([]byte(secret), []byte(c.secret)) != 1 {
		return nil, oauthErr(http.StatusUnauthorized, "invalid_client", "unknown client or wrong client secret")
	}
	return s.issue(id, requested, time.Time{})
}

func (s *SMARTServer) injectedFault() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &s.faults
	switch {
	case f.TokenEndpoint5xx > 0:
		f.TokenEndpoint5xx--
		return oauthErr(http.StatusServiceUnavailable, "server_error", "injected: token endpoint unavailable")
	case f.InvalidClient > 0:
		f.InvalidClient--
		return oauthErr(http.StatusUnauthorized, "invalid_client", "injected: client registration is no longer valid")
	case f.InvalidGrant > 0:
		f.InvalidGrant--
		return oauthErr(http.StatusBadRequest, "invalid_grant", "injected: registration token expired")
	case f.InvalidScope > 0:
		f.InvalidScope--
		return oauthErr(http.StatusBadRequest, "invalid_scope", "injected: requested scope is not allowed")
	}
	return nil
}

type smartClaims struct {
	Iss string          `json:"iss"`
	Sub string          `json:"sub"`
	Aud json.RawMessage `json:"aud"`
	Exp int64           `json:"exp"`
	Jti string          `json:"jti"`
}

// smartParseAssertion decodes (without verifying) a compact JWS assertion.
func smartParseAssertion(a string) (*jws.Message, smartClaims, error) {
	var c smartClaims
	msg, err := jws.Parse([]byte(a))
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, c, oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion is not a compact JWS")
	}
	if err := json.Unmarshal(msg.Payload(), &c); err != nil {
		return nil, c, oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion payload is not a JSON claims set")
	}
	if c.Iss == "" {
		return nil, c, oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion has no iss")
	}
	return msg, c, nil
}

// recordJTI stores the jti and reports whether iss already used it.
func (s *SMARTServer) recordJTI(c smartClaims) bool {
	if c.Jti == "" {
		return false
	}
	key := c.Iss + "\x00" + c.Jti
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.jtis) > smartPruneThreshold {
		now := time.Now()
		for k, exp := range s.jtis {
			if now.After(exp.Add(smartClockSkew)) {
				delete(s.jtis, k)
			}
		}
	}
	if _, seen := s.jtis[key]; seen {
		return true
	}
	s.jtis[key] = time.Unix(c.Exp, 0)
	s.stats.JTIs = append(s.stats.JTIs, c.Jti)
	return false
}

// verifyAssertion applies the SMART Backend Services checks.
func (s *SMARTServer) verifyAssertion(r *http.Request, msg *jws.Message, raw string, c smartClaims) error {
	h := msg.Signatures()[0].ProtectedHeaders()
	if h.Type() != "JWT" {
		return oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion header typ must be JWT, got %q", h.Type())
	}
	alg := h.Algorithm()
	if alg != jwa.RS384 && alg != jwa.ES384 {
		return oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion alg %q is not RS384 or ES384", alg)
	}
	if h.KeyID() == "" {
		return oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion header has no kid")
	}
	if c.Sub != c.Iss {
		return oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion sub %q differs from iss %q", c.Sub, c.Iss)
	}
	s.mu.Lock()
	cl := s.clients[c.Iss]
	tokenURL := s.tokenURL
	var jwks jwk.Set
	var jwksURL string
	if cl != nil {
		jwks, jwksURL = cl.jwks, cl.jwksURL
	}
	s.mu.Unlock()
	if cl == nil || (jwks == nil && jwksURL == "") {
		return oauthErr(http.StatusUnauthorized, "invalid_client", "client %q is not registered", c.Iss)
	}
	if jku := h.JWKSetURL(); jku != "" && jku != jwksURL {
		return oauthErr(http.StatusBadRequest, "invalid_grant", "jku_not_whitelisted: jku %q is not the registered JWKS URL", jku)
	}
	if jwksURL != "" {
		var err error
		if jwks, err = s.fetchJWKS(r, jwksURL); err != nil {
			return oauthErr(http.StatusBadRequest, "invalid_grant", "cannot fetch registered JWKS: %v", err)
		}
	}
	key, ok := jwks.LookupKeyID(h.KeyID())
	if !ok {
		return oauthErr(http.StatusUnauthorized, "invalid_client", "kid %q is not in the JWKS registered for %q", h.KeyID(), c.Iss)
	}
	if _, err := jws.Verify([]byte(raw), jws.WithKey(alg, key)); err != nil {
		return oauthErr(http.StatusUnauthorized, "invalid_client", "client_assertion signature does not verify with kid %q", h.KeyID())
	}
	if !smartAudIs(c.Aud, tokenURL) {
		return oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion aud must be the token URL %s", tokenURL)
	}
	now := time.Now()
	exp := time.Unix(c.Exp, 0)
	switch {
	case c.Exp == 0:
		return oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion has no exp")
	case !now.Before(exp.Add(smartClockSkew)):
		return oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion expired")
	case exp.After(now.Add(smartMaxAssertion + smartClockSkew)):
		return oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion exp is more than 5 minutes ahead")
	case c.Jti == "":
		return oauthErr(http.StatusBadRequest, "invalid_grant", "client_assertion has no jti")
	}
	return nil
}

func smartAudIs(raw json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == want
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		return slices.Contains(many, want)
	}
	return false
}

func (s *SMARTServer) fetchJWKS(r *http.Request, u string) (jwk.Set, error) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, smartMaxJWKSBytes))
	if err != nil {
		return nil, err
	}
	return jwk.Parse(b)
}

// issue grants the requested scopes allowed by GrantableScopes and mints
// an opaque token.
func (s *SMARTServer) issue(clientID string, requested []string, assertionExp time.Time) (map[string]any, error) {
	if len(requested) == 0 {
		return nil, oauthErr(http.StatusBadRequest, "invalid_scope", "scope is required")
	}
	for _, sc := range requested {
		if !strings.HasPrefix(sc, "system/") {
			return nil, oauthErr(http.StatusBadRequest, "invalid_scope", "only system/ scopes are allowed, got %q", sc)
		}
		_, perm, _ := strings.Cut(sc, ".")
		if perm != "read" && perm != "rs" && perm != "r" && perm != "s" {
			return nil, oauthErr(http.StatusBadRequest, "invalid_scope", "scope %q asks for more than read access", sc)
		}
	}
	granted := requested
	if g := s.opts.GrantableScopes; len(g) > 0 {
		granted = nil
		for _, sc := range requested {
			if slices.Contains(g, sc) {
				granted = append(granted, sc)
			}
		}
		if len(granted) == 0 {
			return nil, oauthErr(http.StatusBadRequest, "invalid_scope", "none of the requested scopes is allowed")
		}
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	life := s.lifetime
	if !assertionExp.IsZero() {
		life = min(life, assertionExp.Sub(now))
	}
	if len(s.tokens) > smartPruneThreshold {
		for k, t := range s.tokens {
			if now.Sub(t.exp) > 10*time.Minute {
				delete(s.tokens, k)
			}
		}
	}
	s.tokens[tok] = smartToken{client: clientID, exp: now.Add(life), scopes: granted}
	s.stats.TokensIssued++
	return map[string]any{
		"access_token": tok,
		"token_type":   "bearer",
		"expires_in":   max(1, int(life.Round(time.Second)/time.Second)),
		"scope":        strings.Join(granted, " "),
	}, nil
}

package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Retry bounds how token and discovery requests are retried after a 5xx,
// a 429 or a network failure. Zero fields take the defaults.
type Retry struct {
	// Attempts is the total number of tries (default 4).
	Attempts int
	// MinWait is the first backoff (default 1s); it doubles per attempt.
	MinWait time.Duration
	// MaxWait caps one backoff and any Retry-After (default 30s).
	MaxWait time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 4
	}
	if r.MinWait <= 0 {
		r.MinWait = time.Second
	}
	if r.MaxWait <= 0 {
		r.MaxWait = 30 * time.Second
	}
	if r.MaxWait < r.MinWait {
		r.MaxWait = r.MinWait
	}
	return r
}

const (
	defaultRenewBefore    = 60 * time.Second
	defaultRequestTimeout = 30 * time.Second
	defaultTokenLifetime  = 300 * time.Second
	maxTokenBody          = 1 << 20
)

// tokenGrant is one successful token-endpoint answer.
type tokenGrant struct {
	token    string
	lifetime time.Duration
	scopes   []string // nil when the server did not send "scope"
}

// source is the caching, single-flight core shared by SMART and
// ClientSecret. Its exported methods are promoted to those types.
type source struct {
	kind           string // "smart" or "client_secret", for log lines
	hc             *http.Client
	log            *slog.Logger
	retry          Retry
	requestTimeout time.Duration
	renewBefore    time.Duration
	flightTimeout  time.Duration
	scopes         []string

	// endpoint returns the token URL (SMART discovers it lazily).
	endpoint func(ctx context.Context) (string, error)
	// form builds the request body for one attempt; SMART signs a new
	// assertion (new jti) each time it is called.
	form func(tokenURL string) (url.Values, error)
	// basicUser and basicPass, when set, authenticate with HTTP Basic.
	basicUser, basicPass string

	sf        singleflight.Group
	refreshes atomic.Int64

	mu      sync.Mutex
	tok     string
	renewAt time.Time
	bad     bool
	gen     uint64
	granted []string
}

// Token returns a cached token, or obtains a new one when the cached token
// is missing, invalidated or near expiry. Concurrent callers share one
// token request. The request runs detached from any single caller's
// context (bounded by its own timeout), so one caller giving up does not
// fail the others; ctx bounds only how long this caller waits.
func (s *source) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	if s.validLocked(time.Now()) {
		t := s.tok
		s.mu.Unlock()
		return t, nil
	}
	gen := s.gen
	s.mu.Unlock()

	// Keying the flight by generation means a caller that saw generation
	// g as stale joins the refresh for g, and a refresh that finds a newer
	// generation already installed returns it instead of asking again.
	ch := s.sf.DoChan(strconv.FormatUint(gen, 10), func() (any, error) {
		s.mu.Lock()
		if s.gen != gen && s.validLocked(time.Now()) {
			t := s.tok
			s.mu.Unlock()
			return t, nil
		}
		s.mu.Unlock()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.flightTimeout)
		defer cancel()
		return s.refresh(fctx)
	})
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	}
}

// Invalidate marks token as rejected by the server so the next Token call
// renews. Reporting an older token than the cached one does nothing, so a
// burst of 401s on the same token causes one renewal, not one each.
func (s *source) Invalidate(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if token != "" && token == s.tok && !s.bad {
		s.bad = true
		s.log.Info("access token rejected by server; will renew", "auth", s.kind)
	}
}

// GrantedScopes returns the scopes granted with the current token (the
// server's "scope" member; the requested scopes if it sent none). Compare
// them with the export's _type: a server may grant less than requested.
func (s *source) GrantedScopes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.granted)
}

// Refreshes counts successful token requests since construction.
func (s *source) Refreshes() int64 { return s.refreshes.Load() }

func (s *source) validLocked(now time.Time) bool {
	return s.tok != "" && !s.bad && now.Before(s.renewAt)
}

// refresh obtains and installs a new token.
func (s *source) refresh(ctx context.Context) (string, error) {
	tokenURL, err := s.endpoint(ctx)
	if err != nil {
		return "", err
	}
	start := time.Now() // the lifetime is counted from before the request
	g, err := s.request(ctx, tokenURL)
	if err != nil {
		return "", err
	}
	granted := g.scopes
	if granted == nil {
		granted = s.scopes
	}
	if missing := missingScopes(s.scopes, granted); len(missing) > 0 {
		s.log.Warn("server granted fewer scopes than requested",
			"auth", s.kind, "requested", strings.Join(s.scopes, " "),
			"granted", strings.Join(granted, " "), "missing", strings.Join(missing, " "))
	}
	// Renew ahead of expiry, but never so early that a short-lived token
	// (seconds, in tests and on some servers) is renewed on every call.
	margin := min(s.renewBefore, g.lifetime/4)
	s.mu.Lock()
	s.tok, s.bad, s.granted = g.token, false, granted
	s.renewAt = start.Add(g.lifetime - margin)
	s.gen++
	s.mu.Unlock()
	s.refreshes.Add(1)
	s.log.Debug("access token obtained", "auth", s.kind,
		"expires_in", g.lifetime.String(), "scope", strings.Join(granted, " "))
	return g.token, nil
}

// request POSTs to the token endpoint, retrying 5xx, 429 and network
// failures with backoff and a freshly built form each time.
func (s *source) request(ctx context.Context, tokenURL string) (tokenGrant, error) {
	wait := s.retry.MinWait
	for attempt := 1; ; attempt++ {
		g, after, err := s.attempt(ctx, tokenURL)
		if err == nil {
			return g, nil
		}
		var re *retryableError
		if !errors.As(err, &re) {
			return tokenGrant{}, err
		}
		if attempt >= s.retry.Attempts {
			return tokenGrant{}, fmt.Errorf("token endpoint %s: giving up after %d attempts: %w", tokenURL, attempt, re.err)
		}
		d := wait
		if after > 0 {
			d = after
		}
		d = min(d, s.retry.MaxWait)
		s.log.Warn("token request failed; retrying", "auth", s.kind,
			"attempt", attempt, "wait", d.String(), "error", re.err.Error())
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return tokenGrant{}, fmt.Errorf("token endpoint %s: %w (last error: %w)", tokenURL, ctx.Err(), re.err)
		case <-t.C:
		}
		wait = min(2*wait, s.retry.MaxWait)
	}
}

// retryableError marks a failure worth another attempt.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

func (s *source) attempt(ctx context.Context, tokenURL string) (tokenGrant, time.Duration, error) {
	form, err := s.form(tokenURL)
	if err != nil {
		return tokenGrant{}, 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return tokenGrant{}, 0, fmt.Errorf("token endpoint %q: %w", tokenURL, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if s.basicUser != "" {
		// RFC 6749 §2.3.1: form-encode both parts before Basic encoding.
		req.SetBasicAuth(url.QueryEscape(s.basicUser), url.QueryEscape(s.basicPass))
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return tokenGrant{}, 0, ctx.Err()
		}
		return tokenGrant{}, 0, &retryableError{redactURLError(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody))
	if err != nil {
		return tokenGrant{}, 0, &retryableError{fmt.Errorf("read token response: %w", err)}
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return tokenGrant{}, retryAfter(resp.Header.Get("Retry-After")),
			&retryableError{fmt.Errorf("HTTP %d", resp.StatusCode)}
	case resp.StatusCode != http.StatusOK:
		return tokenGrant{}, 0, parseOAuthError(tokenURL, resp.StatusCode, body)
	}
	g, err := parseGrant(body)
	if err != nil {
		return tokenGrant{}, 0, fmt.Errorf("token endpoint %s: %w", tokenURL, err)
	}
	return g, 0, nil
}

// redactURLError drops the request description from a *url.Error; the
// URL is a token endpoint and harmless, but keeping errors uniform and
// short makes logs easier to scan.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, ue.URL, ue.Err)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return ne
	}
	return err
}

// retryAfter parses Retry-After as delta-seconds; anything else (HTTP
// dates, garbage) falls back to the computed backoff.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// parseGrant validates a 200 token response.
func parseGrant(body []byte) (tokenGrant, error) {
	var m struct {
		AccessToken string          `json:"access_token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
		Scope       *string         `json:"scope"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return tokenGrant{}, fmt.Errorf("token response is not JSON: %w", err)
	}
	if m.AccessToken == "" {
		return tokenGrant{}, errors.New("token response has no access_token")
	}
	if m.TokenType != "" && !strings.EqualFold(m.TokenType, "bearer") {
		return tokenGrant{}, fmt.Errorf("token response has token_type %q, want bearer", m.TokenType)
	}
	g := tokenGrant{token: m.AccessToken}
	if len(m.ExpiresIn) > 0 && string(m.ExpiresIn) != "null" {
		// Some servers send expires_in as a string; accept both.
		var n float64
		raw := strings.Trim(string(m.ExpiresIn), `"`)
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil || v <= 0 {
			return tokenGrant{}, fmt.Errorf("token response expires_in %s is not a positive number", m.ExpiresIn)
		}
		n = v
		g.lifetime = time.Duration(n * float64(time.Second))
	}
	if g.lifetime == 0 {
		g.lifetime = jwtLifetime(m.AccessToken)
	}
	if m.Scope != nil {
		g.scopes = strings.Fields(*m.Scope)
		if g.scopes == nil {
			g.scopes = []string{}
		}
	}
	return g, nil
}

// jwtLifetime reads exp from a JWT access token without verifying it (only
// to schedule renewal); opaque tokens get the 300 s default.
func jwtLifetime(tok string) time.Duration {
	parts := strings.Split(tok, ".")
	if len(parts) == 3 {
		if raw, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			var c struct {
				Exp float64 `json:"exp"`
			}
			if json.Unmarshal(raw, &c) == nil && c.Exp > 0 {
				if d := time.Until(time.Unix(int64(c.Exp), 0)); d > 0 {
					return d
				}
			}
		}
	}
	return defaultTokenLifetime
}

// missingScopes lists requested scopes the grant does not cover. A wildcard
// grant (system/*.rs) covers a per-type request (system/Patient.rs), and a
// v2 .rs grant covers a v1 .read request and vice versa.
func missingScopes(requested, granted []string) []string {
	var out []string
	for _, r := range requested {
		if !slices.ContainsFunc(granted, func(g string) bool { return scopeCovers(g, r) }) {
			out = append(out, r)
		}
	}
	return out
}

func scopeCovers(g, r string) bool {
	if g == r {
		return true
	}
	gc, gt, gp, ok1 := splitScope(g)
	rc, rt, rp, ok2 := splitScope(r)
	if !ok1 || !ok2 || gc != rc || (gt != "*" && gt != rt) {
		return false
	}
	return permsCover(gp, rp)
}

func splitScope(s string) (ctx, typ, perm string, ok bool) {
	ctx, rest, ok := strings.Cut(s, "/")
	if !ok {
		return "", "", "", false
	}
	typ, perm, ok = strings.Cut(rest, ".")
	return ctx, typ, perm, ok
}

// permsCover reports whether permission g includes r, mapping v1 names to
// v2 letters (read = rs, write = cud, * = cruds).
func permsCover(g, r string) bool {
	v2 := func(p string) string {
		switch p {
		case "read":
			return "rs"
		case "write":
			return "cud"
		case "*":
			return "cruds"
		}
		return p
	}
	gp, rp := v2(g), v2(r)
	for _, c := range rp {
		if !strings.ContainsRune(gp, c) {
			return false
		}
	}
	return true
}

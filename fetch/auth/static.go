package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/fhirferry/fhirferry/configs"
)

// ClientSecret is a TokenSource using the client_credentials grant with
// HTTP Basic client authentication (client_secret_basic), for servers that
// do not support SMART asymmetric keys.
type ClientSecret struct{ *source }

// NewClientSecret returns a token source for tokenURL. hc and log may be nil.
func NewClientSecret(tokenURL, clientID, secret string, scopes []string) (*ClientSecret, error) {
	return newClientSecret(tokenURL, clientID, secret, scopes, nil, nil)
}

func newClientSecret(tokenURL, clientID, secret string, scopes []string, hc *http.Client, log *slog.Logger) (*ClientSecret, error) {
	if err := checkAbsURL(tokenURL); err != nil {
		return nil, fmt.Errorf("client_secret auth: token_url: %w", err)
	}
	if clientID == "" || secret == "" {
		return nil, errors.New("client_secret auth: client_id and client_secret are required")
	}
	s := newSource("client_secret", hc, log, Retry{}, 0, 0, scopes)
	s.basicUser, s.basicPass = clientID, secret
	s.endpoint = func(context.Context) (string, error) { return tokenURL, nil }
	s.form = func(string) (url.Values, error) {
		v := url.Values{"grant_type": {GrantClientCredentials}}
		if len(s.scopes) > 0 {
			v.Set("scope", strings.Join(s.scopes, " "))
		}
		return v, nil
	}
	return &ClientSecret{s}, nil
}

// Static is a TokenSource for a bearer token issued out of band. When it
// reads the token from a file, Invalidate re-reads the file, so an external
// process can rotate the token without restarting fhirferry.
type Static struct {
	path string

	mu  sync.Mutex
	tok string
	bad bool
}

// NewStatic returns a source that always yields token.
func NewStatic(token string) *Static { return &Static{tok: strings.TrimSpace(token)} }

// NewStaticFile returns a source reading the token from path (surrounding
// whitespace trimmed). The file is read on first use and after Invalidate.
func NewStaticFile(path string) *Static { return &Static{path: path} }

// Token returns the token, reading the file if needed.
func (s *Static) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.path != "" && (s.tok == "" || s.bad) {
		b, err := os.ReadFile(s.path)
		if err != nil {
			return "", fmt.Errorf("bearer token file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("bearer token file %s is empty", s.path)
		}
		s.tok, s.bad = t, false
	}
	if s.tok == "" {
		return "", errors.New("bearer token is empty")
	}
	return s.tok, nil
}

// Invalidate makes a file-backed source re-read its file on the next
// Token; a fixed token cannot be renewed, so for it this does nothing.
func (s *Static) Invalidate(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if token == s.tok {
		s.bad = true
	}
}

// FromConfig builds the TokenSource described by a source's auth section,
// or returns nil for type "none". baseURL is the source's FHIR base, used
// for SMART discovery when token_url is empty. hc and log may be nil.
func FromConfig(ctx context.Context, a configs.Auth, baseURL string, hc *http.Client, log *slog.Logger) (TokenSource, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch a.Type {
	case "", configs.AuthNone:
		return nil, nil
	case configs.AuthSMART:
		key, err := LoadKey(a.PrivateKeyFile, a.KeyID, WithKeyLogger(log))
		if err != nil {
			return nil, fmt.Errorf("auth.private_key_file: %w", err)
		}
		s, err := NewSMART(SMARTConfig{
			BaseURL: baseURL, TokenURL: a.TokenURL, ClientID: a.ClientID, Key: key,
			Alg: a.Alg, KeyID: a.KeyID, JKU: a.JKU, Scopes: a.Scopes,
			HTTPClient: hc, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		return s, nil
	case configs.AuthClientSecret:
		tokenURL := a.TokenURL
		if tokenURL == "" {
			return nil, errors.New("client_secret auth: auth.token_url is required")
		}
		s, err := newClientSecret(tokenURL, a.ClientID, a.ClientSecret, a.Scopes, hc, log)
		if err != nil {
			return nil, err
		}
		return s, nil
	case configs.AuthBearer:
		switch {
		case a.Token != "" && a.TokenFile != "":
			return nil, errors.New("bearer auth: set token or token_file, not both")
		case a.TokenFile != "":
			return NewStaticFile(a.TokenFile), nil
		case a.Token != "":
			return NewStatic(a.Token), nil
		}
		return nil, errors.New("bearer auth: token or token_file is required")
	}
	return nil, fmt.Errorf("auth.type %q is not none, smart, client_secret or bearer", a.Type)
}

// compile-time checks that every source satisfies TokenSource.
var (
	_ TokenSource = (*SMART)(nil)
	_ TokenSource = (*ClientSecret)(nil)
	_ TokenSource = (*Static)(nil)
)

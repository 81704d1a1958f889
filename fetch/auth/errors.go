package auth

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// OAuthError is an OAuth 2.0 error response (RFC 6749 §5.2) from a token
// endpoint. It means the configuration is wrong (client not registered, key
// not accepted, scope not allowed), so it is returned at once and never
// retried: retrying would only hammer the server with the same mistake.
type OAuthError struct {
	// Code is the "error" member, e.g. invalid_client; empty when the
	// server sent no OAuth JSON body.
	Code string
	// Description is the server's error_description (or the start of a
	// non-JSON body), so the operator sees the server's own reason.
	Description string
	// Status is the HTTP status code.
	Status int
	// Endpoint is the token URL that answered.
	Endpoint string
}

func (e *OAuthError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token endpoint %s: HTTP %d", e.Endpoint, e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	switch e.Code {
	case "invalid_client", "unauthorized_client":
		b.WriteString(" (check client_id, kid and the JWKS registered with the server)")
	case "invalid_scope":
		b.WriteString(" (check auth.scopes against the server's scopes_supported)")
	}
	return b.String()
}

// maxErrorText bounds how much of a non-JSON error body is quoted.
const maxErrorText = 200

// parseOAuthError builds an *OAuthError from a non-2xx token response body.
func parseOAuthError(endpoint string, status int, body []byte) *OAuthError {
	e := &OAuthError{Status: status, Endpoint: endpoint}
	var m struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &m) == nil && m.Error != "" {
		e.Code, e.Description = m.Error, m.Description
		return e
	}
	e.Description = truncate(strings.TrimSpace(string(body)), maxErrorText)
	return e
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

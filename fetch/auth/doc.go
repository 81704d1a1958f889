// Package auth obtains and caches the access tokens fhirferry sends to Bulk
// Data servers.
//
// [SMART] implements SMART Backend Services (client_credentials with a
// private_key_jwt client assertion signed with ES384 or RS384);
// [ClientSecret] implements client_credentials with HTTP Basic client
// authentication; [Static] sends a fixed bearer token, optionally re-read
// from a file. All of them satisfy [TokenSource], which is structurally
// identical to fetch.TokenSource so the fetch client can use them without
// this package importing fetch.
//
// Tokens are cached and renewed before they expire. A renewal is shared by
// every concurrent caller (single flight), and Invalidate lets the caller
// report a token the server rejected with 401 so the next Token call renews
// exactly once. Token-endpoint configuration errors (invalid_client,
// invalid_scope, ...) come back as *[OAuthError] and are never retried;
// 5xx, 429 and network failures are retried with bounded backoff and a fresh
// client assertion (new jti) on every attempt.
//
// Nothing in this package logs access tokens, client assertions, client
// secrets or key material, at any level.
package auth

import "context"

// TokenSource yields bearer tokens for requests to one server. It is safe
// for concurrent use. Token blocks until a usable token is available or ctx
// ends; Invalidate reports that the server rejected token (401), so that
// the next Token call obtains a new one instead of returning it again.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	Invalidate(token string)
}

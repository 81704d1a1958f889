package auth_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch/auth"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

func configsSMART(keyPath string) configs.Auth {
	return configs.Auth{Type: configs.AuthSMART, ClientID: "client-ES384", PrivateKeyFile: keyPath,
		Alg: "ES384", Scopes: []string{"system/Patient.rs", "system/Observation.rs"}}
}

func configsSecret(tokenURL, secret string) configs.Auth {
	return configs.Auth{Type: configs.AuthClientSecret, TokenURL: tokenURL, ClientID: "app",
		ClientSecret: secret, Scopes: []string{"system/Patient.rs"}}
}

func TestFromConfig(t *testing.T) {
	ctx := context.Background()
	src, err := auth.FromConfig(ctx, configs.Auth{Type: configs.AuthNone}, "http://x/fhir", nil, nil)
	require.NoError(t, err)
	require.Nil(t, src, "none gives a nil interface, not a typed nil")

	src, err = auth.FromConfig(ctx, configs.Auth{Type: configs.AuthBearer, Token: " abc \n"}, "", nil, nil)
	require.NoError(t, err)
	tok, err := src.Token(ctx)
	require.NoError(t, err)
	require.Equal(t, "abc", tok)

	_, err = auth.FromConfig(ctx, configs.Auth{Type: configs.AuthSMART, ClientID: "c", PrivateKeyFile: "/nonexistent/k.pem", Alg: "ES384"}, "http://x/fhir", nil, nil)
	require.ErrorContains(t, err, "auth.private_key_file")
	require.ErrorContains(t, err, "/nonexistent/k.pem")

	_, err = auth.FromConfig(ctx, configs.Auth{Type: configs.AuthClientSecret, ClientID: "a", ClientSecret: "b"}, "http://x/fhir", nil, nil)
	require.ErrorContains(t, err, "token_url")

	_, err = auth.FromConfig(ctx, configs.Auth{Type: "kerberos"}, "", nil, nil)
	require.ErrorContains(t, err, `"kerberos"`)

	e := newEnv(t, bulktest.SMARTServerOptions{})
	src, err = auth.FromConfig(ctx, configsSMART(testKeys(t)[auth.ES384].pemPath), e.base, nil, nil)
	require.NoError(t, err)
	tok, err = src.Token(ctx)
	require.NoError(t, err)
	require.Equal(t, 200, e.get(t, tok))
}

func TestStaticFileRereadOnInvalidate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(p, []byte("one\n"), 0o600))
	s := auth.NewStaticFile(p)
	ctx := context.Background()
	tok, err := s.Token(ctx)
	require.NoError(t, err)
	require.Equal(t, "one", tok)

	require.NoError(t, os.WriteFile(p, []byte("two"), 0o600))
	tok, err = s.Token(ctx)
	require.NoError(t, err)
	require.Equal(t, "one", tok, "not re-read until the server rejects the token")
	s.Invalidate("one")
	tok, err = s.Token(ctx)
	require.NoError(t, err)
	require.Equal(t, "two", tok)

	require.NoError(t, os.WriteFile(p, nil, 0o600))
	s.Invalidate("two")
	_, err = s.Token(ctx)
	require.ErrorContains(t, err, "is empty")

	st := auth.NewStatic("fixed")
	st.Invalidate("fixed")
	tok, err = st.Token(ctx)
	require.NoError(t, err)
	require.Equal(t, "fixed", tok)
	cctx, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-cctx.Done()
	_, err = st.Token(cctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch/auth"
)

func runKeys(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"keys", "generate"}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestKeysGenerate(t *testing.T) {
	for _, alg := range []string{"ES384", "RS384"} {
		t.Run(alg, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			out, err := runKeys(t, "--alg", alg, "--out", dir)
			require.NoError(t, err)
			kid := strings.TrimSpace(out)
			require.NotEmpty(t, kid)

			st, err := os.Stat(filepath.Join(dir, "private-key.pem"))
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
			pemBytes, err := os.ReadFile(filepath.Join(dir, "private-key.pem"))
			require.NoError(t, err)
			require.True(t, bytes.HasPrefix(pemBytes, []byte("-----BEGIN PRIVATE KEY-----")), "PKCS#8")

			js, err := os.ReadFile(filepath.Join(dir, "jwks.json"))
			require.NoError(t, err)
			set, err := jwk.Parse(js)
			require.NoError(t, err)
			pub, ok := set.LookupKeyID(kid)
			require.True(t, ok)
			require.Equal(t, alg, pub.Algorithm().String())
			require.Equal(t, "sig", pub.KeyUsage())
			isPriv, err := jwk.IsPrivateKey(pub)
			require.NoError(t, err)
			require.False(t, isPriv)

			// The private key loads with the printed kid and matches the JWKS.
			k, err := auth.LoadKey(filepath.Join(dir, "private-key.pem"), "")
			require.NoError(t, err)
			require.Equal(t, kid, k.KeyID())
			kpub, err := k.PublicKey()
			require.NoError(t, err)
			tp1, _ := auth.Thumbprint(kpub)
			tp2, _ := auth.Thumbprint(pub)
			require.Equal(t, tp1, tp2)
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Len(t, entries, 2, "no temporary files left behind")
		})
	}
}

func TestKeysGenerateRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	_, err := runKeys(t, "--out", dir, "--kid", "first")
	require.NoError(t, err)
	before, err := os.ReadFile(filepath.Join(dir, "private-key.pem"))
	require.NoError(t, err)

	_, err = runKeys(t, "--out", dir)
	require.ErrorContains(t, err, "already exists (use --force")
	after, err := os.ReadFile(filepath.Join(dir, "private-key.pem"))
	require.NoError(t, err)
	require.Equal(t, before, after, "the existing key is untouched")

	out, err := runKeys(t, "--out", dir, "--force", "--kid", "second")
	require.NoError(t, err)
	require.Equal(t, "second\n", out)
	after, err = os.ReadFile(filepath.Join(dir, "private-key.pem"))
	require.NoError(t, err)
	require.NotEqual(t, before, after)

	_, err = runKeys(t, "--out", dir, "--alg", "HS256")
	require.ErrorContains(t, err, `--alg "HS256"`)
	_, err = runKeys(t)
	require.ErrorContains(t, err, "--out")
}

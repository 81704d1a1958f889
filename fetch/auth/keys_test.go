package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, data, mode))
	require.NoError(t, os.Chmod(p, mode)) // umask-proof
	return p
}

func TestLoadKeyPEMForms(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	pkcs8EC, err := x509.MarshalPKCS8PrivateKey(ec)
	require.NoError(t, err)
	sec1, err := x509.MarshalECPrivateKey(ec)
	require.NoError(t, err)
	pkcs8RSA, err := x509.MarshalPKCS8PrivateKey(rk)
	require.NoError(t, err)
	ecParams := []byte("-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n")

	tests := []struct {
		name    string
		pem     []byte
		alg     string
		wantErr string
	}{
		{name: "pkcs8 ec", pem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8EC}), alg: ES384},
		{name: "sec1 ec with params block", pem: append(ecParams, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...), alg: ES384},
		{name: "pkcs8 rsa", pem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8RSA}), alg: RS384},
		{name: "pkcs1 rsa", pem: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), alg: RS384},
		{name: "public key", pem: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), wantErr: "is a public key"},
		{name: "garbage PEM body", pem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), wantErr: "PEM PRIVATE KEY"},
		{name: "not a key", pem: []byte("hello"), wantErr: "neither PEM nor JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, "key.pem", tt.pem, 0o600)
			k, err := LoadKey(p, "")
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.ErrorContains(t, err, p) // names the file
				return
			}
			require.NoError(t, err)
			tp, err := Thumbprint(k)
			require.NoError(t, err)
			require.Equal(t, tp, k.KeyID(), "PEM keys default to the thumbprint kid")
			require.NoError(t, checkKeyAlg(k, tt.alg))
			other := map[string]string{ES384: RS384, RS384: ES384}[tt.alg]
			require.ErrorContains(t, checkKeyAlg(k, other), "needs")

			k2, err := LoadKey(p, "my-kid")
			require.NoError(t, err)
			require.Equal(t, "my-kid", k2.KeyID())
		})
	}
}

func TestLoadKeyJWKAndJWKS(t *testing.T) {
	mk := func(kid string) jwk.Key {
		ec, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		require.NoError(t, err)
		k, err := jwk.FromRaw(ec)
		require.NoError(t, err)
		require.NoError(t, k.Set(jwk.KeyIDKey, kid))
		return k
	}
	a, b := mk("a"), mk("b")
	single, err := json.Marshal(a)
	require.NoError(t, err)
	set := jwk.NewSet()
	require.NoError(t, set.AddKey(a))
	require.NoError(t, set.AddKey(b))
	two, err := json.Marshal(set)
	require.NoError(t, err)
	pubSet, err := jwk.PublicSetOf(set)
	require.NoError(t, err)
	pub, err := json.Marshal(pubSet)
	require.NoError(t, err)
	pubKey, _ := pubSet.Key(0)
	pubOne, err := json.Marshal(pubKey)
	require.NoError(t, err)

	jwkPath := writeFile(t, "key.jwk", single, 0o600)
	k, err := LoadKey(jwkPath, "")
	require.NoError(t, err)
	require.Equal(t, "a", k.KeyID())
	_, err = LoadKey(jwkPath, "zzz")
	require.ErrorContains(t, err, `kid "a", not the configured kid "zzz"`)

	setPath := writeFile(t, "jwks.json", two, 0o600)
	k, err = LoadKey(setPath, "b")
	require.NoError(t, err)
	require.Equal(t, "b", k.KeyID())
	require.True(t, jwk.Equal(k, b))
	_, err = LoadKey(setPath, "c")
	require.ErrorContains(t, err, `no private key with kid "c"; available kids: "a", "b"`)
	_, err = LoadKey(setPath, "")
	require.ErrorContains(t, err, `set auth.kid to one of "a", "b"`)

	_, err = LoadKey(writeFile(t, "pub.json", pub, 0o600), "a")
	require.ErrorContains(t, err, "no private key")
	_, err = LoadKey(writeFile(t, "pub1.json", pubOne, 0o600), "")
	require.ErrorContains(t, err, "public key")
	_, err = LoadKey(filepath.Join(t.TempDir(), "missing.pem"), "")
	require.ErrorContains(t, err, "missing.pem")
}

func TestLoadKeyWarnsOnLoosePermissions(t *testing.T) {
	g, err := GenerateKey(ES384, "")
	require.NoError(t, err)
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o644, true}, {0o604, true}} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		p := writeFile(t, "private-key.pem", g.PrivatePEM, tc.mode)
		_, err := LoadKey(p, "", WithKeyLogger(log))
		require.NoError(t, err)
		require.Equal(t, tc.warn, bytes.Contains(buf.Bytes(), []byte("readable by group or others")), "mode %v: %s", tc.mode, buf.String())
	}
}

func TestGenerateKeyRoundTrip(t *testing.T) {
	for _, alg := range []string{ES384, RS384} {
		t.Run(alg, func(t *testing.T) {
			g, err := GenerateKey(alg, "")
			require.NoError(t, err)
			set, err := jwk.Parse(g.PublicJWKS)
			require.NoError(t, err)
			require.Equal(t, 1, set.Len())
			pub, _ := set.Key(0)
			require.Equal(t, g.KeyID, pub.KeyID())
			require.Equal(t, alg, pub.Algorithm().String())
			require.Equal(t, "sig", pub.KeyUsage())
			isPriv, err := jwk.IsPrivateKey(pub)
			require.NoError(t, err)
			require.False(t, isPriv, "the JWKS to register must hold no private members")
			require.NotContains(t, string(g.PublicJWKS), `"d"`)

			// Loading the PEM without a kid yields the same kid, so the
			// defaults of `keys generate` and LoadKey agree.
			k, err := LoadKey(writeFile(t, "k.pem", g.PrivatePEM, 0o600), "")
			require.NoError(t, err)
			require.Equal(t, g.KeyID, k.KeyID())
			require.NoError(t, checkKeyAlg(k, alg))
		})
	}
	g, err := GenerateKey(ES384, "chosen")
	require.NoError(t, err)
	require.Equal(t, "chosen", g.KeyID)
	_, err = GenerateKey("HS256", "")
	require.ErrorContains(t, err, "not ES384 or RS384")
}

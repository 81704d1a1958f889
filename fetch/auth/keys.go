package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Supported signing algorithms (SMART Backend Services requires clients to
// support both).
const (
	ES384 = "ES384"
	RS384 = "RS384"
)

// KeyOption adjusts LoadKey.
type KeyOption func(*keyOptions)

type keyOptions struct{ log *slog.Logger }

// WithKeyLogger makes LoadKey warn through log when the key file is
// readable by group or others.
func WithKeyLogger(log *slog.Logger) KeyOption {
	return func(o *keyOptions) { o.log = log }
}

// LoadKey reads a private signing key from path, which holds a PEM block
// (PKCS#8 "PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY" or SEC1 "EC PRIVATE
// KEY"), a single private JWK, or a JWKS. kid selects the key from a JWKS
// (required when the set holds more than one private key) and names a key
// that has none; a key with neither gets its RFC 7638 thumbprint as kid,
// the same default `fhirferry keys generate` uses.
func LoadKey(path, kid string, opts ...KeyOption) (jwk.Key, error) {
	var o keyOptions
	for _, f := range opts {
		f(&o)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 && o.log != nil {
		o.log.Warn("private key file is readable by group or others; chmod 600 it",
			"path", path, "mode", st.Mode().Perm().String())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	key, err := parsePrivateKey(data, kid)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	return key, nil
}

func parsePrivateKey(data []byte, kid string) (jwk.Key, error) {
	trimmed := bytes.TrimSpace(data)
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		key, err := parsePEMKey(trimmed)
		if err != nil {
			return nil, err
		}
		return withKid(key, kid)
	}
	if !bytes.HasPrefix(trimmed, []byte("{")) {
		return nil, errors.New("neither PEM nor JSON (expected a PEM private key, a JWK or a JWKS)")
	}
	var probe struct {
		Keys json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(trimmed, &probe); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if probe.Keys == nil {
		key, err := jwk.ParseKey(trimmed)
		if err != nil {
			return nil, fmt.Errorf("invalid JWK: %w", err)
		}
		if err := requirePrivate(key); err != nil {
			return nil, err
		}
		if kid != "" && key.KeyID() != "" && key.KeyID() != kid {
			return nil, fmt.Errorf("JWK has kid %q, not the configured kid %q", key.KeyID(), kid)
		}
		return withKid(key, kid)
	}
	set, err := jwk.Parse(trimmed)
	if err != nil {
		return nil, fmt.Errorf("invalid JWKS: %w", err)
	}
	var private []jwk.Key
	var kids []string
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if ok, _ := jwk.IsPrivateKey(k); ok {
			private = append(private, k)
			kids = append(kids, fmt.Sprintf("%q", k.KeyID()))
		}
	}
	if len(private) == 0 {
		return nil, errors.New("JWKS holds no private key (is this the public jwks.json?)")
	}
	if kid == "" {
		if len(private) > 1 {
			return nil, fmt.Errorf("JWKS holds %d private keys; set auth.kid to one of %s", len(private), strings.Join(kids, ", "))
		}
		return withKid(private[0], "")
	}
	i := slices.IndexFunc(private, func(k jwk.Key) bool { return k.KeyID() == kid })
	if i < 0 {
		return nil, fmt.Errorf("JWKS has no private key with kid %q; available kids: %s", kid, strings.Join(kids, ", "))
	}
	return private[i], nil
}

func parsePEMKey(data []byte) (jwk.Key, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key block (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")
		}
		var raw any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			raw, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			raw, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			raw, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted PEM keys are not supported; decrypt with `openssl pkcs8 -topk8 -nocrypt`")
		case "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE":
			return nil, fmt.Errorf("PEM block %q is a public key; private_key_file must hold the private key", block.Type)
		default:
			continue // e.g. "EC PARAMETERS" before the key
		}
		if err != nil {
			return nil, fmt.Errorf("PEM %s: %w", block.Type, err)
		}
		return jwk.FromRaw(raw)
	}
}

func requirePrivate(k jwk.Key) error {
	ok, err := jwk.IsPrivateKey(k)
	if err != nil {
		return fmt.Errorf("key type %s is not supported (use EC P-384 or RSA)", k.KeyType())
	}
	if !ok {
		return errors.New("JWK is a public key; private_key_file must hold the private key")
	}
	return nil
}

// withKid sets kid on key when given, else the thumbprint when key has none.
func withKid(key jwk.Key, kid string) (jwk.Key, error) {
	if kid == "" {
		kid = key.KeyID()
	}
	if kid == "" {
		var err error
		if kid, err = Thumbprint(key); err != nil {
			return nil, err
		}
	}
	if err := key.Set(jwk.KeyIDKey, kid); err != nil {
		return nil, err
	}
	return key, nil
}

// Thumbprint returns key's RFC 7638 SHA-256 thumbprint, base64url encoded:
// the default kid, stable for the same key pair.
func Thumbprint(key jwk.Key) (string, error) {
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// checkKeyAlg reports whether key can sign with alg: ES384 needs an EC
// P-384 key, RS384 an RSA key of at least 2048 bits.
func checkKeyAlg(key jwk.Key, alg string) error {
	var raw any
	if err := key.Raw(&raw); err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	switch alg {
	case ES384:
		k, ok := raw.(*ecdsa.PrivateKey)
		if !ok || k.Curve != elliptic.P384() {
			return fmt.Errorf("alg ES384 needs an EC P-384 private key, got %s", describeKey(raw))
		}
	case RS384:
		k, ok := raw.(*rsa.PrivateKey)
		if !ok || k.N.BitLen() < 2048 {
			return fmt.Errorf("alg RS384 needs an RSA private key of 2048+ bits, got %s", describeKey(raw))
		}
	default:
		return fmt.Errorf("alg %q is not ES384 or RS384", alg)
	}
	return nil
}

func describeKey(raw any) string {
	switch k := raw.(type) {
	case *ecdsa.PrivateKey:
		return "EC " + k.Curve.Params().Name
	case *rsa.PrivateKey:
		return fmt.Sprintf("RSA %d-bit", k.N.BitLen())
	default:
		return fmt.Sprintf("%T", raw)
	}
}

// GeneratedKey is a new key pair ready to be written out and registered.
type GeneratedKey struct {
	// KeyID is the kid in both the private key and the public JWKS.
	KeyID string
	// PrivatePEM is the PKCS#8 PEM encoding of the private key.
	PrivatePEM []byte
	// PublicJWKS is the public JWK Set (kid, alg, use=sig) to register
	// with the server, indented JSON.
	PublicJWKS []byte
}

// GenerateKey creates a key pair for alg (ES384: EC P-384; RS384: RSA
// 3072-bit). An empty kid becomes the key's RFC 7638 thumbprint.
func GenerateKey(alg, kid string) (*GeneratedKey, error) {
	var raw crypto.Signer
	var err error
	switch alg {
	case ES384:
		raw, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RS384:
		raw, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return nil, fmt.Errorf("alg %q is not ES384 or RS384", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(raw)
	if err != nil {
		return nil, err
	}
	pub, err := jwk.FromRaw(raw.Public())
	if err != nil {
		return nil, err
	}
	if pub, err = withKid(pub, kid); err != nil {
		return nil, err
	}
	for k, v := range map[string]any{jwk.AlgorithmKey: jwa.SignatureAlgorithm(alg), jwk.KeyUsageKey: "sig"} {
		if err := pub.Set(k, v); err != nil {
			return nil, err
		}
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return nil, err
	}
	return &GeneratedKey{
		KeyID:      pub.KeyID(),
		PrivatePEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		PublicJWKS: append(js, '\n'),
	}, nil
}

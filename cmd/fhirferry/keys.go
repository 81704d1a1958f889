package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/fetch/auth"
)

func newKeysCmd(*globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "keys",
		Example: "  fhirferry keys generate --out /etc/fhirferry/keys",
		Short:   "Manage SMART Backend Services signing keys",
	}
	cmd.AddCommand(newKeysGenerateCmd())
	return cmd
}

func newKeysGenerateCmd() *cobra.Command {
	var alg, out, kid string
	var force bool
	cmd := &cobra.Command{
		Use:     "generate --out DIR [--alg ES384|RS384] [--kid KID] [--force]",
		Example: "  fhirferry keys generate --out /etc/fhirferry/keys\n  fhirferry keys generate --out ./keys --alg RS384 --kid my-key",
		Short:   "Generate a key pair: private-key.pem (0600) and jwks.json to register with the server",
		Long: `Generate a signing key pair for SMART Backend Services.

Writes DIR/private-key.pem (PKCS#8, mode 0600; point auth.private_key_file at
it) and DIR/jwks.json (the public JWK Set with kid, alg and use=sig; register
it with the FHIR server, ideally by URL). Prints the kid. The kid defaults to
the key's RFC 7638 thumbprint, which fhirferry also derives when it loads a
PEM key without auth.kid. Existing files are kept unless --force is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("keys generate: --out DIR is required")
			}
			if alg != auth.ES384 && alg != auth.RS384 {
				return fmt.Errorf("keys generate: --alg %q is not ES384 or RS384", alg)
			}
			g, err := auth.GenerateKey(alg, kid)
			if err != nil {
				return fmt.Errorf("keys generate: %w", err)
			}
			if err := writeKeyFiles(out, g, force); err != nil {
				return fmt.Errorf("keys generate: %w", err)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), g.KeyID)
			return err
		},
	}
	cmd.Flags().StringVar(&alg, "alg", auth.ES384, "signing algorithm: ES384 (EC P-384) or RS384 (RSA 3072)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write private-key.pem and jwks.json to")
	cmd.Flags().StringVar(&kid, "kid", "", "key id (default: the key's RFC 7638 thumbprint)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing key files")
	return cmd
}

// writeKeyFiles writes both files, refusing to replace an existing key
// unless force: losing a registered private key locks the client out.
func writeKeyFiles(dir string, g *auth.GeneratedKey, force bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	priv := filepath.Join(dir, "private-key.pem")
	pub := filepath.Join(dir, "jwks.json")
	if !force {
		for _, p := range []string{priv, pub} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%s already exists (use --force to replace the key)", p)
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	if err := writeAtomic(priv, g.PrivatePEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(pub, g.PublicJWKS, 0o644)
}

// writeAtomic writes data to a temporary file with mode and renames it over
// path, so a reader never sees a half-written key and the private key is
// never readable by others, even briefly.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

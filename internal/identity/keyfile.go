package identity

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/rampartsec/rampart/internal/atomicfile"
)

// LoadKeyFile reads a PEM private key (PKCS#8, SEC 1 EC or PKCS#1 RSA). A key
// file readable by group or others is refused.
func LoadKeyFile(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity: key file %s has mode %v; it must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseKeyPEM(b)
}

// ParseKeyPEM parses the first private key block in b.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("identity: no PEM block in key data")
	}
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("identity: unexpected PEM block %q, want a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: parse key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("identity: key type %T cannot sign", k)
	}
	return s, nil
}

// EncodeKeyPEM encodes a private key as PKCS#8 PEM.
func EncodeKeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteKeyFile writes a private key as PKCS#8 PEM with mode 0600.
func WriteKeyFile(path string, k crypto.Signer) error {
	b, err := EncodeKeyPEM(k)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// LoadUpstream reads the root(s) supplied from outside (certFile, PEM) and
// their key (keyFile, optional). A key file that is absent means the key
// is kept offline: the current intermediate keeps signing. No certFile:
// no upstream (nil).
func LoadUpstream(certFile, keyFile string) (*Upstream, error) {
	if certFile == "" {
		if keyFile != "" {
			return nil, errors.New("identity: --upstream-ca-key needs --upstream-ca-cert")
		}
		return nil, nil
	}
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("identity: upstream CA: %w", err)
	}
	roots, err := ParsePEM(b)
	if err != nil {
		return nil, fmt.Errorf("identity: upstream CA %s: %w", certFile, err)
	}
	for _, r := range roots {
		if !r.IsCA {
			return nil, fmt.Errorf("identity: upstream CA %s: certificate %q is not a CA", certFile, r.Subject)
		}
	}
	up := &Upstream{Roots: roots}
	if keyFile != "" {
		k, err := LoadKeyFile(keyFile)
		if errors.Is(err, fs.ErrNotExist) {
			return up, nil
		}
		if err != nil {
			return nil, fmt.Errorf("identity: upstream CA key: %w", err)
		}
		up.Key = k
	}
	return up, nil
}

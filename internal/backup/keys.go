package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/atomicfile"
)

// Keys.
//
// Encryption: every object is an age file encrypted to the configured
// recipients: X25519 ("age1...", made with age-keygen) and SSH public keys
// (ssh-ed25519, ssh-rsa), so the standard age CLI decrypts it. With a
// passphrase, the server makes one X25519 identity for the deployment's
// backups, keeps it only encrypted under the passphrase (age's scrypt
// recipient) in DATA/backup/identity.age and in every destination as
// keys/identity.age, and encrypts to its recipient: the passphrase is needed
// once (when that file is made) and at restore, never for a scheduled
// backup, and a restore runs scrypt once rather than once per object.
//
// Signing: a backup signing key (C2SP note key, Ed25519) is made at the
// first backup in DATA/keys/backup.key (0600); its public half is written
// to DATA/backup.pub, which the operator keeps outside the data directory
// and the destinations, as for audit.pub. Restore and verify take the
// public key as an argument: an attacker who replaces a backup in a
// destination cannot replace the key it is checked with.

// ParseRecipients reads age recipients, one a line ("#" comments and blank
// lines ignored): X25519 (age1...) and SSH public keys.
func ParseRecipients(r io.Reader) ([]age.Recipient, []string, error) {
	var out []age.Recipient
	var names []string
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var rc age.Recipient
		var err error
		if strings.HasPrefix(line, "ssh-") {
			rc, err = agessh.ParseRecipient(line)
		} else {
			rc, err = age.ParseX25519Recipient(line)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("backup: recipients line %d: %v (want age1... or an ssh-ed25519/ssh-rsa public key)", n, err)
		}
		out = append(out, rc)
		names = append(names, line)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("backup: recipients: %w", err)
	}
	return out, names, nil
}

// ParseIdentities reads age identities (AGE-SECRET-KEY-1... lines) or an
// unencrypted OpenSSH private key.
func ParseIdentities(data []byte) ([]age.Identity, error) {
	if bytes.Contains(data, []byte("-----BEGIN")) {
		id, err := agessh.ParseIdentity(data)
		if err != nil {
			return nil, fmt.Errorf("backup: SSH identity: %w", err)
		}
		return []age.Identity{id}, nil
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("backup: identities: %w", err)
	}
	return ids, nil
}

// identityKey is the passphrase-protected identity's key in a destination.
const identityKey = "keys/identity.age"

// passphraseIdentity returns the recipient of the deployment's passphrase
// identity, making it (with passphrase) the first time, and the encrypted
// identity file that each destination must hold.
func passphraseIdentity(dataDir string, passphrase func() ([]byte, error)) (age.Recipient, string, []byte, error) {
	path := filepath.Join(dataDir, "backup", "identity.age")
	enc, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if passphrase == nil {
			return nil, "", nil, errors.New("backup: a passphrase is configured but none can be read")
		}
		p, err := passphrase()
		if err != nil {
			return nil, "", nil, fmt.Errorf("backup: passphrase: %w", err)
		}
		if len(p) < 12 {
			return nil, "", nil, fmt.Errorf("backup: the passphrase is %d characters; use at least 12", len(p))
		}
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return nil, "", nil, err
		}
		sr, err := age.NewScryptRecipient(string(p))
		if err != nil {
			return nil, "", nil, err
		}
		var buf bytes.Buffer
		w, err := age.Encrypt(&buf, sr)
		if err != nil {
			return nil, "", nil, err
		}
		// The recipient rides along as a comment, so the server reads it
		// without the passphrase.
		fmt.Fprintf(w, "# recipient: %s\n%s\n", id.Recipient(), id)
		if err := w.Close(); err != nil {
			return nil, "", nil, err
		}
		rc := id.Recipient().String()
		file := append([]byte("# "+rc+"\n"), buf.Bytes()...)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, "", nil, err
		}
		if err := atomicfile.Write(path, file, 0o600); err != nil {
			return nil, "", nil, err
		}
		enc = file
	} else if err != nil {
		return nil, "", nil, fmt.Errorf("backup: %w", err)
	}
	first, _, _ := bytes.Cut(enc, []byte("\n"))
	rc := strings.TrimPrefix(string(first), "# ")
	r, err := age.ParseX25519Recipient(rc)
	if err != nil {
		return nil, "", nil, fmt.Errorf("backup: %s: the first line must name the recipient: %w", path, err)
	}
	return r, rc, enc, nil
}

// openPassphraseIdentity fetches keys/identity.age from a destination and
// opens it with the passphrase.
func openPassphraseIdentity(ctx context.Context, d Destination, passphrase []byte) (age.Identity, error) {
	enc, err := d.Get(ctx, identityKey, 1<<16)
	if err != nil {
		return nil, fmt.Errorf("backup: %s: %w", d, err)
	}
	_, body, ok := bytes.Cut(enc, []byte("\n"))
	if !ok {
		return nil, fmt.Errorf("backup: %s: %s is malformed", d, identityKey)
	}
	si, err := age.NewScryptIdentity(string(passphrase))
	if err != nil {
		return nil, err
	}
	r, err := age.Decrypt(bytes.NewReader(body), si)
	if err != nil {
		return nil, fmt.Errorf("backup: the passphrase does not open %s in %s: %w", identityKey, d, err)
	}
	plain, err := io.ReadAll(io.LimitReader(r, 1<<16))
	if err != nil {
		return nil, err
	}
	ids, err := age.ParseIdentities(bytes.NewReader(plain))
	if err != nil || len(ids) != 1 {
		return nil, fmt.Errorf("backup: %s in %s holds no identity", identityKey, d)
	}
	return ids[0], nil
}

// signingKey loads (creating on first use) the backup signing key and
// writes its public half to DATA/backup.pub.
func signingKey(dataDir, trustDomain string) (note.Signer, string, error) {
	path := filepath.Join(dataDir, "keys", "backup.key")
	skey, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		s, v, err := note.GenerateKey(rand.Reader, trustDomain+"/backup")
		if err != nil {
			return nil, "", fmt.Errorf("backup: signing key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, "", err
		}
		if err := atomicfile.Write(path, []byte(s+"\n"), 0o600); err != nil {
			return nil, "", err
		}
		if err := atomicfile.Write(filepath.Join(dataDir, "backup.pub"), []byte(v+"\n"), 0o644); err != nil {
			return nil, "", err
		}
		skey = []byte(s)
	} else if err != nil {
		return nil, "", fmt.Errorf("backup: signing key: %w", err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, "", fmt.Errorf("backup: signing key %s: %w", path, err)
	}
	pub, err := os.ReadFile(filepath.Join(dataDir, "backup.pub"))
	if err != nil {
		return nil, "", fmt.Errorf("backup: %w", err)
	}
	return signer, strings.TrimSpace(string(pub)), nil
}

// ParseVerifier reads a backup public key (the content of backup.pub).
func ParseVerifier(s string) (note.Verifier, error) {
	v, err := note.NewVerifier(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("backup: public key: %w (want the content of DATA/backup.pub)", err)
	}
	return v, nil
}

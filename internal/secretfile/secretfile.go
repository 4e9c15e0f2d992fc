// Package secretfile reads secrets (tokens, passwords, PINs) from files,
// refusing a file that group or others may read, as key files are refused.
//
// Secrets reach a Rampart process from a file or the environment, never
// from its command line: every local user reads any process's arguments in
// ps and /proc/PID/cmdline, while a 0600 file, the environment
// (/proc/PID/environ is readable only by the process's own user and root)
// and systemd credentials (LoadCredential=) are not shared with them.
package secretfile

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/rampartsec/rampart/internal/atomicfile"
)

// MaxSize bounds a secret file: a token or password, not a document.
const MaxSize = 64 << 10

// Read returns the contents of the secret file at path, without one
// trailing newline (CRLF or LF). It refuses a file that is not a regular
// file, is readable or writable by group or others (the error says the
// fix: chmod 600), is empty, or is larger than MaxSize. The mode is checked
// on the opened file, so it cannot be swapped between check and read.
func Read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secretfile: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secretfile: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("secretfile: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("secretfile: %s has mode %04o: a secret must not be readable or writable by group or others; chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("secretfile: read %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("secretfile: %s is larger than %d bytes; a secret file holds one token or password", path, MaxSize)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return nil, fmt.Errorf("secretfile: %s is empty", path)
	}
	return []byte(s), nil
}

// ErrOnCommandLine is returned (wrapped) for a secret given as a command
// line flag's value.
var ErrOnCommandLine = errors.New("a secret on the command line is readable by every local user (ps, /proc/PID/cmdline)")

// LoadOrCreateToken returns the bearer token kept in the secret file at
// path, creating a random 256-bit one (prefix followed by base64url, in a
// 0600 file) when there is none. A token file group or others may read
// is refused (Read): anyone who read it holds the token.
func LoadOrCreateToken(path, prefix string) (string, error) {
	b, err := Read(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < 32 {
			return "", fmt.Errorf("secretfile: %s holds a token shorter than 32 characters; delete it to have a new one generated", path)
		}
		return tok, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("secretfile: %w", err)
	}
	tok := prefix + base64.RawURLEncoding.EncodeToString(raw)
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("secretfile: write %s: %w", path, err)
	}
	return tok, nil
}

package server

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rampartsec/rampart/internal/audit"
)

// Another local user created the server's data directory first: they could
// later swap admin.token, the keys or the audit log. The server refuses.
func TestNewRefusesDataDirectoryOfAnotherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	tmp, err := os.MkdirTemp("", "rampart-server-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, os.ModeSticky|0o777) // like /tmp
	data := filepath.Join(tmp, "rampart-data")
	mk := exec.Command("/bin/mkdir", "-m", "0777", data)
	mk.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkdir as uid 65534: %v %s", err, out)
	}
	srv, err := New(context.Background(), Config{DataDir: data, TrustDomain: td, Listen: "127.0.0.1:0"})
	if err == nil {
		srv.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "is owned by uid 65534") {
		t.Fatalf("server.New in a data directory uid 65534 made: %v", err)
	}
}

// Red team finding 6: the server accepted a world-readable audit signing
// key (keys/audit.key 0644: anyone could sign checkpoints of a rewritten
// log) and a world-readable rampart.db, while it refused kek and
// metrics.token. Every file of the data directory that holds a secret or
// the store is created 0600 and refused at start when group or others
// may read it, with the chmod that fixes it.
func TestNewRefusesReadableSecretFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, TrustDomain: td, Listen: "127.0.0.1:0"}
	srv, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	secret := []string{"keys/audit.key", "keys/backup.key", "backup/identity.age", "keys/kek", "keys/kek.sealed",
		"rampart.db", "rampart.db-wal", "rampart.db-shm", "admin.token", "metrics.token"}
	made := 0
	for _, rel := range secret { // while the server runs: the store's -wal and -shm go when it closes

		p := filepath.Join(dir, filepath.FromSlash(rel))
		fi, err := os.Stat(p)
		if os.IsNotExist(err) {
			continue // not made in this configuration (a backup key, a sealed kek)
		}
		if err != nil {
			t.Fatal(err)
		}
		made++
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s was created with mode %04o, want 0600", rel, fi.Mode().Perm())
		}
	}
	srv.Close()
	if made < 7 {
		t.Fatalf("only %d of the files were made; the test checks too little", made)
	}
	for _, rel := range secret {
		t.Run(rel, func(t *testing.T) {
			p := filepath.Join(dir, filepath.FromSlash(rel))
			_, statErr := os.Stat(p)
			if os.IsNotExist(statErr) {
				os.MkdirAll(filepath.Dir(p), 0o700)
				if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(p)
			}
			for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
				if err := os.Chmod(p, mode); err != nil {
					t.Fatal(err)
				}
				srv, err := New(context.Background(), cfg)
				if err == nil {
					srv.Close()
				}
				if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("has mode %04o", mode)) || !strings.Contains(err.Error(), "chmod 600 "+p) {
					t.Errorf("mode %04o: New = %v, want a refusal naming chmod 600 %s", mode, err, p)
				}
			}
			os.Chmod(p, 0o600)
		})
	}
	srv, err = New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("with every file 0600 again: %v", err)
	}
	srv.Close()
}

// The audit signing key is refused by LoadSigner too (rampart backup and
// any other reader of the key use it).
func TestLoadSignerRefusesReadableKey(t *testing.T) {
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "keys", "audit.key"), filepath.Join(dir, "audit.pub")
	if _, err := audit.LoadSigner(key, pub, "example.org/audit"); err != nil {
		t.Fatal(err)
	}
	os.Chmod(key, 0o644)
	if _, err := audit.LoadSigner(key, pub, "example.org/audit"); err == nil || !strings.Contains(err.Error(), "chmod 600 "+key) {
		t.Fatalf("LoadSigner with a key of mode 0644: %v", err)
	}
}

package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// lookTool finds a command-line tool the test needs; CI installs it
// (.ci/run), so there a missing one fails instead of skipping.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (.ci/run must install it)", name)
		}
		t.Skipf("%s is not installed (apt-get install %s)", name, name)
	}
	return p
}

// TestAgeCLIDecryptsABackup decrypts every file of a backup with the
// standard age command (Debian's package), as an operator without rampart
// would, and checks each against the manifest.
func TestAgeCLIDecryptsABackup(t *testing.T) {
	ageBin := lookTool(t, "age")
	s := newSite(t)
	res, err := s.b.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(keyFile, []byte(s.identity.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := s.dests[0].String()
	checked := 0
	for _, f := range res.Manifest.Files {
		var enc bytes.Buffer
		for _, p := range f.Parts {
			b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(p.Key())))
			if err != nil {
				t.Fatal(err)
			}
			enc.Write(b)
		}
		cmd := exec.Command(ageBin, "--decrypt", "--identity", keyFile)
		cmd.Stdin = &enc
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("age --decrypt %s: %v: %s", f.Path, err, stderr.Bytes())
		}
		plain := out.Bytes()
		if f.Compression == "zstd" {
			d, _ := zstd.NewReader(nil)
			plain, err = d.DecodeAll(plain, nil)
			d.Close()
			if err != nil {
				t.Fatalf("%s: zstd: %v", f.Path, err)
			}
		}
		sum := sha256.Sum256(plain)
		if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(plain)) != f.Size {
			t.Fatalf("%s decrypted by age: %d bytes, SHA-256 %x; the manifest says %d, %s", f.Path, len(plain), sum, f.Size, f.SHA256)
		}
		if f.Path == "rampart.db" && !bytes.HasPrefix(plain, []byte("SQLite format 3\x00")) {
			t.Fatal("rampart.db decrypted is not a SQLite database")
		}
		checked++
	}
	if checked < 8 {
		t.Fatalf("only %d files checked", checked)
	}
}

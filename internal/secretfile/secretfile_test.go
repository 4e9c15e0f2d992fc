package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode) // past the umask
		return p
	}
	tests := []struct {
		name, path, want, wantErr string
	}{
		{"0600 with newline", write("a", "s3cret\n", 0o600), "s3cret", ""},
		{"0400 with CRLF", write("b", "s3cret\r\n", 0o400), "s3cret", ""},
		{"inner spaces kept", write("c", " pass word \n", 0o600), " pass word ", ""},
		{"group readable", write("d", "s3cret", 0o640), "", "chmod 600"},
		{"world readable", write("e", "s3cret", 0o644), "", "must not be readable or writable by group or others"},
		{"group writable", write("f", "s3cret", 0o620), "", "chmod 600"},
		{"empty", write("g", "\n", 0o600), "", "is empty"},
		{"too large", write("h", strings.Repeat("x", MaxSize+1), 0o600), "", "larger than"},
		{"directory", dir, "", "not a regular file"},
		{"missing", filepath.Join(dir, "nope"), "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read(tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Read = %q, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("Read = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// A token is created once (0600, prefixed, 256 bits) and read back; a
// file others may read, or a short token, is refused.
func TestLoadOrCreateToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.token")
	tok, err := LoadOrCreateToken(path, "rpa_")
	if err != nil || !strings.HasPrefix(tok, "rpa_") || len(tok) != 4+43 {
		t.Fatalf("created %q, %v", tok, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v, want 0600", fi.Mode().Perm(), err)
	}
	if again, err := LoadOrCreateToken(path, "rpa_"); err != nil || again != tok {
		t.Fatalf("read back %q %v, want %q", again, err, tok)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadOrCreateToken(path, "rpa_"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a file others may read: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("short\n"), 0o600)
	if _, err := LoadOrCreateToken(path, "rpa_"); err == nil || !strings.Contains(err.Error(), "shorter than 32") {
		t.Fatalf("a short token: %v", err)
	}
}

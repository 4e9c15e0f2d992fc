package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func testEnv(vars map[string]string) *cliEnv {
	return &cliEnv{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string { return vars[k] }}
}

// A secret flag refuses its value on the command line, in every spelling,
// without repeating it; it takes it from the environment or a 0600 file.
func TestSecretFlag(t *testing.T) {
	for _, args := range [][]string{
		{"--admin-token", "rpa_SECRET"}, {"--admin-token=rpa_SECRET"}, {"-admin-token", "rpa_SECRET"}, {"x", "--admin-token=rpa_SECRET"},
	} {
		fs := newFlags(testEnv(nil), "t", "t")
		addSecretFlag(fs, "admin-token", "the admin token", "")
		err := parse(testEnv(nil), fs, args)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--admin-token-file") || !strings.Contains(err.Error(), "RAMPART_ADMIN_TOKEN") {
			t.Fatalf("%v: %v", args, err)
		}
		if strings.Contains(err.Error(), "SECRET") {
			t.Fatalf("the refusal repeats the secret: %v", err)
		}
	}
	// After "--" it is an argument, not a flag.
	fs := newFlags(testEnv(nil), "t", "t")
	addSecretFlag(fs, "admin-token", "the admin token", "")
	if err := parse(testEnv(nil), fs, []string{"--", "--admin-token"}); err != nil {
		t.Fatal(err)
	}

	env := testEnv(map[string]string{"RAMPART_ADMIN_TOKEN": "rpa_env"})
	fs = newFlags(env, "t", "t")
	s := addSecretFlag(fs, "admin-token", "the admin token", "")
	if err := parse(env, fs, nil); err != nil {
		t.Fatal(err)
	}
	if v, err := s.get(); err != nil || v != "rpa_env" {
		t.Fatalf("from the environment: %q %v", v, err)
	}

	dir := t.TempDir()
	good, loose := filepath.Join(dir, "good"), filepath.Join(dir, "loose")
	os.WriteFile(good, []byte("rpa_file\n"), 0o600)
	os.WriteFile(loose, []byte("rpa_file\n"), 0o644)
	os.Chmod(loose, 0o644)
	for _, tt := range []struct{ file, want, wantErr string }{{good, "rpa_file", ""}, {loose, "", "chmod 600"}} {
		fs = newFlags(testEnv(nil), "t", "t")
		s = addSecretFlag(fs, "admin-token", "the admin token", "")
		if err := parse(testEnv(nil), fs, []string{"--admin-token-file", tt.file}); err != nil {
			t.Fatal(err)
		}
		v, err := s.get()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("%s: %q %v", tt.file, v, err)
			}
			continue
		}
		if err != nil || v != tt.want {
			t.Fatalf("%s: %q %v", tt.file, v, err)
		}
	}
	// Both at once is ambiguous.
	fs = newFlags(env, "t", "t")
	s = addSecretFlag(fs, "admin-token", "the admin token", "")
	parse(env, fs, []string{"--admin-token-file", good})
	if _, err := s.get(); err == nil || !strings.Contains(err.Error(), "both set") {
		t.Fatalf("environment and file: %v", err)
	}
}

func TestDSNHasPassword(t *testing.T) {
	tests := []struct {
		dsn  string
		want bool
	}{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", false},
		{"postgres://rampart:hunter2@db/rampart", true},
		{"postgresql://rampart:@db/rampart", true},
		{"postgres://db/rampart?password=hunter2", true},
		{"postgres://db/rampart?PassWord=hunter2", true},
		{"host=db user=rampart dbname=rampart", false},
		{"host=db password=hunter2", true},
		{"password = 'a b' host=db", true},
		{"host=db passfile=/etc/rampart/pgpass", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := dsnHasPassword(tt.dsn); got != tt.want {
			t.Errorf("dsnHasPassword(%q) = %v, want %v", tt.dsn, got, tt.want)
		}
	}
	var dsn string
	fs := newFlags(testEnv(nil), "t", "t")
	fs.Var(dsnFlag{&dsn}, "postgres", "")
	err := parse(testEnv(nil), fs, []string{"--postgres", "postgres://u:hunter2@db/x"})
	if err == nil || !strings.Contains(err.Error(), "PGPASSFILE") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("password on the command line: %v", err)
	}
	env := testEnv(map[string]string{"RAMPART_POSTGRES": "postgres://u:hunter2@db/x"})
	fs = newFlags(env, "t", "t")
	fs.Var(dsnFlag{&dsn}, "postgres", "")
	if err := parse(env, fs, nil); err != nil || dsn != "postgres://u:hunter2@db/x" {
		t.Fatalf("from RAMPART_POSTGRES: %q %v", dsn, err)
	}
}

// What docs/ tell operators: a DSN without a password, and the password
// in a passfile named by PGPASSFILE, which pgx (the store's driver) reads.
func TestPostgresPasswordFromPassfile(t *testing.T) {
	pass := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(pass, []byte("db.internal:5432:rampart:rampart:hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGPASSFILE", pass)
	t.Setenv("PGPASSWORD", "")
	cfg, err := pgx.ParseConfig("postgres://rampart@db.internal:5432/rampart")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Password != "hunter2" {
		t.Fatalf("pgx did not take the password from PGPASSFILE: %q", cfg.Password)
	}
}

// Package scantest builds the small Go programs the scan tests scan, and
// finds the pinned copy of the Go vulnerability database (the module
// golang.org/x/vulndb, fetched through the module proxy like any module).
package scantest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// VulnDBVersion is the pinned version of golang.org/x/vulndb the tests and
// the demo use.
const VulnDBVersion = "v0.0.0-20261105234957-e22db6528018"

// GovulncheckVersion is the govulncheck .ci/run installs, compared with.
const GovulncheckVersion = "v1.9.0"

// Programs, in testdata/progs.
const (
	Called    = "called"    // x/text v0.3.7, calls language.ParseAcceptLanguage (GO-2022-1059)
	NotCalled = "notcalled" // x/text v0.3.7, never calls the vulnerable functions
	Patched   = "patched"   // x/text v0.3.8, calls language.ParseAcceptLanguage
	Inlined   = "inlined"   // a function only in an inline tree
)

// progsDir is testdata/progs beside this package.
func progsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "progs")
}

// Build builds a program into dir (with extra go build flags), and returns
// the binary's path. The build cache and module cache are the user's, so a
// second build costs little.
func Build(dir, prog string, flags ...string) (string, error) {
	out := filepath.Join(dir, prog)
	if len(flags) > 0 {
		out += "-" + strings.NewReplacer("=", "", " ", "", "-", "").Replace(strings.Join(flags, ""))
	}
	args := append([]string{"build", "-o", out}, flags...)
	args = append(args, ".")
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join(progsDir(), prog)
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("scantest: build %s: %v\n%s", prog, err, b)
	}
	return out, nil
}

// VulnDB returns the directory of OSV files of the pinned Go vulnerability
// database, downloading the module through the module proxy if needed.
func VulnDB() (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", "golang.org/x/vulndb@"+VulnDBVersion)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scantest: go mod download golang.org/x/vulndb@%s: %v\n%s", VulnDBVersion, err, b)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(b, &m); err != nil || m.Dir == "" {
		return "", fmt.Errorf("scantest: go mod download: %s %v", m.Error, err)
	}
	return filepath.Join(m.Dir, "data", "osv"), nil
}

// Govulncheck finds the govulncheck binary (on PATH or in GOPATH/bin).
func Govulncheck() (string, error) {
	if p, err := exec.LookPath("govulncheck"); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "govulncheck")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("scantest: govulncheck not found; install it: go install golang.org/x/vuln/cmd/govulncheck@" + GovulncheckVersion)
}

// CopyRecords copies the named OSV records from the database dir into a
// new directory dst, for a database with only those.
func CopyRecords(dbDir, dst string, ids ...string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, id := range ids {
		b, err := os.ReadFile(filepath.Join(dbDir, id+".json"))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, id+".json"), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

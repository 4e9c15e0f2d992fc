// Package softhsmtest makes a throwaway SoftHSM token (Debian's softhsm2,
// which .ci/run installs) for tests of the PKCS#11 master key. Without
// softhsm2 the test is skipped, except in CI, where it fails.
package softhsmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Module is the PKCS#11 library softhsm2 installs.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// Token initialises a token labelled label with user PIN pin in a
// temporary directory and points SOFTHSM2_CONF at it for the rest of the
// test (child processes inherit it).
func Token(t testing.TB, label, pin string) {
	t.Helper()
	util, err := exec.LookPath("softhsm2-util")
	if _, serr := os.Stat(Module); err != nil || serr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("softhsm2 is not installed (.ci/run must install it): %v %v", err, serr)
		}
		t.Skip("softhsm2 is not installed; apt-get install softhsm2")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.Mkdir(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	if out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", pin+"-so").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
}

package sdk

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/sdk/sdktest"
)

// Issue 26 ("directories others control"): WithPolicyCache and
// WithAuditSpool used a directory whatever its owner. Another local user
// who made it first could forge the policy enforced after a restart while
// the server is down, or read and inject the service's audit entries. New
// refuses such a directory, naming the option.
func TestNewRefusesDirectoriesOfAnotherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	tmp, err := os.MkdirTemp("", "rampart-sdk-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, os.ModeSticky|0o777) // like /tmp
	theirs := filepath.Join(tmp, "theirs")
	mk := exec.Command("/bin/mkdir", "-m", "0777", theirs)
	mk.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkdir as uid 65534: %v %s", err, out)
	}
	ca := sdktest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	id := spiffeid.RequireFromString("spiffe://example.org/payments")
	for _, tt := range []struct {
		opt  Option
		want string
	}{
		{WithPolicyCache(theirs), "the policy cache directory (WithPolicyCache) " + theirs + " is owned by uid 65534"},
		{WithAuditSpool(theirs), "the audit spool directory (WithAuditSpool) " + theirs + " is owned by uid 65534"},
		{WithAuditSpool(filepath.Join(theirs, "spool")), theirs + ", a parent of"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := New(ctx, WithX509Source(ca.SVID(id), ca.Bundle()), WithServer("127.0.0.1:1"), tt.opt)
		if err == nil {
			s.Close()
		}
		cancel()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New: %v, want an error saying %q", err, tt.want)
		}
	}
	if ents, _ := os.ReadDir(theirs); len(ents) != 0 {
		t.Fatalf("the SDK wrote %v into another user's directory", ents)
	}
}

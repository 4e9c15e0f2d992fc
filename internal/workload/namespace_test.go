package workload

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/selector"
)

// toolsGID is the group the entries under attack name (entry
// "unix:gid:tools + unix:path:/opt/bin/trusted" in the red team's report):
// a supplementary group of the attacker, uid 65534. It needs no line in
// /etc/group: the kernel only knows numbers.
const toolsGID = 4242

func toolsSel() selector.Selector {
	return selector.Selector{Type: selector.UnixGID, Value: strconv.Itoa(toolsGID)}
}

// needNamespaces skips unless the test can act as uid 65534 in group
// tools and create namespaces (root, util-linux's unshare).
func needNamespaces(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root, to run the attacker as uid 65534 with a supplementary group")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal("unshare (util-linux) is needed for the namespace attacks: apt-get install util-linux")
	}
	return unshare
}

// asTools runs as uid 65534, gid 65534, supplementary group tools.
func asTools(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{toolsGID}}}
	return cmd
}

// connectorEnv is the environment of a test binary copy in connect mode.
func connectorEnv(sock string) []string {
	return append(helperEnv(), "RAMPART_WL_HELPER=connect", "RAMPART_WL_SOCK="+sock)
}

// The red team's attack (issue 26, follow-up): a member of group tools
// creates a user and a mount namespace of her own (unshare -Urm, no
// privilege needed), bind-mounts her binary over the path the entry names,
// runs it and asks for an SVID. /proc/PID/exe shows the agent that path;
// the agent gave her the entry's identity.
func TestAttestationRefusesBindMountInUserNamespace(t *testing.T) {
	unshare := needNamespaces(t)
	dir := sharedDir(t)
	trusted := copyTestBinary(t, dir, "trusted")
	mine := copyTestBinary(t, dir, "mine") // her program (same bytes here; another file)
	sock, accepted, logs := raceServer(t, dir, snapshotFor(t, toolsSel(), selector.Selector{Type: selector.UnixPath, Value: trusted}))

	// Control: the real binary at the path, run by a member of tools.
	legit := asTools(exec.Command(trusted))
	legit.Env = connectorEnv(sock)
	if out := runConnectorCmd(t, legit, accepted, "speak"); !strings.HasPrefix(out, "granted spiffe://example.org/me") {
		t.Fatalf("the real binary at the entry's path was not served: %q", out)
	}
	// Attack.
	attack := asTools(exec.Command(unshare, "-Urm", "sh", "-c", `mount --bind "$1" "$2" && exec "$2"`, "sh", mine, trusted))
	attack.Env = connectorEnv(sock)
	out := runConnectorCmd(t, attack, accepted, "speak")
	if !strings.HasPrefix(out, "refused PermissionDenied") {
		t.Fatalf("a binary bind-mounted over the entry's path in a namespace of the caller's own got: %q", out)
	}
	if want := "not attested: the caller runs in user namespace"; !strings.Contains(logs.String(), want) {
		t.Fatalf("the agent's log does not say %q:\n%s", want, logs)
	}
}

// The same bind mount in a mount namespace that shares the agent's user
// namespace, as a container started by a root runtime has (its image may
// hold any file at any path): the path now names, in the agent's view,
// another file than the one the caller runs. A caller in such a namespace
// running the real file is still served: only the file counts.
func TestAttestationPathIsTheFileInTheAgentsView(t *testing.T) {
	unshare := needNamespaces(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed")
	}
	dir := sharedDir(t)
	trusted := copyTestBinary(t, dir, "trusted")
	mine := copyTestBinary(t, dir, "mine")
	sock, accepted, logs := raceServer(t, dir, snapshotFor(t, toolsSel(), selector.Selector{Type: selector.UnixPath, Value: trusted}))
	drop := []string{setpriv, "--reuid=65534", "--regid=65534", "--groups=" + strconv.Itoa(toolsGID)}

	// A mount namespace of its own, the real file: served.
	legit := exec.Command(unshare, append([]string{"-m", "--propagation", "private"}, append(drop, trusted)...)...)
	legit.Env = connectorEnv(sock)
	if out := runConnectorCmd(t, legit, accepted, "speak"); !strings.HasPrefix(out, "granted spiffe://example.org/me") {
		t.Fatalf("the real binary, run in a mount namespace of its own, was not served: %q", out)
	}
	// Another file mounted over the path there: refused.
	script := `mount --bind "$1" "$2" && exec ` + strings.Join(drop, " ") + ` "$2"`
	attack := exec.Command(unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh", mine, trusted)
	attack.Env = connectorEnv(sock)
	out := runConnectorCmd(t, attack, accepted, "speak")
	if !strings.HasPrefix(out, "refused PermissionDenied") {
		t.Fatalf("a binary mounted over the entry's path in another mount namespace got: %q", out)
	}
	if want := "unix:path:" + trusted + " not attested: the caller's executable is named so but is not the file at that path in the agent's view"; !strings.Contains(logs.String(), want) {
		t.Fatalf("the agent's log does not say %q:\n%s", want, logs)
	}
}

// A binary replaced on disk after the process started (same path, a new
// file): the process still runs the old file, which the path no longer
// names, so a path entry does not match until it restarts. An entry on
// its uid or gid alone still serves it: an upgrade in place is no exec,
// and must not cut a running service off its SVID renewals.
func TestAttestationPathReplacedAfterExec(t *testing.T) {
	needNamespaces(t)
	dir := sharedDir(t)
	trusted := copyTestBinary(t, dir, "trusted")
	byPath := snapshotFor(t, toolsSel(), selector.Selector{Type: selector.UnixPath, Value: trusted})
	out, logs := replaceThenSpeak(t, dir, trusted, byPath)
	if !strings.HasPrefix(out, "refused PermissionDenied") {
		t.Fatalf("a process whose binary was replaced on disk since it started got: %q", out)
	}
	if want := "unix:path:" + trusted + " not attested: the caller's executable is named so but is not the file at that path"; !strings.Contains(logs, want) {
		t.Fatalf("the agent's log does not say %q:\n%s", want, logs)
	}
	if out, logs := replaceThenSpeak(t, dir, trusted, snapshotFor(t, toolsSel())); !strings.HasPrefix(out, "granted spiffe://example.org/me") {
		t.Fatalf("a process whose binary was upgraded on disk lost its group entry: %q\n%s", out, logs)
	}
}

// replaceThenSpeak starts bin in group tools, lets it connect, renames a
// new copy over bin (as package managers upgrade), then lets it ask.
func replaceThenSpeak(t *testing.T, dir, bin string, snap *Snapshot) (out, logs string) {
	t.Helper()
	sock, accepted, log := raceServer(t, dir, snap)
	cmd := asTools(exec.Command(bin))
	cmd.Env = connectorEnv(sock)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	if line, _ := r.ReadString('\n'); strings.TrimSpace(line) != "connected" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not connect: %q", line)
	}
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the server did not accept the helper's connection")
	}
	next := copyTestBinary(t, dir, filepath.Base(bin)+".new")
	if err := os.Rename(next, bin); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "speak\n")
	rest, _ := io.ReadAll(r)
	cmd.Wait()
	return strings.TrimSpace(string(rest)), log.String()
}

// Worse than a bind mount, and beyond the red team's report: root in a
// user namespace of her own, an unprivileged user holds
// CAP_CHECKPOINT_RESTORE there and points her process's /proc/PID/exe at
// the real binary (prctl PR_SET_MM_MAP) while it runs her code. Device,
// inode and content are then the real file's: no check of the executable
// can tell, so a caller in another user namespace than the agent's gets
// no path or hash selector at all (its uid and gid still count).
func TestAttestationRefusesExeRewrittenInUserNamespace(t *testing.T) {
	unshare := needNamespaces(t)
	dir := sharedDir(t)
	exeswap, loader := buildExeswap(t, dir)
	trusted := copyTestBinary(t, dir, "trusted")
	mine := copyTestBinary(t, dir, "mine")
	sum := fileSHA256(t, trusted)
	byPath := snapshotFor(t, toolsSel(), selector.Selector{Type: selector.UnixPath, Value: trusted})
	byHash := snapshotFor(t, toolsSel(), selector.Selector{Type: selector.UnixSHA256, Value: sum})

	for _, tc := range []struct {
		name string
		snap *Snapshot
	}{{"path", byPath}, {"sha256", byHash}} {
		t.Run(tc.name, func(t *testing.T) {
			sock, accepted, logs := raceServer(t, dir, tc.snap)
			legit := asTools(exec.Command(trusted))
			legit.Env = connectorEnv(sock)
			if out := runConnectorCmd(t, legit, accepted, "speak"); !strings.HasPrefix(out, "granted spiffe://example.org/me") {
				t.Fatalf("the real binary was not served: %q", out)
			}
			attack := asTools(exec.Command(unshare, "-Ur", loader, exeswap, trusted, sock, mine))
			attack.Env = helperEnv()
			out := runExeswap(t, attack, accepted)
			if !strings.HasPrefix(out, "refused PermissionDenied") {
				t.Fatalf("a process that pointed its /proc/PID/exe at %s from a user namespace of its own got: %q", trusted, out)
			}
			if want := "where it may point its /proc/PID/exe at any file (prctl PR_SET_MM_MAP)"; !strings.Contains(logs.String(), want) {
				t.Fatalf("the agent's log does not say %q:\n%s", want, logs)
			}
		})
	}

	// The rule's cost, and its limit: the real binary in another user
	// namespace (a rootless container) gets no path selector either, but
	// an entry on its uid and gid alone still serves it.
	t.Run("rootless container", func(t *testing.T) {
		sock, accepted, _ := raceServer(t, dir, byPath)
		c := asTools(exec.Command(unshare, "-Ur", trusted))
		c.Env = connectorEnv(sock)
		if out := runConnectorCmd(t, c, accepted, "speak"); !strings.HasPrefix(out, "refused PermissionDenied") {
			t.Fatalf("a caller in another user namespace matched a path selector: %q", out)
		}
		sock, accepted, _ = raceServer(t, dir, snapshotFor(t, toolsSel()))
		c = asTools(exec.Command(unshare, "-Ur", trusted))
		c.Env = connectorEnv(sock)
		if out := runConnectorCmd(t, c, accepted, "speak"); !strings.HasPrefix(out, "granted spiffe://example.org/me") {
			t.Fatalf("a caller in another user namespace was refused an entry on its group alone: %q", out)
		}
	})
}

// buildExeswap compiles testdata/exeswap.c into dir and returns it with
// the dynamic loader it names (PT_INTERP), which runs it.
func buildExeswap(t *testing.T, dir string) (bin, loader string) {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc is needed to build the PR_SET_MM_MAP attack (testdata/exeswap.c)")
	}
	src, err := filepath.Abs("testdata/exeswap.c")
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "exeswap")
	if out, err := exec.Command(cc, "-O2", "-Wall", "-Wl,-z,now", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("building exeswap: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				t.Fatal(err)
			}
			return bin, strings.TrimRight(string(b), "\x00")
		}
	}
	t.Fatal("exeswap has no PT_INTERP: not dynamically linked")
	return "", ""
}

// runExeswap is runConnectorCmd for exeswap, which skips the test on a
// kernel that refuses PR_SET_MM_MAP (built without checkpoint/restore).
func runExeswap(t *testing.T, cmd *exec.Cmd, accepted <-chan struct{}) string {
	t.Helper()
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	line, _ := r.ReadString('\n')
	switch strings.TrimSpace(line) {
	case "connected":
	case "prctl PR_SET_MM_MAP failed":
		cmd.Wait()
		t.Skip("this kernel refuses PR_SET_MM_MAP to a user namespace's root: the attack cannot run here")
	default:
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("exeswap did not connect: %q", line)
	}
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the server did not accept exeswap's connection")
	}
	io.WriteString(stdin, "go\n")
	rest, _ := io.ReadAll(r)
	cmd.Wait()
	return strings.TrimSpace(string(rest))
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// recordingInspector notes whether the executable it was shown could be
// opened, and lets every identity through.
type recordingInspector struct {
	mu     sync.Mutex
	opened []bool
}

func (r *recordingInspector) Inspect(_ context.Context, exe Executable, ids []Identity) ([]Identity, []Refusal) {
	f, err := exe.Open()
	if err == nil {
		f.Close()
	}
	r.mu.Lock()
	r.opened = append(r.opened, err == nil)
	r.mu.Unlock()
	return ids, nil
}

// The scan gate and the inventory read the caller's executable through
// /proc/PID/exe; in a user namespace of its own a process can point that at
// a clean binary while it runs a vulnerable one (PR_SET_MM_MAP). Such a
// caller's executable is not inspected at all: the gate then fails closed.
func TestInspectorNotShownExecutableFromAnotherUserNamespace(t *testing.T) {
	unshare := needNamespaces(t)
	dir := sharedDir(t)
	bin := copyTestBinary(t, dir, "svc")
	sock := filepath.Join(dir, "sock", "api.sock")
	ln, err := Listen(sock, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	sig := &acceptSignal{Listener: ln, accepted: make(chan struct{}, 1)}
	ins := &recordingInspector{}
	srv := NewServer(&staticSource{snap: snapshotFor(t, toolsSel()), changed: make(chan struct{})}, Attestor{}, slog.New(slog.DiscardHandler), nil)
	srv.SetInspector(ins)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, sig); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	legit := asTools(exec.Command(bin))
	legit.Env = connectorEnv(sock)
	runConnectorCmd(t, legit, sig.accepted, "speak")
	attack := asTools(exec.Command(unshare, "-Ur", bin))
	attack.Env = connectorEnv(sock)
	runConnectorCmd(t, attack, sig.accepted, "speak")

	ins.mu.Lock()
	defer ins.mu.Unlock()
	if len(ins.opened) != 2 || !ins.opened[0] || ins.opened[1] {
		t.Fatalf("executable opened for [same namespace, own user namespace] = %v, want [true false]", ins.opened)
	}
}

package workload

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/kubelet"
	"github.com/rampartsec/rampart/internal/selector"
)

// cgroupRoot returns a cgroup hierarchy this test may create cgroups in
// and move processes into (the unified one, or v1's name=systemd, whose
// paths the attestor reads), or skips: it needs root.
func cgroupRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("moving a process into a cgroup needs root")
	}
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/systemd"} {
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err == nil {
			return dir
		}
	}
	t.Skip("no writable cgroup hierarchy (unified or name=systemd) at /sys/fs/cgroup")
	return ""
}

// inCgroup creates the cgroup path under root and removes it when the
// test ends (its processes have exited by then).
func inCgroup(t *testing.T, root, path string) string {
	t.Helper()
	dir := filepath.Join(root, path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Innermost first; stop at the hierarchy's root.
		for d := dir; d != root && strings.HasPrefix(d, root); d = filepath.Dir(d) {
			if os.Remove(d) != nil {
				break
			}
		}
	})
	return dir
}

// attestServer serves snap with att, logging into the returned buffer.
func attestServer(t *testing.T, dir string, snap *Snapshot, att Attestor) (string, <-chan struct{}, *syncBuf) {
	t.Helper()
	sock := filepath.Join(dir, "sock", "api.sock")
	ln, err := Listen(sock, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	sig := &acceptSignal{Listener: ln, accepted: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	logs := &syncBuf{}
	go func() {
		NewServer(&staticSource{snap: snap, changed: make(chan struct{})}, att, slog.New(slog.NewTextHandler(logs, nil)), nil).Serve(ctx, sig)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return sock, sig.accepted, logs
}

// speakFromCgroup starts a helper that connects, moves it into cgroup
// dir, then has it ask for an SVID; it returns the helper's answer.
func speakFromCgroup(t *testing.T, sock string, accepted <-chan struct{}, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = connectorEnv(sock)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	r := bufio.NewReader(stdout)
	if line, _ := r.ReadString('\n'); strings.TrimSpace(line) != "connected" {
		cmd.Process.Kill()
		t.Fatalf("helper did not connect: %q", line)
	}
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the server did not accept the helper's connection")
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		cmd.Process.Kill()
		t.Fatalf("move the helper into %s: %v", dir, err)
	}
	io.WriteString(stdin, "speak\n")
	rest, _ := io.ReadAll(r)
	return strings.TrimSpace(string(rest))
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// A systemd unit and a container are read from the caller's real cgroup;
// the same names in a user's delegated subtree (where she may create any
// cgroup, "x.service" and "docker-<id>.scope" included) count for nothing.
func TestCgroupSelectors(t *testing.T) {
	root := cgroupRoot(t)
	unit := "rampart-test-" + randHex(t, 4) + ".service"
	cid := randHex(t, 32)
	uid := selector.Selector{Type: selector.UnixUID, Value: strconv.Itoa(os.Getuid())}
	for _, tc := range []struct {
		name, cgroup string
		entry        []selector.Selector
		granted      bool
		log          string
	}{
		{"systemd unit", "system.slice/" + unit, []selector.Selector{uid, {Type: selector.SystemdUnit, Value: unit}}, true, ""},
		{"docker container", "system.slice/docker-" + cid + ".scope", []selector.Selector{uid,
			{Type: selector.ContainerID, Value: cid}, {Type: selector.ContainerRuntime, Value: "docker"}}, true, ""},
		{"another unit", "system.slice/other-" + unit, []selector.Selector{uid, {Type: selector.SystemdUnit, Value: unit}}, false, ""},
		// Attack: a local user names a cgroup of her delegated subtree
		// after the unit (or container) an entry wants.
		{"unit forged under user@.service", "user.slice/user-4242.slice/user@4242.service/app.slice/" + unit,
			[]selector.Selector{uid, {Type: selector.SystemdUnit, Value: unit}}, false, "delegated to a user"},
		{"container forged under user@.service", "user.slice/user-4242.slice/user@4242.service/docker-" + cid + ".scope",
			[]selector.Selector{uid, {Type: selector.ContainerID, Value: cid}}, false, "delegated to a user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := sharedDir(t)
			sock, accepted, logs := attestServer(t, dir, snapshotFor(t, tc.entry...), Attestor{})
			out := speakFromCgroup(t, sock, accepted, inCgroup(t, root, tc.cgroup))
			if got := strings.HasPrefix(out, "granted spiffe://example.org/me"); got != tc.granted {
				t.Fatalf("from %s: %q (want granted=%v)\n%s", tc.cgroup, out, tc.granted, logs)
			}
			if tc.log != "" && !strings.Contains(logs.String(), tc.log) {
				t.Fatalf("the agent's log does not say %q:\n%s", tc.log, logs)
			}
		})
	}
}

// A pod's container is named by its cgroup; the kubelet (serving the
// recorded /pods answer over TLS) says which namespace and service
// account it runs as.
func TestKubernetesSelectors(t *testing.T) {
	root := cgroupRoot(t)
	const (
		podUID    = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"
		container = "c0ffee0000000000000000000000000000000000000000000000000000a1b2c3"
		token     = "kubelet-test-token"
	)
	body, err := os.ReadFile("../kubelet/testdata/pods.json")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1 || r.URL.Path != "/pods" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	tmp := t.TempDir()
	caFile, tokFile := filepath.Join(tmp, "ca.pem"), filepath.Join(tmp, "token")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	os.WriteFile(tokFile, []byte(token), 0o600)
	kc, err := kubelet.New(kubelet.Config{URL: srv.URL, CAFile: caFile, TokenFile: tokFile})
	if err != nil {
		t.Fatal(err)
	}
	uid := selector.Selector{Type: selector.UnixUID, Value: strconv.Itoa(os.Getuid())}
	podPath := "kubepods/besteffort/pod" + podUID + "/" + container
	for _, tc := range []struct {
		name, cgroup string
		entry        []selector.Selector
		kubelet      bool
		granted      bool
		log          string
	}{
		{"namespace and service account", podPath, []selector.Selector{uid, {Type: selector.K8sNamespace, Value: "shop"}, {Type: selector.K8sSA, Value: "orders"},
			{Type: selector.K8sContainerName, Value: "app"}, {Type: selector.K8sPodLabel, Value: "app:orders"}, {Type: selector.K8sPodUID, Value: podUID}}, true, true, ""},
		{"another service account", podPath, []selector.Selector{uid, {Type: selector.K8sSA, Value: "billing"}}, true, false, ""},
		{"kubelet not configured", podPath, []selector.Selector{uid, {Type: selector.K8sSA, Value: "orders"}}, false, false, "rampart agent --k8s"},
		// Attack: a container of another pod, whose cgroup path names
		// the orders pod's UID (or a container the pod does not have).
		{"container not in the pod", "kubepods/besteffort/pod" + podUID + "/" + randHex(t, 32),
			[]selector.Selector{uid, {Type: selector.K8sSA, Value: "orders"}}, true, false, "has no container"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			att := Attestor{}
			if tc.kubelet {
				att.Kubelet = kc
			}
			dir := sharedDir(t)
			sock, accepted, logs := attestServer(t, dir, snapshotFor(t, tc.entry...), att)
			out := speakFromCgroup(t, sock, accepted, inCgroup(t, root, tc.cgroup))
			if got := strings.HasPrefix(out, "granted spiffe://example.org/me"); got != tc.granted {
				t.Fatalf("%q (want granted=%v)\n%s", out, tc.granted, logs)
			}
			if tc.log != "" && !strings.Contains(logs.String(), tc.log) {
				t.Fatalf("the agent's log does not say %q:\n%s", tc.log, logs)
			}
		})
	}
}

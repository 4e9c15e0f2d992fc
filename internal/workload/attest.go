package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rampartsec/rampart/internal/cgroup"
	"github.com/rampartsec/rampart/internal/kubelet"
	"github.com/rampartsec/rampart/internal/selector"
)

// Attestor turns a caller into selectors by reading /proc.
type Attestor struct {
	// ProcDir is the proc file system; "/proc" when empty.
	ProcDir string
	// Kubelet, when set, answers the k8s:* selectors of a caller whose
	// cgroup names a pod's container (opt in: rampart agent --k8s).
	Kubelet PodFinder
}

// PodFinder finds a container's pod; *kubelet.Client is one.
type PodFinder interface {
	Container(ctx context.Context, podUID, containerID string) (kubelet.Pod, string, error)
}

func (a Attestor) procDir() string {
	if a.ProcDir == "" {
		return "/proc"
	}
	return a.ProcDir
}

// errClosed says the caller's connection is closed: a client that took
// its answer and left while its stream was woken by a change. Nobody is
// refused; nothing is logged or audited.
var errClosed = errors.New("workload: the connection is closed")

// errChanged says the caller is not what it was when it connected.
var errChanged = errors.New("the caller changed since it connected")

// Attestation is what the agent could prove about a caller.
type Attestation struct {
	Selectors selector.Set
	// NotAttested says why a unix:path or unix:sha256 selector that an
	// entry fitting the caller's uid and gid asks for was not attested
	// although the caller's executable looked like it (a path naming
	// another file in the agent's view, a caller in another user
	// namespace). The server logs it: it is what a spoofing attempt
	// looks like.
	NotAttested []string
}

// Attest returns what can be proven about the caller against entries:
// uid and gid from the kernel at connect (SO_PEERCRED), supplementary
// groups, and, for the entries those fit, their unix:path selectors that
// name the caller's executable and its SHA-256 (hashing a binary is not
// free, so it is done only when such an entry asks for it).
//
// A unix:path selector names a file in the agent's view: it is attested
// only if stat(path), in the agent's own mount namespace, leads to the
// very file the caller runs (same device and inode as its /proc/PID/exe,
// pinned at accept). The name /proc/PID/exe shows proves nothing: in a
// mount namespace of its own a process can bind-mount any binary over
// that path, and a binary replaced on disk since it started is no longer
// the file the path names.
//
// Neither a path nor a hash is attested for a caller in another user
// namespace than the agent's: there an unprivileged process holds every
// capability over its own namespace, CAP_CHECKPOINT_RESTORE among them,
// with which it can point its /proc/PID/exe at any file it can open
// (prctl PR_SET_MM_MAP, exe_fd) while running code of its own. Its uid
// and gid, which the kernel maps into the agent's namespace, still count.
//
// Everything read from /proc is read through the directory pinned at
// accept, between two checks that the process is still the one that
// connected (alive, same start time). A caller that has exited, changed
// its effective uid or gid, runs another executable than at accept, or
// entered another user namespace is refused with an error saying which:
// nothing is guessed.
//
// The cgroup selectors (systemd:unit, container:id, container:runtime) and
// the kubelet's (k8s:*) are read only when an entry asks for one, from
// /proc/PID/cgroup through the same pinned directory and inside the same
// pair of checks (package cgroup says what a path proves and what it
// does not).
//
// entriesFor returns the selectors of the entries a caller with the
// given unix:uid and unix:gid selectors may match (the snapshot's owner
// index); Attest calls it once, with the caller's uid and groups.
func (a Attestor) Attest(ctx context.Context, p *process, entriesFor func(owner selector.Set) [][]selector.Selector) (Attestation, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.err != nil {
		return Attestation{}, p.err
	}
	if p.closed {
		return Attestation{}, errClosed
	}
	if err := p.aliveLocked(); err != nil {
		return Attestation{}, err
	}
	before, err := p.checkStartLocked()
	if err != nil {
		return Attestation{}, err
	}
	set := selector.NewSet(
		selector.Selector{Type: selector.UnixUID, Value: strconv.FormatUint(uint64(p.UID), 10)},
		selector.Selector{Type: selector.UnixGID, Value: strconv.FormatUint(uint64(p.GID), 10)},
	)
	b, err := p.readLocked("status")
	if err != nil {
		return Attestation{}, fmt.Errorf("workload: pid %d: %w (%v)", p.PID, errGone, err)
	}
	status, err := parseStatus(b)
	if err != nil {
		return Attestation{}, fmt.Errorf("workload: pid %d: %w", p.PID, err)
	}
	if status.euid != p.UID || status.egid != p.GID {
		return Attestation{}, fmt.Errorf("workload: pid %d: %w: it connected as uid %d gid %d and now runs as uid %d gid %d",
			p.PID, errChanged, p.UID, p.GID, status.euid, status.egid)
	}
	for _, g := range status.groups {
		set[selector.Selector{Type: selector.UnixGID, Value: g}] = struct{}{}
	}
	// The entries the caller's uid and groups may match: only they say
	// which program, cgroup and kubelet selectors are worth reading.
	entries := entriesFor(set)
	exe, err := p.exeLocked()
	if err != nil {
		exe = exeID{}
	}
	// The same file, not the same name: the name changes when the file is
	// renamed or replaced on disk (" (deleted)"), which is no exec.
	if !exe.sameFile(p.exe) {
		return Attestation{}, fmt.Errorf("workload: pid %d: %w: it ran %s when it connected and runs %s now", p.PID, errChanged, p.exe, exe)
	}
	ns := p.namespacesLocked()
	if p.ns.user.known() && ns.user != p.ns.user {
		return Attestation{}, fmt.Errorf("workload: pid %d: %w: it connected in user namespace %s and is now in %s", p.PID, errChanged, p.ns.user, ns.user)
	}
	att := Attestation{Selectors: set}
	paths, hash := programSelectorsWanted(set, entries)
	if exe.path != "" && (len(paths) > 0 || hash) {
		if own := a.userNamespace(); !ns.user.known() || ns.user != own {
			if namedLike(exe.path, paths) || hash {
				att.NotAttested = append(att.NotAttested, fmt.Sprintf(
					"unix:path and unix:sha256 not attested: the caller runs in user namespace %s, not the agent's %s, where it may point its /proc/PID/exe at any file (prctl PR_SET_MM_MAP)",
					ns.user, own))
			}
		} else {
			for _, path := range paths {
				ok, why := sameFile(path, exe)
				if ok {
					set[selector.Selector{Type: selector.UnixPath, Value: path}] = struct{}{}
				} else if namedLike(exe.path, []string{path}) {
					att.NotAttested = append(att.NotAttested, fmt.Sprintf(
						"unix:path:%s not attested: the caller's executable is named so but is not the file at that path in the agent's view (%s; the caller's mount namespace %s): a bind mount in another mount namespace, or the file replaced since the process started",
						path, why, ns.mnt))
				}
			}
			if hash {
				// Hash through /proc/PID/exe, not a path: what runs.
				sum, err := p.hashExeLocked()
				if err != nil {
					return Attestation{}, err
				}
				set[selector.Selector{Type: selector.UnixSHA256, Value: sum}] = struct{}{}
			}
		}
	}
	if wantsCgroup(entries) {
		if err := a.cgroupSelectors(ctx, p, entries, &att); err != nil {
			return Attestation{}, err
		}
	}
	after, err := p.checkStartLocked()
	if err != nil {
		return Attestation{}, err
	}
	if after != before {
		return Attestation{}, fmt.Errorf("workload: pid %d: %w", p.PID, errGone)
	}
	if err := p.aliveLocked(); err != nil {
		return Attestation{}, err
	}
	return att, nil
}

// programSelectorsWanted returns the unix:path values, and whether a
// unix:sha256, asked for by the entries whose uid and gid selectors the
// caller has: the others cannot match whatever its executable, so the
// agent neither stats their paths nor hashes for them.
func programSelectorsWanted(owner selector.Set, entries [][]selector.Selector) (paths []string, hash bool) {
	for _, e := range entries {
		fits := true
		for _, s := range e {
			if (s.Type == selector.UnixUID || s.Type == selector.UnixGID) && !owner.Has(s) {
				fits = false
				break
			}
		}
		if !fits {
			continue
		}
		for _, s := range e {
			switch s.Type {
			case selector.UnixPath:
				if !slices.Contains(paths, s.Value) {
					paths = append(paths, s.Value)
				}
			case selector.UnixSHA256:
				hash = true
			}
		}
	}
	return paths, hash
}

// namedLike reports whether the name /proc/PID/exe shows is one of paths
// (or was, before the file was deleted): the caller looks like the
// program an entry names.
func namedLike(exePath string, paths []string) bool {
	name := strings.TrimSuffix(exePath, " (deleted)")
	return slices.Contains(paths, name)
}

// sameFile reports whether path, resolved in the agent's own mount
// namespace (symbolic links followed), is the file exe identifies, and if
// not, why.
func sameFile(path string, exe exeID) (bool, string) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false, "stat: " + err.Error()
	}
	if st.Dev == exe.dev && st.Ino == exe.ino {
		return true, ""
	}
	return false, fmt.Sprintf("the path is device %d inode %d, the caller runs device %d inode %d", st.Dev, st.Ino, exe.dev, exe.ino)
}

// userNamespace is the agent's own user namespace; unknown if its link
// cannot be read, and then no caller is taken to share it.
func (a Attestor) userNamespace() nsID {
	var st unix.Stat_t
	if err := unix.Stat(a.procDir()+"/self/ns/user", &st); err != nil {
		return nsID{}
	}
	return nsID{dev: st.Dev, ino: st.Ino}
}

// checkStartLocked reads the start time and compares it with the one at
// accept: a different one is another process under the same PID.
func (p *process) checkStartLocked() (uint64, error) {
	st, err := p.statLocked()
	if err != nil {
		return 0, err
	}
	if st.start != p.start {
		return 0, fmt.Errorf("workload: pid %d: %w (start time %d, was %d)", p.PID, errGone, st.start, p.start)
	}
	return st.start, nil
}

func (p *process) hashExeLocked() (string, error) {
	f, err := p.openExeLocked()
	if err != nil {
		return "", fmt.Errorf("workload: pid %d: hash executable: %w", p.PID, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("workload: pid %d: hash executable: %w", p.PID, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// cgroupTypes are the selector types read from the caller's cgroup (and,
// for k8s:*, then from the kubelet).
var cgroupTypes = []string{selector.SystemdUnit, selector.ContainerID, selector.ContainerRuntime}

// k8sTypes are the selector types the kubelet answers.
var k8sTypes = []string{selector.K8sNamespace, selector.K8sSA, selector.K8sPodUID, selector.K8sPodName,
	selector.K8sContainerName, selector.K8sNodeName, selector.K8sPodLabel}

func wantsCgroup(entries [][]selector.Selector) bool {
	for _, t := range append(slices.Clone(cgroupTypes), k8sTypes...) {
		if selector.Needs(entries, t) {
			return true
		}
	}
	return false
}

// cgroupSelectors adds what the caller's cgroup (and, for a pod's
// container, the kubelet) says about it. A cgroup the agent cannot read
// means the process is gone; one that says nothing certain (hierarchies
// in conflict, a user-delegated subtree, a pod the kubelet does not list)
// adds nothing and says why in att.NotAttested.
func (a Attestor) cgroupSelectors(ctx context.Context, p *process, entries [][]selector.Selector, att *Attestation) error {
	b, err := p.readLocked("cgroup")
	if err != nil {
		return fmt.Errorf("workload: pid %d: %w (%v)", p.PID, errGone, err)
	}
	in, err := cgroup.Parse(b)
	if err != nil {
		att.NotAttested = append(att.NotAttested, "cgroup selectors not attested: "+err.Error())
		return nil
	}
	if in.Delegated {
		att.NotAttested = append(att.NotAttested, fmt.Sprintf(
			"cgroup selectors not attested: the caller's cgroup %q lies in a subtree delegated to a user (user@UID.service), who names its cgroups at will", in.Paths))
		return nil
	}
	add := func(t, v string) {
		s := selector.Selector{Type: t, Value: v}
		if s.Validate() == nil {
			att.Selectors[s] = struct{}{}
		}
	}
	if in.Unit != "" {
		add(selector.SystemdUnit, in.Unit)
	}
	if in.ContainerID != "" {
		add(selector.ContainerID, in.ContainerID)
		add(selector.ContainerRuntime, in.Runtime)
	}
	wantK8s := false
	for _, t := range k8sTypes {
		wantK8s = wantK8s || selector.Needs(entries, t)
	}
	if !wantK8s || in.PodUID == "" {
		return nil
	}
	if a.Kubelet == nil {
		att.NotAttested = append(att.NotAttested, "k8s selectors not attested: the caller runs in pod "+in.PodUID+" but the agent does not ask the kubelet (rampart agent --k8s)")
		return nil
	}
	pod, name, err := a.Kubelet.Container(ctx, in.PodUID, in.ContainerID)
	if err != nil {
		att.NotAttested = append(att.NotAttested, "k8s selectors not attested: "+err.Error())
		return nil
	}
	add(selector.K8sPodUID, pod.UID)
	add(selector.K8sNamespace, pod.Namespace)
	add(selector.K8sSA, pod.ServiceAccount)
	add(selector.K8sPodName, pod.Name)
	add(selector.K8sNodeName, pod.NodeName)
	add(selector.K8sContainerName, name)
	for k, v := range pod.Labels {
		add(selector.K8sPodLabel, k+":"+v)
	}
	return nil
}

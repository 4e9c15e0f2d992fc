package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Runtimes, as Info.Runtime names them.
const (
	Docker     = "docker"
	Podman     = "podman"
	Containerd = "containerd"
	CRIO       = "cri-o"
	// Kubernetes is the runtime of a container found under a pod's cgroup
	// by the cgroupfs driver, whose path does not name the runtime.
	Kubernetes = "kubernetes"
)

// maxInput bounds what Parse reads: a process has at most a few dozen
// hierarchies, each path at most a few kilobytes.
const maxInput = 64 << 10

// Info is what a process's cgroup paths say about it. The zero value
// says nothing (a process in no unit, container or pod the agent knows).
type Info struct {
	// Paths are the cgroup paths read, one per distinct path.
	Paths []string
	// Unit is the systemd system unit ("nginx.service") running the
	// process: the outermost *.service segment, outside any delegated
	// user subtree.
	Unit string
	// ContainerID is the container's 64 lower-case hex digits; Runtime
	// names who made it (Docker, Podman, Containerd, CRIO, Kubernetes).
	ContainerID, Runtime string
	// PodUID is the Kubernetes pod's UID (dashed form, as the API shows
	// it), when the container runs in a pod.
	PodUID string
	// Delegated says the process sits in a subtree delegated to a user
	// (user@UID.service): its path is the user's to choose, so nothing
	// above was read from it.
	Delegated bool
}

// ErrConflict is returned (wrapped) when two hierarchies of one process
// name different units, containers or pods.
var ErrConflict = errors.New("cgroup: the hierarchies disagree")

// Parse parses the contents of /proc/PID/cgroup.
func Parse(b []byte) (Info, error) {
	if len(b) > maxInput {
		return Info{}, fmt.Errorf("cgroup: %d bytes, more than the %d a cgroup file holds", len(b), maxInput)
	}
	type line struct {
		n       int
		unified bool
		path    string
	}
	var lines []line
	v1 := false
	for n, l := range bytes.Split(b, []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		// hierarchy-ID:controller-list:path; the path may hold ':'.
		parts := bytes.SplitN(l, []byte(":"), 3)
		if len(parts) != 3 {
			return Info{}, fmt.Errorf("cgroup: line %d: want hierarchy-ID:controllers:path", n+1)
		}
		unified := string(parts[0]) == "0" && len(parts[1]) == 0
		v1 = v1 || !unified
		lines = append(lines, line{n + 1, unified, string(parts[2])})
	}
	var out Info
	seen := map[string]bool{}
	for _, l := range lines {
		// In hybrid mode (v1 hierarchies beside the unified one) the
		// unified hierarchy is systemd's alone, and nests the container
		// runtime's cgroups differently (kind: the node container's
		// containerd.service): the v1 hierarchies say where the process is.
		// Its delegation still counts: a path the user chose anywhere
		// taints them all.
		n, path := l.n, l.path
		if v1 && l.unified {
			if in, err := ParsePath(path); err != nil || in.Delegated {
				out.Delegated = true
			}
			continue
		}
		if seen[path] {
			continue
		}
		seen[path] = true
		in, err := ParsePath(path)
		if err != nil {
			return Info{}, fmt.Errorf("cgroup: line %d: %w", n, err)
		}
		if err := out.merge(in); err != nil {
			return Info{}, err
		}
	}
	if len(out.Paths) == 0 && !out.Delegated {
		return Info{}, errors.New("cgroup: no cgroup line")
	}
	if out.Delegated {
		out.Unit, out.ContainerID, out.Runtime, out.PodUID = "", "", "", ""
	}
	return out, nil
}

// merge adds what another hierarchy's path says; two different non-empty
// answers are a conflict.
func (i *Info) merge(o Info) error {
	i.Paths = append(i.Paths, o.Paths...)
	i.Delegated = i.Delegated || o.Delegated
	for _, f := range []struct {
		name     string
		dst, src *string
	}{{"unit", &i.Unit, &o.Unit}, {"container", &i.ContainerID, &o.ContainerID}, {"runtime", &i.Runtime, &o.Runtime}, {"pod", &i.PodUID, &o.PodUID}} {
		switch {
		case *f.src == "":
		case *f.dst == "":
			*f.dst = *f.src
		case *f.dst != *f.src:
			return fmt.Errorf("%w: %s %q and %q", ErrConflict, f.name, *f.dst, *f.src)
		}
	}
	if i.Delegated {
		i.Unit, i.ContainerID, i.Runtime, i.PodUID = "", "", "", ""
	}
	return nil
}

var (
	hex64     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	unitRE    = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]{1,248}\.service$`)
	userMgrRE = regexp.MustCompile(`^user@[0-9]+\.service$`)
	// A pod UID: a UUID, or the 32 hex digits of a static pod's hash.
	podUIDRE = regexp.MustCompile(`^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$`)
	// scope prefixes naming a container's runtime (systemd driver).
	scopes = []struct{ prefix, runtime string }{
		{"cri-containerd-", Containerd},
		{"crio-", CRIO},
		{"docker-", Docker},
		{"libpod-", Podman},
	}
)

// ParsePath parses one cgroup path.
func ParsePath(path string) (Info, error) {
	if !strings.HasPrefix(path, "/") {
		return Info{}, fmt.Errorf("cgroup: path %q is not absolute", path)
	}
	out := Info{Paths: []string{path}}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	inKubepods := false
	for i, seg := range segs {
		switch {
		case seg == "..":
			return Info{}, fmt.Errorf("cgroup: path %q lies outside the agent's cgroup namespace", path)
		case userMgrRE.MatchString(seg):
			return Info{Paths: out.Paths, Delegated: true}, nil
		case strings.HasSuffix(seg, ".service"):
			if out.Unit == "" && unitRE.MatchString(seg) {
				out.Unit = seg
			}
		case seg == "kubepods" || seg == "kubepods.slice" || strings.HasSuffix(seg, "-kubepods.slice"):
			inKubepods = true
		case inKubepods && strings.HasPrefix(seg, "pod"):
			if uid, ok := podUID(seg); ok {
				out.PodUID = uid
			}
		case inKubepods && strings.HasSuffix(seg, ".slice"):
			// kubepods-burstable-pod<uid>.slice, kubepods-pod<uid>.slice,
			// kubelet-kubepods-besteffort-pod<uid>.slice (kind)
			name := strings.TrimSuffix(seg, ".slice")
			if j := strings.LastIndex(name, "-pod"); j >= 0 {
				if uid, ok := podUID(name[j+1:]); ok {
					out.PodUID = uid
				}
			}
		default:
			if id, rt, ok := containerSegment(seg, i > 0 && (segs[i-1] == "docker" || inKubepods)); ok {
				out.ContainerID, out.Runtime = id, rt
				if rt == "" {
					out.Runtime = Kubernetes
					if segs[i-1] == "docker" {
						out.Runtime = Docker
					}
				}
			}
		}
	}
	if out.ContainerID == "" {
		// A pod's own slice (its sandbox) is not a container of the pod.
		out.PodUID = ""
	}
	return out, nil
}

// podUID reads "pod<uid>", where the systemd driver writes the UID's
// dashes as underscores.
func podUID(seg string) (string, bool) {
	uid := strings.ReplaceAll(strings.TrimPrefix(seg, "pod"), "_", "-")
	return uid, podUIDRE.MatchString(uid)
}

// containerSegment reads a container ID from one path segment: a scope
// named for its runtime, or a bare ID where a parent says it is one.
func containerSegment(seg string, bareOK bool) (id, runtime string, ok bool) {
	if name, isScope := strings.CutSuffix(seg, ".scope"); isScope {
		for _, s := range scopes {
			rest, ok := strings.CutPrefix(name, s.prefix)
			if ok && hex64.MatchString(rest) {
				return rest, s.runtime, true
			}
		}
		return "", "", false
	}
	if rest, ok := strings.CutPrefix(seg, "libpod-"); ok && hex64.MatchString(rest) {
		return rest, Podman, true // podman's cgroupfs driver: /libpod_parent/libpod-<id>
	}
	if bareOK && hex64.MatchString(seg) {
		return seg, "", true
	}
	return "", "", false
}

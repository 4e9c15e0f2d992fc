package selector

import (
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Selector is one attested property of a workload, such as "unix:uid:1000".
// Type is the attestor and kind ("unix:uid"); Value is the property's value.
type Selector struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// Known selector types.
const (
	UnixUID    = "unix:uid"
	UnixGID    = "unix:gid"
	UnixPath   = "unix:path"
	UnixSHA256 = "unix:sha256"

	// From the caller's cgroup (package cgroup).
	SystemdUnit      = "systemd:unit"      // nginx.service
	ContainerID      = "container:id"      // 64 lower-case hex digits
	ContainerRuntime = "container:runtime" // docker, podman, containerd, cri-o, kubernetes

	// From the kubelet, for a container in a pod (package kubelet).
	K8sNamespace     = "k8s:ns"
	K8sSA            = "k8s:sa"
	K8sPodUID        = "k8s:pod-uid"
	K8sPodName       = "k8s:pod-name"
	K8sContainerName = "k8s:container-name"
	K8sNodeName      = "k8s:node-name"
	K8sPodLabel      = "k8s:pod-label" // KEY:VALUE
)

// types lists every known type; Parse tries them in this order, so no
// type may be a prefix of a later one followed by ':'.
var types = []string{UnixUID, UnixGID, UnixPath, UnixSHA256,
	SystemdUnit, ContainerID, ContainerRuntime,
	K8sNamespace, K8sSA, K8sPodUID, K8sPodName, K8sContainerName, K8sNodeName, K8sPodLabel}

var (
	unitRE     = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]{1,248}\.service$`)
	hex64RE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	runtimeRE  = regexp.MustCompile(`^(docker|podman|containerd|cri-o|kubernetes)$`)
	dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	dnsNameRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	podUIDRE   = regexp.MustCompile(`^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$`)
	labelKeyRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	labelValRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
)

// String returns the selector in its "type:value" form.
func (s Selector) String() string { return s.Type + ":" + s.Value }

// Parse parses a selector in "type:value" form, for example "unix:uid:1000",
// and checks that its value is well formed for its type.
func Parse(s string) (Selector, error) {
	for _, t := range types {
		if v, ok := strings.CutPrefix(s, t+":"); ok {
			sel := Selector{Type: t, Value: v}
			if err := sel.Validate(); err != nil {
				return Selector{}, err
			}
			return sel, nil
		}
	}
	return Selector{}, fmt.Errorf("selector: %q: unknown type (want unix:uid:N, unix:gid:N, unix:path:/abs/path, unix:sha256:HEX, systemd:unit:NAME.service, container:id:HEX, container:runtime:NAME or k8s:ns|sa|pod-uid|pod-name|container-name|node-name|pod-label:VALUE)", s)
}

// Validate checks that the selector's value is well formed for its type.
func (s Selector) Validate() error {
	switch s.Type {
	case UnixUID, UnixGID:
		n, err := strconv.ParseUint(s.Value, 10, 32)
		if err != nil || strconv.FormatUint(n, 10) != s.Value {
			return fmt.Errorf("selector: %q: value must be a decimal id without sign or leading zeros", s.String())
		}
	case UnixPath:
		if !filepath.IsAbs(s.Value) || filepath.Clean(s.Value) != s.Value {
			return fmt.Errorf("selector: %q: value must be an absolute, clean path", s.String())
		}
	case UnixSHA256:
		b, err := hex.DecodeString(s.Value)
		if err != nil || len(b) != 32 || strings.ToLower(s.Value) != s.Value {
			return fmt.Errorf("selector: %q: value must be 64 lower-case hex digits", s.String())
		}
	case SystemdUnit:
		if !unitRE.MatchString(s.Value) {
			return fmt.Errorf("selector: %q: value must be a systemd service name (NAME.service)", s.String())
		}
	case ContainerID:
		if !hex64RE.MatchString(s.Value) {
			return fmt.Errorf("selector: %q: value must be the full container ID, 64 lower-case hex digits", s.String())
		}
	case ContainerRuntime:
		if !runtimeRE.MatchString(s.Value) {
			return fmt.Errorf("selector: %q: value must be docker, podman, containerd, cri-o or kubernetes", s.String())
		}
	case K8sNamespace, K8sSA, K8sContainerName:
		if !dnsLabelRE.MatchString(s.Value) {
			return fmt.Errorf("selector: %q: value must be a DNS label (lower-case letters, digits, '-')", s.String())
		}
	case K8sPodName, K8sNodeName:
		if !dnsNameRE.MatchString(s.Value) {
			return fmt.Errorf("selector: %q: value must be a DNS subdomain name", s.String())
		}
	case K8sPodUID:
		if !podUIDRE.MatchString(s.Value) {
			return fmt.Errorf("selector: %q: value must be a pod UID (lower-case UUID)", s.String())
		}
	case K8sPodLabel:
		k, v, ok := strings.Cut(s.Value, ":")
		if !ok || !labelKeyRE.MatchString(k) || !labelValRE.MatchString(v) {
			return fmt.Errorf("selector: %q: value must be KEY:VALUE, a Kubernetes label", s.String())
		}
	default:
		return fmt.Errorf("selector: %q: unknown type %q", s.String(), s.Type)
	}
	return nil
}

// ParseAll parses a list of selectors, failing on the first bad one. The result
// is sorted and has no duplicates.
func ParseAll(ss []string) ([]Selector, error) {
	out := make([]Selector, 0, len(ss))
	for _, s := range ss {
		sel, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sel)
	}
	return Normalize(out), nil
}

// Normalize sorts selectors and removes duplicates, so equal sets compare equal.
func Normalize(ss []Selector) []Selector {
	out := slices.Clone(ss)
	slices.SortFunc(out, func(a, b Selector) int {
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.Value, b.Value)
	})
	return slices.Compact(out)
}

// ErrNoOwner is returned (wrapped) by CheckEntry for an entry that names a
// program (unix:path, unix:sha256) but not who runs it.
var ErrNoOwner = errors.New("an entry needs a unix:uid or unix:gid selector besides unix:path and unix:sha256")

// CheckEntry checks the rule every registration entry must follow: at least
// one selector, and at least one of them unix:uid or unix:gid. A path or a
// hash names a program, not who runs it: any local user can start a copy of
// a binary, or connect and then exec the one an entry names, so only the
// kernel's uid and gid (SO_PEERCRED, fixed at connect) tie an identity to
// an account. Entries stored before this rule are refused at attestation.
func CheckEntry(entry []Selector) error {
	if len(entry) == 0 {
		return errors.New("selector: an entry needs at least one selector (one without selectors would match no workload)")
	}
	for _, s := range entry {
		if s.Type == UnixUID || s.Type == UnixGID {
			return nil
		}
	}
	return fmt.Errorf("selector: %w: a path or a hash names a program, not who runs it, and any local user can run a copy of it (or connect, then exec it); add --selector unix:uid:N or unix:gid:N", ErrNoOwner)
}

// Set is the set of selectors attested for one workload.
type Set map[Selector]struct{}

// NewSet returns a set holding ss.
func NewSet(ss ...Selector) Set {
	set := make(Set, len(ss))
	for _, s := range ss {
		set[s] = struct{}{}
	}
	return set
}

// Has reports whether the set holds s.
func (set Set) Has(s Selector) bool {
	_, ok := set[s]
	return ok
}

// Matches reports whether the set satisfies an entry's selectors: every one
// of them must be present. An entry with no selectors matches nothing, so an
// empty entry can never hand out an identity to every caller.
func (set Set) Matches(entry []Selector) bool {
	if len(entry) == 0 {
		return false
	}
	for _, s := range entry {
		if !set.Has(s) {
			return false
		}
	}
	return true
}

// Needs reports whether any of the selectors has type t; attestors use it to
// skip costly work (hashing a binary) nobody asked for.
func Needs(entries [][]Selector, t string) bool {
	for _, e := range entries {
		for _, s := range e {
			if s.Type == t {
				return true
			}
		}
	}
	return false
}

// Package selector describes workloads by the properties an agent can attest.
//
// A selector is a type and a value, written "type:value", for example
// "unix:uid:1000" or "unix:path:/usr/bin/orders". Registration entries carry a
// set of selectors; a workload is entitled to an entry's SPIFFE ID when the
// workload's attested selectors include every selector of the entry (SPIRE's
// model: an entry's selectors are ANDed).
//
// Every entry must carry a unix:uid or unix:gid selector (CheckEntry): a
// path or a hash names a program, not who runs it, and the kernel's uid and
// gid are the only selectors fixed at connect time that a caller cannot
// change by exec'ing another binary.
//
// Besides the unix types (the caller's credentials and executable), the
// agent attests systemd:unit, container:id and container:runtime from the
// caller's cgroup (package cgroup), and the k8s:* types from the kubelet
// for a container in a pod (package kubelet); docs/attestation.md lists
// them with what each proves.
//
// Only the selector types this package knows are accepted; anything else is an
// error naming the selector, so a typo never creates an entry that silently
// matches nothing.
package selector

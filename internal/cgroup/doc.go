// Package cgroup reads what a process's control group says about it: the
// systemd unit that runs it, the container it runs in (and the runtime that
// made it), and the Kubernetes pod the container belongs to.
//
// The input is the text of /proc/PID/cgroup, read by the agent in its own
// cgroup namespace (paths are shown relative to the reader's namespace
// root). Each line is "hierarchy-ID:controllers:path"; cgroup v2 has the
// single line "0::/path", v1 one line per hierarchy. Every line is parsed
// and the answers must agree: a process whose v1 hierarchies name two
// containers is refused, not guessed about.
//
// What a path proves: moving a process into a cgroup needs write access to
// the target's cgroup.procs, which outside delegated subtrees only root
// has. Inside a subtree systemd delegates to a user (user@UID.service,
// where rootless podman puts its containers) the user creates and names
// cgroups at will, "docker-<id>.scope" and "x.service" included. So
// nothing is read from a path below a user@N.service segment: it is
// marked Delegated and carries no unit, container or pod. A path with a
// ".." segment lies outside the agent's cgroup namespace and is refused.
//
// Known path shapes (table-tested in cgroup_test.go):
//
//	/system.slice/nginx.service                                  systemd unit
//	/system.slice/docker-<64hex>.scope                           docker, systemd driver
//	/docker/<64hex>                                              docker, cgroupfs driver
//	/machine.slice/libpod-<64hex>.scope[/container]              podman (root)
//	/kubepods.slice/kubepods-burstable.slice/
//	  kubepods-burstable-pod<uid_with_underscores>.slice/
//	  cri-containerd-<64hex>.scope                               Kubernetes, containerd
//	  crio-<64hex>.scope                                         Kubernetes, CRI-O
//	  docker-<64hex>.scope                                       Kubernetes, dockershim/cri-dockerd
//	/kubepods/besteffort/pod<uid>/<64hex>                        Kubernetes, cgroupfs driver
//
// The conmon monitors podman and CRI-O start (libpod-conmon-<id>.scope,
// crio-conmon-<id>.scope) are not the container and get no container ID.
package cgroup

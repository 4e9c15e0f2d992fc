// Package kubelet asks the node's kubelet who a container is: the pod it
// belongs to (namespace, name, UID, service account, labels, node) and its
// name in the pod. The agent uses it for the k8s:* workload selectors once
// the caller's cgroup has named its pod UID and container ID (package
// cgroup).
//
// The kubelet is reached over HTTPS only (its read-only port is never
// used), its certificate checked against the CA file given (often the
// kubelet's self-signed /var/lib/kubelet/pki/kubelet.crt), TLS 1.3, and
// the agent authenticates with a bearer token read from a file at every
// request, so a projected service account token that the kubelet rotates
// keeps working. The token's service account needs the nodes/proxy (or
// nodes/pods) permission on its node, as SPIRE's k8s workload attestor
// does.
//
// What the kubelet says is taken as true: it is the node's authority on
// its pods. What ties a caller to a pod is its cgroup path; the container
// ID must then be one of the pod's container statuses (init and ephemeral
// containers included), so a pod UID with a container of another pod is
// refused.
package kubelet

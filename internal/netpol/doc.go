// Package netpol turns the policies into network rules: only a service's
// allowed callers can even open a TCP connection to its inbound proxy, and
// nothing but the proxy reaches the application behind it.
//
// # The view
//
// A View is built from two sources the server already has, and nothing
// written by hand:
//
//   - placements, reported by agents: this SPIFFE ID runs on this host
//     (the address its peers see) and its process listens on these TCP
//     ports (read by the agent from /proc for the process it handed the
//     SVID to, so a workload cannot claim a port it does not hold);
//   - the published policies: for each callee, which known services
//     policy.MayCall lets through (an edge caller → callee), and the
//     application's own ports (network.app_ports).
//
// What cannot be placed is reported, never dropped silently: a policy
// naming a caller that runs nowhere, a policy for a service that runs
// nowhere.
//
// # Renderers
//
// NFTables renders one host's table (nft -f syntax), Kubernetes renders
// NetworkPolicy objects, Cilium CiliumNetworkPolicy objects. Every output is
// deterministic (sorted, no timestamps) and names the policy versions it
// came from, so two renders diff cleanly and Check can compare a render
// with what is applied.
//
// The host table only governs the ports it names: the inbound proxy ports
// (accepted from the hosts that run an allowed caller, over loopback too
// when one runs on the host itself; dropped and counted from anywhere
// else) and the application ports (accepted from loopback only; dropped
// and counted otherwise). Established traffic is accepted, RELATED is not
// (a conntrack helper's expectation must pass the port rules). Where
// claims clash the table fails closed. Every other port of the host is left to
// whatever else manages the host's firewall: a table of ours that dropped
// SSH would be a surprise.
//
// # Enforcement
//
// Apply (Linux) installs a host's table through netlink in one
// transaction (a batch: delete our table, add it anew), so a change is
// atomic; Diff compares the kernel's table with one exactly; Remove
// deletes only our table. Package netpolapi is the server's side.
package netpol

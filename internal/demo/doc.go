// Package demo runs a small system secured by Rampart on loopback, and the
// attacks it stops. It is the README's main job ("rampart demo") and the
// project's end-to-end test bed; it grows as each capability lands.
//
// Everything lives in one data directory, created on the first run and
// reused after: the server's state (CA, store, admin token, bundle), the
// agent's cache, and the Workload API socket.
//
// Today it shows workload identity: a server, an agent attested with a
// one-time join token, registration entries, and a workload receiving its
// X.509-SVID through the SPIFFE Workload API. Each attack scenario reports
// what was tried, what stopped it (prevent), and, once those capabilities
// land, which alert fired (detect) and what the playbook did (respond).
package demo

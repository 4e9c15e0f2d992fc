// Package demo runs a small system secured by Rampart on loopback, and the
// attacks it stops. It is the README's main job ("rampart demo") and the
// project's end-to-end test bed; it grows as each capability lands.
//
// Everything lives in one data directory, created on the first run and
// reused after: the server's state (CA, store, admin token, bundle), the
// agent's cache, and the Workload API socket.
//
// Today it shows workload identity and the data plane: a server, an agent
// attested with a one-time join token, and a sample system of three services
// (gateway -> orders -> payments), each behind a rampart proxy process run
// from its own copy of the binary so the agent attests each, from the
// kernel, as a distinct SPIFFE ID; default-deny policies allow exactly the
// calls the system makes. Each attack scenario reports
// what was tried, what stopped it (prevent), and, once those capabilities
// land, which alert fired (detect) and what the playbook did (respond).
package demo

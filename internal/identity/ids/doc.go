// Package ids holds the rules for the SPIFFE IDs Rampart hands out, apart
// from the CA that signs them, so that the data plane (agent, proxy, SDK)
// can name the server and the agents without compiling the CA and its
// store.
//
// Paths under /rampart/ are reserved: an agent is
// spiffe://TD/rampart/agent/NAME and the server is spiffe://TD/rampart/server;
// a registration entry may assign any other path of its trust domain
// (ParseWorkloadID). IDs are go-spiffe's spiffeid.ID, never strings.
//
// The package imports only the standard library and go-spiffe's spiffeid
// (internal/deptest keeps it so).
package ids

// Package e2e runs real rampart processes (server, agent, CLI) built from
// this tree, and talks to them with unmodified third-party clients
// (go-spiffe's workloadapi). Nothing is mocked: real TLS on loopback, real
// unix sockets, real SQLite files.
package e2e

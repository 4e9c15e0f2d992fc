// Package inventory knows what runs where, and whether it must be patched.
//
// Agents report, in batches, every executable they attested: its SHA-256
// and, for a Go binary, its build info and functions (package gobin), once
// per executable; and sightings — this hash ran as this service (SPIFFE ID)
// on this host, first and last seen. The server keeps service → host →
// binary hash → modules, and matches each binary against the vulnerability
// database in the store (package scan: called, not called, as govulncheck
// decides).
//
// A binary's details are kept per reporting host and a host's verdicts
// are computed only from its own reports: an agent can lie about what runs
// on its own host (it holds those workloads' keys anyway), never about a
// hash that runs elsewhere.
//
// When the database is imported again, the binaries seen running within
// RunningWindow are matched anew, and every called finding that is not
// excepted becomes an Alert (the server audits it as scan.vulnerable; the
// default detection rule vulnerable-workload-running raises an alert on it).
//
// # The gate
//
// A gate (the trust domain's default, or one registration entry's) requires
// that a binary have no reachable finding (called, or of unknown
// reachability) at or above a severity; an unrated finding counts as the
// gate's Unknown level (HIGH unless set). verdict.Policy.Decide is what
// the agent runs before it hands out an SVID (package verdict holds the
// agent's part, free of the store): it refuses a binary that fails, names
// the findings in the reason, and with DryRun only says what it would
// refuse.
// Exceptions (a vulnerability id or alias, optionally narrowed to one binary
// hash or one service) excuse a finding until they expire. A binary with
// no verdict yet is refused (fail closed), saying so.
package inventory

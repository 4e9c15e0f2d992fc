// Package scan finds known vulnerabilities in what a team builds and runs:
// Go binaries, CycloneDX and SPDX SBOMs, and container image tarballs,
// matched against OSV records from an offline database (package osv).
//
// # Reachability, as govulncheck decides it
//
// For a Go binary every module it was built with (and the standard library
// at the binary's Go version) is looked up; a record that affects the
// module's version is a finding at one of three levels, the same levels
// govulncheck's binary mode reports:
//
//   - "symbol": a function the record names as vulnerable is in the
//     binary (including when it was inlined): the finding is *called*,
//     reachable;
//   - "package": a package the record names is in the binary, but none of
//     its vulnerable functions: *present but not called*;
//   - "module": the module is required at an affected version, but none of
//     the record's packages is in the binary: not called.
//
// A record's imports are first filtered by the binary's GOOS and GOARCH, so
// a Windows-only flaw is no finding in a Linux binary. A binary whose
// symbols cannot be read (stripped) is treated as govulncheck treats it:
// every affected module's vulnerable functions count as present, so every
// finding is called, and the finding says why. Modules at "(devel)" or
// with no version are not matched (their version is unknown).
//
// Packages from SBOMs and image package databases have no reachability:
// they are reported with Reachability "unknown" and count as reachable
// wherever a threshold applies.
//
// # Severity
//
// The rating is the record's own (CVSS v3 base score, or the database's
// own word), else the highest of the records it aliases that the
// database holds (a GHSA record for a GO- record, when both were
// imported). The Go database rates nothing: Threshold.Unknown decides what
// an unrated finding counts as (HIGH unless configured).
package scan

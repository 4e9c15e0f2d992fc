// Package pkgs reads lists of installed packages: CycloneDX and SPDX JSON
// SBOMs, package URLs, Debian's dpkg status database, Alpine's apk
// installed database and os-release. Each yields Packages named as OSV
// names them (ecosystem with its release, and for Debian and Alpine the
// source package, which is what their advisories name).
//
// All input is untrusted: sizes are bounded, and a document that is not
// what it claims to be is refused with an error naming what is wrong.
package pkgs

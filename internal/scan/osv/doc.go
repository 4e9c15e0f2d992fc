// Package osv reads vulnerability records in the OSV schema
// (https://ossf.github.io/osv-schema/, the format osv.dev and the Go
// vulnerability database publish) and decides whether a package version is
// affected.
//
// # Version semantics
//
// A record's ranges are read as the OSV schema says (§ "Evaluation"): the
// events of one range, sorted by version, open an affected interval at
// "introduced" and close it at "fixed" (exclusive), "last_affected"
// (inclusive) or "limit"; a version is affected if it falls in any
// interval of any range, or is listed in "versions". Versions are ordered
// by the rules of their ecosystem:
//
//   - Go (and every SEMVER range): semantic versioning 2.0.0 as
//     golang.org/x/mod/semver orders it; the Go standard library is the
//     module "stdlib" (and the go command "toolchain"), versioned by the
//     Go release ("go1.21.3" is 1.21.3, "go1.22rc1" is 1.22.0-rc.1);
//   - Debian and Ubuntu: dpkg's algorithm (deb-version(7): epoch, then
//     upstream and revision compared by alternating non-digit and digit
//     runs, '~' sorting before everything, even the end of the string);
//   - Alpine: apk-tools' algorithm (dotted numbers, one letter, suffixes
//     _alpha < _beta < _pre < _rc < (none) < _cvs < _svn < _git < _hg < _p,
//     then the -rN package release);
//   - other ecosystems: only the explicit "versions" lists and SEMVER
//     ranges are evaluated; an ECOSYSTEM range whose ordering this package
//     does not know is reported as not evaluated, never guessed.
//
// # What is refused
//
// A record is refused with an error naming the field when it is not JSON,
// has no id or an id that is not a plain file name, has a range without
// an "introduced" event, an event with no or two keys, or a version its
// ecosystem cannot parse. Unknown fields are kept out of the way (the
// schema grows; records from a newer schema still load).
package osv

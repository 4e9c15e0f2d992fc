// Package gobin reads what a Go binary was built from: its build info (Go
// version, main module, every module and version, as debug/buildinfo
// reads it) and the functions it contains, from its symbol table.
//
// The function list is what govulncheck's binary mode computes
// (golang.org/x/vuln, internal/buildinfo): every function in the
// pclntab's function table, plus every function inlined into one of them,
// from each function's inline tree (FUNCDATA_InlTree, whose length is the
// largest value of its PCDATA_InlTreeIndex table plus one; entries are
// located from the go:func.* symbol). A vulnerable function that was
// inlined has no symbol of its own but is still in the binary; reading the
// inline trees is what lets a scanner say it is there.
//
// golang.org/x/vuln exports none of this (its only public package runs
// the whole govulncheck command), so it is written here from the runtime's
// documented layouts (runtime/symtab.go pcHeader and _func,
// runtime/symtabinl.go inlinedCall); see docs/decisions.
//
// Only ELF binaries carry symbols this package reads. A binary without a
// symbol table (built with -ldflags=-s, or stripped afterwards), a Mach-O
// or PE binary, or one built before Go 1.18 yields its build info with
// Symbols nil and SymbolsErr saying why: the caller must then treat every
// vulnerable function of an affected module as present, as govulncheck
// does.
//
// Input is untrusted: every offset is bounds-checked, and a malformed
// table is an error, never a panic.
package gobin

// Package opa benchmarks Rampart's policy engine against OPA (Rego) on the
// same 1,000-rule policy, side by side, for the ratio the data-plane issue
// asks for. It is a module of its own so that OPA and its dependencies stay
// out of Rampart's build; run it with bench/policy-opa.sh.
package opa

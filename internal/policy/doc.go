// Package policy decides whether a caller may make a request of a service.
//
// # Format
//
// One YAML document per policy, decoded strictly (an unknown field is an
// error naming its line):
//
//	service: spiffe://example.org/payments   # the protected service
//	mode: enforce                            # or dry-run
//	rules:
//	  - name: orders-reads-payments
//	    action: allow                        # or deny
//	    callers: [spiffe://example.org/orders, "spiffe://example.org/batch/*"]
//	    methods: [GET]                       # empty: any
//	    paths: ["/payments/{id}", "/api/*"]  # empty: any
//	    when: 'request.params.id == user.sub' # optional CEL condition
//
// Callers are exact SPIFFE IDs, "spiffe://TD/prefix/*" (any ID below that
// path), or "*" (any caller of the policy's own trust domain; never another
// domain). Paths are exact, take {name} for exactly one non-empty segment,
// and may end in "/*" for the prefix and anything below it.
//
// # Semantics
//
// Default deny. Deny rules are checked first: a matching deny rule denies.
// Otherwise the first matching allow rule, in file order, allows. Otherwise
// the request is denied with no rule. A dry-run policy decides the same way
// but lets everything through, marking what it would have denied. A CEL
// condition that fails to evaluate (a missing claim, say) counts as false
// for an allow rule and as true for a deny rule: errors fail closed.
//
// # Cost
//
// Compile builds an index: callers by exact ID, by pattern and "any", each
// pointing to the rules in file order, with methods as a bit mask and paths
// as pre-split segments. Decide walks only the candidate rules of the
// caller and allocates nothing unless a matching rule has a CEL condition
// (CEL programs are compiled once; evaluating one allocates its activation).
//
// # Without CEL
//
// cel-go is most of what the SDK adds to a service's binary (about 5 MB of
// 7). A service whose policies have no conditions may be built with
// -tags rampart_omit_cel: CEL is then false, policies with conditions still
// parse and compile, and every condition counts as an evaluation error
// (fail closed, as above), which the guard logs as an error when it
// installs such a policy. The rampart binary is never built so.
//
// # Paths
//
// NormalizePath must be applied to the raw request path before deciding,
// and the normalised path forwarded, so that the service serves exactly
// what the policy judged. It refuses what it cannot normalise without
// guessing: an encoded "/" or "\", control characters, ".." above the root.
package policy

//go:build rampart_omit_cel

package policy

import "errors"

// CEL reports whether this program evaluates `when` conditions: false,
// built with -tags rampart_omit_cel, which leaves cel-go (about 5 MB) out
// of a service that uses the SDK and whose policies have no conditions.
//
// Without CEL a condition is never evaluated, and counts as an evaluation
// error does (see the package documentation): an allow rule with a
// condition never matches, a deny rule with one always does. A policy
// with conditions is still accepted, so a server's policy installs, but
// decides more strictly than it says, never more loosely. Never build the
// rampart binary with this tag: its server validates the conditions of
// the policies it is given.
const CEL = false

// errNoCEL is the evaluation error of every condition.
var errNoCEL = errors.New("condition not evaluated: this program was built with -tags rampart_omit_cel, without CEL")

// condition is a `when` condition, kept unevaluated.
type condition struct{}

func compileCEL(string) (*condition, error) { return &condition{}, nil }

func evalCEL(*condition, *Request, map[string]string) (bool, error) { return false, errNoCEL }

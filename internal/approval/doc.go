// Package approval is the two-person rule: a change that needs a second
// person's approval is refused when the approver is the one who asked.
//
// Requester and approver are audit actors, as the server names the caller
// of every admin request (see internal/server's setActor): an operator by
// the subject of their token (Actor.User, the stable username; never the
// display name, which anyone may share), a workload by its SPIFFE ID
// (Actor.SpiffeID). Two actors are the same party when they share either
// identifier. An approver must be a proven party: the break-glass admin
// token ("admin"), a caller not yet known ("unknown", "anonymous") or an
// empty actor names nobody in particular and can approve nothing; a
// requester may be one of these (the admin token may ask), but then its
// approver must be a named operator or workload.
//
//	if err := approval.Check(step.RequestedBy, caller); err != nil {
//		// 403: err says why
//	}
//
// Check compares identities only. Whether the approver holds the
// approval.grant permission is the route table's business (package
// permission); whether the request is still pending, the caller's.
package approval

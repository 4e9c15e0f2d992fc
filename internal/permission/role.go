package permission

import (
	"fmt"
	"slices"
	"strings"
)

// Role is a named set of permissions an operator or a workload holds.
type Role string

// The roles.
const (
	Admin        Role = "admin"
	Responder    Role = "responder"
	Approver     Role = "approver"
	PolicyAuthor Role = "policy-author"
	Auditor      Role = "auditor"
	KeyAdmin     Role = "key-admin"
)

// RoleInfo describes a role: who it is for and what it holds.
type RoleInfo struct {
	Role Role
	For  string
	// holds decides membership, so a permission added to the
	// vocabulary lands in the roles it belongs to by its name (a new
	// *.read is the auditor's) without editing each role.
	holds func(Permission) bool
	// Scoped roles may be limited to services (SPIFFE ID patterns); the
	// endpoints that act on one service check the scope.
	Scoped bool
}

// Roles is every role, in the order docs print them.
var Roles = []RoleInfo{
	{Admin, "the people who run Rampart: everything", func(Permission) bool { return true }, false},
	{Responder, "on-call: read everything; revoke, evict, quarantine, run playbooks, manage incidents and alerts",
		func(p Permission) bool {
			return p.ReadOnly() || slices.Contains([]Permission{AgentEvict, SVIDRevoke, ACMERevoke, AlertManage, IncidentManage, PlaybookRun}, p)
		}, false},
	{Approver, "a second person: approve or reject steps that need it, and read what they approve",
		func(p Permission) bool {
			return slices.Contains([]Permission{ApprovalGrant, AlertRead, IncidentRead, PlaybookRead}, p)
		}, false},
	{PolicyAuthor, "service owners and their CI: read and publish policies (optionally only for some services)",
		func(p Permission) bool { return p == PolicyRead || p == PolicyWrite }, true},
	{Auditor, "read-only: audit, alerts, incidents, inventory, configuration; changes nothing",
		func(p Permission) bool { return p.ReadOnly() }, false},
	{KeyAdmin, "the key store, the CA's keys and federation with other trust domains",
		func(p Permission) bool {
			return slices.Contains([]Permission{KMSRead, KMSAdmin, CARead, CARotate, CARekey, FederationRead, FederationWrite}, p)
		}, false},
}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r.Role) == s {
			return r.Role, nil
		}
	}
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r.Role)
	}
	return "", fmt.Errorf("permission: unknown role %q (want one of %s)", s, strings.Join(names, ", "))
}

func (r Role) info() (RoleInfo, bool) {
	for _, i := range Roles {
		if i.Role == r {
			return i, true
		}
	}
	return RoleInfo{}, false
}

// Valid says whether r is a role.
func (r Role) Valid() bool { _, ok := r.info(); return ok }

// Scoped says whether r may be limited to services.
func (r Role) Scoped() bool { i, _ := r.info(); return i.Scoped }

// Allows says whether r holds p (an unknown role holds nothing).
func (r Role) Allows(p Permission) bool {
	i, ok := r.info()
	return ok && p.Valid() && i.holds(p)
}

// Permissions lists what r holds, in the vocabulary's order.
func (r Role) Permissions() []Permission {
	var out []Permission
	for _, p := range All {
		if r.Allows(p.Permission) {
			out = append(out, p.Permission)
		}
	}
	return out
}

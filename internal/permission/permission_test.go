package permission

import (
	"regexp"
	"testing"
)

// Names are noun.verb, lower case, each listed once with what it allows.
func TestVocabulary(t *testing.T) {
	name := regexp.MustCompile(`^[a-z]+(\.[a-z]+)*\.[a-z]+$`)
	seen := map[Permission]bool{}
	for _, i := range All {
		if !name.MatchString(string(i.Permission)) {
			t.Errorf("%q is not noun.verb", i.Permission)
		}
		if seen[i.Permission] {
			t.Errorf("%q listed twice", i.Permission)
		}
		seen[i.Permission] = true
		if i.Allows == "" {
			t.Errorf("%q says nothing about what it allows", i.Permission)
		}
		if !i.Permission.Valid() {
			t.Errorf("%q not Valid", i.Permission)
		}
	}
	if Permission("entry.delete").Valid() || Permission("").Valid() {
		t.Error("a name outside the vocabulary is Valid")
	}
	if !EntryRead.ReadOnly() || EntryWrite.ReadOnly() || AgentEvict.ReadOnly() {
		t.Error("ReadOnly")
	}
}

// The roles hold what their descriptions promise, and nothing that would
// let them reach past it.
func TestRoles(t *testing.T) {
	for _, r := range Roles {
		if !r.Role.Valid() || len(r.Role.Permissions()) == 0 || r.For == "" {
			t.Errorf("role %s: invalid, empty or undescribed", r.Role)
		}
		if got, err := ParseRole(string(r.Role)); err != nil || got != r.Role {
			t.Errorf("ParseRole(%s) = %q, %v", r.Role, got, err)
		}
	}
	if _, err := ParseRole("root"); err == nil {
		t.Error("ParseRole accepts an unknown role")
	}
	if Role("root").Allows(EntryRead) || Admin.Allows("entry.delete") {
		t.Error("an unknown role, or a permission outside the vocabulary, is allowed")
	}
	for _, p := range All {
		if !Admin.Allows(p.Permission) {
			t.Errorf("admin lacks %s", p.Permission)
		}
		if Auditor.Allows(p.Permission) != p.Permission.ReadOnly() {
			t.Errorf("auditor and %s: holds %v", p.Permission, Auditor.Allows(p.Permission))
		}
	}
	// No role but admin may change who holds which role, or reconfigure
	// identities: that would be a way to admin.
	for _, r := range Roles {
		if r.Role == Admin {
			continue
		}
		for _, p := range []Permission{OperatorWrite, EntryWrite, AgentEnrol, OAuthUserWrite, OAuthClientWrite} {
			if r.Role.Allows(p) {
				t.Errorf("%s holds %s", r.Role, p)
			}
		}
	}
	for _, c := range []struct {
		r    Role
		p    Permission
		want bool
	}{
		{Responder, SVIDRevoke, true}, {Responder, AgentEvict, true}, {Responder, PlaybookRun, true},
		{Responder, IncidentManage, true}, {Responder, PolicyWrite, false}, {Responder, PlaybookWrite, false},
		{Responder, ApprovalGrant, false}, {Responder, KMSAdmin, false},
		{Approver, ApprovalGrant, true}, {Approver, IncidentRead, true}, {Approver, PlaybookRun, false},
		{PolicyAuthor, PolicyWrite, true}, {PolicyAuthor, PolicyRead, true}, {PolicyAuthor, EntryRead, false},
		{KeyAdmin, KMSAdmin, true}, {KeyAdmin, CARotate, true}, {KeyAdmin, PolicyWrite, false},
	} {
		if got := c.r.Allows(c.p); got != c.want {
			t.Errorf("%s allows %s: %v, want %v", c.r, c.p, got, c.want)
		}
	}
	if !PolicyAuthor.Scoped() || Admin.Scoped() {
		t.Error("Scoped")
	}
}

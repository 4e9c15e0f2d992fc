package approval

import (
	"errors"
	"testing"

	"github.com/rampartsec/rampart/internal/audit"
)

func TestCheck(t *testing.T) {
	alice := audit.Actor{User: "alice"}
	bob := audit.Actor{User: "bob"}
	ci := audit.Actor{SpiffeID: "spiffe://example.org/ci"}
	deploy := audit.Actor{SpiffeID: "spiffe://example.org/deploy"}
	tests := []struct {
		name                string
		requester, approver audit.Actor
		want                error
	}{
		{"another operator approves", alice, bob, nil},
		{"a workload approves an operator's request", alice, ci, nil},
		{"an operator approves a workload's request", ci, alice, nil},
		{"another workload approves", ci, deploy, nil},
		{"the admin token asked, an operator approves", audit.Actor{User: "admin"}, alice, nil},
		// The attacks: one person playing both parts.
		{"the requester approves itself", alice, alice, ErrSelfApproval},
		{"the same workload approves itself", ci, ci, ErrSelfApproval},
		{"the same subject through a workload", alice, audit.Actor{User: "alice", SpiffeID: "spiffe://example.org/console"}, ErrSelfApproval},
		{"the same workload on behalf of another user", audit.Actor{User: "bob", SpiffeID: "spiffe://example.org/ci"}, ci, ErrSelfApproval},
		{"the shared admin token approves", alice, audit.Actor{User: "admin"}, ErrAnonymousApprover},
		{"the admin token approves its own request", audit.Actor{User: "admin"}, audit.Actor{User: "admin"}, ErrAnonymousApprover},
		{"an unknown caller approves", alice, audit.Actor{User: "unknown"}, ErrAnonymousApprover},
		{"an anonymous caller approves", alice, audit.Actor{User: "anonymous"}, ErrAnonymousApprover},
		{"nobody approves", alice, audit.Actor{}, ErrAnonymousApprover},
		{"a request by nobody", audit.Actor{}, bob, ErrNoRequester},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.requester, tt.approver)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Check(%+v, %+v) = %v, want %v", tt.requester, tt.approver, err, tt.want)
			}
		})
	}
}

package respond

import (
	"strings"
	"testing"
)

func knownRules(name string) bool {
	return name == "denied-burst" || name == "revoked-credential-use"
}

const goodPlaybook = `name: compromised-service
description: a service's key was stolen and used elsewhere
trigger:
  rules: [revoked-credential-use, denied-burst]
  severity: high
  labels: {actor.spiffe_id: "spiffe://example.org/*"}
vars:
  service: actor.spiffe_id
steps:
  - name: contain
    action: quarantine
    with: {identity: "${service}", reason: "key stolen"}
    timeout: 5s
  - action: revoke_svids
    with: {identity: "${service}"}
    on_failure: continue
  - action: incident
    with: {title: "compromised ${service}", severity: high}
  - name: tell
    action: notice
    with: {notice: security}
    approval: {role: approver}
  - action: stop
    when: failed
notices:
  security:
    audience: security team
    channel: smtp
    addr: 127.0.0.1:25
    from: rampart@example.org
    to: [security@example.org]
    subject: "incident {{.Incident.ID}}"
    body: "{{.Vars.service}} was quarantined."
`

func TestParseGoodPlaybook(t *testing.T) {
	p, err := Parse([]byte(goodPlaybook), knownRules)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "compromised-service" || len(p.Steps) != 5 || p.Steps[1].OnFailure != "continue" || p.Steps[0].Timeout.String() != "5s" {
		t.Fatalf("%+v", p)
	}
	if p.Steps[3].Approval == nil || p.Steps[3].Approval.Role != "approver" {
		t.Fatalf("approval: %+v", p.Steps[3])
	}
	a := AlertFacts{Rule: "denied-burst", Severity: "critical", Group: "actor.spiffe_id=spiffe://example.org/orders"}
	if !p.Matches(a) {
		t.Error("a critical denied-burst of an example.org service must start it")
	}
	for _, miss := range []AlertFacts{
		{Rule: "denied-burst", Severity: "medium", Group: a.Group},                                       // below the severity
		{Rule: "login-failures", Severity: "critical", Group: a.Group},                                   // another rule
		{Rule: "denied-burst", Severity: "critical", Group: "actor.spiffe_id=spiffe://other.org/orders"}, // label
		{Rule: "denied-burst", Severity: "critical", Group: "target=spiffe://example.org/orders"},        // no such label
	} {
		if p.Matches(miss) {
			t.Errorf("%+v must not start it", miss)
		}
	}
}

// Bad playbooks are refused with the line and the field.
func TestParseRefusesBadPlaybooks(t *testing.T) {
	step := func(s string) string { return "name: p\nsteps:\n" + s }
	tests := []struct {
		name, src, want string
	}{
		{"unknown action", step("  - action: reboot-everything\n"), `line 3: steps[0].action: unknown action "reboot-everything"`},
		{"missing approval role", step("  - action: quarantine\n    with: {identity: spiffe://example.org/x, reason: r}\n    approval: {}\n"), "line 5: steps[0].approval.role: required"},
		{"unknown approval role", step("  - action: quarantine\n    with: {identity: spiffe://example.org/x}\n    approval: {role: janitor}\n"), `steps[0].approval.role: permission: unknown role "janitor"`},
		{"role that cannot approve", step("  - action: quarantine\n    with: {identity: spiffe://example.org/x}\n    approval: {role: auditor}\n"), "role auditor cannot approve"},
		{"unknown alert rule", "name: p\ntrigger:\n  rules: [denied-burst, made-up-rule]\nsteps:\n  - action: stop\n", `line 3: trigger.rules[1]: unknown detection rule "made-up-rule"`},
		{"step after an unconditional stop", step("  - action: stop\n  - action: quarantine\n    with: {identity: spiffe://example.org/x}\n"), "line 4: steps[1]: unreachable: step \"1-stop\" before it stops the playbook unconditionally"},
		{"unknown field", step("  - action: stop\n    retries: 3\n"), `line 4: steps[0]: unknown field "retries"`},
		{"missing argument", step("  - action: quarantine\n    with: {reason: x}\n"), "steps[0].with.identity: required by action quarantine"},
		{"unknown argument", step("  - action: quarantine\n    with: {identity: spiffe://example.org/x, force: yes}\n"), `steps[0].with.force: unknown argument`},
		{"bad identity", step("  - action: quarantine\n    with: {identity: orders}\n"), "steps[0].with"},
		{"quarantine everything", step("  - action: quarantine\n    with: {identity: \"*\"}\n"), `"*" is only allowed as a final "/*"`},
		{"unknown variable", step("  - action: quarantine\n    with: {identity: \"${svc}\"}\n"), "unknown variable ${svc}"},
		{"notice without approval", "name: p\nsteps:\n  - action: notice\n    with: {notice: n}\nnotices:\n  n: {channel: webhook, url: https://h/x, body: hi}\n", "a notice goes out only after an operator approves it"},
		{"notice not declared", step("  - action: notice\n    with: {notice: n}\n    approval: {role: approver}\n"), `notice "n" is not under notices`},
		{"bad timeout", step("  - action: stop\n    timeout: forever\n"), `steps[0].timeout: "forever"`},
		{"bad on_failure", step("  - action: stop\n    on_failure: maybe\n"), `steps[0].on_failure: "maybe"`},
		{"no steps", "name: p\n", "steps: required"},
		{"bad name", "name: P!\nsteps:\n  - action: stop\n", `name: "P!"`},
		{"mail header injection", "name: p\nsteps:\n  - action: stop\nnotices:\n  n: {channel: smtp, addr: 'h:25', from: \"a@b\\r\\nBcc: x@y\", to: [c@d], body: hi}\n", "line breaks in a mail header"},
		{"bad template", "name: p\nsteps:\n  - action: stop\nnotices:\n  n: {channel: webhook, url: 'https://h', body: '{{.Incident'}\n", "notices.n.body"},
		{"bad rotate kind", step("  - action: rotate_key\n    with: {kind: everything}\n"), `kind "everything"`},
		{"empty", "", "empty playbook"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), knownRules)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "respond: ") {
				t.Errorf("%q does not name the package", err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(goodPlaybook))
	f.Add([]byte("name: p\nsteps:\n  - action: stop\n"))
	f.Add([]byte("name: p\nsteps:\n  - action: notice\n    with: {notice: n}\n    approval: {role: approver}\nnotices:\n  n: {channel: slack, url: https://h, body: '{{.Vars.x}}'}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b, knownRules)
		if err != nil {
			return
		}
		// What parses is usable: every step names a registered action and
		// a stop is never followed by an unreachable step.
		for i, st := range p.Steps {
			if _, ok := actions[st.Action]; !ok {
				t.Fatalf("step %d: unregistered action %q", i, st.Action)
			}
			if i > 0 && p.Steps[i-1].Action == "stop" && p.Steps[i-1].When == "" {
				t.Fatalf("step %d follows an unconditional stop", i)
			}
			if st.Action == "notice" && st.Approval == nil {
				t.Fatalf("step %d: a notice without approval", i)
			}
		}
	})
}

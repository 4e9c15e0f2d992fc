// Package respond carries out the response decided before the panic:
// playbooks, quarantine, incidents, breach scope and notices.
//
// # Playbooks
//
// A playbook is YAML, versioned in the store, validated on upload with
// errors that name the line and the field:
//
//	name: compromised-service
//	trigger:                       # the alerts that start it by themselves
//	  rules: [revoked-credential-use, denied-burst]
//	  severity: high               # this or higher
//	  labels: {actor.spiffe_id: "spiffe://example.org/*"}
//	vars:                          # variables bound from the alert's group
//	  service: actor.spiffe_id
//	steps:
//	  - name: contain
//	    action: quarantine         # in force at every proxy and SDK service within 2 s
//	    with: {identity: "${service}"}
//	    timeout: 10s
//	  - action: revoke_svids
//	    with: {identity: "${service}"}
//	    on_failure: continue       # default: stop
//	  - action: incident
//	    with: {title: "compromised ${service}", severity: high}
//	  - action: notice
//	    with: {notice: security-team}
//	    approval: {role: approver} # a second person, never the one who started the run
//	notices:
//	  security-team: {channel: smtp, addr: "mail:25", from: ..., to: [...], subject: ..., body: ...}
//
// Actions (the registry in actions.go): quarantine, revoke_svids,
// evict_agent, revoke_user, disable_user, revoke_client, disable_client,
// rotate_key (kms, ca), incident, notice, webhook, stop. What they do to
// the rest of the system goes through Effects, which the server
// implements; respond itself owns quarantines, incidents and notices.
//
// A run records every step (result, error, times) in the store and in the
// audit log; a failing step stops the run or not as the step says; a step
// with an approval waits until Approve is called by a named party other
// than whoever started the run (package approval). A dry run says what
// each step would do and touches nothing.
//
// # Quarantine
//
// A quarantine is a SPIFFE ID or "ID/*" pattern in the store; adding or
// lifting one bumps the store's revision, which wakes every proxy's and
// SDK service's policy long poll at once. Each then refuses the identity
// in both directions and ends its open connections (mtls.Quarantine,
// authz.Conns). Only an operator lifts a quarantine, with a reason.
//
// # Incidents and breach scope
//
// An incident has a status (open, contained, resolved), an owner, a
// severity and a timeline built from its alerts, its runs' steps and
// approvals, and its events (notes, status changes, quarantines,
// notices); Report fills a post-mortem in Markdown from it. Scoper
// answers "what did this identity reach" from the audit log, reading only
// the blocks its own index says mention the identity in the window.
package respond

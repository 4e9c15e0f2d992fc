// Package permission names what an operator may do through the admin API.
//
// Every admin endpoint needs exactly one permission (the server's route
// table says which, and docs/api.md prints it). A permission is a noun
// and a verb, "noun.verb": the noun is what is acted on (entry, agent,
// svid, ca, policy, alert, oauth.client, oauth.user, kms, scan,
// inventory, backup, acme, netpol, federation), the
// verb what is done to it. "read" only ever reads; every other verb
// changes something or acts, and is named for the act (write, evict,
// revoke, rotate, manage, except, run, drill, admin) so that a role can be
// given the power to respond without the power to reconfigure.
//
// Roles are sets of permissions (role.go): an operator or a workload
// holds roles, and a request is allowed when one of them holds the
// route's permission. The vocabulary is cut so that the roles are natural
// sets:
//
//	admin          every permission
//	auditor        every *.read
//	responder      *.read and agent.evict, svid.revoke, acme.revoke,
//	               alert.manage, incident.manage, playbook.run
//	approver       approval.grant, and reading what is approved
//	policy-author  policy.read, policy.write (optionally for some services)
//	key-admin      kms.read, kms.admin, ca.read, ca.rotate, ca.rekey,
//	               federation.read, federation.write
//
// The break-glass admin token holds every permission.
package permission

import "strings"

// Permission is one thing an admin caller may do.
type Permission string

// The vocabulary. Add a permission here, with a line in All, when a new
// admin endpoint needs one that none of these names.
const (
	EntryRead  Permission = "entry.read"
	EntryWrite Permission = "entry.write"

	AgentRead  Permission = "agent.read"
	AgentEnrol Permission = "agent.enrol"
	AgentEvict Permission = "agent.evict"

	SVIDRevoke Permission = "svid.revoke"

	CARead   Permission = "ca.read"
	CARotate Permission = "ca.rotate"
	CARekey  Permission = "ca.rekey"

	PolicyRead  Permission = "policy.read"
	PolicyWrite Permission = "policy.write"

	AlertRead   Permission = "alert.read"
	AlertManage Permission = "alert.manage"

	OAuthClientRead  Permission = "oauth.client.read"
	OAuthClientWrite Permission = "oauth.client.write"
	OAuthUserRead    Permission = "oauth.user.read"
	OAuthUserWrite   Permission = "oauth.user.write"

	KMSRead  Permission = "kms.read"
	KMSAdmin Permission = "kms.admin"

	ScanRead      Permission = "scan.read"
	ScanWrite     Permission = "scan.write"
	ScanExcept    Permission = "scan.except"
	InventoryRead Permission = "inventory.read"

	BackupRead  Permission = "backup.read"
	BackupRun   Permission = "backup.run"
	BackupDrill Permission = "backup.drill"

	ACMERead   Permission = "acme.read"
	ACMEEnrol  Permission = "acme.enrol"
	ACMERevoke Permission = "acme.revoke"

	NetpolRead Permission = "netpol.read"

	OperatorRead  Permission = "operator.read"
	OperatorWrite Permission = "operator.write"

	// Federation with other trust domains.
	FederationRead  Permission = "federation.read"
	FederationWrite Permission = "federation.write"

	// Respond (playbooks, incidents, approvals).
	IncidentRead   Permission = "incident.read"
	IncidentManage Permission = "incident.manage"
	PlaybookRead   Permission = "playbook.read"
	PlaybookWrite  Permission = "playbook.write"
	PlaybookRun    Permission = "playbook.run"
	ApprovalGrant  Permission = "approval.grant"
)

// Info describes a permission.
type Info struct {
	Permission Permission
	Allows     string
}

// All is every permission with what it allows, in the order docs print
// them.
var All = []Info{
	{EntryRead, "list and read registration entries"},
	{EntryWrite, "create and delete registration entries (which workload gets which SPIFFE ID)"},
	{AgentRead, "list and read agents"},
	{AgentEnrol, "make join tokens, each of which attests one agent"},
	{AgentEvict, "evict an agent and revoke every SVID issued through it"},
	{SVIDRevoke, "revoke X.509-SVIDs by serial or SPIFFE ID"},
	{CARead, "read the CA's keys and their expiry"},
	{CARotate, "rotate the intermediate, prepare or activate a new root"},
	{CARekey, "burn down and rebuild the trust chain after a compromise: new root, intermediate, JWT-SVID, OAuth and key store keys; everything issued before revoked"},
	{PolicyRead, "list and read policies and their history"},
	{PolicyWrite, "publish and delete policies (including the key-use policy)"},
	{AlertRead, "list and read detection alerts"},
	{AlertManage, "acknowledge, resolve and reopen alerts"},
	{OAuthClientRead, "list and read OAuth clients"},
	{OAuthClientWrite, "register, disable and delete OAuth clients (revoking their tokens)"},
	{OAuthUserRead, "list and read OAuth users"},
	{OAuthUserWrite, "create, change, disable, unlock and delete OAuth users"},
	{KMSRead, "list and read key store keys and versions (never key material)"},
	{KMSAdmin, "create and rotate keys, enable, disable and destroy versions"},
	{ScanRead, "read the vulnerability database's state, the exceptions and the gates"},
	{ScanWrite, "import the vulnerability database, set and remove gates"},
	{ScanExcept, "accept a vulnerability for a time (an exception), and remove one"},
	{InventoryRead, "list what runs where, and what of it is vulnerable"},
	{BackupRead, "list backups"},
	{BackupRun, "make a backup now"},
	{BackupDrill, "run a restore drill now"},
	{ACMERead, "list ACME external account binding keys (never their HMAC keys) and the certificates issued through ACME"},
	{ACMEEnrol, "create and revoke ACME external account binding keys (which clients may register, for which names)"},
	{ACMERevoke, "revoke certificates issued through ACME"},
	{NetpolRead, "read the network view (placements, allowed edges) that network policies are rendered from"},
	{OperatorRead, "list and read operators, workload role bindings and their roles"},
	{FederationRead, "list and read federation relationships and the bundles held for other trust domains"},
	{FederationWrite, "create, change and delete federation relationships (which other trust domains' workloads are trusted, and where their bundles come from)"},
	{OperatorWrite, "add, grant, revoke, disable and enable operators and workload role bindings"},
	{IncidentRead, "list and read incidents and their timelines"},
	{IncidentManage, "open, annotate, assign and close incidents"},
	{PlaybookRead, "list and read playbooks and their runs"},
	{PlaybookWrite, "publish and delete playbooks"},
	{PlaybookRun, "run a playbook, or a step of one, now"},
	{ApprovalGrant, "approve or reject a step that needs a second person (never one's own request)"},
}

// Valid says whether p is in the vocabulary.
func (p Permission) Valid() bool {
	for _, i := range All {
		if i.Permission == p {
			return true
		}
	}
	return false
}

// ReadOnly says whether p only reads.
func (p Permission) ReadOnly() bool { return strings.HasSuffix(string(p), ".read") }

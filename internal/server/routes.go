package server

import (
	"net/http"
	"strings"

	"github.com/rampartsec/rampart/internal/audit/witness"
	"github.com/rampartsec/rampart/internal/kms"
	"github.com/rampartsec/rampart/internal/permission"
)

// Auth is how a route authenticates its caller.
type Auth string

// The kinds of callers.
const (
	// AuthPublic: anyone who reaches the API.
	AuthPublic Auth = "public"
	// AuthAdmin: an operator, a workload holding a role, or the
	// break-glass admin token, holding the route's permission (admin.go).
	AuthAdmin Auth = "admin"
	// AuthCaller: any caller AuthAdmin would take, whatever it holds
	// (whoami).
	AuthCaller Auth = "caller"
	// AuthAgent: an agent's X.509-SVID as the TLS client certificate.
	AuthAgent Auth = "agent"
	// AuthWorkload: any X.509-SVID of the trust domain (proxies, SDK
	// services, agents, other replicas).
	AuthWorkload Auth = "workload"
	// AuthJoinToken: a one-time join token in the body.
	AuthJoinToken Auth = "join-token"
	// AuthNodeProof: a node proving itself in the body (x509pop, tpm).
	AuthNodeProof Auth = "node-proof"
	// AuthMetrics: the scrape-only metrics token.
	AuthMetrics Auth = "metrics"
	// AuthOAuth: the authorization server's endpoints; clients and users
	// authenticate per request as OAuth and OpenID Connect say.
	AuthOAuth Auth = "oauth"
	// AuthACME: the ACME server's endpoints; every POST is a JWS signed by
	// an account's key (RFC 8555), checked by package acme.
	AuthACME Auth = "acme"
)

// Route is one endpoint of the API. Every endpoint is registered from the
// table in routes(), nowhere else; docs/api.md is generated from it.
type Route struct {
	Method, Path string
	Auth         Auth
	// Permission is what an admin caller must hold (admin routes only).
	Permission permission.Permission
	// Holder routes are served by the replica that keeps the audit log;
	// the others redirect to it.
	Holder  bool
	Doc     string
	Handler http.HandlerFunc
}

func route(auth Auth, pattern string, h http.HandlerFunc, doc string) Route {
	method, path, _ := strings.Cut(pattern, " ")
	return Route{Method: method, Path: path, Auth: auth, Handler: h, Doc: doc}
}

func admin(pattern string, p permission.Permission, h http.HandlerFunc, doc string) Route {
	r := route(AuthAdmin, pattern, h, doc)
	r.Permission = p
	return r
}

func atHolder(r Route) Route { r.Holder = true; return r }

// routes is the API: one line per endpoint.
func (s *Server) routes() []Route {
	rs := []Route{
		route(AuthPublic, "GET /healthz", s.handleHealth, "liveness"),
		route(AuthPublic, "GET /v1/bundle", s.handleBundle, "the X.509 trust bundle (PEM)"),
		route(AuthPublic, "GET /v1/jwt-bundle", s.handleJWTBundle, "the JWT-SVID signing keys (JWK set)"),
		route(AuthPublic, "GET /v1/federation/bundle", s.handleFederationBundle, "the trust domain's SPIFFE bundle (JWK set with x509-svid and jwt-svid keys, spiffe_sequence, spiffe_refresh_hint), as the bundle endpoint serves it"),
		atHolder(route(AuthPublic, "GET "+witness.PathCheckpoint, s.handleCheckpoint, "the audit log's latest signed checkpoint (C2SP tlog-checkpoint)")),
		atHolder(route(AuthPublic, "GET "+witness.PathConsistency, s.handleConsistency, "a consistency proof between two sizes of the audit log (RFC 6962)")),
		// Metrics say what runs and how busy it is: not for anyone who
		// can reach the API (authorization.credentials_file in Prometheus).
		route(AuthMetrics, "GET /metrics", s.handleMetrics, "Prometheus metrics"),

		admin("POST /v1/join-tokens", permission.AgentEnrol, s.handleCreateJoinToken, "make a one-time join token for an agent"),
		admin("POST /v1/entries", permission.EntryWrite, s.handleCreateEntry, "create a registration entry"),
		admin("GET /v1/entries", permission.EntryRead, s.handleListEntries, "list registration entries (?parent_id= &spiffe_id= &hint= &federates_with= &selector=, repeatable: entries with all of them)"),
		admin("GET /v1/entries/{id}", permission.EntryRead, s.handleGetEntry, "read a registration entry"),
		admin("PUT /v1/entries/{id}", permission.EntryWrite, s.handleUpdateEntry, "replace every field of a registration entry but its ID"),
		admin("DELETE /v1/entries/{id}", permission.EntryWrite, s.handleDeleteEntry, "delete a registration entry"),
		admin("POST /v1/entries/batch/create", permission.EntryWrite, s.handleEntryBatch("create"), "create many entries, all or none (a refusal names the entry by index and the field)"),
		admin("POST /v1/entries/batch/update", permission.EntryWrite, s.handleEntryBatch("update"), "replace many entries (each with its id), all or none"),
		admin("POST /v1/entries/batch/delete", permission.EntryWrite, s.handleEntryBatch("delete"), "delete many entries by id, all or none"),
		admin("GET /v1/agents", permission.AgentRead, s.handleListAgents, "list agents"),
		admin("GET /v1/agents/{name}", permission.AgentRead, s.handleGetAgent, "read an agent"),
		admin("POST /v1/agents/{name}/evict", permission.AgentEvict, s.handleEvictAgent, "evict an agent and revoke every SVID issued through it"),
		admin("POST /v1/svids/revoke", permission.SVIDRevoke, s.handleRevoke, "revoke SVIDs by serial or SPIFFE ID"),
		admin("GET /v1/ca", permission.CARead, s.handleCAStatus, "the CA's keys and their expiry"),
		admin("POST /v1/ca/rotate", permission.CARotate, s.handleCARotate, "rotate the intermediate, prepare or activate a root"),
		admin("POST /v1/rekey", permission.CARekey, s.handleRekey, "burn-down: start (or resume) replacing every root, key and credential; a body {\"dry_run\": true} changes nothing"),
		admin("GET /v1/rekey", permission.CARead, s.handleRekeyStatus, "the burn-down in progress or the last one: steps, old and new key IDs, hosts still holding old SVIDs"),
		admin("POST /v1/rekey/finish", permission.CARekey, s.handleRekeyFinish, "stop waiting for SVIDs to be re-issued: revoke what is left and drop the old keys now"),

		admin("PUT /v1/policies", permission.PolicyWrite, s.handlePutPolicy, "publish a policy (YAML body)"),
		admin("GET /v1/policies", permission.PolicyRead, s.handleListPolicies, "list policies"),
		admin("GET /v1/policy", permission.PolicyRead, s.handleGetPolicy, "read a service's policy (?service=)"),
		admin("GET /v1/policy/history", permission.PolicyRead, s.handlePolicyHistory, "every version of a service's policy (?service=)"),
		admin("DELETE /v1/policy", permission.PolicyWrite, s.handleDeletePolicy, "delete a service's policy (?service=)"),

		admin("GET /v1/alerts", permission.AlertRead, s.alerts.List, "list alerts (?rule= &status= &since= &limit=)"),
		admin("GET /v1/alerts/{id}", permission.AlertRead, s.alerts.Get, "read an alert"),
		admin("POST /v1/alerts/{id}/status", permission.AlertManage, s.alerts.SetStatus, "acknowledge, resolve or reopen an alert"),

		admin("POST /v1/oauth/clients", permission.OAuthClientWrite, s.accounts.HandleCreateClient, "register an OAuth client (its secret is shown once)"),
		admin("GET /v1/oauth/clients", permission.OAuthClientRead, s.accounts.HandleListClients, "list OAuth clients"),
		admin("GET /v1/oauth/clients/{id}", permission.OAuthClientRead, s.accounts.HandleGetClient, "read an OAuth client"),
		admin("PATCH /v1/oauth/clients/{id}", permission.OAuthClientWrite, s.accounts.HandleUpdateClient, "disable or enable an OAuth client (disabling revokes its tokens)"),
		admin("DELETE /v1/oauth/clients/{id}", permission.OAuthClientWrite, s.accounts.HandleDeleteClient, "delete an OAuth client and revoke its tokens"),
		admin("POST /v1/oauth/users", permission.OAuthUserWrite, s.accounts.HandleCreateUser, "create an OAuth user"),
		admin("GET /v1/oauth/users", permission.OAuthUserRead, s.accounts.HandleListUsers, "list OAuth users"),
		admin("GET /v1/oauth/users/{name}", permission.OAuthUserRead, s.accounts.HandleGetUser, "read an OAuth user"),
		admin("PATCH /v1/oauth/users/{name}", permission.OAuthUserWrite, s.accounts.HandleUpdateUser, "change, disable, unlock an OAuth user, enable or disable TOTP"),
		admin("DELETE /v1/oauth/users/{name}", permission.OAuthUserWrite, s.accounts.HandleDeleteUser, "delete an OAuth user and revoke their tokens"),

		admin("POST /v1/kms/keys", permission.KMSAdmin, s.kmsAPI.HandleCreate, "create a key"),
		admin("GET /v1/kms/keys", permission.KMSRead, s.kmsAPI.HandleList, "list keys"),
		admin("GET /v1/kms/keys/{name}", permission.KMSRead, s.kmsAPI.HandleGet, "read a key and its versions"),
		admin("POST /v1/kms/keys/{name}/rotate", permission.KMSAdmin, s.kmsAPI.HandleRotate, "rotate a key"),
		admin("POST /v1/kms/keys/{name}/versions/{version}/{action}", permission.KMSAdmin, s.kmsAPI.HandleVersion, "enable, disable, schedule the destruction of or restore a version"),

		admin("POST /v1/scan/db", permission.ScanWrite, s.scan.HandleImportDB, "replace the vulnerability database with an OSV zip (body), re-match what runs"),
		admin("GET /v1/scan/db", permission.ScanRead, s.scan.HandleGetDB, "the vulnerability database's source, size and generation"),
		admin("POST /v1/scan/exceptions", permission.ScanExcept, s.scan.HandleCreateException, "accept a vulnerability for a binary or service until a date, with a reason"),
		admin("GET /v1/scan/exceptions", permission.ScanRead, s.scan.HandleListExceptions, "list exceptions"),
		admin("DELETE /v1/scan/exceptions/{id}", permission.ScanExcept, s.scan.HandleDeleteException, "remove an exception"),
		admin("PUT /v1/scan/gates", permission.ScanWrite, s.scan.HandlePutGate, "set the gate of an entry, or the default (empty severity removes it)"),
		admin("GET /v1/scan/gates", permission.ScanRead, s.scan.HandleListGates, "list the gates"),
		admin("GET /v1/inventory", permission.InventoryRead, s.scan.HandleList, "what runs (?service= &host= &sha256= &vulnerable=true)"),
		admin("GET /v1/netpol/view", permission.NetpolRead, s.netpol.HandleView, "the network view: where each service runs, its ports, the allowed edges, and what could not be placed"),

		admin("POST /v1/federations", permission.FederationWrite, s.handleCreateFederation, "federate with another trust domain: its bundle endpoint (URL, https_spiffe with the endpoint's SPIFFE ID and a first bundle, or https_web)"),
		admin("GET /v1/federations", permission.FederationRead, s.handleListFederations, "list federation relationships, the bundles held and the last refresh"),
		admin("GET /v1/federations/{trust_domain}", permission.FederationRead, s.handleGetFederation, "read a federation relationship and the bundle held"),
		admin("PUT /v1/federations/{trust_domain}", permission.FederationWrite, s.handleUpdateFederation, "change a relationship's endpoint; a bundle in the body replaces the one held"),
		admin("DELETE /v1/federations/{trust_domain}", permission.FederationWrite, s.handleDeleteFederation, "end a federation: the trust domain's bundle is dropped everywhere"),

		admin("POST /v1/operators", permission.OperatorWrite, s.operators.HandleCreate, "add an operator: an OAuth user, or a SPIFFE ID pattern of workloads, with roles"),
		admin("GET /v1/operators", permission.OperatorRead, s.operators.HandleList, "list operators and their roles"),
		admin("GET /v1/operator", permission.OperatorRead, s.operators.HandleGet, "read an operator (?name=)"),
		admin("PATCH /v1/operator", permission.OperatorWrite, s.operators.HandleUpdate, "grant or revoke roles, disable or enable an operator, require MFA (?name=)"),
		route(AuthCaller, "GET /v1/whoami", s.operators.HandleWhoami, "who the caller is: operator, workload or break-glass, its session, roles and permissions"),

		admin("POST /v1/backups", permission.BackupRun, s.backup.HandleCreate, "make a backup now"),
		admin("GET /v1/backups", permission.BackupRead, s.backup.HandleList, "list the backups every destination holds"),
		admin("POST /v1/backups/drill", permission.BackupDrill, s.backup.HandleDrill, "restore the newest backup in a drill now"),

		admin("PUT /v1/playbooks", permission.PlaybookWrite, s.respondAPI.HandlePut, "publish a playbook (YAML body) as its next version; refused with line and field if invalid"),
		admin("GET /v1/playbooks", permission.PlaybookRead, s.respondAPI.HandleList, "list playbooks (latest versions)"),
		admin("GET /v1/playbooks/{name}", permission.PlaybookRead, s.respondAPI.HandleGet, "read a playbook (?version=)"),
		admin("DELETE /v1/playbooks/{name}", permission.PlaybookWrite, s.respondAPI.HandleDelete, "delete a playbook (its versions stay for the runs that used them)"),
		admin("POST /v1/playbooks/test", permission.PlaybookRead, s.respondAPI.HandleTest, "validate a playbook and dry-run it against a simulated alert; nothing is stored"),
		admin("POST /v1/playbooks/{name}/run", permission.PlaybookRun, s.respondAPI.HandleRun, "run a playbook (for an alert, a simulated alert or by hand; dry_run: say what it would do)"),
		admin("GET /v1/runs/{id}", permission.PlaybookRead, s.respondAPI.HandleGetRun, "read a playbook run and its steps"),
		admin("POST /v1/approvals/{ref}", permission.ApprovalGrant, s.respondAPI.HandleApprove, "approve the step a run (or an incident's run) waits for; never the requester's own"),
		admin("GET /v1/incidents", permission.IncidentRead, s.respondAPI.HandleListIncidents, "list incidents (?status=)"),
		admin("POST /v1/incidents", permission.IncidentManage, s.respondAPI.HandleOpen, "open an incident by hand"),
		admin("GET /v1/incidents/{id}", permission.IncidentRead, s.respondAPI.HandleGetIncident, "read an incident, its timeline and its runs"),
		admin("POST /v1/incidents/{id}/notes", permission.IncidentManage, s.respondAPI.HandleNote, "add a note to an incident's timeline"),
		admin("POST /v1/incidents/{id}/status", permission.IncidentManage, s.respondAPI.HandleStatus, "change an incident's status, severity or owner"),
		admin("GET /v1/incidents/{id}/report", permission.IncidentRead, s.respondAPI.HandleReport, "the incident's post-mortem in Markdown, filled from its timeline"),
		atHolder(admin("POST /v1/incidents/{id}/scope", permission.IncidentManage, s.respondAPI.HandleScope, "compute an identity's breach scope from the audit log and attach it")),
		atHolder(admin("POST /v1/scope", permission.IncidentRead, s.respondAPI.HandleScope, "an identity's breach scope from the audit log (what it reached, refused, exchanged, decrypted; its SVIDs)")),
		admin("GET /v1/quarantines", permission.IncidentRead, s.respondAPI.HandleQuarantines, "list quarantines (?all=true: lifted ones too)"),
		admin("POST /v1/quarantines", permission.IncidentManage, s.respondAPI.HandleQuarantine, "quarantine an identity: refused everywhere, open connections ended"),
		admin("POST /v1/quarantines/lift", permission.IncidentManage, s.respondAPI.HandleLift, "lift a quarantine (a reason is required and recorded)"),

		route(AuthJoinToken, "POST /v1/agent/attest", s.handleAttest, "attest an agent with a join token; its first SVID"),
		route(AuthAgent, "POST /v1/agent/renew", s.handleRenew, "renew the agent's SVID"),
		route(AuthAgent, "GET /v1/agent/sync", s.handleSync, "bundle, entries and revocations for the agent (long poll: ?revision= &wait=)"),
		route(AuthAgent, "POST /v1/agent/svids", s.handleSign, "sign workload X.509-SVIDs for the agent's entries"),
		route(AuthAgent, "POST /v1/agent/jwt-svids", s.handleJWTSVID, "sign a JWT-SVID for one of the agent's entries"),
		route(AuthAgent, "POST /v1/agent/inventory", s.scan.HandleAgentReport, "what the agent's workloads run (sightings of its own entries only)"),
		route(AuthAgent, "POST /v1/agent/placements", s.netpol.HandleAgentReport, "the services the agent's host runs and their listening ports (its own entries only)"),
		route(AuthAgent, "GET /v1/agent/netpol", s.netpol.HandleAgentTable, "the network policy table of the agent's host"),

		route(AuthWorkload, "GET /v1/workload/sync", s.handleWorkloadSync, "the caller's policy, revocations, quarantines and token keys (long poll)"),
		route(AuthWorkload, "POST /v1/workload/approvals/{ref}", s.unlessQuarantined("respond.approve", approvalTarget, s.handleWorkloadApprove), "approve a playbook step as a workload named by --approver (interim until operators' roles)"),
		atHolder(route(AuthWorkload, "POST /v1/audit/ingest", s.handleIngest, "a batch of audit entries from a spool (package audit/intake)")),
	}
	// Key use: any SVID may ask; the key-use policy decides (kms.API.Use).
	for _, op := range kms.Operations {
		rs = append(rs, route(AuthWorkload, "POST /v1/kms/keys/{name}/"+op, s.unlessQuarantined("kms."+op, kmsTarget, s.kmsAPI.Use(op)), op+" with a key, as the key-use policy allows (never for a quarantined caller)"))
	}
	// ACME (nil when disabled): the protocol, and the operator's calls.
	if s.acme != nil {
		for _, r := range s.acme.Routes() {
			rs = append(rs, route(AuthACME, r.Pattern, r.Handler.ServeHTTP, r.Doc))
		}
		rs = append(rs,
			admin("POST /v1/acme/eab-keys", permission.ACMEEnrol, s.acme.HandleCreateEABKey, "create an external account binding key, optionally tied to name patterns (its HMAC key is shown once)"),
			admin("GET /v1/acme/eab-keys", permission.ACMERead, s.acme.HandleListEABKeys, "list EAB keys"),
			admin("POST /v1/acme/eab-keys/{kid}/revoke", permission.ACMEEnrol, s.acme.HandleRevokeEABKey, "revoke an EAB key: its accounts order nothing more"),
			admin("GET /v1/acme/certs", permission.ACMERead, s.acme.HandleListCerts, "list certificates issued through ACME (?account= &all=true)"),
			admin("POST /v1/acme/certs/{serial}/revoke", permission.ACMERevoke, s.acme.HandleRevokeCert, "revoke a certificate issued through ACME (ARI then tells its client to renew)"),
		)
	}
	// OIDC discovery for JWT-SVIDs (nil: no --jwt-issuer), public as the
	// JWT bundle is.
	if s.oidc != nil {
		for _, r := range s.oidc.Routes() {
			rs = append(rs, route(AuthPublic, r.Pattern, r.Handler, r.Doc))
		}
	}
	// Node attestation other than by join token (nodeattestapi.go); the
	// caller proves itself in the body.
	rs = append(rs,
		route(AuthNodeProof, "POST /v1/agent/attest/x509pop/challenge", s.handleX509PoPChallenge, "x509pop: verify a node's certificate chain and issue a single-use nonce (60s) for its key to sign"),
		route(AuthNodeProof, "POST /v1/agent/attest/x509pop", s.handleX509PoPAttest, "x509pop: the signed nonce, chain and CSR; the agent's first SVID"),
		route(AuthNodeProof, "POST /v1/agent/attest/tpm/challenge", s.handleTPMChallenge, "tpm: check the EK (allowed by hash) and the AK, and make a credential for the AK under the EK, with a single-use nonce (60s)"),
		route(AuthNodeProof, "POST /v1/agent/attest/tpm", s.handleTPMAttest, "tpm: the activated credential, a quote over the nonce by the AK, and a CSR; the agent's first SVID"),
	)
	// The authorization server (before Serve on port 0 it does not exist).
	if s.oauth != nil {
		for _, r := range s.oauth.Routes() {
			rt := route(AuthOAuth, r.Pattern, r.Handler.ServeHTTP, r.Doc)
			rs = append(rs, rt)
		}
	}
	// Downstream CAs (SPIRE's MintX509CA) for downstream entries' workloads.
	rs = append(rs,
		route(AuthWorkload, "POST /v1/ca/downstream", s.handleDownstream, "mint a CA certificate for a nested server, from a CSR, for a workload whose SPIFFE ID is a downstream entry's (off unless --downstream-max-ttl)"),
	)
	return rs
}

package store

import (
	"context"
	"errors"
	"time"

	"github.com/rampartsec/rampart/internal/selector"
)

// Sentinel errors. Implementations wrap them; callers test with errors.Is.
var (
	// ErrNotFound: the named object does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: an object with the same unique key already exists.
	ErrConflict = errors.New("store: already exists")
	// ErrTokenInvalid: a join token is unknown, already used, or expired. The
	// three are deliberately one error so a caller cannot probe which.
	ErrTokenInvalid = errors.New("store: join token unknown, used or expired")
	// ErrGrantReused: an authorisation code or refresh token was presented
	// a second time (or after its family was revoked).
	ErrGrantReused = errors.New("store: grant already used")
	// ErrStateConflict: the object is not in a state the change applies to
	// (destroying a key version that is already destroyed, say).
	ErrStateConflict = errors.New("store: not in a state that allows this")
	// ErrRevoked: the grant family a new one would descend from is revoked.
	ErrRevoked = errors.New("store: revoked")
	// ErrQuota: the key has as many live entries as it may hold.
	ErrQuota = errors.New("store: quota reached")
)

// Store is the control plane's persistent state. All methods are safe for
// concurrent use. Times are stored with second precision or better, in UTC.
type Store interface {
	// CA keys.
	PutCAKey(ctx context.Context, k CAKey) error
	ListCAKeys(ctx context.Context) ([]CAKey, error)
	// SetCAKeyState changes the state of one key and bumps the revision.
	SetCAKeyState(ctx context.Context, id string, state CAKeyState) error

	// Join tokens.
	CreateJoinToken(ctx context.Context, t JoinToken) error
	// ConsumeJoinToken marks the token with this hash used, atomically, if it
	// exists, is unused and has not expired at now. Two concurrent calls with
	// the same hash: exactly one succeeds.
	ConsumeJoinToken(ctx context.Context, hash []byte, now time.Time) (JoinToken, error)

	// Agents.
	// UpsertAgent records an agent, or its new SVID, and never clears an
	// eviction (a's Evicted can only set one): a renewal racing an
	// eviction must not undo it. ReadmitAgent clears one.
	UpsertAgent(ctx context.Context, a Agent) error
	GetAgent(ctx context.Context, spiffeID string) (Agent, error)
	ListAgents(ctx context.Context) ([]Agent, error)
	// TouchAgent sets when the agent was last seen, and nothing else.
	TouchAgent(ctx context.Context, spiffeID string, at time.Time) error
	// EvictAgent marks the agent evicted and bumps the revision. Revoking its
	// SVIDs is the caller's job (it knows the reason and time).
	EvictAgent(ctx context.Context, spiffeID string, at time.Time) error
	// ReadmitAgent clears an agent's eviction (a join token made for it
	// after the eviction was spent) and bumps the revision; an agent not
	// evicted, or unknown, is left as it is.
	ReadmitAgent(ctx context.Context, spiffeID string) error

	// Registration entries.
	CreateEntry(ctx context.Context, e Entry) error
	GetEntry(ctx context.Context, id string) (Entry, error)
	// ListEntries lists all entries, or those whose parent is parentID when it
	// is not empty, ordered by ID.
	ListEntries(ctx context.Context, parentID string) ([]Entry, error)
	// FindEntries lists the entries that match f, ordered by ID.
	FindEntries(ctx context.Context, f EntryFilter) ([]Entry, error)
	DeleteEntry(ctx context.Context, id string) error
	// CreateEntries, UpdateEntries and DeleteEntries change every entry
	// given or none, in one transaction with one revision bump: an ID
	// already taken is ErrConflict, one missing ErrNotFound, naming it.
	CreateEntries(ctx context.Context, es []Entry) error
	UpdateEntries(ctx context.Context, es []Entry) error
	DeleteEntries(ctx context.Context, ids []string) error

	// Issued SVIDs, recorded so they can be revoked by SPIFFE ID or agent.
	RecordSVIDs(ctx context.Context, svids []IssuedSVID) error
	// ListSVIDs lists unexpired SVIDs (NotAfter after now) matching the filter.
	ListSVIDs(ctx context.Context, f SVIDFilter, now time.Time) ([]IssuedSVID, error)

	// Revocations. AddRevocations ignores serials already revoked and bumps
	// the revision once.
	AddRevocations(ctx context.Context, rs []Revocation) error
	// ListRevocations lists revocations whose certificate has not yet expired.
	ListRevocations(ctx context.Context, now time.Time) ([]Revocation, error)
	// PruneExpired deletes SVID records and revocations whose certificates
	// expired before now, and tokens that expired before now.
	PruneExpired(ctx context.Context, now time.Time) error

	// Policies: every upload is a new version (Seq increasing per service);
	// the latest is in force. PutPolicy assigns Seq and bumps the revision.
	PutPolicy(ctx context.Context, p Policy) (Policy, error)
	// GetPolicy returns the policy in force for service, ErrNotFound if none.
	GetPolicy(ctx context.Context, service string) (Policy, error)
	// ListPolicies returns the policy in force for every service that has one.
	ListPolicies(ctx context.Context) ([]Policy, error)
	// PolicyHistory returns every version of service's policy, oldest first,
	// deletions included.
	PolicyHistory(ctx context.Context, service string) ([]Policy, error)
	// DeletePolicy records a deletion (the service falls back to default
	// deny) and bumps the revision; ErrNotFound if no policy is in force.
	DeletePolicy(ctx context.Context, service string, at time.Time) error

	// Alerts. UpsertAlert inserts a new alert (true) or, for a known ID,
	// moves its LastSeen, Count and LastIndex forward (false); the status
	// an operator set is kept.
	UpsertAlert(ctx context.Context, a Alert) (created bool, err error)
	GetAlert(ctx context.Context, id string) (Alert, error)
	// ListAlerts lists alerts first seen at or after f.Since, oldest first.
	ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error)
	SetAlertStatus(ctx context.Context, id, status string, at time.Time) error

	// Key store. Every change bumps the key's generation and the revision.
	// CreateKMSKey stores a key with its first version (ErrConflict if the
	// name is taken).
	CreateKMSKey(ctx context.Context, k KMSKey, v KMSKeyVersion) error
	GetKMSKey(ctx context.Context, name string) (KMSKey, []KMSKeyVersion, error)
	ListKMSKeys(ctx context.Context) ([]KMSKey, error)
	// RotateKMSKey adds v, which must be the version after the key's
	// latest (ErrConflict otherwise: someone else rotated first), and makes
	// it the latest.
	RotateKMSKey(ctx context.Context, v KMSKeyVersion) error
	// SetKMSVersionState moves a version to state if it is in one of from
	// (ErrStateConflict otherwise).
	SetKMSVersionState(ctx context.Context, name string, version int, from []string, state string, destroyAt time.Time) error
	// DestroyDueKMSVersions erases the material of every version whose
	// scheduled destruction is due and returns them.
	DestroyDueKMSVersions(ctx context.Context, now time.Time) ([]KMSKeyVersion, error)

	// OAuth clients. The secret is never stored, only its SHA-256.
	CreateOAuthClient(ctx context.Context, c OAuthClient) error
	GetOAuthClient(ctx context.Context, id string) (OAuthClient, error)
	ListOAuthClients(ctx context.Context) ([]OAuthClient, error)
	// UpdateOAuthClient replaces the client's attributes (not its secret)
	// and bumps the revision.
	UpdateOAuthClient(ctx context.Context, c OAuthClient) error
	DeleteOAuthClient(ctx context.Context, id string) error

	// OAuth users of the built-in user store.
	CreateOAuthUser(ctx context.Context, u OAuthUser) error
	GetOAuthUser(ctx context.Context, username string) (OAuthUser, error)
	ListOAuthUsers(ctx context.Context) ([]OAuthUser, error)
	// UpdateOAuthUser replaces the user's attributes (not the failure
	// counter or lock, which only the two calls below move).
	UpdateOAuthUser(ctx context.Context, u OAuthUser) error
	DeleteOAuthUser(ctx context.Context, username string) error
	// LoginFailed counts one failed login, atomically, unless the account
	// is in a back-off (LockedUntil after now: the attempt was refused
	// unchecked and is not counted). From the b.Free-th consecutive
	// failure on, the account backs off for b.Base, doubling with each
	// further failure up to b.Max. It returns the user as updated.
	LoginFailed(ctx context.Context, username string, now time.Time, b Backoff) (OAuthUser, error)
	// LoginSucceeded resets the failure counter and the back-off (also
	// how an operator unlocks an account).
	LoginSucceeded(ctx context.Context, username string) error
	// UseTOTPStep records step as the user's last accepted one-time code
	// step if it is later than the recorded one, atomically: of two
	// logins with the same code, one gets ErrConflict.
	UseTOTPStep(ctx context.Context, username string, step int64) error

	// OAuth grants: authorisation codes and refresh tokens.
	PutOAuthGrant(ctx context.Context, g OAuthGrant) error
	// UseOAuthGrant marks the grant of this kind and hash used,
	// atomically, if it is unused, not revoked and unexpired at now, and
	// returns it. If it was already used or revoked it returns the grant
	// and ErrGrantReused: the caller revokes the family. Unknown (or of
	// another kind) or expired: ErrNotFound, and nothing changes.
	UseOAuthGrant(ctx context.Context, kind string, hash []byte, now time.Time) (OAuthGrant, error)
	// PutOAuthFamily records a grant family: every access token carries
	// its family (sid), so revoking the family revokes the tokens. A
	// family with a Parent (a token exchange) is refused with ErrRevoked
	// if the parent is revoked, and is revoked with it later.
	PutOAuthFamily(ctx context.Context, f OAuthFamily) error
	// RevokeOAuthFamilies revokes the families sel picks, live at
	// r.RevokedAt, and every family descended from them: their grants
	// are marked revoked and each family's ID is recorded in the token
	// revocation list (with r's reason, until the earlier of r.ExpiresAt
	// and the family's own end), in one transaction that bumps the
	// revision. Selecting by ID revokes that family even if it was never
	// recorded. Selecting by subject or client also marks every grant of
	// that subject or client revoked. It returns the family IDs revoked.
	RevokeOAuthFamilies(ctx context.Context, sel FamilySelector, r TokenRevocation) ([]string, error)
	// RevokeOAuthToken records r (an access token's jti) and bumps the
	// revision; revoking twice is not an error.
	RevokeOAuthToken(ctx context.Context, r TokenRevocation) error
	// ListOAuthRevocations lists revocations whose tokens have not expired.
	ListOAuthRevocations(ctx context.Context, now time.Time) ([]TokenRevocation, error)
	// UseDPoPProof records a DPoP proof's (key thumbprint, jti) until
	// expires, shared by every replica: a second use is ErrConflict; a key
	// that already has quota live proofs recorded at now gets ErrQuota.
	UseDPoPProof(ctx context.Context, jkt, jti string, expires, now time.Time, quota int) error

	// CreateAttestChallenge records a node attestation challenge (its
	// nonce's hash) until it expires; a subject that already has quota
	// live challenges gets ErrQuota.
	CreateAttestChallenge(ctx context.Context, c AttestChallenge, now time.Time, quota int) error
	// ConsumeAttestChallenge removes and returns the live challenge of
	// kind with hash, once, whichever replica asks; ErrTokenInvalid if
	// there is none.
	ConsumeAttestChallenge(ctx context.Context, hash []byte, kind string, now time.Time) (AttestChallenge, error)

	// Revision returns the current revision: it increases with every change
	// an agent must learn about.
	Revision(ctx context.Context) (int64, error)

	// HoldAuditLog claims, for as long as release is not called and the
	// process lives, the right to keep this deployment's audit log: one
	// log per deployment, however many replicas share the store. A second
	// claim gets ErrAuditLogHeld. (SQLite serves one server: always
	// granted.)
	HoldAuditLog(ctx context.Context) (release func(), err error)

	Close() error
}

// ErrAuditLogHeld is returned by HoldAuditLog while another replica holds
// the deployment's audit log.
var ErrAuditLogHeld = errors.New("store: another replica holds this deployment's audit log")

// CAKeyKind says what a CA key is used for.
type CAKeyKind string

const (
	KindRoot         CAKeyKind = "root"
	KindIntermediate CAKeyKind = "intermediate"
	KindJWT          CAKeyKind = "jwt"
	// KindOAuth signs OAuth access and ID tokens; CertDER is the public
	// key (PKIX DER).
	KindOAuth CAKeyKind = "oauth"
	// KindOAuthSession is the MAC key of the login session cookie;
	// WrappedKey holds it sealed, CertDER is empty.
	KindOAuthSession CAKeyKind = "oauth-session"
)

// CAKeyState is where a key is in its life.
type CAKeyState string

const (
	// StatePrepared: published (in the bundle) but not yet signing.
	StatePrepared CAKeyState = "prepared"
	// StateActive: signing.
	StateActive CAKeyState = "active"
	// StateRetired: no longer signing; still published until NotAfter so
	// what it signed stays verifiable.
	StateRetired CAKeyState = "retired"
	// StateDropped: taken out of every bundle before NotAfter (a burn-down
	// rekey after a compromise); never loaded, published or used again.
	StateDropped CAKeyState = "dropped"
)

// CAKey is a CA certificate (or JWT signing key) with its wrapped private key.
type CAKey struct {
	ID         string     // unique, e.g. hex of the subject key ID
	Kind       CAKeyKind  //
	State      CAKeyState //
	CertDER    []byte     // certificate; for KindJWT the public key (PKIX DER)
	WrappedKey []byte     // private key sealed by keywrap; nil when kept offline
	NotBefore  time.Time
	NotAfter   time.Time
	CreatedAt  time.Time
}

// JoinToken is a one-time credential that attests one agent.
type JoinToken struct {
	Hash      []byte    // SHA-256 of the token; the token itself is never stored
	AgentID   string    // SPIFFE ID the agent will receive
	ExpiresAt time.Time //
	CreatedAt time.Time //
	UsedAt    time.Time // zero until consumed
}

// Agent is a node agent that attested with a join token.
type Agent struct {
	SpiffeID     string
	Serial       string    // serial of its current SVID (hex)
	SVIDNotAfter time.Time //
	AttestedAt   time.Time //
	LastSeen     time.Time //
	Evicted      bool      //
	EvictedAt    time.Time // zero unless evicted
}

// Entry is a registration entry: workloads under ParentID whose attested
// selectors include all of Selectors are issued SpiffeID.
type Entry struct {
	ID        string
	SpiffeID  string
	ParentID  string
	Selectors []selector.Selector
	X509TTL   time.Duration // 0: server default
	JWTTTL    time.Duration // 0: server default
	DNSNames  []string
	CreatedAt time.Time
	// Admin and Downstream are SPIRE's flags: the admin API's admin role
	// and downstream CAs for the workload of the entry's SPIFFE ID (see
	// registration's doc).
	Admin, Downstream bool
	// Hint tells a workload holding several SVIDs which is which (the
	// Workload API's hint field).
	Hint string
	// ExpiresAt, if set, ends the entry: no SVID is signed for it after,
	// and none outlives it.
	ExpiresAt time.Time
	// FederatesWith names the trust domains (sorted, without the
	// spiffe:// scheme) whose bundles the entry's workloads are given
	// besides their own (SPIRE's federates_with).
	FederatesWith []string
}

// EntryFilter selects entries; empty fields match anything.
type EntryFilter struct {
	ParentID, SpiffeID, Hint string
	// Selectors: entries having every one of these (and maybe more).
	Selectors []selector.Selector
	// FederatesWith: entries federating with this trust domain.
	FederatesWith string
}

// IssuedSVID records one X.509-SVID the CA signed.
type IssuedSVID struct {
	Serial   string // hex
	SpiffeID string
	AgentID  string // agent that requested it; for an agent SVID, itself
	EntryID  string // empty for agent SVIDs
	NotAfter time.Time
	IssuedAt time.Time
}

// SVIDFilter selects issued SVIDs; empty fields match anything.
type SVIDFilter struct {
	SpiffeID string
	AgentID  string
}

// Revocation marks one certificate serial revoked.
type Revocation struct {
	Serial    string // hex
	SpiffeID  string
	Reason    string
	RevokedAt time.Time
	NotAfter  time.Time // the certificate's; the revocation is kept until then
}

// Policy is one version of the authorisation policy protecting a service.
type Policy struct {
	Service   string // SPIFFE ID of the protected service
	Seq       int64  // 1, 2, ... per service
	Version   string // content hash of Source, shown in decisions
	Source    []byte // the policy document as uploaded (YAML)
	Deleted   bool   // a tombstone: no policy from here on
	CreatedAt time.Time
}

// Alert statuses.
const (
	AlertOpen         = "open"
	AlertAcknowledged = "acknowledged"
	AlertResolved     = "resolved"
)

// Alert is what a detection rule raised, deduplicated per rule and group.
type Alert struct {
	ID         string
	Rule       string
	Severity   string
	Group      string // "field=value ..." of the rule's group_by, or the new term
	Summary    string
	FirstSeen  time.Time // time of the entry that raised it
	LastSeen   time.Time // time of the latest entry that fired it again
	Count      int64     // firings merged into it
	FirstIndex int64     // audit log index of the entry that raised it
	LastIndex  int64
	Status     string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// AlertFilter selects alerts.
type AlertFilter struct {
	Since  time.Time
	Rule   string
	Status string
	Limit  int
}

// WaitHoldAuditLog claims the audit log (HoldAuditLog), retrying for
// five seconds while another holds it: a holder that was just killed
// frees the claim when PostgreSQL sees its session end, and a restart
// gets a few seconds for that.
func WaitHoldAuditLog(ctx context.Context, st Store) (release func(), err error) {
	release, err = st.HoldAuditLog(ctx)
	for tries := 0; errors.Is(err, ErrAuditLogHeld) && tries < 20; tries++ {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		release, err = st.HoldAuditLog(ctx)
	}
	return release, err
}

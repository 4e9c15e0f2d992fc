package api

import (
	"encoding/json"
	"time"
)

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type   string `json:"type,omitempty"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return p.Detail
	}
	return p.Title
}

// CreateJoinTokenRequest asks for a one-time join token.
type CreateJoinTokenRequest struct {
	AgentName  string `json:"agent_name,omitempty"` // default: random
	TTLSeconds int64  `json:"ttl_seconds,omitempty"`
}

// CreateJoinTokenResponse carries the token; it is shown only this once.
type CreateJoinTokenResponse struct {
	Token     string    `json:"token"`
	AgentID   string    `json:"agent_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Entry is a registration entry.
type Entry struct {
	ID             string    `json:"id,omitempty"`
	SpiffeID       string    `json:"spiffe_id"`
	ParentID       string    `json:"parent_id"`
	Selectors      []string  `json:"selectors"`
	X509TTLSeconds int64     `json:"x509_ttl_seconds,omitempty"`
	JWTTTLSeconds  int64     `json:"jwt_ttl_seconds,omitempty"`
	DNSNames       []string  `json:"dns_names,omitempty"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
	// SPIRE's entry fields: admin and downstream are recorded (see
	// docs/deploy.md for what they grant), hint reaches the workload with
	// its SVID, and after expires_at no SVID is signed for the entry.
	Admin      bool      `json:"admin,omitempty"`
	Downstream bool      `json:"downstream,omitempty"`
	Hint       string    `json:"hint,omitempty"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	// FederatesWith names the trust domains whose bundles the entry's
	// workloads are given besides their own; each needs a federation
	// relationship.
	FederatesWith []string `json:"federates_with,omitempty"`
}

// EntryBatch is the body of the batch endpoints: entries to create or
// update (with their IDs), or IDs to delete. All or none is applied.
type EntryBatch struct {
	Entries []Entry  `json:"entries,omitempty"`
	IDs     []string `json:"ids,omitempty"`
}

// EntryBatchResponse lists the entries created, updated or deleted.
type EntryBatchResponse struct {
	Entries []Entry `json:"entries"`
}

// Agent describes an attested agent.
type Agent struct {
	SpiffeID     string    `json:"spiffe_id"`
	Serial       string    `json:"serial"`
	SVIDNotAfter time.Time `json:"svid_not_after"`
	AttestedAt   time.Time `json:"attested_at"`
	LastSeen     time.Time `json:"last_seen"`
	Evicted      bool      `json:"evicted"`
	EvictedAt    time.Time `json:"evicted_at,omitzero"`
}

// RevokeRequest revokes one SVID by serial, or every unexpired SVID issued
// for a SPIFFE ID.
type RevokeRequest struct {
	Serial   string `json:"serial,omitempty"`
	SpiffeID string `json:"spiffe_id,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// RevokeResponse lists the serials revoked.
type RevokeResponse struct {
	Revoked []string `json:"revoked"`
}

// EvictResponse tells what an eviction revoked.
type EvictResponse struct {
	Agent   Agent    `json:"agent"`
	Revoked []string `json:"revoked"`
}

// AttestRequest is an agent's first call: a join token and a CSR for its SVID.
type AttestRequest struct {
	JoinToken string `json:"join_token"`
	CSR       []byte `json:"csr"`
}

// X509SVID is a signed certificate chain, leaf first, without the root.
type X509SVID struct {
	SpiffeID string   `json:"spiffe_id"`
	Chain    [][]byte `json:"chain"`
}

// AttestResponse returns the agent's SVID and the trust bundle.
type AttestResponse struct {
	SVID   X509SVID `json:"svid"`
	Bundle [][]byte `json:"bundle"`
}

// RenewRequest asks for a new agent SVID; the call is authenticated by the
// current one (mTLS).
type RenewRequest struct {
	CSR []byte `json:"csr"`
}

// SyncResponse is everything an agent needs at one revision.
type SyncResponse struct {
	Revision  int64           `json:"revision"`
	Bundle    [][]byte        `json:"bundle"`
	JWTBundle json.RawMessage `json:"jwt_bundle"`
	Entries   []Entry         `json:"entries"`
	Revoked   []string        `json:"revoked"`
	// ReissueUnlessRoot, during a burn-down (rampart rekey), names the
	// root (hex of its subject key ID) every SVID must descend from: the
	// agent re-issues, at once, its own SVID and every workload SVID whose
	// intermediate another root signed.
	ReissueUnlessRoot string `json:"reissue_unless_root,omitempty"`
	// FederatedBundles are the bundles of the trust domains this one
	// federates with, by trust domain name, each a SPIFFE bundle
	// document (package federation).
	FederatedBundles map[string]json.RawMessage `json:"federated_bundles,omitempty"`
}

// SignRequest asks for workload SVIDs, one per entry.
type SignRequest struct {
	Requests []SignItem `json:"requests"`
}

// SignItem is one CSR for one entry.
type SignItem struct {
	EntryID string `json:"entry_id"`
	CSR     []byte `json:"csr"`
}

// SignResponse answers a SignRequest item by item, in order. An item that
// failed has Error set and no SVID; the others are unaffected.
type SignResponse struct {
	Results []SignResult `json:"results"`
}

// SignResult is the answer for one SignItem.
type SignResult struct {
	EntryID string    `json:"entry_id"`
	SVID    *X509SVID `json:"svid,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// JWTSVIDRequest asks for a JWT-SVID for one entry.
type JWTSVIDRequest struct {
	EntryID  string   `json:"entry_id"`
	Audience []string `json:"audience"`
}

// JWTSVIDResponse carries a signed JWT-SVID.
type JWTSVIDResponse struct {
	SpiffeID  string    `json:"spiffe_id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CAKey describes one CA key.
type CAKey struct {
	Kind      string    `json:"kind"`
	ID        string    `json:"id"`
	State     string    `json:"state"`
	Subject   string    `json:"subject,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Upstream  bool      `json:"upstream,omitempty"`
}

// CAStatus lists the CA's keys.
type CAStatus struct {
	TrustDomain string  `json:"trust_domain"`
	Keys        []CAKey `json:"keys"`
}

// Rotation targets for RotateRequest.
const (
	RotateIntermediate = "intermediate"
	RotateRootPrepare  = "root-prepare"
	RotateRootActivate = "root-activate"
)

// RotateRequest rotates one part of the CA now.
type RotateRequest struct {
	Target string `json:"target"`
}

// Policy is one version of a service's authorisation policy.
type Policy struct {
	Service   string    `json:"service"`
	Seq       int64     `json:"seq"`
	Version   string    `json:"version"`
	Source    string    `json:"source,omitempty"` // the YAML document
	Deleted   bool      `json:"deleted,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// WorkloadSyncResponse is what a proxy or SDK needs to authorise calls to
// its service: the policy protecting it (nil: none, default deny), the
// revoked serials, and the bundle.
type WorkloadSyncResponse struct {
	Revision int64    `json:"revision"`
	Service  string   `json:"service"`
	Policy   *Policy  `json:"policy"`
	Revoked  []string `json:"revoked"`
	Bundle   [][]byte `json:"bundle"`
	// User access tokens: who issues them, the issuer's JWKS, and the
	// revoked token and grant IDs (jti, sid).
	TokenIssuer   string          `json:"token_issuer,omitempty"`
	TokenKeys     json.RawMessage `json:"token_keys,omitempty"`
	RevokedTokens []string        `json:"revoked_tokens,omitempty"`
	// Quarantined identities (SPIFFE IDs and "ID/*" patterns): refused in
	// both directions, their open connections ended (package respond).
	Quarantined []string `json:"quarantined,omitempty"`
}

// AuditIngestRequest is a batch of audit entries from an agent's or a
// proxy's spool: consecutive sequence numbers of one stream, each entry in
// the audit package's canonical JSON.
type AuditIngestRequest struct {
	Entries []json.RawMessage `json:"entries"`
}

// AuditIngestResponse acknowledges a batch: the server holds every entry of
// the stream through AckedThrough durably.
type AuditIngestResponse struct {
	Stream       string `json:"stream"`
	AckedThrough uint64 `json:"acked_through"`
}

// Alert is a detection alert.
type Alert struct {
	ID         string    `json:"id"`
	Rule       string    `json:"rule"`
	Severity   string    `json:"severity"`
	Group      string    `json:"group,omitempty"`
	Summary    string    `json:"summary"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
	Count      int64     `json:"count"`
	FirstIndex int64     `json:"first_index"` // audit log index of the entry that raised it
	LastIndex  int64     `json:"last_index"`
	Status     string    `json:"status"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// SetAlertStatusRequest changes an alert's status (open, acknowledged, resolved).
type SetAlertStatusRequest struct {
	Status string `json:"status"`
	Note   string `json:"note,omitempty"`
}

// OAuthClient is an OAuth client registration. Secret is only ever set in
// the response that creates the client.
type OAuthClient struct {
	ID           string          `json:"id"`
	Name         string          `json:"name,omitempty"`
	AuthMethod   string          `json:"auth_method"`
	RedirectURIs []string        `json:"redirect_uris,omitempty"`
	GrantTypes   []string        `json:"grant_types"`
	Scopes       []string        `json:"scopes,omitempty"`
	Audience     []string        `json:"audience,omitempty"`
	JWKS         json.RawMessage `json:"jwks,omitempty"`
	SPIFFEID     string          `json:"spiffe_id,omitempty"`
	Disabled     bool            `json:"disabled,omitempty"`
	CreatedAt    time.Time       `json:"created_at,omitzero"`
	Secret       string          `json:"secret,omitempty"`
}

// OAuthClientUpdate changes a client; absent fields stay as they are.
// Disabling revokes every token issued to the client and every token
// exchanged from them.
type OAuthClientUpdate struct {
	Disabled *bool `json:"disabled,omitempty"`
}

// OAuthUser is a user of the built-in user store. Password is only ever
// sent, never returned.
type OAuthUser struct {
	Username     string    `json:"username"`
	Name         string    `json:"name,omitempty"`
	Email        string    `json:"email,omitempty"`
	Groups       []string  `json:"groups,omitempty"`
	Disabled     bool      `json:"disabled,omitempty"`
	TOTP         bool      `json:"totp"`
	FailedLogins int       `json:"failed_logins,omitempty"`
	LockedUntil  time.Time `json:"locked_until,omitzero"`
	CreatedAt    time.Time `json:"created_at,omitzero"`
	Password     string    `json:"password,omitempty"`
}

// OAuthUserUpdate changes a user; absent fields stay as they are.
type OAuthUserUpdate struct {
	Password *string   `json:"password,omitempty"`
	Name     *string   `json:"name,omitempty"`
	Email    *string   `json:"email,omitempty"`
	Groups   *[]string `json:"groups,omitempty"`
	// Disabled true revokes the user's sessions and every token issued
	// for the user (and exchanged from those); enabling again does not
	// bring them back.
	Disabled *bool `json:"disabled,omitempty"`
	// Unlock ends a back-off after failed logins.
	Unlock bool `json:"unlock,omitempty"`
	// TOTP is "enable" (a new secret; the response carries it once) or
	// "disable".
	TOTP string `json:"totp,omitempty"`
}

// OAuthUserUpdateResponse is the user after an update and, when TOTP was
// enabled, the otpauth:// URI for the user's authenticator app.
type OAuthUserUpdateResponse struct {
	User    OAuthUser `json:"user"`
	TOTPURI string    `json:"totp_uri,omitempty"`
}

// KMSCreateKeyRequest creates a key in the key store.
type KMSCreateKeyRequest struct {
	Name string `json:"name"`
	// Type: aes256-gcm (default), ecdsa-p256, ed25519 or hmac-sha256.
	Type string `json:"type,omitempty"`
	// RotateEverySeconds schedules rotation; 0: manual only.
	RotateEverySeconds int64 `json:"rotate_every_seconds,omitempty"`
}

// KMSKey describes a key (never its material).
type KMSKey struct {
	Name               string          `json:"name"`
	Type               string          `json:"type"`
	Latest             int             `json:"latest"`
	RotateEverySeconds int64           `json:"rotate_every_seconds,omitempty"`
	CreatedAt          time.Time       `json:"created_at"`
	RotatedAt          time.Time       `json:"rotated_at"`
	Versions           []KMSKeyVersion `json:"versions"`
}

// KMSKeyVersion describes one version of a key.
type KMSKeyVersion struct {
	Version   int        `json:"version"`
	State     string     `json:"state"` // enabled, disabled, destroy-scheduled, destroyed
	CreatedAt time.Time  `json:"created_at"`
	DestroyAt *time.Time `json:"destroy_at,omitempty"`
	PublicKey []byte     `json:"public_key,omitempty"` // PKIX DER of a signing key
}

// KMSVersionRequest changes a version's state (POST
// /v1/kms/keys/NAME/versions/N/ACTION, ACTION one of disable, enable,
// destroy, restore).
type KMSVersionRequest struct {
	// GraceSeconds delays a destruction (default 7 days, at least 1 hour).
	GraceSeconds int64 `json:"grace_seconds,omitempty"`
}

// KMSRequest is the body of a key operation (POST /v1/kms/keys/NAME/OP,
// OP one of encrypt, decrypt, datakey, rewrap, sign, verify, hmac,
// verify-hmac). Byte fields are base64.
type KMSRequest struct {
	Plaintext  []byte `json:"plaintext,omitempty"`  // encrypt
	Ciphertext []byte `json:"ciphertext,omitempty"` // decrypt, rewrap
	AAD        []byte `json:"aad,omitempty"`        // encrypt, decrypt, datakey, rewrap
	Message    []byte `json:"message,omitempty"`    // sign, verify, hmac, verify-hmac
	Signature  []byte `json:"signature,omitempty"`  // verify
	MAC        []byte `json:"mac,omitempty"`        // verify-hmac
}

// KMSResponse is the answer to a key operation.
type KMSResponse struct {
	Version    int    `json:"version"` // the key version used
	Plaintext  []byte `json:"plaintext,omitempty"`
	Ciphertext []byte `json:"ciphertext,omitempty"` // encrypt, rewrap; the wrapped key of datakey
	Signature  []byte `json:"signature,omitempty"`
	MAC        []byte `json:"mac,omitempty"`
	Valid      *bool  `json:"valid,omitempty"` // verify, verify-hmac
}

// Federation is a federation relationship with another trust domain
// (package federation). On create and update, Bundle is the other trust
// domain's bundle obtained out of band (a SPIFFE bundle document): the
// first one, that authenticates an https_spiffe endpoint; on read, the
// bundle held now.
type Federation struct {
	TrustDomain string          `json:"trust_domain"`
	BundleURL   string          `json:"bundle_endpoint_url"`
	Profile     string          `json:"bundle_endpoint_profile"`
	EndpointID  string          `json:"endpoint_spiffe_id,omitempty"`
	Bundle      json.RawMessage `json:"trust_domain_bundle,omitempty"`
	// Read only.
	X509Authorities int        `json:"x509_authorities,omitempty"`
	Sequence        *uint64    `json:"spiffe_sequence,omitempty"`
	RefreshedAt     *time.Time `json:"refreshed_at,omitempty"`
	NextRefresh     *time.Time `json:"next_refresh,omitempty"`
	LastAttempt     *time.Time `json:"last_attempt,omitempty"`
	LastError       string     `json:"last_error,omitempty"`
	CreatedAt       *time.Time `json:"created_at,omitempty"`
	UpdatedAt       *time.Time `json:"updated_at,omitempty"`
}

// DownstreamRequest asks for a downstream CA (POST /v1/ca/downstream),
// made by a workload whose SPIFFE ID is a downstream entry's: a nested
// server's signing certificate. Only the CSR's public key and signature
// are used; every extension is the server's choice.
type DownstreamRequest struct {
	// CSR is a PKCS#10 certificate request (DER), signed by the key the
	// CA certificate is for.
	CSR []byte `json:"csr"`
	// TTLSeconds asks for a lifetime (0: the server's maximum); it is
	// cut to the server's maximum, the entry's expiry and the
	// intermediate's remaining life.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
}

// DownstreamResponse is the minted CA.
type DownstreamResponse struct {
	// Chain is DER, the downstream CA first, then the server's
	// intermediate; the root is in Bundle.
	Chain [][]byte `json:"chain"`
	// Bundle is the trust bundle's roots (DER).
	Bundle    [][]byte  `json:"bundle"`
	Serial    string    `json:"serial"`
	ExpiresAt time.Time `json:"expires_at"`
}

// X509PoPChallengeRequest starts x509pop node attestation: the node's
// certificate chain, leaf first (DER).
type X509PoPChallengeRequest struct {
	Chain [][]byte `json:"chain"`
}

// X509PoPChallengeResponse carries the nonce to sign (nodeattest.Message).
type X509PoPChallengeResponse struct {
	Nonce     []byte    `json:"nonce"`
	ExpiresAt time.Time `json:"expires_at"`
}

// X509PoPAttestRequest answers the challenge: the same chain, the nonce,
// the signature by the leaf's key, and a CSR for the agent's SVID.
type X509PoPAttestRequest struct {
	Chain     [][]byte `json:"chain"`
	Nonce     []byte   `json:"nonce"`
	Signature []byte   `json:"signature"`
	CSR       []byte   `json:"csr"`
}

// TPMChallengeRequest starts TPM node attestation: the public areas
// (TPMT_PUBLIC) of the TPM's endorsement key and of an attestation key.
type TPMChallengeRequest struct {
	EKPublic []byte `json:"ek_public"`
	AKPublic []byte `json:"ak_public"`
}

// TPMChallengeResponse is a credential for the AK under the EK, and the
// nonce for the AK to quote.
type TPMChallengeResponse struct {
	Nonce           []byte    `json:"nonce"`
	CredentialBlob  []byte    `json:"credential_blob"`
	EncryptedSecret []byte    `json:"encrypted_secret"`
	ExpiresAt       time.Time `json:"expires_at"`
}

// TPMAttestRequest answers the challenge: the activated secret, the quote
// (TPMS_ATTEST) and its signature (TPMT_SIGNATURE), and a CSR.
type TPMAttestRequest struct {
	EKPublic  []byte `json:"ek_public"`
	AKPublic  []byte `json:"ak_public"`
	Nonce     []byte `json:"nonce"`
	Secret    []byte `json:"secret"`
	Quote     []byte `json:"quote"`
	Signature []byte `json:"signature"`
	CSR       []byte `json:"csr"`
}

package api

import "time"

// ACME (operator calls under /v1/acme/; the protocol itself is at
// /acme/directory, see package acme).

// ACMEEABKeyRequest asks for an external account binding key.
type ACMEEABKeyRequest struct {
	Label string `json:"label,omitempty"`
	// AllowedNames are the name patterns the accounts bound to the key
	// may order: api.example.org, *.internal.example.org, 10.1.0.0/16
	// (empty: the server's --acme-allow).
	AllowedNames []string `json:"allowed_names,omitempty"`
	// ClientAuth lets its accounts order the tls-server-client profile.
	ClientAuth bool `json:"client_auth,omitempty"`
	// Reusable lets the key bind more than one account.
	Reusable bool `json:"reusable,omitempty"`
	// TTLSeconds is how long the key may wait to be bound (default 7 days).
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
}

// ACMEEABKey is an EAB key. HMACKey is set only in the answer to its
// creation: it is shown once.
type ACMEEABKey struct {
	KeyID        string    `json:"key_id"`
	HMACKey      string    `json:"hmac_key,omitempty"`
	Label        string    `json:"label,omitempty"`
	AllowedNames []string  `json:"allowed_names"`
	ClientAuth   bool      `json:"client_auth"`
	Reusable     bool      `json:"reusable"`
	Accounts     int       `json:"accounts"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
	// Directory is the ACME directory URL to give clients with the key.
	Directory string `json:"directory,omitempty"`
}

// ACMECert is a certificate issued through ACME.
type ACMECert struct {
	Serial           string    `json:"serial"`
	CertID           string    `json:"cert_id"` // RFC 9773
	Account          string    `json:"account"`
	Order            string    `json:"order"`
	Names            []string  `json:"names"`
	Status           string    `json:"status"` // valid, revoked, expired
	NotBefore        time.Time `json:"not_before"`
	NotAfter         time.Time `json:"not_after"`
	IssuedAt         time.Time `json:"issued_at"`
	RevokedAt        time.Time `json:"revoked_at,omitzero"`
	RevocationReason string    `json:"revocation_reason,omitempty"`
	ReplacedBy       string    `json:"replaced_by,omitempty"`
}

// ACMERevokeRequest revokes a certificate; Reason is an RFC 5280 reason
// name (keyCompromise, superseded, ...) or code.
type ACMERevokeRequest struct {
	Reason string `json:"reason,omitempty"`
}

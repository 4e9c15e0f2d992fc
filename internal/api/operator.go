package api

import "time"

// Operator is a person or a pattern of workloads holding roles.
type Operator struct {
	// Name is the OAuth username (kind user) or a SPIFFE ID pattern
	// (kind workload).
	Name       string         `json:"name"`
	Kind       string         `json:"kind"`
	Roles      []OperatorRole `json:"roles"`
	Disabled   bool           `json:"disabled,omitempty"`
	RequireMFA bool           `json:"require_mfa"`
	// Permissions is what the roles hold (read only).
	Permissions []string  `json:"permissions,omitempty"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at,omitzero"`
	By          string    `json:"by,omitempty"`
}

// OperatorRole is a role held, optionally for some services only.
type OperatorRole struct {
	Role     string   `json:"role"`
	Services []string `json:"services,omitempty"`
}

// OperatorCreate adds an operator. RequireMFA nil: required (users).
type OperatorCreate struct {
	Name       string         `json:"name"`
	Kind       string         `json:"kind"`
	Roles      []OperatorRole `json:"roles"`
	RequireMFA *bool          `json:"require_mfa,omitempty"`
}

// OperatorUpdate changes an operator; absent fields stay as they are.
// Grant adds roles (a role already held gets the new services, or all
// services if none are named); Revoke takes roles away.
type OperatorUpdate struct {
	Grant      []OperatorRole `json:"grant,omitempty"`
	Revoke     []string       `json:"revoke,omitempty"`
	Disabled   *bool          `json:"disabled,omitempty"`
	RequireMFA *bool          `json:"require_mfa,omitempty"`
}

// Whoami is the caller of the admin API as the server sees it.
type Whoami struct {
	Kind        string         `json:"kind"` // operator, workload, break-glass
	Subject     string         `json:"subject,omitempty"`
	SpiffeID    string         `json:"spiffe_id,omitempty"`
	Name        string         `json:"name,omitempty"`
	Session     string         `json:"session,omitempty"`
	AMR         []string       `json:"amr,omitempty"`
	ExpiresAt   time.Time      `json:"expires_at,omitzero"`
	Roles       []OperatorRole `json:"roles"`
	Via         []string       `json:"via,omitempty"`
	Permissions []string       `json:"permissions"`
}

package api

import "time"

// ScanDB describes the vulnerability database a server (or a local file)
// holds.
type ScanDB struct {
	Source     string    `json:"source"`
	ImportedAt time.Time `json:"imported_at"`
	Records    int       `json:"records"`
	Digest     string    `json:"digest"`
	Generation int64     `json:"generation"` // bumps on every import, exception or gate change
}

// ScanException excepts one vulnerability from the gate (and from the
// inventory's alerts), for one binary, one service or everywhere, until
// it expires.
type ScanException struct {
	ID        string    `json:"id,omitempty"`
	Vuln      string    `json:"vuln"`              // OSV id or alias
	Binary    string    `json:"binary,omitempty"`  // SHA-256 of the executable; empty: any
	Service   string    `json:"service,omitempty"` // SPIFFE ID; empty: any
	Reason    string    `json:"reason"`
	Expires   time.Time `json:"expires"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// ScanGate requires that a binary have no reachable finding at or above
// Severity before it gets an SVID. Entry empty: the trust domain's default.
type ScanGate struct {
	Entry    string `json:"entry,omitempty"`
	Severity string `json:"severity"` // LOW, MEDIUM, HIGH, CRITICAL; "" with Entry: the entry is not gated
	DryRun   bool   `json:"dry_run,omitempty"`
	// Unknown is what an unrated finding counts as (default HIGH).
	Unknown string `json:"unknown,omitempty"`
}

// GoModule is a module a Go binary was built with.
type GoModule struct {
	Path    string `json:"path"`
	Version string `json:"version"`           // of the code in the binary (the replacement's, if replaced)
	Replace string `json:"replace,omitempty"` // path of the replacement, if replaced
}

// InventoryBinary is what an agent learnt about one executable, sent once
// per executable hash.
type InventoryBinary struct {
	SHA256    string              `json:"sha256"`
	Size      int64               `json:"size"`
	GoVersion string              `json:"go_version,omitempty"` // empty: not a Go binary
	Path      string              `json:"path,omitempty"`       // main package
	Main      *GoModule           `json:"main,omitempty"`
	Modules   []GoModule          `json:"modules,omitempty"` // effective (replacements applied)
	GOOS      string              `json:"goos,omitempty"`
	GOARCH    string              `json:"goarch,omitempty"`
	Symbols   map[string][]string `json:"symbols,omitempty"`
	// SymbolsErr says why Symbols is empty for a Go binary (stripped).
	SymbolsErr string `json:"symbols_error,omitempty"`
}

// InventorySighting says an executable ran as a service on the agent's
// host between FirstSeen and LastSeen.
type InventorySighting struct {
	SHA256    string    `json:"sha256"`
	Service   string    `json:"service"` // SPIFFE ID
	Exe       string    `json:"exe"`     // path of the executable
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// InventoryReport is an agent's batch (POST /v1/agent/inventory).
type InventoryReport struct {
	Generation int64               `json:"generation"` // of the verdicts the agent holds
	Binaries   []InventoryBinary   `json:"binaries,omitempty"`
	Sightings  []InventorySighting `json:"sightings,omitempty"`
	// Want lists the hashes the agent needs verdicts for.
	Want []string `json:"want,omitempty"`
}

// InventoryFinding is a finding on a binary.
type InventoryFinding struct {
	ID           string   `json:"id"`
	Aliases      []string `json:"aliases,omitempty"`
	Package      string   `json:"package"`
	Version      string   `json:"version"`
	Fixed        []string `json:"fixed,omitempty"`
	Severity     string   `json:"severity"` // the rating; UNKNOWN when none
	Reachability string   `json:"reachability"`
	Symbols      []string `json:"symbols,omitempty"`
}

// BinaryVerdict is the findings on one binary at one database generation.
type BinaryVerdict struct {
	SHA256   string             `json:"sha256"`
	Known    bool               `json:"known"` // false: the server has no details of this binary
	Findings []InventoryFinding `json:"findings,omitempty"`
}

// InventoryResponse answers a report: the current generation and, when
// the agent's is older or it asked, the gates, exceptions and verdicts.
type InventoryResponse struct {
	Generation int64           `json:"generation"`
	Database   ScanDB          `json:"database"`
	Gates      []ScanGate      `json:"gates"`
	Exceptions []ScanException `json:"exceptions"`
	Verdicts   []BinaryVerdict `json:"verdicts"`
}

// InventoryItem is one executable running as one service on one host.
type InventoryItem struct {
	Service   string             `json:"service"`
	Host      string             `json:"host"` // agent SPIFFE ID
	SHA256    string             `json:"sha256"`
	Exe       string             `json:"exe"`
	GoVersion string             `json:"go_version,omitempty"`
	Main      *GoModule          `json:"main,omitempty"`
	Modules   []GoModule         `json:"modules,omitempty"`
	FirstSeen time.Time          `json:"first_seen"`
	LastSeen  time.Time          `json:"last_seen"`
	Findings  []InventoryFinding `json:"findings,omitempty"`
}

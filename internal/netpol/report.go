package netpol

// Report is an agent's placement report (POST /v1/agent/placements): the
// services its host runs and the ports their processes listen on.
type Report struct {
	Services []ReportedService `json:"services"`
}

// ReportedService is one service of a Report.
type ReportedService struct {
	SpiffeID string   `json:"spiffe_id"`
	Ports    []uint16 `json:"ports,omitempty"`
}

package verdict

import (
	"fmt"
	"github.com/rampartsec/rampart/internal/scan/gobin"
	"slices"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/scan/osv"
)

// Limits on one agent's report.
const (
	MaxBinaries  = 256
	MaxSightings = 4096
	MaxSymbols   = 1 << 20 // functions in one binary
	MaxWant      = 4096
)

// FromGobin turns what gobin read into an agent's report.
func FromGobin(sha string, size int64, g *gobin.Binary) api.InventoryBinary {
	b := api.InventoryBinary{SHA256: sha, Size: size, GoVersion: g.GoVersion, Path: g.Path, GOOS: g.GOOS, GOARCH: g.GOARCH,
		Symbols: g.Symbols, SymbolsErr: g.SymbolsErr}
	if g.Main.Path != "" {
		b.Main = &api.GoModule{Path: g.Main.Path, Version: g.Main.Version}
	}
	for _, m := range g.Modules {
		// As required (its path), at the version in the binary: matching
		// looks records up by the required path, as govulncheck does.
		gm := api.GoModule{Path: m.Path, Version: m.Effective().Version}
		if m.Replace != nil {
			gm.Replace = m.Replace.Path
		}
		b.Modules = append(b.Modules, gm)
	}
	return b
}

// Policy is what the agent decides with: the gates and exceptions in force.
type Policy struct {
	Gates      []api.ScanGate
	Exceptions []api.ScanException
}

// Decision is the gate's answer for one binary and one entry.
type Decision struct {
	Gated    bool     // a gate applies
	Refuse   bool     // the SVID must not be issued (never with DryRun)
	Failing  []string // the findings that fail the gate ("ID package@version")
	DryRun   bool
	Reason   string // for the log and the audit entry; empty when allowed
	Severity string // the gate's threshold
}

// gateFor returns the entry's gate, else the default, else nil.
func (p Policy) gateFor(entryID string) *api.ScanGate {
	var def *api.ScanGate
	for i := range p.Gates {
		g := &p.Gates[i]
		if g.Entry == entryID && entryID != "" {
			return g
		}
		if g.Entry == "" {
			def = g
		}
	}
	return def
}

// Excepted reports whether an exception in force excuses finding f of the
// binary sha run as service.
func (p Policy) Excepted(f api.InventoryFinding, sha, service string, now time.Time) bool {
	for _, e := range p.Exceptions {
		if !now.Before(e.Expires) {
			continue
		}
		if e.Vuln != f.ID && !slices.Contains(f.Aliases, e.Vuln) {
			continue
		}
		if (e.Binary == "" || strings.EqualFold(e.Binary, sha)) && (e.Service == "" || e.Service == service) {
			return true
		}
	}
	return false
}

// Counts returns the severity a finding counts as under a gate.
func Counts(f api.InventoryFinding, unknown string) osv.Level {
	l, err := osv.ParseLevel(f.Severity)
	if err != nil || l == osv.Unknown {
		if u, err := osv.ParseLevel(unknown); err == nil && u != osv.Unknown {
			return u
		}
		return osv.High
	}
	return l
}

// Decide applies the entry's gate to a binary. v is the server's verdict
// for the binary, nil if there is none.
func (p Policy) Decide(entryID, service, sha string, v *api.BinaryVerdict, now time.Time) Decision {
	g := p.gateFor(entryID)
	if g == nil || g.Severity == "" {
		return Decision{}
	}
	d := Decision{Gated: true, DryRun: g.DryRun, Severity: g.Severity}
	min, err := osv.ParseLevel(g.Severity)
	if err != nil {
		d.Reason = fmt.Sprintf("the scan gate's severity %q is invalid", g.Severity)
		d.Refuse = !g.DryRun
		return d
	}
	if v == nil || !v.Known {
		d.Reason = fmt.Sprintf("no vulnerability verdict for executable sha256:%s yet (the server has not answered); the gate (%s) refuses until it has one", sha, g.Severity)
		d.Refuse = !g.DryRun
		return d
	}
	for _, f := range v.Findings {
		if f.Reachability == "not-called" || Counts(f, g.Unknown) < min || p.Excepted(f, sha, service, now) {
			continue
		}
		d.Failing = append(d.Failing, fmt.Sprintf("%s %s@%s (%s, %s)", f.ID, f.Package, f.Version, f.Reachability, Counts(f, g.Unknown)))
	}
	if len(d.Failing) == 0 {
		return d
	}
	d.Reason = fmt.Sprintf("executable sha256:%s has %d reachable findings at or above %s: %s; patch and restart it, or add an exception",
		sha, len(d.Failing), g.Severity, strings.Join(d.Failing, "; "))
	d.Refuse = !g.DryRun
	return d
}

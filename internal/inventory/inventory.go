package inventory

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/inventory/verdict"
	"github.com/rampartsec/rampart/internal/scan"
	"github.com/rampartsec/rampart/internal/scan/gobin"
	"github.com/rampartsec/rampart/internal/scan/osv"
	"github.com/rampartsec/rampart/internal/store"
)

// Limits on one agent's report (package verdict, which the agent shares).
const (
	MaxBinaries   = verdict.MaxBinaries
	MaxSightings  = verdict.MaxSightings
	MaxSymbols    = verdict.MaxSymbols
	MaxWant       = verdict.MaxWant
	maxInfoStored = 64 << 20
)

// Policy is the gates and exceptions in force (package verdict).
type Policy = verdict.Policy

// Counts is verdict.Counts.
var Counts = verdict.Counts

// FromGobin is verdict.FromGobin.
var FromGobin = verdict.FromGobin

// Inventory keeps what runs and matches it against the database.
type Inventory struct {
	Store store.ScanStore
	Now   func() time.Time
	// RunningWindow: a binary seen within it counts as running (10 minutes
	// when zero).
	RunningWindow time.Duration

	mu     sync.Mutex
	digest string // of the cached index
	at     time.Time
	index  *osv.Index
}

func (iv *Inventory) now() time.Time {
	if iv.Now != nil {
		return iv.Now()
	}
	return time.Now()
}

func (iv *Inventory) window() time.Duration {
	if iv.RunningWindow > 0 {
		return iv.RunningWindow
	}
	return 10 * time.Minute
}

// Alert is a called finding on a running binary, not excepted.
type Alert struct {
	Service, Host, SHA256, Exe string
	Finding                    api.InventoryFinding
	Severity                   osv.Level // as it counts (unrated: HIGH)
}

// Import replaces the database with entries.
func (iv *Inventory) Import(ctx context.Context, source string, entries []osv.Entry) (api.ScanDB, error) {
	entries = osv.Dedupe(entries)
	recs := make([]store.OSVRecord, len(entries))
	for i, e := range entries {
		recs[i] = store.OSVRecord{ID: e.Record.ID, Modified: e.Record.Modified, Raw: e.Raw}
	}
	meta := store.ScanDBMeta{Source: source, ImportedAt: iv.now().UTC(), Digest: osv.Digest(entries)}
	if _, err := iv.Store.ImportOSV(ctx, meta, recs); err != nil {
		return api.ScanDB{}, err
	}
	return iv.DBInfo(ctx)
}

// DBInfo describes the database in the store.
func (iv *Inventory) DBInfo(ctx context.Context) (api.ScanDB, error) {
	m, err := iv.Store.ScanDB(ctx)
	if err != nil {
		return api.ScanDB{}, err
	}
	return api.ScanDB{Source: m.Source, ImportedAt: m.ImportedAt, Records: m.Records, Digest: m.Digest, Generation: m.Generation}, nil
}

// Index returns the database as an in-memory index, loaded from the store
// when it changed (another replica may have imported it).
func (iv *Inventory) Index(ctx context.Context) (*osv.Index, error) {
	m, err := iv.Store.ScanDB(ctx)
	if err != nil {
		return nil, err
	}
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if iv.index != nil && iv.digest == m.Digest && iv.at.Equal(m.ImportedAt) {
		return iv.index, nil
	}
	var recs []*osv.Record
	err = iv.Store.EachOSV(ctx, func(r store.OSVRecord) error {
		rec, err := osv.Parse(r.Raw)
		if err != nil {
			return fmt.Errorf("inventory: stored record %s: %w", r.ID, err)
		}
		recs = append(recs, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	iv.index = osv.NewIndex(osv.Meta{Source: m.Source, ImportedAt: m.ImportedAt, Records: m.Records, Digest: m.Digest}, recs)
	iv.digest, iv.at = m.Digest, m.ImportedAt
	return iv.index, nil
}

// Policy returns the gates and the exceptions in force at now.
func (iv *Inventory) Policy(ctx context.Context) (Policy, error) {
	gs, err := iv.Store.ListScanGates(ctx)
	if err != nil {
		return Policy{}, err
	}
	es, err := iv.Store.ListScanExceptions(ctx)
	if err != nil {
		return Policy{}, err
	}
	p := Policy{Gates: []api.ScanGate{}, Exceptions: []api.ScanException{}}
	for _, g := range gs {
		p.Gates = append(p.Gates, api.ScanGate{Entry: g.Entry, Severity: g.Severity, DryRun: g.DryRun, Unknown: g.Unknown})
	}
	now := iv.now()
	for _, e := range es {
		if now.Before(e.Expires) {
			p.Exceptions = append(p.Exceptions, ExceptionToAPI(e))
		}
	}
	return p, nil
}

// ExceptionToAPI converts a stored exception.
func ExceptionToAPI(e store.ScanException) api.ScanException {
	return api.ScanException{ID: e.ID, Vuln: e.Vuln, Binary: e.Binary, Service: e.Service, Reason: e.Reason,
		Expires: e.Expires, CreatedAt: e.CreatedAt, CreatedBy: e.CreatedBy}
}

// CheckBinary validates an agent's description of a binary.
func CheckBinary(b *api.InventoryBinary) error {
	if len(b.SHA256) != 64 {
		return fmt.Errorf("inventory: binary sha256 %q: want 64 hex digits", b.SHA256)
	}
	if _, err := hex.DecodeString(b.SHA256); err != nil {
		return fmt.Errorf("inventory: binary sha256 %q: want 64 hex digits", b.SHA256)
	}
	b.SHA256 = strings.ToLower(b.SHA256)
	n := 0
	for _, syms := range b.Symbols {
		n += len(syms)
		if !slices.IsSorted(syms) {
			slices.Sort(syms)
		}
	}
	if n > MaxSymbols {
		return fmt.Errorf("inventory: binary %s: %d functions, more than %d", b.SHA256, n, MaxSymbols)
	}
	if len(b.Modules) > 100000 {
		return fmt.Errorf("inventory: binary %s: %d modules", b.SHA256, len(b.Modules))
	}
	return nil
}

func encodeInfo(b api.InventoryBinary) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decodeInfo(raw []byte) (api.InventoryBinary, error) {
	var b api.InventoryBinary
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return b, fmt.Errorf("inventory: stored binary: %w", err)
	}
	if err := json.NewDecoder(io.LimitReader(zr, maxInfoStored)).Decode(&b); err != nil {
		return b, fmt.Errorf("inventory: stored binary: %w", err)
	}
	return b, nil
}

// toGobin rebuilds what matching needs from an agent's report.
func toGobin(b api.InventoryBinary) *gobin.Binary {
	g := &gobin.Binary{GoVersion: b.GoVersion, Path: b.Path, GOOS: b.GOOS, GOARCH: b.GOARCH, Symbols: b.Symbols, SymbolsErr: b.SymbolsErr}
	if b.Main != nil {
		g.Main = gobin.Module{Path: b.Main.Path, Version: b.Main.Version}
	}
	for _, m := range b.Modules {
		gm := gobin.Module{Path: m.Path, Version: m.Version}
		if m.Replace != "" {
			gm.Replace = &gobin.Module{Path: m.Replace, Version: m.Version}
		}
		g.Modules = append(g.Modules, gm)
	}
	if g.Symbols == nil && g.SymbolsErr == "" {
		g.SymbolsErr = "no symbols reported"
	}
	return g
}

// Findings matches one binary.
func (iv *Inventory) Findings(ctx context.Context, b api.InventoryBinary) ([]api.InventoryFinding, error) {
	if b.GoVersion == "" {
		return nil, nil // not a Go binary: nothing to match here
	}
	ix, err := iv.Index(ctx)
	if err != nil {
		return nil, err
	}
	fs, err := scan.MatchGo(ix, toGobin(b), b.SHA256)
	if err != nil {
		return nil, err
	}
	out := make([]api.InventoryFinding, 0, len(fs))
	for _, f := range fs {
		out = append(out, api.InventoryFinding{ID: f.ID, Aliases: f.Aliases, Package: f.Package, Version: f.Version, Fixed: f.Fixed,
			Severity: f.Severity.Level.String(), Reachability: f.Reachability, Symbols: f.Symbols})
	}
	return out, nil
}

// verdict matches the binary host reported under sha.
func (iv *Inventory) verdict(ctx context.Context, sha, host string) (api.BinaryVerdict, error) {
	v := api.BinaryVerdict{SHA256: sha}
	sb, err := iv.Store.GetInventoryBinary(ctx, sha, host)
	if errors.Is(err, store.ErrNotFound) {
		return v, nil
	}
	if err != nil {
		return v, err
	}
	b, err := decodeInfo(sb.Info)
	if err != nil {
		return v, err
	}
	v.Known = true
	v.Findings, err = iv.Findings(ctx, b)
	return v, err
}

// Report records an agent's batch and answers with what the agent needs:
// gates, exceptions and a verdict for every hash it wants (when its
// generation is old, every hash it wants; else those it just reported).
// It returns alerts for binaries newly reported with called findings.
func (iv *Inventory) Report(ctx context.Context, host string, rep api.InventoryReport) (api.InventoryResponse, []Alert, error) {
	var resp api.InventoryResponse
	if len(rep.Binaries) > MaxBinaries || len(rep.Sightings) > MaxSightings || len(rep.Want) > MaxWant {
		return resp, nil, fmt.Errorf("inventory: a report holds at most %d binaries, %d sightings and %d wanted hashes", MaxBinaries, MaxSightings, MaxWant)
	}
	now := iv.now().UTC()
	var fresh []string
	for i := range rep.Binaries {
		b := &rep.Binaries[i]
		if err := CheckBinary(b); err != nil {
			return resp, nil, err
		}
		info, err := encodeInfo(*b)
		if err != nil {
			return resp, nil, err
		}
		created, err := iv.Store.PutInventoryBinary(ctx, store.InventoryBinary{SHA256: b.SHA256, Host: host, Info: info, FirstSeen: now})
		if err != nil {
			return resp, nil, err
		}
		if created {
			fresh = append(fresh, b.SHA256)
		}
	}
	var ss []store.Sighting
	for _, x := range rep.Sightings {
		if len(x.SHA256) != 64 || !strings.HasPrefix(x.Service, "spiffe://") {
			return resp, nil, fmt.Errorf("inventory: sighting of %q as %q: want a sha256 and a SPIFFE ID", x.SHA256, x.Service)
		}
		// The agent's clock says when; the server's bounds it, so a host
		// cannot make a binary look running for ever.
		if x.LastSeen.After(now) {
			x.LastSeen = now
		}
		if x.FirstSeen.After(x.LastSeen) || x.FirstSeen.IsZero() {
			x.FirstSeen = x.LastSeen
		}
		ss = append(ss, store.Sighting{Service: x.Service, Host: host, SHA256: strings.ToLower(x.SHA256), Exe: x.Exe, FirstSeen: x.FirstSeen, LastSeen: x.LastSeen})
	}
	if len(ss) > 0 {
		if err := iv.Store.UpsertSightings(ctx, ss); err != nil {
			return resp, nil, err
		}
	}
	db, err := iv.DBInfo(ctx)
	if err != nil {
		return resp, nil, err
	}
	resp.Generation, resp.Database = db.Generation, db
	pol, err := iv.Policy(ctx)
	if err != nil {
		return resp, nil, err
	}
	resp.Gates, resp.Exceptions, resp.Verdicts = pol.Gates, pol.Exceptions, []api.BinaryVerdict{}
	want := rep.Want
	for _, b := range rep.Binaries {
		want = append(want, b.SHA256)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	for _, sha := range want {
		v, err := iv.verdict(ctx, strings.ToLower(sha), host)
		if err != nil {
			return resp, nil, err
		}
		resp.Verdicts = append(resp.Verdicts, v)
	}
	// Alerts for binaries this host reported for the first time and runs.
	var alerts []Alert
	for _, sha := range fresh {
		for _, v := range resp.Verdicts {
			if v.SHA256 != sha {
				continue
			}
			for _, x := range ss {
				if x.SHA256 == sha {
					alerts = append(alerts, alertsFor(pol, x, v, now)...)
				}
			}
		}
	}
	return resp, alerts, nil
}

func alertsFor(pol Policy, x store.Sighting, v api.BinaryVerdict, now time.Time) []Alert {
	var out []Alert
	for _, f := range v.Findings {
		if f.Reachability != scan.Called || pol.Excepted(f, x.SHA256, x.Service, now) {
			continue
		}
		out = append(out, Alert{Service: x.Service, Host: x.Host, SHA256: x.SHA256, Exe: x.Exe, Finding: f, Severity: Counts(f, "")})
	}
	return out
}

// Rematch matches every binary seen running within the window against the
// current database and returns the called findings that are not excepted.
func (iv *Inventory) Rematch(ctx context.Context) ([]Alert, error) {
	now := iv.now().UTC()
	ss, err := iv.Store.ListSightings(ctx, store.SightingFilter{SeenSince: now.Add(-iv.window())})
	if err != nil {
		return nil, err
	}
	pol, err := iv.Policy(ctx)
	if err != nil {
		return nil, err
	}
	verdicts := map[[2]string]api.BinaryVerdict{}
	var out []Alert
	for _, x := range ss {
		k := [2]string{x.SHA256, x.Host}
		v, ok := verdicts[k]
		if !ok {
			if v, err = iv.verdict(ctx, x.SHA256, x.Host); err != nil {
				return nil, err
			}
			verdicts[k] = v
		}
		out = append(out, alertsFor(pol, x, v, now)...)
	}
	return out, nil
}

// List returns the inventory: one item per (service, host, binary), with
// the binary's modules and findings.
func (iv *Inventory) List(ctx context.Context, f store.SightingFilter, vulnerableOnly bool) ([]api.InventoryItem, error) {
	ss, err := iv.Store.ListSightings(ctx, f)
	if err != nil {
		return nil, err
	}
	out := []api.InventoryItem{}
	for _, x := range ss {
		it := api.InventoryItem{Service: x.Service, Host: x.Host, SHA256: x.SHA256, Exe: x.Exe, FirstSeen: x.FirstSeen, LastSeen: x.LastSeen}
		sb, err := iv.Store.GetInventoryBinary(ctx, x.SHA256, x.Host)
		if err == nil {
			b, err := decodeInfo(sb.Info)
			if err != nil {
				return nil, err
			}
			it.GoVersion, it.Main, it.Modules = b.GoVersion, b.Main, b.Modules
			if it.Findings, err = iv.Findings(ctx, b); err != nil {
				return nil, err
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		if vulnerableOnly && !slices.ContainsFunc(it.Findings, func(f api.InventoryFinding) bool { return f.Reachability == scan.Called }) {
			continue
		}
		out = append(out, it)
	}
	return out, nil
}

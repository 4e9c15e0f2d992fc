package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit/auditentry"
	"github.com/rampartsec/rampart/internal/netpol"
	"github.com/rampartsec/rampart/internal/workload"
)

// Network policy (package netpol): the agent reports which services its
// host runs and the ports their processes listen on (read from /proc for
// the processes it handed SVIDs to), and with --netpol=enforce or report
// installs its host's table from the server, kept in step every
// NetpolInterval and removed on exit.

// Netpol modes.
const (
	NetpolOff     = "off"
	NetpolReport  = "report"
	NetpolEnforce = "enforce"
)

// scanPorts is how many distinct governed ports must see drops in one
// interval for the drops to look like a scan (the netpol-port-scan rule).
const scanPorts = 3

// placementTracker remembers which processes got which SPIFFE IDs: it
// sees every caller after the inventory's gate (it wraps that Inspector).
type placementTracker struct {
	next   workload.Inspector
	proc   string
	netns  netpol.NetNS    // the namespace whose ports are the host's
	exempt map[uint16]bool // ports never reported (SSH, the server's)
	file   string          // where the tracked processes survive a restart ("": nowhere)
	log    *slog.Logger

	mu     sync.Mutex
	procs  map[int]tracked
	warned map[int]bool // processes in another namespace, logged once

	// What the last reports saw (used by report alone, one goroutine):
	// reading a process's descriptors costs about 5 µs each, so a proxy
	// holding 40,000 connections would cost 0.2 s every report. Each
	// process's listening sockets are kept (by descriptor), checked every
	// report (a read each), and every process's descriptors are read
	// again when the host's set of listening sockets changes (one opened
	// or closed anywhere), when a process no longer holds one it held (it
	// went somewhere), or rescanEvery after the last full look; a new
	// process is read at once. What only rescanEvery catches: a listening
	// socket that a live process also handed to another, the first still
	// holding it.
	now       func() time.Time
	held      map[int]heldSockets
	scanned   map[uint64]bool // the host's listeners at the last full look
	scannedAt time.Time
}

// heldSockets are the listening sockets a process held at its last look.
type heldSockets struct {
	start   string            // the process's start time, against pid reuse
	sockets map[string]uint64 // by descriptor
}

// rescanEvery bounds how long a report may rely on an earlier look at a
// process's descriptors while the host's listening sockets are unchanged.
const rescanEvery = 30 * time.Second

type tracked struct {
	Start string   `json:"start"` // the process's start time (/proc/PID/stat), against pid reuse
	IDs   []string `json:"ids"`
}

// maxServicePorts is how many ports one service is reported with: the
// server refuses more, and a workload listening on many must not make its
// host's report fail (and the host's table empty).
const maxServicePorts = 64

func newPlacementTracker(next workload.Inspector, proc string, netns netpol.NetNS, exempt []uint16, file string, log *slog.Logger) *placementTracker {
	p := &placementTracker{next: next, proc: proc, netns: netns, exempt: map[uint16]bool{}, file: file, log: log,
		procs: map[int]tracked{}, warned: map[int]bool{}, now: time.Now, held: map[int]heldSockets{}}
	for _, e := range exempt {
		p.exempt[e] = true
	}
	if file != "" {
		// An agent that restarts must not report an empty host (its
		// ports would open until every workload attested again): the
		// processes it knew are read back, and checked like any other.
		if b, err := os.ReadFile(file); err == nil {
			var saved map[int]tracked
			if err := json.Unmarshal(b, &saved); err == nil {
				p.procs = saved
			} else {
				log.Warn("netpol: the tracked processes' file is damaged; starting without it", "file", file, "err", err)
			}
		}
	}
	return p
}

// saveLocked writes the tracked processes (0600: it says which process
// holds which identity).
func (p *placementTracker) saveLocked() {
	if p.file == "" {
		return
	}
	b, _ := json.Marshal(p.procs)
	if err := atomicfile.Write(p.file, b, 0o600); err != nil {
		p.log.Warn("netpol: could not save the tracked processes", "file", p.file, "err", err)
	}
}

// Inspect implements workload.Inspector.
func (p *placementTracker) Inspect(ctx context.Context, exe workload.Executable, ids []workload.Identity) ([]workload.Identity, []workload.Refusal) {
	allowed, refusals := ids, []workload.Refusal(nil)
	if p.next != nil {
		allowed, refusals = p.next.Inspect(ctx, exe, ids)
	}
	if len(allowed) == 0 || exe.PID <= 0 {
		return allowed, refusals
	}
	pid := int(exe.PID)
	start, err := procStart(p.proc, pid)
	if err != nil {
		return allowed, refusals
	}
	p.mu.Lock()
	t := p.procs[pid]
	if t.Start != start {
		t = tracked{Start: start}
	}
	changed := false
	for _, id := range allowed {
		if !slices.Contains(t.IDs, id.SpiffeID.String()) {
			t.IDs = append(t.IDs, id.SpiffeID.String())
			changed = true
		}
	}
	p.procs[pid] = t
	if changed {
		p.saveLocked()
	}
	p.mu.Unlock()
	return allowed, refusals
}

// report lists the services of the processes still running and their
// listening ports, forgetting the processes that are gone.
func (p *placementTracker) report() netpol.Report {
	p.mu.Lock()
	procs := make(map[int]tracked, len(p.procs))
	for pid, t := range p.procs {
		procs[pid] = t
	}
	p.mu.Unlock()
	ports := map[string][]uint16{}
	listeners := netpol.NewListeners(p.proc, p.netns) // one read of the host's sockets for every process
	var table map[uint64]netip.AddrPort
	full := false // every process's descriptors are read again
	now := p.now()
	for pid, t := range procs {
		start, err := procStart(p.proc, pid)
		if err != nil || start != t.Start {
			delete(p.held, pid)
			p.mu.Lock()
			if p.procs[pid].Start == t.Start {
				delete(p.procs, pid)
				delete(p.warned, pid)
				p.saveLocked()
			}
			p.mu.Unlock()
			continue
		}
		var ls []uint16
		err = listeners.InNamespace(pid)
		if err == nil {
			if table == nil {
				if table, err = listeners.Table(pid); err == nil {
					full = p.mustRescan(table, now, procs, listeners)
				}
			}
			h, ok := p.held[pid]
			if err == nil && (full || !ok || h.start != t.Start) {
				h = heldSockets{start: t.Start}
				if h.sockets, err = listeners.Held(pid); err == nil {
					p.held[pid] = h
				} else {
					delete(p.held, pid)
				}
			}
			ls = listeners.PortsOf(h.sockets)
		}
		if err != nil {
			// Unreadable (a zombie, a process gone): nothing kept, or its
			// failing check would force a full look every report.
			delete(p.held, pid)
		}
		if errors.Is(err, netpol.ErrOtherNetNS) {
			// Its ports are not the host's: in a namespace of its own any
			// user may bind 22. Placed without ports.
			p.mu.Lock()
			if !p.warned[pid] {
				p.warned[pid] = true
				p.log.Warn("netpol: a workload runs in another network namespace than the one enforced; its ports are not reported", "pid", pid, "spiffe_ids", strings.Join(t.IDs, ","))
			}
			p.mu.Unlock()
			ls = nil
		} else if err != nil {
			continue
		}
		for _, id := range t.IDs {
			ps := ports[id]
			for _, l := range ls {
				if !p.exempt[l] && !slices.Contains(ps, l) {
					ps = append(ps, l)
				}
			}
			ports[id] = ps
		}
	}
	if full {
		p.scanned = map[uint64]bool{}
		for ino := range table {
			p.scanned[ino] = true
		}
		p.scannedAt = now
	}
	var rep netpol.Report
	for id, ps := range ports {
		slices.Sort(ps)
		if len(ps) > maxServicePorts {
			p.log.Warn("netpol: a service listens on more ports than are reported; the rest are not governed", "spiffe_id", id, "ports", len(ps), "reported", maxServicePorts)
			ps = ps[:maxServicePorts]
		}
		rep.Services = append(rep.Services, netpol.ReportedService{SpiffeID: id, Ports: ps})
	}
	slices.SortFunc(rep.Services, func(a, b netpol.ReportedService) int { return strings.Compare(a.SpiffeID, b.SpiffeID) })
	return rep
}

// mustRescan says whether every process's descriptors must be read
// again: rescanEvery has passed, the host's listening sockets are not the
// set of the last full look, or a process no longer holds one it held.
func (p *placementTracker) mustRescan(table map[uint64]netip.AddrPort, now time.Time, procs map[int]tracked, l *netpol.Listeners) bool {
	if now.Sub(p.scannedAt) >= rescanEvery || len(table) != len(p.scanned) {
		return true
	}
	for ino := range table {
		if !p.scanned[ino] {
			return true
		}
	}
	for pid, h := range p.held {
		if t, ok := procs[pid]; ok && t.Start == h.start && !l.StillHeld(pid, h.sockets) {
			return true
		}
	}
	return false
}

// procStart returns field 22 of /proc/PID/stat, the start time in ticks.
func procStart(proc string, pid int) (string, error) {
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", errors.New("stat: no comm")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", errors.New("stat: short")
	}
	return f[19], nil // field 22; fields after comm start at 3
}

// firewall is what the loop needs of netpol.Firewall.
type firewall interface {
	Apply(netpol.HostTable) error
	Diff(netpol.HostTable) ([]string, error)
	Remove() error
	Counters() (map[uint16]uint64, error)
}

type netpolLoop struct {
	a        *Agent
	tracker  *placementTracker
	fw       firewall // nil when mode is off
	mode     string
	interval time.Duration
	rec      interface{ Record(*auditentry.Entry) error }

	applied  string            // the NFT text last applied
	table    netpol.HostTable  // the table last applied
	counted  map[uint16]uint64 // kernel counters at the last look
	dropped  *prometheus.CounterVec
	applies  *prometheus.CounterVec
	disabled bool // the server has no placement table
}

func (a *Agent) newNetpolLoop(tracker *placementTracker, fw firewall, rec interface{ Record(*auditentry.Entry) error }) *netpolLoop {
	l := &netpolLoop{a: a, tracker: tracker, fw: fw, mode: a.cfg.Netpol, interval: a.cfg.NetpolInterval, rec: rec, counted: map[uint16]uint64{},
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_agent_netpol_dropped_total", Help: "New TCP connections the host's network policy dropped (in report mode: would have dropped), by port.",
		}, []string{"port", "mode"}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_agent_netpol_applies_total", Help: "Network policy tables applied to the host, by result.",
		}, []string{"result"}),
	}
	if l.mode == "" {
		l.mode = NetpolOff
	}
	if l.interval <= 0 {
		l.interval = 2 * time.Second
		if l.mode == NetpolOff {
			l.interval = a.cfg.InventoryInterval // placements only: as often as the inventory
		}
		if l.interval <= 0 {
			l.interval = defaultInventoryInterval
		}
	}
	if a.cfg.Registry != nil {
		a.cfg.Registry.MustRegister(l.dropped, l.applies)
	}
	return l
}

// run reports and applies every interval until ctx is done, then removes
// the table (only ours).
func (l *netpolLoop) run(ctx context.Context) {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		l.step(ctx)
		select {
		case <-ctx.Done():
			if l.fw != nil {
				if err := l.fw.Remove(); err != nil {
					l.a.log.Error("netpol: could not remove the host's table", "err", err)
				} else {
					l.a.log.Info("netpol: the host's table is removed")
				}
			}
			return
		case <-t.C:
		case <-l.a.netpolKick:
		}
	}
}

func (l *netpolLoop) step(ctx context.Context) {
	if l.disabled {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, l.interval+5*time.Second)
	defer cancel()
	rep := l.tracker.report()
	if err := l.a.client.Do(ctx, http.MethodPost, "/v1/agent/placements", rep, nil); err != nil {
		var pe *api.Problem
		if errors.As(err, &pe) && pe.Status == http.StatusNotImplemented {
			l.a.log.Warn("netpol: the server keeps no placements (its store has no table for them); not reporting")
			l.disabled = true
			return
		}
		if ctx.Err() == nil {
			l.a.log.Warn("netpol: placement report failed; keeping the table applied", "err", err)
		}
		// The server's table for this host would be built without this
		// host's report: a table that governs nothing would fail open.
		if l.fw != nil && l.applied != "" {
			l.repair()
		}
		return
	}
	if l.fw == nil {
		return
	}
	var tab netpol.HostTable
	if err := l.a.client.Do(ctx, http.MethodGet, "/v1/agent/netpol", nil, &tab); err != nil {
		if ctx.Err() == nil {
			l.a.log.Warn("netpol: could not fetch the host's table; keeping the one applied", "err", err)
		}
		if l.applied != "" {
			l.repair()
		}
		return
	}
	tab.Report = l.mode == NetpolReport
	if text := tab.NFT(); text != l.applied {
		l.countDrops() // before the new table starts its counters at zero
		if err := l.fw.Apply(tab); err != nil {
			l.applies.WithLabelValues("error").Inc()
			l.a.log.Error("netpol: could not apply the host's table", "err", err)
			return
		}
		l.applies.WithLabelValues("ok").Inc()
		l.a.log.Info("netpol: the host's table is applied", "mode", l.mode, "proxy_ports", len(tab.Proxy), "app_ports", len(tab.App),
			"changes", strings.Join(netpol.DiffLines(l.applied, text), "; "))
		l.applied, l.table = text, tab
		l.counted = map[uint16]uint64{}
		return
	}
	l.repair()
}

// repair compares the kernel's table with the one last applied and, if
// anyone changed it (deleted it, let an address in, loosened a rule),
// counts what it dropped, applies it again and records the drift.
func (l *netpolLoop) repair() {
	diff, err := l.fw.Diff(l.table)
	if err != nil {
		l.a.log.Error("netpol: could not read the host's table back", "err", err)
		return
	}
	if len(diff) == 0 {
		l.countDrops()
		return
	}
	l.countDrops()
	if err := l.fw.Apply(l.table); err != nil {
		l.applies.WithLabelValues("error").Inc()
		l.a.log.Error("netpol: the host's table was changed by someone else and could not be restored", "err", err, "differences", strings.Join(diff, "; "))
		return
	}
	l.applies.WithLabelValues("repair").Inc()
	l.counted = map[uint16]uint64{}
	l.a.log.Warn("netpol: the host's table was changed by someone else; restored", "differences", strings.Join(diff, "; "))
	if l.rec != nil {
		self := l.a.ID().String()
		first := diff[0]
		if len(first) > 200 {
			first = first[:200]
		}
		l.rec.Record(&auditentry.Entry{V: auditentry.SchemaVersion, Time: l.a.now(), Action: "netpol.drift", Outcome: auditentry.OutcomeFailure,
			Reason: fmt.Sprintf("the host's network policy table was changed outside rampart (%d differences); restored", len(diff)),
			Target: self, Source: self, Actor: auditentry.Actor{SpiffeID: self},
			Details: map[string]string{"differences": strconv.Itoa(len(diff)), "first": first, "mode": l.mode}})
	}
}

// countDrops turns the kernel's counters into metrics, and the drops of
// one interval into an audit entry (the netpol-port-scan rule reads it).
func (l *netpolLoop) countDrops() {
	c, err := l.fw.Counters()
	if err != nil {
		return // no table (repair puts it back)
	}
	var ports []string
	var total uint64
	for port, n := range c {
		prev := l.counted[port]
		if n < prev {
			prev = 0
		}
		if d := n - prev; d > 0 {
			l.dropped.WithLabelValues(strconv.Itoa(int(port)), l.mode).Add(float64(d))
			ports = append(ports, fmt.Sprintf("%d:%d", port, d))
			total += d
		}
		l.counted[port] = n
	}
	if total == 0 || l.rec == nil {
		return
	}
	slices.Sort(ports)
	pattern := "drops"
	if len(ports) >= scanPorts {
		pattern = "scan"
	}
	verb := "dropped"
	if l.mode == NetpolReport {
		verb = "would have dropped"
	}
	self := l.a.ID().String()
	l.rec.Record(&auditentry.Entry{V: auditentry.SchemaVersion, Time: l.a.now(), Action: "netpol.dropped", Outcome: auditentry.OutcomeDenied,
		Reason: fmt.Sprintf("the host's network policy %s %d new connections at %d ports", verb, total, len(ports)),
		Target: self, Source: self, Actor: auditentry.Actor{SpiffeID: self},
		Details: map[string]string{"ports": strings.Join(ports, ","), "count": strconv.FormatUint(total, 10),
			"distinct_ports": strconv.Itoa(len(ports)), "pattern": pattern, "mode": l.mode}})
}

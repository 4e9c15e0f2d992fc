package workload

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/audit/auditentry"
)

// Recorder takes audit entries; the agent's spool implements it, and
// delivers them to the server's log.
type Recorder interface {
	Record(e *auditentry.Entry) error
}

// refusalInterval bounds how often one process (uid and executable) is
// audited as refused: a loop asking again and again is one finding, not a
// flood that fills the spool.
const refusalInterval = 10 * time.Second

// auditor records refused Workload API callers.
type auditor struct {
	rec  Recorder
	self spiffeid.ID // the agent, target of the entries
	now  func() time.Time

	mu   sync.Mutex
	last map[string]*refusals
}

// refusals of one process since its last entry.
type refusals struct {
	at         time.Time // of the last entry
	suppressed int       // refusals since, not recorded
}

// SetRecorder makes the server audit every caller it refuses (no
// registration entry matches), naming the agent self as the target.
func (s *Server) SetRecorder(r Recorder, self spiffeid.ID) {
	s.audit = &auditor{rec: r, self: self, now: time.Now, last: map[string]*refusals{}}
}

// noMatch is the reason a caller attested fine gets nothing.
const noMatch = "no registration entry matches the calling process"

// refused audits a caller that got no identity from method, and why.
func (a *auditor) refused(ctx context.Context, p *process, method, reason string) {
	if a == nil {
		return
	}
	c, exe := p.Caller, p.exe.path // the executable pinned at accept
	// One finding per uid, executable and kind of refusal: the reason's
	// text names the pid, which a loop changes at will.
	key := strconv.FormatUint(uint64(c.UID), 10) + "\x00" + exe + "\x00" + strconv.FormatBool(reason == noMatch)
	now := a.now()
	a.mu.Lock()
	rf := a.last[key]
	if rf != nil && now.Sub(rf.at) < refusalInterval {
		rf.suppressed++
		a.mu.Unlock()
		return
	}
	if rf == nil {
		if len(a.last) > 10000 {
			clear(a.last)
		}
		rf = &refusals{}
		a.last[key] = rf
	}
	suppressed := rf.suppressed
	rf.at, rf.suppressed = now, 0
	a.mu.Unlock()
	e := &auditentry.Entry{V: auditentry.SchemaVersion, Time: now, Action: "workload.attest", Outcome: auditentry.OutcomeDenied,
		Reason: reason, Target: a.self.String(), Source: a.self.String(),
		Details: map[string]string{"method": method, "pid": strconv.Itoa(int(c.PID)), "uid": strconv.FormatUint(uint64(c.UID), 10),
			"gid": strconv.FormatUint(uint64(c.GID), 10)}}
	e.Actor.User = "unix:uid:" + strconv.FormatUint(uint64(c.UID), 10)
	if exe != "" {
		e.Details["exe"] = exe
	}
	if suppressed > 0 {
		// Refusals of this process since its previous entry, not recorded
		// one by one: the count keeps them.
		e.Details["suppressed_before"] = strconv.Itoa(suppressed)
	}
	// Record does not wait on the caller, who may be gone already.
	a.rec.Record(e)
}

// gate audits an identity the scan gate withheld (or, in dry run, would
// have withheld). Rate-limited like refusals, per executable and entry.
func (a *auditor) gate(p *process, method string, r Refusal) {
	if a == nil {
		return
	}
	c, exe := p.Caller, p.exe.path
	key := "gate\x00" + strconv.FormatUint(uint64(c.UID), 10) + "\x00" + exe + "\x00" + r.EntryID + "\x00" + strconv.FormatBool(r.DryRun)
	now := a.now()
	a.mu.Lock()
	rf := a.last[key]
	if rf != nil && now.Sub(rf.at) < refusalInterval {
		rf.suppressed++
		a.mu.Unlock()
		return
	}
	if rf == nil {
		if len(a.last) > 10000 {
			clear(a.last)
		}
		rf = &refusals{}
		a.last[key] = rf
	}
	suppressed := rf.suppressed
	rf.at, rf.suppressed = now, 0
	a.mu.Unlock()
	outcome := auditentry.OutcomeDenied
	if r.DryRun {
		outcome = auditentry.OutcomeSuccess
	}
	// An attestation entry on this agent's host (the kind the server takes
	// from an agent), saying it was the scan gate and for which identity.
	gate := "refused"
	if r.DryRun {
		gate = "dry_run"
	}
	e := &auditentry.Entry{V: auditentry.SchemaVersion, Time: now, Action: "workload.attest", Outcome: outcome,
		Reason: r.Reason, Target: a.self.String(), Source: a.self.String(),
		Details: map[string]string{"method": method, "pid": strconv.Itoa(int(c.PID)), "uid": strconv.FormatUint(uint64(c.UID), 10),
			"scan_gate": gate, "spiffe_id": r.SpiffeID, "entry_id": r.EntryID, "exe": exe}}
	e.Actor.User = "unix:uid:" + strconv.FormatUint(uint64(c.UID), 10)
	if suppressed > 0 {
		e.Details["suppressed_before"] = strconv.Itoa(suppressed)
	}
	a.rec.Record(e)
}

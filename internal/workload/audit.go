package workload

import (
	"context"
	"slices"
	"strconv"
	"strings"
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

	// after runs f once d has passed (time.AfterFunc; tests inject).
	after func(d time.Duration, f func())

	mu   sync.Mutex
	last map[string]*refusals
}

// refusals of one process since its last entry.
type refusals struct {
	at         time.Time // of the last entry
	suppressed int       // refusals since, not recorded
	// reasons are the distinct reasons of the suppressed refusals (at
	// most maxSuppressedReasons), and latest the entry the last of them
	// would have been: when the interval ends, one entry records them
	// (flush), so a refusal hidden behind a decoy is still named.
	reasons  []string
	latest   *auditentry.Entry
	flushing bool
}

// maxSuppressedReasons bounds the reasons one aggregated entry names.
const maxSuppressedReasons = 16

// SetRecorder makes the server audit every caller it refuses (no
// registration entry matches), naming the agent self as the target.
func (s *Server) SetRecorder(r Recorder, self spiffeid.ID) {
	s.audit = &auditor{rec: r, self: self, now: time.Now, last: map[string]*refusals{},
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}
}

// admit decides whether e, a refusal of the process key names, is
// recorded now: the first of each interval is; later ones are counted,
// their distinct reasons kept, and recorded together when the interval
// ends.
func (a *auditor) admit(key string, e *auditentry.Entry) bool {
	now := e.Time
	a.mu.Lock()
	defer a.mu.Unlock()
	rf := a.last[key]
	if rf != nil && now.Sub(rf.at) < refusalInterval {
		rf.suppressed++
		rf.latest = e
		if !slices.Contains(rf.reasons, e.Reason) && len(rf.reasons) < maxSuppressedReasons {
			rf.reasons = append(rf.reasons, e.Reason)
		}
		if !rf.flushing {
			rf.flushing = true
			a.after(rf.at.Add(refusalInterval).Sub(now), func() { a.flush(key) })
		}
		return false
	}
	if rf == nil {
		if len(a.last) > 10000 {
			clear(a.last)
		}
		rf = &refusals{}
		a.last[key] = rf
	}
	if rf.suppressed > 0 {
		// Refusals of this process since its previous entry, not yet
		// recorded: the count keeps them.
		e.Details["suppressed_before"] = strconv.Itoa(rf.suppressed)
	}
	rf.at, rf.suppressed, rf.reasons, rf.latest = now, 0, nil, nil
	return true
}

// flush records the refusals of key suppressed during an interval, as one
// entry: the last of them, with their count and distinct reasons.
func (a *auditor) flush(key string) {
	a.mu.Lock()
	rf := a.last[key]
	if rf == nil || rf.suppressed == 0 || rf.latest == nil {
		if rf != nil {
			rf.flushing = false
		}
		a.mu.Unlock()
		return
	}
	e := rf.latest
	e.Details["aggregated"] = strconv.Itoa(rf.suppressed)
	e.Details["reasons"] = strings.Join(rf.reasons, " | ")
	rf.at, rf.suppressed, rf.reasons, rf.latest, rf.flushing = a.now(), 0, nil, nil, false
	a.mu.Unlock()
	a.rec.Record(e)
}

// noMatch is the reason a caller attested fine gets nothing.
const noMatch = "no registration entry matches the calling process"

// refused audits a caller that got no identity from method, and why;
// notAttested are the selectors of its executable the agent did not
// attest, and why (Attestation.NotAttested).
func (a *auditor) refused(ctx context.Context, p *process, method, reason string, notAttested ...string) {
	if a == nil {
		return
	}
	c, exe := p.Caller, p.exe.path // the executable pinned at accept
	// One finding per uid, executable and kind of refusal in an interval
	// (the reason's text may name the pid, which a loop changes at will);
	// the others are recorded together when it ends (admit, flush).
	key := strconv.FormatUint(uint64(c.UID), 10) + "\x00" + exe + "\x00" + refusalKind(reason)
	now := a.now()
	e := &auditentry.Entry{V: auditentry.SchemaVersion, Time: now, Action: "workload.attest", Outcome: auditentry.OutcomeDenied,
		Reason: reason, Target: a.self.String(), Source: a.self.String(),
		Details: map[string]string{"method": method, "pid": strconv.Itoa(int(c.PID)), "uid": strconv.FormatUint(uint64(c.UID), 10),
			"gid": strconv.FormatUint(uint64(c.GID), 10)}}
	e.Actor.User = "unix:uid:" + strconv.FormatUint(uint64(c.UID), 10)
	if exe != "" {
		e.Details["exe"] = exe
	}
	// Where the caller ran: a bind mount or a rewritten /proc/PID/exe
	// needs a namespace of its own, so another one is worth seeing.
	if p.ns.user.known() {
		e.Details["user_ns"] = p.ns.user.String()
	}
	if p.ns.mnt.known() {
		e.Details["mnt_ns"] = p.ns.mnt.String()
	}
	if len(notAttested) > 0 {
		e.Details["not_attested"] = strings.Join(notAttested, "; ")
	}
	if !a.admit(key, e) {
		return
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
	if a.admit(key, e) {
		a.rec.Record(e)
	}
}

// refusalKind sorts refusals for rate limiting: one of a kind does not
// hide another kind (a refused bundle name does not hide a refused SVID).
func refusalKind(reason string) string {
	switch {
	case reason == noMatch:
		return "no-match"
	case strings.HasPrefix(reason, sdsNotEntitled):
		return "sds-not-entitled"
	case strings.HasPrefix(reason, sdsWithheld):
		return "sds-withheld"
	}
	return "other"
}

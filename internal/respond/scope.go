package respond

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit"
)

// Scope is a breach-scope report: what one identity (a service's SPIFFE
// ID, a "ID/*" pattern, or a user) did in a window, from the audit log.
type Scope struct {
	Identity string    `json:"identity"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	// Entries is how many entries of the window concern the identity;
	// Scanned how many entries were read to find them (the index skips
	// the rest).
	Entries int64 `json:"entries"`
	Scanned int64 `json:"scanned"`
	// Reached and Refused: the services, methods and paths it called.
	Reached []Access `json:"reached"`
	Refused []Access `json:"refused"`
	// Tokens it obtained or exchanged, and the users it acted for.
	Tokens []TokenUse `json:"tokens"`
	Users  []string   `json:"users"`
	// Keys it used (operation counts and bytes).
	Keys []KeyUse `json:"keys"`
	// SVIDs issued to it, and by which agent from where.
	SVIDs []SVIDIssue `json:"svids"`
}

// Access is calls to one service, method and path.
//
// Count and Bytes are what the entries say. Decisions are shipped by the
// proxy or SDK service that made them: ReportedBy names it, and its
// figures are its word (a compromised service can inflate or shrink what
// it reports about calls to itself, never about calls to others: intake
// takes from a service only decisions about itself). Sums saturate at
// the largest int64 rather than wrap.
type Access struct {
	Service    string `json:"service"`
	Method     string `json:"method,omitempty"`
	Path       string `json:"path,omitempty"`
	Count      int64  `json:"count"`
	Bytes      int64  `json:"bytes,omitempty"`
	User       string `json:"user,omitempty"`
	ReportedBy string `json:"reported_by,omitempty"`
}

// TokenUse is tokens obtained by one grant for one audience.
type TokenUse struct {
	Action   string `json:"action"` // oauth.token_issue, oauth.token_exchange, oauth.token_refresh
	Client   string `json:"client,omitempty"`
	Audience string `json:"audience,omitempty"`
	User     string `json:"user,omitempty"`
	Count    int64  `json:"count"`
}

// KeyUse is uses of one key by operation.
type KeyUse struct {
	Key     string `json:"key"`
	Op      string `json:"op"`
	Count   int64  `json:"count"`
	Bytes   int64  `json:"bytes"`
	Refused int64  `json:"refused"`
}

// SVIDIssue is one SVID issued to the identity.
type SVIDIssue struct {
	Time     time.Time `json:"time"`
	SpiffeID string    `json:"spiffe_id"`
	Serial   string    `json:"serial"`
	Agent    string    `json:"agent"`
	Remote   string    `json:"remote,omitempty"`
}

// Scoper answers scope questions over an audit log directory, with an
// index of its own (ScopeIndex) so that a week of a ten-million-entry log
// is answered by reading only the blocks the identity appears in.
type Scoper struct {
	Dir   string // the audit log
	Index string // the index file ("": no index, every entry in the window is read)
	// MaxIdentities bounds the identities the index names one by one (0:
	// DefaultMaxIdentities); the rest share one list of blocks.
	MaxIdentities int

	mu  sync.Mutex
	idx *scopeIndex
}

// scopeIndex says, per identity, which blocks of audit.TimeBlock
// entries mention it, and per block its time range. It is derived data:
// rebuilt when missing or unreadable, extended to the end of the log
// before each question, and never trusted to say more than "this block
// does not mention that identity" (a block it names is read and every
// entry checked).
//
// The index is bounded: at most Scoper.MaxIdentities identities (and
// none longer than maxIndexedIDLen) are indexed one by one; every other
// identity's blocks go to Other, which every question also reads. A
// shipper that invents identities by the thousand (red team: 20,000
// made a 38.9 MB index) then makes questions slower, never the index
// larger than the bound nor an answer incomplete.
type scopeIndex struct {
	N     int64              `json:"n"`               // entries indexed
	Times [][2]int64         `json:"times"`           // per block: min, max Unix ns
	IDs   map[string][]int64 `json:"ids"`             // identity -> blocks, ascending
	Other []int64            `json:"other,omitempty"` // blocks of identities not in IDs
	max   int
}

// DefaultMaxIdentities bounds the identities a scope index names one by
// one (Scoper.MaxIdentities 0).
const DefaultMaxIdentities = 100_000

// maxIndexedIDLen: longer identities (a SPIFFE ID may be 2,048 bytes)
// are indexed under Other.
const maxIndexedIDLen = 256

// identities are the fields of an entry that name who acted or was
// acted for.
type identities struct {
	Actor struct {
		SpiffeID string `json:"spiffe_id"`
		User     string `json:"user"`
	} `json:"actor"`
	Time    time.Time `json:"time"`
	Details struct {
		SpiffeID string `json:"spiffe_id"`
		User     string `json:"user"`
		Act      string `json:"act"`
	} `json:"details"`
}

func (x *scopeIndex) add(block int64, id string) {
	if id == "" {
		return
	}
	bs, ok := x.IDs[id]
	if !ok && (len(x.IDs) >= x.max || len(id) > maxIndexedIDLen) {
		if n := len(x.Other); n == 0 || x.Other[n-1] != block {
			x.Other = append(x.Other, block)
		}
		return
	}
	if n := len(bs); n > 0 && bs[n-1] == block {
		return
	}
	x.IDs[id] = append(bs, block)
}

// update indexes the entries of the log not indexed yet.
func (s *Scoper) update() (*scopeIndex, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idx == nil {
		s.idx = &scopeIndex{IDs: map[string][]int64{}}
		if s.Index != "" {
			if b, err := os.ReadFile(s.Index); err == nil {
				var x scopeIndex
				if json.Unmarshal(b, &x) == nil && x.IDs != nil && int64(len(x.Times)) == (x.N+audit.TimeBlock-1)/audit.TimeBlock {
					s.idx = &x
				}
			}
		}
	}
	x := s.idx
	x.max = s.MaxIdentities
	if x.max <= 0 {
		x.max = DefaultMaxIdentities
	}
	n, err := audit.Count(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("respond: scope: %w", err)
	}
	if n < x.N { // a different log: start over
		*x = scopeIndex{IDs: map[string][]int64{}, max: x.max}
	}
	if n == x.N {
		return x, nil
	}
	var ids identities
	err = audit.Scan(s.Dir, x.N, func(i int64, e []byte) error {
		if i >= n {
			return audit.ErrStop
		}
		ids = identities{}
		if err := json.Unmarshal(e, &ids); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		k := i / audit.TimeBlock
		for int64(len(x.Times)) <= k {
			x.Times = append(x.Times, [2]int64{1<<63 - 1, -1 << 63})
		}
		t := ids.Time.UnixNano()
		x.Times[k][0], x.Times[k][1] = min(x.Times[k][0], t), max(x.Times[k][1], t)
		x.add(k, ids.Actor.SpiffeID)
		x.add(k, ids.Actor.User)
		x.add(k, ids.Details.SpiffeID)
		x.add(k, ids.Details.User)
		x.add(k, ids.Details.Act)
		x.N = i + 1
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("respond: scope: index: %w", err)
	}
	if s.Index != "" {
		if b, err := json.Marshal(x); err == nil {
			atomicfile.Write(s.Index, b, 0o600)
		}
	}
	return x, nil
}

// candidates are the blocks that may hold entries of identity in [lo, hi).
func (x *scopeIndex) candidates(identity string, lo, hi int64) []int64 {
	var blocks []int64
	if prefix, ok := strings.CutSuffix(identity, "/*"); ok {
		for id, bs := range x.IDs {
			if id == prefix || strings.HasPrefix(id, prefix+"/") {
				blocks = append(blocks, bs...)
			}
		}
		slices.Sort(blocks)
		blocks = slices.Compact(blocks)
	} else {
		blocks = x.IDs[identity]
	}
	if len(x.Other) > 0 {
		blocks = append(slices.Clone(blocks), x.Other...)
		slices.Sort(blocks)
		blocks = slices.Compact(blocks)
	}
	var out []int64
	for _, k := range blocks {
		if k < int64(len(x.Times)) && (x.Times[k][1] < lo || x.Times[k][0] >= hi) {
			continue
		}
		out = append(out, k)
	}
	return out
}

// matcher says whether a value names the identity.
func matcher(identity string) func(string) bool {
	if prefix, ok := strings.CutSuffix(identity, "/*"); ok {
		return func(v string) bool { return v == prefix || strings.HasPrefix(v, prefix+"/") }
	}
	return func(v string) bool { return v == identity }
}

// Scope answers what identity did in [since, until) (until zero: now).
func (s *Scoper) Scope(identity string, since, until time.Time) (*Scope, error) {
	if identity == "" {
		return nil, errors.New("respond: scope: an identity is required")
	}
	if since.IsZero() {
		return nil, errors.New("respond: scope: since is required (the start of the window)")
	}
	if until.IsZero() {
		until = time.Now()
	}
	if !until.After(since) {
		return nil, errors.New("respond: scope: until must be after since")
	}
	x, err := s.update()
	if err != nil {
		return nil, err
	}
	lo, hi := since.UnixNano(), until.UnixNano()
	blocks := x.candidates(identity, lo, hi)
	// Entries that do not contain the identity's bytes are skipped
	// undecoded; an identity JSON would escape is looked for the long way.
	// An exact identity is looked for as a whole JSON string (its
	// quotes included), so names that only share its prefix are skipped
	// too; a pattern by its opening quote and prefix.
	needle := []byte(`"` + identity + `"`)
	if prefix, ok := strings.CutSuffix(identity, "/*"); ok {
		needle = []byte(`"` + prefix)
	}
	if strings.ContainsFunc(identity, func(r rune) bool { return r < 0x20 || r > 0x7e || strings.ContainsRune("<>&\\\"", r) }) {
		needle = nil
	}
	// Runs of consecutive blocks, each read in one pass; the runs are
	// shared among one worker per CPU (decompression and decoding are
	// most of the work), each with its own totals, merged at the end.
	type span struct{ start, end int64 }
	var spans []span
	for i := 0; i < len(blocks); {
		j := i
		for j+1 < len(blocks) && blocks[j+1] == blocks[j]+1 && j-i < 15 {
			j++
		}
		spans = append(spans, span{blocks[i] * audit.TimeBlock, min((blocks[j]+1)*audit.TimeBlock, x.N)})
		i = j + 1
	}
	workers := max(1, min(runtime.GOMAXPROCS(0), len(spans)))
	accs := make([]*accumulator, workers)
	errs := make([]error, workers)
	next := make(chan span)
	var wg sync.WaitGroup
	for w := range workers {
		accs[w] = newAccumulator(identity, since, until)
		wg.Go(func() {
			acc := accs[w]
			for sp := range next {
				if errs[w] != nil {
					continue
				}
				errs[w] = audit.Scan(s.Dir, sp.start, func(k int64, e []byte) error {
					if k >= sp.end {
						return audit.ErrStop
					}
					acc.scanned++
					if !bytes.Contains(e, needle) {
						return nil
					}
					return acc.add(e)
				})
			}
		})
	}
	for _, sp := range spans {
		next <- sp
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("respond: scope: %w", err)
		}
	}
	for _, a := range accs[1:] {
		accs[0].merge(a)
	}
	return accs[0].result(), nil
}

// merge adds b's totals to a's.
func (a *accumulator) merge(b *accumulator) {
	a.scanned += b.scanned
	a.sc.Entries += b.sc.Entries
	a.sc.SVIDs = append(a.sc.SVIDs, b.sc.SVIDs...)
	for _, pair := range [2][2]map[Access]*Access{{a.reached, b.reached}, {a.refused, b.refused}} {
		for k, v := range pair[1] {
			if p := pair[0][k]; p != nil {
				p.Count, p.Bytes = sat(p.Count, v.Count), sat(p.Bytes, v.Bytes)
			} else {
				pair[0][k] = v
			}
		}
	}
	for k, v := range b.tokens {
		if p := a.tokens[k]; p != nil {
			p.Count = sat(p.Count, v.Count)
		} else {
			a.tokens[k] = v
		}
	}
	for k, v := range b.keys {
		if p := a.keys[k]; p != nil {
			p.Count, p.Bytes, p.Refused = sat(p.Count, v.Count), sat(p.Bytes, v.Bytes), sat(p.Refused, v.Refused)
		} else {
			a.keys[k] = v
		}
	}
	for u := range b.users {
		a.users[u] = true
	}
}

type accumulator struct {
	sc      *Scope
	is      func(string) bool
	lo, hi  time.Time
	scanned int64
	reached map[Access]*Access
	refused map[Access]*Access
	tokens  map[TokenUse]*TokenUse
	keys    map[[2]string]*KeyUse
	users   map[string]bool
	e       scopeEntry // reused
}

func newAccumulator(identity string, since, until time.Time) *accumulator {
	return &accumulator{sc: &Scope{Identity: identity, Since: since.UTC(), Until: until.UTC()}, is: matcher(identity), lo: since, hi: until,
		reached: map[Access]*Access{}, refused: map[Access]*Access{}, tokens: map[TokenUse]*TokenUse{}, keys: map[[2]string]*KeyUse{}, users: map[string]bool{}}
}

func count(d map[string]string) int64 {
	if n, err := strconv.ParseInt(d["count"], 10, 64); err == nil && n > 0 {
		return n
	}
	return 1
}

// num reads a non-negative figure (a negative or unreadable one is 0).
func num(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return max(n, 0)
}

// sat adds two non-negative figures, saturating at the largest int64: a
// shipped count near the limit must not wrap a report's total negative.
func sat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// scopeEntry is the part of an entry a scope reads: decoded without the
// log's strict checks (the log checked each entry when it was appended,
// and audit verify checks them against the tree), which is most of the
// cost of a question over millions of entries.
type scopeEntry struct {
	Time  time.Time `json:"time"`
	Actor struct {
		SpiffeID string `json:"spiffe_id"`
		User     string `json:"user"`
	} `json:"actor"`
	Action  string            `json:"action"`
	Target  string            `json:"target"`
	Outcome string            `json:"outcome"`
	Source  string            `json:"source"`
	Details map[string]string `json:"details"`
}

// add counts one entry that may concern the identity.
func (a *accumulator) add(b []byte) error {
	e := &a.e
	*e = scopeEntry{}
	if err := json.Unmarshal(b, e); err != nil {
		return err
	}
	if e.Time.Before(a.lo) || !e.Time.Before(a.hi) {
		return nil
	}
	d := e.Details
	switch {
	case e.Action == "authz.decision" && (a.is(e.Actor.SpiffeID) || a.is(e.Actor.User)):
		k := Access{Service: e.Target, Method: d["method"], Path: d["path"], ReportedBy: e.Source}
		if !a.is(e.Actor.User) {
			k.User = e.Actor.User
		}
		m := a.reached
		if e.Outcome != audit.OutcomeSuccess {
			m = a.refused
		}
		p := m[k]
		if p == nil {
			c := k
			p = &c
			m[k] = p
		}
		p.Count, p.Bytes = sat(p.Count, count(d)), sat(p.Bytes, num(d["bytes"]))
		if k.User != "" {
			a.users[k.User] = true
		}
	case strings.HasPrefix(e.Action, "oauth.token_") && e.Action != "oauth.token_revoke" && e.Outcome == audit.OutcomeSuccess &&
		(a.is(d["spiffe_id"]) || a.is(d["user"]) || a.is(d["act"]) || a.is(e.Actor.SpiffeID)):
		k := TokenUse{Action: e.Action, Client: d["client_id"], Audience: d["aud"], User: d["user"]}
		p := a.tokens[k]
		if p == nil {
			c := k
			p = &c
			a.tokens[k] = p
		}
		p.Count = sat(p.Count, 1)
		if k.User != "" && !a.is(k.User) {
			a.users[k.User] = true
		}
	case strings.HasPrefix(e.Action, "kms.") && a.is(e.Actor.SpiffeID):
		op := strings.TrimPrefix(e.Action, "kms.")
		k := [2]string{d["key"], op}
		p := a.keys[k]
		if p == nil {
			p = &KeyUse{Key: d["key"], Op: op}
			a.keys[k] = p
		}
		if e.Outcome == audit.OutcomeSuccess {
			p.Count, p.Bytes = sat(p.Count, 1), sat(p.Bytes, num(d["size"]))
		} else {
			p.Refused = sat(p.Refused, 1)
		}
	case e.Action == "svid.issue" && e.Outcome == audit.OutcomeSuccess && a.is(d["spiffe_id"]):
		a.sc.SVIDs = append(a.sc.SVIDs, SVIDIssue{Time: e.Time.UTC(), SpiffeID: d["spiffe_id"], Serial: d["serial"], Agent: e.Actor.SpiffeID, Remote: d["remote"]})
	default:
		return nil
	}
	a.sc.Entries++
	return nil
}

func (a *accumulator) result() *Scope {
	sc := a.sc
	sc.Scanned = a.scanned
	sc.Reached, sc.Refused = sortedAccess(a.reached), sortedAccess(a.refused)
	sc.Tokens = []TokenUse{}
	for _, t := range a.tokens {
		sc.Tokens = append(sc.Tokens, *t)
	}
	sort.Slice(sc.Tokens, func(i, j int) bool {
		x, y := sc.Tokens[i], sc.Tokens[j]
		return x.Action+x.Client+x.Audience+x.User < y.Action+y.Client+y.Audience+y.User
	})
	sc.Keys = []KeyUse{}
	for _, k := range a.keys {
		sc.Keys = append(sc.Keys, *k)
	}
	sort.Slice(sc.Keys, func(i, j int) bool { return sc.Keys[i].Key+sc.Keys[i].Op < sc.Keys[j].Key+sc.Keys[j].Op })
	sc.Users = []string{}
	for u := range a.users {
		sc.Users = append(sc.Users, u)
	}
	sort.Strings(sc.Users)
	if sc.SVIDs == nil {
		sc.SVIDs = []SVIDIssue{}
	}
	sort.SliceStable(sc.SVIDs, func(i, j int) bool { return sc.SVIDs[i].Time.Before(sc.SVIDs[j].Time) })
	return sc
}

func sortedAccess(m map[Access]*Access) []Access {
	out := []Access{}
	for _, a := range m {
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if x.Service != y.Service {
			return x.Service < y.Service
		}
		if x.Path != y.Path {
			return x.Path < y.Path
		}
		if x.Method != y.Method {
			return x.Method < y.Method
		}
		if x.User != y.User {
			return x.User < y.User
		}
		return x.ReportedBy < y.ReportedBy
	})
	return out
}

// Markdown renders the report for people (and the post-mortem).
func (sc *Scope) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Breach scope of `%s` from %s to %s: %d entries concern it (%d read).\n\n", sc.Identity,
		sc.Since.Format(time.RFC3339), sc.Until.Format(time.RFC3339), sc.Entries, sc.Scanned)
	table := func(title string, as []Access) {
		fmt.Fprintf(&b, "### %s (%d)\n\n", title, len(as))
		if len(as) == 0 {
			b.WriteString("None.\n\n")
			return
		}
		b.WriteString("| Service | Method | Path | Calls | Bytes | For user | Reported by |\n|---|---|---|---|---|---|---|\n")
		for _, a := range as {
			fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %s | %s |\n", mdCell(a.Service), mdCell(a.Method), mdCell(a.Path), a.Count, a.Bytes, mdCell(a.User), mdCell(orDefault(a.ReportedBy, "-")))
		}
		b.WriteString("\nCalls and bytes are the figures the reporting proxy or service shipped.\n")
		b.WriteString("\n")
	}
	table("Reached", sc.Reached)
	table("Refused", sc.Refused)
	fmt.Fprintf(&b, "### Tokens (%d)\n\n", len(sc.Tokens))
	for _, t := range sc.Tokens {
		fmt.Fprintf(&b, "- %s ×%d: client %s, audience %s, user %s\n", t.Action, t.Count, orDefault(t.Client, "-"), orDefault(t.Audience, "-"), orDefault(t.User, "-"))
	}
	fmt.Fprintf(&b, "\n### Users acted for (%d)\n\n", len(sc.Users))
	for _, u := range sc.Users {
		fmt.Fprintf(&b, "- %s\n", u)
	}
	fmt.Fprintf(&b, "\n### Keys (%d)\n\n", len(sc.Keys))
	for _, k := range sc.Keys {
		fmt.Fprintf(&b, "- %s %s: %d (%d bytes), %d refused\n", k.Key, k.Op, k.Count, k.Bytes, k.Refused)
	}
	fmt.Fprintf(&b, "\n### SVIDs issued (%d)\n\n", len(sc.SVIDs))
	for _, s := range sc.SVIDs {
		fmt.Fprintf(&b, "- %s serial %s to %s by agent %s from %s\n", s.Time.Format(time.RFC3339), s.Serial, s.SpiffeID, s.Agent, orDefault(s.Remote, "-"))
	}
	b.WriteString("\n")
	return b.String()
}

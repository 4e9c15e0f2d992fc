package detect

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

func celEnv() (*cel.Env, error) {
	return cel.NewEnv(cel.Variable("entry", cel.MapType(cel.StringType, cel.DynType)))
}

// MaxConditionCost bounds a condition's cost in cel-go's units (about one
// per operation, one per byte a string function reads). A condition whose
// worst case over a clipped entry (fields of at most audit.MaxField bytes,
// at most audit.MaxDetails details) exceeds it is refused when the rules are
// loaded. The default rules' worst case is about 200; two comprehensions
// over details nested, about 46,000; three, 1.5 million (refused).
//
// Over a clipped entry the estimate is a bound, so conditions run without
// cel-go's cost tracker (it doubles the evaluation time, decision 0016).
// An entry larger than that (written before entries were clipped) runs
// with the tracker and is stopped at MaxConditionCost (Engine.Errors).
const MaxConditionCost = 100_000

// clippedSizes tells cel-go's estimator how large an entry's parts can be:
// every string and map of a stored entry is clipped (audit.ClipEntry).
type clippedSizes struct{}

func (clippedSizes) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	isDetails := n.Expr() != nil && n.Expr().Kind() == ast.SelectKind && n.Expr().AsSelect().FieldName() == "details"
	switch {
	case isDetails, n.Type().Kind() == types.MapKind, n.Type().Kind() == types.ListKind:
		return &checker.SizeEstimate{Min: 0, Max: audit.MaxDetails}
	}
	return &checker.SizeEstimate{Min: 0, Max: audit.MaxField}
}

func (clippedSizes) EstimateCallCost(function, overloadID string, target *checker.AstNode, args []checker.AstNode) *checker.CallEstimate {
	return nil
}

// condition is a compiled condition: the program for clipped entries and
// the cost-limited one for others.
type condition struct {
	fast, limited cel.Program
}

func (c *condition) eval(act map[string]any, clipped bool) (ref.Val, error) {
	if clipped {
		v, _, err := c.fast.Eval(act)
		return v, err
	}
	v, _, err := c.limited.Eval(act)
	return v, err
}

func compile(env *cel.Env, expr string) (*condition, error) {
	tree, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("%s", strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if tree.OutputType() != cel.BoolType && tree.OutputType() != cel.DynType {
		return nil, fmt.Errorf("must be true or false, not %s", tree.OutputType())
	}
	est, err := env.EstimateCost(tree, clippedSizes{})
	if err != nil {
		return nil, fmt.Errorf("cannot bound its cost: %v", err)
	}
	if est.Max > MaxConditionCost {
		return nil, fmt.Errorf("too costly: up to %d cost units over one entry, at most %d (comprehensions nested too deep?)", est.Max, MaxConditionCost)
	}
	fast, err := env.Program(tree, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, err
	}
	limited, err := env.Program(tree, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(MaxConditionCost))
	if err != nil {
		return nil, err
	}
	return &condition{fast: fast, limited: limited}, nil
}

// withinClip reports whether en is no larger than a clipped entry, so a
// condition's estimated cost bounds its evaluation.
func withinClip(en *audit.Entry) bool {
	if len(en.Details) > audit.MaxDetails {
		return false
	}
	for _, f := range [...]string{en.Action, en.Target, en.Outcome, en.Reason, en.RequestID, en.Source, en.Stream, en.Actor.SpiffeID, en.Actor.User} {
		if len(f) > audit.MaxField {
			return false
		}
	}
	for k, v := range en.Details {
		if len(k) > audit.MaxField || len(v) > audit.MaxField {
			return false
		}
	}
	return true
}

// Engine runs rules over entries in log order. It is not safe for
// concurrent use; one goroutine feeds it.
//
// Its memory is bounded whatever the entries say (a compromised enforcer
// ships entries with any actor it likes): a rule keeps state for at most
// MaxGroups groups, a group's window costs a few buckets, not one slot per
// match, and state that no longer matters is swept every sweepEntries
// entries and every sweepEvery of entry time.
type Engine struct {
	rules     []*ruleState
	byAction  map[string][]*ruleState
	anyAction []*ruleState
	start     time.Time // time of the first entry seen: baselines start here
	seen      int64
	latest    time.Time // the newest entry time seen
	swept     time.Time // entry time of the last sweep
	// Errors counts condition evaluation errors (treated as no match).
	Errors int64
	// MaxGroups bounds the groups a rule keeps state for (default
	// DefaultMaxGroups). Past it, matches of groups it does not know are
	// counted, and alerted on, as one group, OverflowGroup: a flood of
	// distinct groups still fires.
	MaxGroups int
	// OnOverflow, if set, hears each match counted in OverflowGroup, with
	// the rule's running count of them (for a metric and a log line).
	OnOverflow func(rule string, n int64)
}

// DefaultMaxGroups is the default Engine.MaxGroups.
const DefaultMaxGroups = 10_000

// OverflowGroup is the group of matches past a rule's MaxGroups groups.
const OverflowGroup = "(other groups: more than the rule keeps apart)"

// Sweeping: every sweepEntries entries, and whenever the entries' time
// has moved sweepEvery since the last sweep.
const (
	sweepEntries = 8192
	sweepEvery   = time.Minute
)

type ruleState struct {
	*Rule
	counts    map[string]*window      // threshold: recent matches per group
	terms     map[[16]byte]struct{}   // new_terms: combinations seen (hashed)
	open      map[string]*store.Alert // latest alert per group, for dedup
	overflows int64                   // matches counted in OverflowGroup
}

// maxTerms bounds a new_terms rule's memory (a hash of 16 bytes each);
// beyond it new combinations are still alerted on but no longer
// remembered.
const maxTerms = 1 << 18

// NewEngine returns an engine for rs.
func NewEngine(rs *RuleSet) *Engine {
	e := &Engine{byAction: map[string][]*ruleState{}, MaxGroups: DefaultMaxGroups}
	for _, r := range rs.Rules {
		st := &ruleState{Rule: r, counts: map[string]*window{}, terms: map[[16]byte]struct{}{}, open: map[string]*store.Alert{}}
		e.rules = append(e.rules, st)
		if len(r.Actions) == 0 {
			e.anyAction = append(e.anyAction, st)
		}
		for _, a := range r.Actions {
			e.byAction[a] = append(e.byAction[a], st)
		}
	}
	return e
}

// Rules returns the engine's rules.
func (e *Engine) Rules() []*Rule {
	out := make([]*Rule, len(e.rules))
	for i, r := range e.rules {
		out[i] = r.Rule
	}
	return out
}

// Process looks at entry en at log index i and returns the alerts it raised
// or updated (an update has the ID of an alert returned before, with Count,
// LastSeen and LastIndex moved).
func (e *Engine) Process(i int64, en *audit.Entry) []store.Alert {
	if e.start.IsZero() {
		e.start, e.swept = en.Time, en.Time
	}
	if en.Time.After(e.latest) {
		e.latest = en.Time
	}
	e.seen++
	if e.seen%sweepEntries == 0 || e.latest.Sub(e.swept) >= sweepEvery {
		e.sweep(e.latest)
		e.swept = e.latest
	}
	var out []store.Alert
	var act map[string]any
	var clipped bool
	for _, list := range [2][]*ruleState{e.byAction[en.Action], e.anyAction} {
		for _, r := range list {
			if r.prg != nil {
				if act == nil {
					act = activation(en)
					clipped = withinClip(en)
				}
				v, err := r.prg.eval(act, clipped)
				if err != nil {
					e.Errors++
					continue
				}
				if b, ok := v.Value().(bool); !ok || !b {
					continue
				}
			}
			if a, ok := r.match(e, i, en); ok {
				out = append(out, a)
			}
		}
	}
	return out
}

// match applies the rule's counting to a matching entry.
func (r *ruleState) match(e *Engine, i int64, en *audit.Entry) (store.Alert, bool) {
	switch {
	case r.Threshold > 0:
		group := groupKey(r.GroupBy, en)
		w := r.counts[group]
		if w == nil {
			if len(r.counts) >= e.maxGroups() {
				group = e.overflow(r)
				w = r.counts[group]
			}
			if w == nil {
				w = &window{}
				r.counts[group] = w
			}
		}
		// An aggregate entry stands for details.count matches.
		if !w.add(en.Time, min(countOf(en), r.Threshold), r.Threshold, r.Window) {
			return store.Alert{}, false
		}
		return r.fire(e, i, en, group, fmt.Sprintf("%d matching entries within %s%s", r.Threshold, r.Window, forGroup(group))), true
	case r.NewTerms != nil:
		term := groupKey(r.NewTerms, en)
		h := sha256.Sum256([]byte(term))
		key := [16]byte(h[:16])
		if _, ok := r.terms[key]; ok {
			return store.Alert{}, false
		}
		if len(r.terms) < maxTerms {
			r.terms[key] = struct{}{}
		}
		if en.Time.Sub(e.start) < r.Baseline {
			return store.Alert{}, false // still learning
		}
		return r.fire(e, i, en, term, "first seen after the baseline: "+term), true
	default:
		group := groupKey(r.GroupBy, en)
		what := en.Action + " " + en.Outcome + " by " + actorOf(en)
		if en.Target != "" {
			what += " on " + en.Target
		}
		if en.Reason != "" {
			// Quoted: a reason may carry what a caller sent (a
			// client_id, a header), which must not read as the
			// alert's own words (no line breaks, no forged clauses).
			what += ": reason " + strconv.Quote(audit.Clip(en.Reason))
		}
		return r.fire(e, i, en, group, what), true
	}
}

func (e *Engine) maxGroups() int {
	if e.MaxGroups > 0 {
		return e.MaxGroups
	}
	return DefaultMaxGroups
}

// overflow counts a match of r past its MaxGroups groups and returns the
// group to count it in.
func (e *Engine) overflow(r *ruleState) string {
	r.overflows++
	if e.OnOverflow != nil {
		e.OnOverflow(r.Name, r.overflows)
	}
	return OverflowGroup
}

// fire raises an alert for group, or merges into the group's open alert.
// Past MaxGroups open alerts, a new group's alert is OverflowGroup's.
func (r *ruleState) fire(e *Engine, i int64, en *audit.Entry, group, summary string) store.Alert {
	if r.open[group] == nil && group != OverflowGroup && len(r.open) >= e.maxGroups() {
		group = e.overflow(r)
		summary += " (and others: more groups than the rule keeps apart)"
	}
	if a := r.open[group]; a != nil && en.Time.Sub(a.LastSeen) <= r.Dedup {
		a.LastSeen, a.LastIndex = en.Time, i
		a.Count++
		return *a
	}
	h := sha256.Sum256([]byte(r.Name + "\x00" + group + "\x00" + strconv.FormatInt(i, 10)))
	a := &store.Alert{ID: "alr_" + hex.EncodeToString(h[:10]), Rule: r.Name, Severity: r.Severity, Group: group,
		Summary: r.Name + ": " + summary, FirstSeen: en.Time, LastSeen: en.Time, Count: 1, FirstIndex: i, LastIndex: i,
		Status: store.AlertOpen, CreatedAt: en.Time}
	r.open[group] = a
	return *a
}

// sweep drops state that can no longer matter at time now.
func (e *Engine) sweep(now time.Time) {
	for _, r := range e.rules {
		for g, w := range r.counts {
			if now.UnixNano()-w.newest() > int64(r.Window) {
				delete(r.counts, g)
			}
		}
		for g, a := range r.open {
			if now.Sub(a.LastSeen) > r.Dedup {
				delete(r.open, g)
			}
		}
	}
}

// windowBuckets is how many buckets a window is counted in: a group's
// state is at most windowBuckets+2 buckets, however many matches it has.
const windowBuckets = 64

// window counts a group's recent matches in time buckets of 1/64 of the
// rule's window (by their entries' times), not one slot per match: a
// threshold of 3,000 once cost 72 KB per group up front. A bucket that
// straddles the window's oldest edge is not counted, so the count is never
// more than the matches within the window and at most one bucket's fewer.
type window struct {
	b []bucket // ascending by idx
}

type bucket struct {
	idx         int64 // time / width
	first, last int64 // unix nanoseconds of the first and last match in it
	n           int64
}

// add records n matches at t and reports whether the window (the span
// ending at the newest match) now holds threshold or more; then it
// empties, keeping what this entry brought past the threshold, so the
// next firing needs as many again.
func (w *window) add(t time.Time, n, threshold int, span time.Duration) bool {
	width := max(int64(span)/windowBuckets, 1)
	ts := t.UnixNano()
	idx := ts / width
	if ts%width < 0 {
		idx--
	}
	i, found := slices.BinarySearchFunc(w.b, idx, func(b bucket, idx int64) int { return cmp.Compare(b.idx, idx) })
	if found {
		b := &w.b[i]
		b.n += int64(n)
		b.first, b.last = min(b.first, ts), max(b.last, ts)
	} else {
		w.b = slices.Insert(w.b, i, bucket{idx: idx, first: ts, last: ts, n: int64(n)})
	}
	edge := w.newest() - int64(span)
	drop := 0
	for drop < len(w.b) && w.b[drop].last < edge {
		drop++
	}
	w.b = slices.Delete(w.b, 0, drop)
	var total int64
	for _, b := range w.b {
		if b.first >= edge {
			total += b.n
		}
	}
	if total < int64(threshold) {
		return false
	}
	w.b = w.b[:0]
	if carry := min(total-int64(threshold), int64(n)); carry > 0 {
		w.b = append(w.b, bucket{idx: idx, first: ts, last: ts, n: carry})
	}
	return true
}

// newest is the unix time of the newest match (0: none).
func (w *window) newest() int64 {
	if len(w.b) == 0 {
		return 0
	}
	return w.b[len(w.b)-1].last
}

// activation is what a condition sees as `entry`.
func activation(en *audit.Entry) map[string]any {
	details := en.Details
	if details == nil {
		details = map[string]string{}
	}
	return map[string]any{"entry": map[string]any{
		"time": en.Time, "action": en.Action, "target": en.Target, "outcome": en.Outcome, "reason": en.Reason,
		"request_id": en.RequestID, "source": en.Source, "stream": en.Stream, "details": details,
		"actor": map[string]string{"spiffe_id": en.Actor.SpiffeID, "user": en.Actor.User},
	}}
}

// Field returns the value of an entry field path (see the package doc).
func Field(en *audit.Entry, path string) string {
	switch path {
	case "action":
		return en.Action
	case "target":
		return en.Target
	case "outcome":
		return en.Outcome
	case "reason":
		return en.Reason
	case "request_id":
		return en.RequestID
	case "source":
		return en.Source
	case "stream":
		return en.Stream
	case "actor.spiffe_id":
		return en.Actor.SpiffeID
	case "actor.user":
		return en.Actor.User
	}
	if k, ok := strings.CutPrefix(path, "details."); ok {
		return en.Details[k]
	}
	return ""
}

func groupKey(fields []string, en *audit.Entry) string {
	if len(fields) == 0 {
		return ""
	}
	var b strings.Builder
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f)
		b.WriteByte('=')
		b.WriteString(EscapeGroupValue(Field(en, f)))
	}
	return b.String()
}

// EscapeGroupValue escapes what would let a value pass for more fields
// of a group ("field=value field=value"): spaces, '=', '%' and control
// characters become %XX (red team: a key named "x actor.spiffe_id=victim"
// made a playbook act on the victim). SPIFFE IDs and names are unchanged.
// url.PathUnescape reads it back.
func EscapeGroupValue(v string) string {
	if !strings.ContainsFunc(v, needsEscape) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if needsEscape(rune(c)) {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func needsEscape(r rune) bool { return r <= ' ' || r == '=' || r == '%' || r == 0x7f }

func forGroup(g string) string {
	if g == "" {
		return ""
	}
	return " for " + g
}

func actorOf(en *audit.Entry) string {
	switch {
	case en.Actor.SpiffeID != "" && en.Actor.User != "":
		return en.Actor.User + " via " + en.Actor.SpiffeID
	case en.Actor.SpiffeID != "":
		return en.Actor.SpiffeID
	}
	return en.Actor.User
}

// countOf is how many events en stands for: details.count of an aggregate
// entry (decisions, refusals), else 1.
func countOf(en *audit.Entry) int {
	c, ok := en.Details["count"]
	if !ok {
		return 1
	}
	n, err := strconv.Atoi(c)
	if err != nil || n < 1 {
		return 1
	}
	return n
}

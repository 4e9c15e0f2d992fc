package registration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/federation"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/selector"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/svid"
)

// MaxJoinTokenTTL bounds how long a join token may live: it is a bearer
// secret, so it should be spent soon after it is made.
const MaxJoinTokenTTL = 7 * 24 * time.Hour

// Kinds of errors a caller caused.
var (
	ErrInvalid     = errors.New("registration: invalid")
	ErrConflict    = errors.New("registration: conflict")
	ErrNotEntitled = errors.New("registration: not entitled")
	// ErrCA: the CA cannot sign now.
	ErrCA = errors.New("the CA cannot sign now")
)

type callerError struct {
	kind error
	msg  string
}

func (e *callerError) Error() string { return e.msg }
func (e *callerError) Unwrap() error { return e.kind }

func fail(kind error, format string, args ...any) error {
	return &callerError{kind, fmt.Sprintf(format, args...)}
}

// Store is what a Registrar reads and writes; store.Store implements it.
type Store interface {
	GetAgent(ctx context.Context, id string) (store.Agent, error)
	UpsertAgent(ctx context.Context, a store.Agent) error
	ReadmitAgent(ctx context.Context, id string) error
	AddRevocations(ctx context.Context, revs []store.Revocation) error
	CreateJoinToken(ctx context.Context, t store.JoinToken) error
	ListEntries(ctx context.Context, parentID string) ([]store.Entry, error)
	CreateEntry(ctx context.Context, e store.Entry) error
	RecordSVIDs(ctx context.Context, svids []store.IssuedSVID) error
}

// Registrar applies the rules to the store and the CA.
type Registrar struct {
	TrustDomain spiffeid.TrustDomain
	Store       Store
	CA          *identity.CA
	// MaxTTL bounds an entry's TTLs (the intermediate's life).
	MaxTTL time.Duration
	// Defaults: a join token's life, an agent SVID's, and a workload's
	// X.509- and JWT-SVID's when its entry says nothing.
	JoinTokenTTL, AgentTTL, X509TTL, JWTTTL time.Duration
	Now                                     func() time.Time
	// Federations lists the trust domains this one has a federation
	// relationship with (by name): an entry's federates_with may name
	// only those, so a misspelt one is refused rather than never served.
	// nil: entries may not federate.
	Federations func(ctx context.Context) ([]string, error)
}

// NewJoinToken makes a join token for agent name (a random one when
// empty) living ttlSeconds (0: JoinTokenTTL) and returns the token, shown
// once, and what the store keeps.
func (g *Registrar) NewJoinToken(ctx context.Context, name string, ttlSeconds int64) (string, store.JoinToken, error) {
	ttl := g.JoinTokenTTL
	if ttlSeconds != 0 {
		// Checked in seconds: a product past int64 would wrap around.
		if ttlSeconds < 0 || ttlSeconds > int64(MaxJoinTokenTTL/time.Second) {
			ttl = -1
		} else {
			ttl = time.Duration(ttlSeconds) * time.Second
		}
	}
	if ttl <= 0 || ttl > MaxJoinTokenTTL {
		return "", store.JoinToken{}, fail(ErrInvalid, "ttl_seconds: must be between 1 and %d", int(MaxJoinTokenTTL.Seconds()))
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	if name == "" {
		nb := make([]byte, 6)
		rand.Read(nb)
		name = "agent-" + hex.EncodeToString(nb)
	}
	agentID, err := identity.AgentID(g.TrustDomain, name)
	if err != nil {
		return "", store.JoinToken{}, fail(ErrInvalid, "agent_name: %v", err)
	}
	if a, err := g.Store.GetAgent(ctx, agentID.String()); err == nil && !a.Evicted {
		return "", store.JoinToken{}, fail(ErrConflict, "agent_name: agent %s is already attested; evict it first or choose another name", agentID)
	}
	token := "rjt_" + base64.RawURLEncoding.EncodeToString(raw)
	hash := sha256.Sum256([]byte(token))
	now := g.Now()
	jt := store.JoinToken{Hash: hash[:], AgentID: agentID.String(), ExpiresAt: now.Add(ttl), CreatedAt: now}
	if err := g.Store.CreateJoinToken(ctx, jt); err != nil {
		return "", jt, fmt.Errorf("registration: store the join token: %w", err)
	}
	return token, jt, nil
}

// EntrySpec is an entry as asked for.
type EntrySpec struct {
	SpiffeID, ParentID string
	Selectors          []string
	// TTLs in seconds (0: the defaults).
	X509TTLSeconds, JWTTTLSeconds int64
	DNSNames                      []string
	// SPIRE's fields (store.Entry says what each does here).
	Admin, Downstream bool
	Hint              string
	ExpiresAt         time.Time // zero: never
	// FederatesWith: trust domains ("example.com" or
	// "spiffe://example.com") whose bundles the workloads are given.
	FederatesWith []string
}

// MaxHintLen bounds an entry's hint (SPIRE's limit).
const MaxHintLen = 1024

// MaxFederatesWith bounds how many trust domains one entry federates with.
const MaxFederatesWith = 64

var dnsNameRE = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// NewEntry checks spec, gives it an ID and stores it.
func (g *Registrar) NewEntry(ctx context.Context, spec EntrySpec) (store.Entry, error) {
	e, err := g.checkEntry(spec)
	if err != nil {
		return e, err
	}
	if err := g.checkFederations(ctx, []store.Entry{e}); err != nil {
		var be *BatchError
		if errors.As(err, &be) {
			return e, be.Err
		}
		return e, err
	}
	siblings, err := g.Store.ListEntries(ctx, e.ParentID)
	if err != nil {
		return e, fmt.Errorf("registration: read entries: %w", err)
	}
	for _, o := range siblings {
		if o.SpiffeID == e.SpiffeID && selector.NewSet(o.Selectors...).Matches(e.Selectors) && len(o.Selectors) == len(e.Selectors) {
			return e, fail(ErrConflict, "entry %s already gives %s to these selectors under %s", o.ID, e.SpiffeID, e.ParentID)
		}
	}
	if err := g.Store.CreateEntry(ctx, e); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return e, fail(ErrConflict, "an entry with this id already exists")
		}
		return e, fmt.Errorf("registration: store the entry: %w", err)
	}
	return e, nil
}

func (g *Registrar) checkEntry(spec EntrySpec) (store.Entry, error) {
	id, err := identity.ParseWorkloadID(g.TrustDomain, spec.SpiffeID)
	if err != nil {
		return store.Entry{}, fail(ErrInvalid, "spiffe_id: %v", err)
	}
	parent, err := identity.ParseAgentID(g.TrustDomain, spec.ParentID)
	if err != nil {
		return store.Entry{}, fail(ErrInvalid, "parent_id: %v", err)
	}
	if len(spec.Selectors) == 0 {
		return store.Entry{}, fail(ErrInvalid, "selectors: at least one selector is required (an entry without selectors would match no workload)")
	}
	sels, err := selector.ParseAll(spec.Selectors)
	if err != nil {
		return store.Entry{}, fail(ErrInvalid, "selectors: %v", err)
	}
	if err := selector.CheckEntry(sels); err != nil {
		return store.Entry{}, fail(ErrInvalid, "selectors: %v", err)
	}
	maxTTL := g.MaxTTL
	if maxTTL == 0 {
		maxTTL = identity.DefaultIntermediateTTL
	}
	for name, v := range map[string]int64{"x509_ttl_seconds": spec.X509TTLSeconds, "jwt_ttl_seconds": spec.JWTTTLSeconds} {
		// In seconds: a product past int64 would wrap around (to a
		// negative TTL, or a small one that was never asked for).
		if v < 0 || v > int64(maxTTL/time.Second) {
			return store.Entry{}, fail(ErrInvalid, "%s: must be between 1 and %d (0 for the default)", name, int64(maxTTL.Seconds()))
		}
	}
	for _, d := range spec.DNSNames {
		if !dnsNameRE.MatchString(d) || len(d) > 253 {
			return store.Entry{}, fail(ErrInvalid, "dns_names: %q is not a lower-case DNS name", d)
		}
	}
	if len(spec.Hint) > MaxHintLen {
		return store.Entry{}, fail(ErrInvalid, "hint: at most %d bytes", MaxHintLen)
	}
	for _, r := range spec.Hint {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return store.Entry{}, fail(ErrInvalid, "hint: control characters and invalid UTF-8 are not allowed")
		}
	}
	if !spec.ExpiresAt.IsZero() && !spec.ExpiresAt.After(g.Now()) {
		return store.Entry{}, fail(ErrInvalid, "expires_at: %s is not in the future", spec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if spec.DNSNames == nil {
		spec.DNSNames = []string{}
	}
	fedWith, err := checkFederatesWith(g.TrustDomain, spec.FederatesWith)
	if err != nil {
		return store.Entry{}, err
	}
	idBytes := make([]byte, 16)
	rand.Read(idBytes)
	return store.Entry{ID: hex.EncodeToString(idBytes), SpiffeID: id.String(), ParentID: parent.String(), Selectors: sels,
		X509TTL: time.Duration(spec.X509TTLSeconds) * time.Second, JWTTTL: time.Duration(spec.JWTTTLSeconds) * time.Second, DNSNames: spec.DNSNames, CreatedAt: g.Now(),
		Admin: spec.Admin, Downstream: spec.Downstream, Hint: spec.Hint, ExpiresAt: spec.ExpiresAt.UTC(), FederatesWith: fedWith}, nil
}

// checkFederatesWith reads names as trust domains: sorted, without
// repeats, never our own.
func checkFederatesWith(own spiffeid.TrustDomain, names []string) ([]string, error) {
	if len(names) > MaxFederatesWith {
		return nil, fail(ErrInvalid, "federates_with: at most %d trust domains", MaxFederatesWith)
	}
	var out []string
	for _, n := range names {
		td, err := spiffeid.TrustDomainFromString(n)
		if err == nil && strings.HasPrefix(n, "spiffe://") && strings.TrimPrefix(n, "spiffe://") != td.Name() {
			err = errors.New("a trust domain ID has no path")
		}
		if err != nil {
			return nil, fail(ErrInvalid, "federates_with: %q is not a trust domain: %v", n, err)
		}
		if td == own {
			return nil, fail(ErrInvalid, "federates_with: %s is this trust domain; its bundle is always given", td.Name())
		}
		if err := federation.CheckName(td); err != nil {
			return nil, fail(ErrInvalid, "federates_with: %v", err)
		}
		if !slices.Contains(out, td.Name()) {
			out = append(out, td.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// checkFederations refuses entries that federate with a trust domain
// this one has no federation relationship with (a BatchError names the
// first). With olds (an update, index by index), only the names an entry
// adds are checked: one whose federation ended stays editable (narrowed,
// expired) without re-creating the trust that was ended.
func (g *Registrar) checkFederations(ctx context.Context, es []store.Entry, olds ...store.Entry) error {
	if len(olds) > 0 {
		added := make([]store.Entry, len(es))
		for i, e := range es {
			added[i].FederatesWith = slices.DeleteFunc(slices.Clone(e.FederatesWith), func(td string) bool { return slices.Contains(olds[i].FederatesWith, td) })
		}
		es = added
	}
	if !slices.ContainsFunc(es, func(e store.Entry) bool { return len(e.FederatesWith) > 0 }) {
		return nil
	}
	var known []string
	if g.Federations != nil {
		var err error
		if known, err = g.Federations(ctx); err != nil {
			return fmt.Errorf("registration: read federation relationships: %w", err)
		}
	}
	for i, e := range es {
		for _, td := range e.FederatesWith {
			if !slices.Contains(known, td) {
				return &BatchError{i, fail(ErrInvalid, "federates_with: no federation relationship with %s (create it first: rampart federation create)", td)}
			}
		}
	}
	return nil
}

// SignAgent signs agent agentID's SVID from csr, and records the agent
// (first attested now, or when it was) and the SVID. An evicted agent is
// refused (ErrNotEntitled) unless readmit is set: a join token made after
// the eviction was spent for it.
func (g *Registrar) SignAgent(ctx context.Context, agentID spiffeid.ID, csr []byte, readmit bool) ([]*x509.Certificate, error) {
	now := g.Now()
	pub, err := svid.CheckCSR(csr, agentID)
	if err != nil {
		return nil, fail(ErrInvalid, "%v", err)
	}
	if readmit {
		if err := g.Store.ReadmitAgent(ctx, agentID.String()); err != nil {
			return nil, fmt.Errorf("registration: readmit the agent: %w", err)
		}
	}
	prev, err := g.Store.GetAgent(ctx, agentID.String())
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("registration: read the agent: %w", err)
	}
	if err == nil && prev.Evicted {
		return nil, fail(ErrNotEntitled, "agent %s was evicted", agentID)
	}
	chain, err := g.CA.SignX509SVID(agentID, pub, g.AgentTTL, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCA, err)
	}
	serial := svid.SerialString(chain[0].SerialNumber)
	a := store.Agent{SpiffeID: agentID.String(), Serial: serial, SVIDNotAfter: chain[0].NotAfter, AttestedAt: now, LastSeen: now}
	if !prev.AttestedAt.IsZero() {
		a.AttestedAt = prev.AttestedAt
	}
	if err := g.Store.UpsertAgent(ctx, a); err != nil {
		return nil, fmt.Errorf("registration: store the agent: %w", err)
	}
	issued := []store.IssuedSVID{{Serial: serial, SpiffeID: agentID.String(), AgentID: agentID.String(), NotAfter: chain[0].NotAfter, IssuedAt: now}}
	if err := g.Store.RecordSVIDs(ctx, issued); err != nil {
		return nil, fmt.Errorf("registration: record the SVID: %w", err)
	}
	if err := g.unlessEvictedMeanwhile(ctx, agentID, issued); err != nil {
		return nil, err
	}
	return chain, nil
}

// unlessEvictedMeanwhile revokes the SVIDs just issued through agentID if
// the agent was evicted while they were signed. Eviction marks the agent
// first and then revokes what it finds recorded; SVIDs are recorded first
// and then the mark is read here, so every SVID signed in a race with an
// eviction is revoked by one of the two.
func (g *Registrar) unlessEvictedMeanwhile(ctx context.Context, agentID spiffeid.ID, issued []store.IssuedSVID) error {
	a, err := g.Store.GetAgent(ctx, agentID.String())
	if errors.Is(err, store.ErrNotFound) {
		return nil // no record, nothing evicted (a store restored from before its attestation)
	}
	if err != nil {
		return fmt.Errorf("registration: read the agent: %w", err)
	}
	if !a.Evicted {
		return nil
	}
	if _, err := g.revoke(ctx, g.Store, issued, "agent evicted"); err != nil {
		return err
	}
	return fail(ErrNotEntitled, "agent %s was evicted", agentID)
}

// Signed is the outcome of one item of SignWorkloads: a chain, or an
// error (ErrNotEntitled, ErrInvalid for a bad CSR, ErrCA, or another).
type Signed struct {
	EntryID string
	Entry   store.Entry // when the agent parents it
	ID      spiffeid.ID
	Chain   []*x509.Certificate
	Err     error
}

// SignRequest asks for one workload SVID.
type SignRequest struct {
	EntryID string
	CSR     []byte
}

// SignWorkloads signs workload SVIDs for entries agentID parents; each
// item succeeds or fails on its own. The SVIDs signed are recorded before
// SignWorkloads returns; if that fails, it returns an error and no SVID.
func (g *Registrar) SignWorkloads(ctx context.Context, agentID spiffeid.ID, reqs []SignRequest) ([]Signed, error) {
	now := g.Now()
	// One read of the agent's entries per batch, not one per item.
	mine, err := g.Store.ListEntries(ctx, agentID.String())
	if err != nil {
		return nil, fmt.Errorf("registration: read entries: %w", err)
	}
	byID := make(map[string]store.Entry, len(mine))
	for _, e := range mine {
		byID[e.ID] = e
	}
	out := make([]Signed, len(reqs))
	var records []store.IssuedSVID
	for i, item := range reqs {
		res := &out[i]
		res.EntryID = item.EntryID
		e, ok := byID[item.EntryID]
		if !ok || e.ParentID != agentID.String() {
			res.Err = fail(ErrNotEntitled, "entry %s does not exist or is not parented by %s", item.EntryID, agentID)
			continue
		}
		res.Entry = e
		if expired(e, now) {
			res.Err = fail(ErrNotEntitled, "entry %s expired at %s", e.ID, e.ExpiresAt.Format(time.RFC3339))
			continue
		}
		if res.ID, err = spiffeid.FromString(e.SpiffeID); err != nil {
			res.Err = errors.New("entry has an invalid SPIFFE ID")
			continue
		}
		pub, err := svid.CheckCSR(item.CSR, res.ID)
		if err != nil {
			res.Err = fail(ErrInvalid, "%v", err)
			continue
		}
		ttl := e.X509TTL
		if ttl == 0 {
			ttl = g.X509TTL
		}
		ttl = capAtExpiry(e, now, ttl)
		if res.Chain, err = g.CA.SignX509SVID(res.ID, pub, ttl, e.DNSNames, nil); err != nil {
			res.Err = fmt.Errorf("%w: %v", ErrCA, err)
			continue
		}
		records = append(records, store.IssuedSVID{Serial: svid.SerialString(res.Chain[0].SerialNumber), SpiffeID: e.SpiffeID,
			AgentID: agentID.String(), EntryID: e.ID, NotAfter: res.Chain[0].NotAfter, IssuedAt: now})
	}
	if len(records) > 0 {
		if err := g.Store.RecordSVIDs(ctx, records); err != nil {
			return nil, fmt.Errorf("registration: record SVIDs: %w", err)
		}
		if err := g.unlessEvictedMeanwhile(ctx, agentID, records); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// EntryGetter reads one entry; store.Store implements it.
type EntryGetter interface {
	GetEntry(ctx context.Context, id string) (store.Entry, error)
}

// SignJWT signs a JWT-SVID for entry entryID, which agentID must parent.
func (g *Registrar) SignJWT(ctx context.Context, st EntryGetter, agentID spiffeid.ID, entryID string, audience []string) (string, string, time.Time, error) {
	e, err := st.GetEntry(ctx, entryID)
	if err != nil || e.ParentID != agentID.String() {
		return "", "", time.Time{}, fail(ErrNotEntitled, "entry %s does not exist or is not parented by %s", entryID, agentID)
	}
	if len(audience) == 0 {
		return "", "", time.Time{}, fail(ErrInvalid, "audience: at least one audience is required")
	}
	if expired(e, g.Now()) {
		return "", "", time.Time{}, fail(ErrNotEntitled, "entry %s expired at %s", e.ID, e.ExpiresAt.Format(time.RFC3339))
	}
	id, _ := spiffeid.FromString(e.SpiffeID)
	ttl := e.JWTTTL
	if ttl == 0 {
		ttl = g.JWTTTL
	}
	ttl = capAtExpiry(e, g.Now(), ttl)
	tok, exp, err := g.CA.SignJWTSVID(id, audience, ttl)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("%w: %v", ErrCA, err)
	}
	return e.SpiffeID, tok, exp, nil
}

// ErrPartial: an eviction happened but what must follow it failed; the
// error reads as what to tell the caller (retry), and wraps the cause.
var ErrPartial = errors.New("registration: partly done")

// PartialError is an ErrPartial: Message for the caller, Err the cause.
type PartialError struct {
	Message string
	Err     error
}

func (e *PartialError) Error() string   { return e.Message }
func (e *PartialError) Unwrap() []error { return []error{ErrPartial, e.Err} }

// Revoker is what revocation and eviction write; store.Store implements
// it.
type Revoker interface {
	EvictAgent(ctx context.Context, id string, at time.Time) error
	ListSVIDs(ctx context.Context, f store.SVIDFilter, now time.Time) ([]store.IssuedSVID, error)
	AddRevocations(ctx context.Context, revs []store.Revocation) error
}

// Evict evicts agent a, and revokes every unexpired SVID issued through
// it: a host whose agent is evicted must be presumed compromised. It
// returns the revocations. An agent already evicted is refused
// (ErrConflict): evicting again would move the recorded eviction time.
func (g *Registrar) Evict(ctx context.Context, st Revoker, a store.Agent) ([]store.Revocation, error) {
	agentID := a.SpiffeID
	if a.Evicted {
		return nil, fail(ErrConflict, "agent %s was already evicted at %s", strings.TrimPrefix(agentID, "spiffe://"+g.TrustDomain.Name()+"/rampart/agent/"),
			a.EvictedAt.UTC().Format(time.RFC3339))
	}
	now := g.Now()
	if err := st.EvictAgent(ctx, agentID, now); err != nil {
		return nil, fmt.Errorf("registration: evict the agent: %w", err)
	}
	svids, err := st.ListSVIDs(ctx, store.SVIDFilter{AgentID: agentID}, now)
	if err != nil {
		return nil, &PartialError{"agent evicted, but its SVIDs could not be listed for revocation; retry", err}
	}
	revs, err := g.revoke(ctx, st, svids, "agent evicted")
	if err != nil {
		return nil, &PartialError{"agent evicted, but revoking its SVIDs failed; retry", err}
	}
	return revs, nil
}

// Revoke revokes the unexpired SVIDs with serial, or for spiffeID
// (exactly one of them), for reason ("revoked by admin" if empty).
func (g *Registrar) Revoke(ctx context.Context, st Revoker, serial, spiffeID, reason string) ([]store.Revocation, error) {
	if (serial == "") == (spiffeID == "") {
		return nil, fail(ErrInvalid, "give exactly one of serial and spiffe_id")
	}
	svids, err := st.ListSVIDs(ctx, store.SVIDFilter{SpiffeID: spiffeID}, g.Now())
	if err != nil {
		return nil, fmt.Errorf("registration: list SVIDs: %w", err)
	}
	if serial != "" {
		var match []store.IssuedSVID
		for _, sv := range svids {
			if sv.Serial == serial {
				match = append(match, sv)
			}
		}
		svids = match
	}
	if len(svids) == 0 {
		return nil, fail(store.ErrNotFound, "no unexpired SVID matches; nothing to revoke")
	}
	if reason == "" {
		reason = "revoked by admin"
	}
	return g.revoke(ctx, st, svids, reason)
}

// revocationAdder stores revocations; Revoker and Store both are.
type revocationAdder interface {
	AddRevocations(ctx context.Context, revs []store.Revocation) error
}

func (g *Registrar) revoke(ctx context.Context, st revocationAdder, svids []store.IssuedSVID, reason string) ([]store.Revocation, error) {
	now := g.Now()
	revs := make([]store.Revocation, 0, len(svids))
	for _, sv := range svids {
		revs = append(revs, store.Revocation{Serial: sv.Serial, SpiffeID: sv.SpiffeID, Reason: reason, RevokedAt: now, NotAfter: sv.NotAfter})
	}
	if len(revs) > 0 {
		if err := st.AddRevocations(ctx, revs); err != nil {
			return nil, fmt.Errorf("registration: store revocations: %w", err)
		}
	}
	return revs, nil
}

// expired reports whether e has an expiry that has passed.
func expired(e store.Entry, now time.Time) bool {
	return !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt)
}

// capAtExpiry shortens ttl so that no SVID outlives its entry.
func capAtExpiry(e store.Entry, now time.Time, ttl time.Duration) time.Duration {
	if !e.ExpiresAt.IsZero() {
		ttl = min(ttl, e.ExpiresAt.Sub(now))
	}
	return ttl
}

// Expired reports whether entry e has expired at now: it is no longer
// synced to its agent nor signed for.
func Expired(e store.Entry, now time.Time) bool { return expired(e, now) }

// MaxBatch bounds the entries of one batch.
const MaxBatch = 10000

// BatchError says which item of a batch was refused, and why; nothing of
// the batch was applied. It unwraps to the item's error (ErrInvalid,
// ErrConflict, store.ErrNotFound).
type BatchError struct {
	Index int // from 0
	Err   error
}

func (e *BatchError) Error() string { return fmt.Sprintf("entries[%d]: %v", e.Index, e.Err) }
func (e *BatchError) Unwrap() error { return e.Err }

// entryKey identifies what an entry grants: the same SPIFFE ID to the
// same selectors under the same parent is a duplicate.
func entryKey(e store.Entry) string {
	sels := make([]string, len(e.Selectors))
	for i, s := range e.Selectors {
		sels[i] = s.String()
	}
	slices.Sort(sels)
	return e.ParentID + "\x00" + e.SpiffeID + "\x00" + strings.Join(sels, "\x00")
}

// EntryStore is what batches need; store.Store implements it.
type EntryStore interface {
	FindEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
	CreateEntries(ctx context.Context, es []store.Entry) error
	UpdateEntries(ctx context.Context, es []store.Entry) error
	DeleteEntries(ctx context.Context, ids []string) error
	GetEntry(ctx context.Context, id string) (store.Entry, error)
}

// NewEntries checks every spec and stores them all, or none: the first
// refused one is named by its index (BatchError).
func (g *Registrar) NewEntries(ctx context.Context, st EntryStore, specs []EntrySpec) ([]store.Entry, error) {
	if len(specs) == 0 || len(specs) > MaxBatch {
		return nil, fail(ErrInvalid, "entries: between 1 and %d entries per batch, got %d", MaxBatch, len(specs))
	}
	existing, err := st.FindEntries(ctx, store.EntryFilter{})
	if err != nil {
		return nil, fmt.Errorf("registration: read entries: %w", err)
	}
	taken := make(map[string]string, len(existing)+len(specs))
	for _, e := range existing {
		taken[entryKey(e)] = e.ID
	}
	out := make([]store.Entry, len(specs))
	for i, spec := range specs {
		e, err := g.checkEntry(spec)
		if err != nil {
			return nil, &BatchError{i, err}
		}
		if other, ok := taken[entryKey(e)]; ok {
			return nil, &BatchError{i, fail(ErrConflict, "entry %s already gives %s to these selectors under %s", other, e.SpiffeID, e.ParentID)}
		}
		taken[entryKey(e)] = fmt.Sprintf("entries[%d]", i)
		out[i] = e
	}
	if err := g.checkFederations(ctx, out); err != nil {
		return nil, err
	}
	if err := st.CreateEntries(ctx, out); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, fail(ErrConflict, "an entry ID was taken; retry")
		}
		return nil, fmt.Errorf("registration: store the entries: %w", err)
	}
	return out, nil
}

// EntryUpdate replaces every field of entry ID but its ID and creation time.
type EntryUpdate struct {
	ID   string
	Spec EntrySpec
}

// UpdateEntries checks and applies every update, or none.
func (g *Registrar) UpdateEntries(ctx context.Context, st EntryStore, ups []EntryUpdate) ([]store.Entry, error) {
	if len(ups) == 0 || len(ups) > MaxBatch {
		return nil, fail(ErrInvalid, "entries: between 1 and %d entries per batch, got %d", MaxBatch, len(ups))
	}
	existing, err := st.FindEntries(ctx, store.EntryFilter{})
	if err != nil {
		return nil, fmt.Errorf("registration: read entries: %w", err)
	}
	byID := make(map[string]store.Entry, len(existing))
	for _, e := range existing {
		byID[e.ID] = e
	}
	seen := map[string]bool{}
	out := make([]store.Entry, len(ups))
	olds := make([]store.Entry, len(ups))
	for i, u := range ups {
		old, ok := byID[u.ID]
		if !ok {
			return nil, &BatchError{i, fmt.Errorf("id: %w: entry %q", store.ErrNotFound, u.ID)}
		}
		if seen[u.ID] {
			return nil, &BatchError{i, fail(ErrInvalid, "id: entry %s is updated twice in this batch", u.ID)}
		}
		seen[u.ID] = true
		e, err := g.checkEntry(u.Spec)
		if err != nil {
			return nil, &BatchError{i, err}
		}
		e.ID, e.CreatedAt = old.ID, old.CreatedAt
		out[i], olds[i] = e, old
		byID[u.ID] = e
	}
	taken := make(map[string]string, len(byID))
	for _, e := range byID { // the entries as they will be
		if other, ok := taken[entryKey(e)]; ok {
			i := slices.IndexFunc(out, func(o store.Entry) bool { return o.ID == e.ID || o.ID == other })
			return nil, &BatchError{i, fail(ErrConflict, "entries %s and %s would both give %s to the same selectors under %s", min(e.ID, other), max(e.ID, other), e.SpiffeID, e.ParentID)}
		}
		taken[entryKey(e)] = e.ID
	}
	if err := g.checkFederations(ctx, out, olds...); err != nil {
		return nil, err
	}
	if err := st.UpdateEntries(ctx, out); err != nil {
		return nil, fmt.Errorf("registration: update the entries: %w", err)
	}
	return out, nil
}

// DeleteEntries deletes every entry named, or none; it returns them as
// they were.
func (g *Registrar) DeleteEntries(ctx context.Context, st EntryStore, ids []string) ([]store.Entry, error) {
	if len(ids) == 0 || len(ids) > MaxBatch {
		return nil, fail(ErrInvalid, "ids: between 1 and %d entries per batch, got %d", MaxBatch, len(ids))
	}
	out := make([]store.Entry, len(ids))
	seen := map[string]bool{}
	for i, id := range ids {
		if seen[id] {
			return nil, &BatchError{i, fail(ErrInvalid, "id: entry %s is named twice in this batch", id)}
		}
		seen[id] = true
		e, err := st.GetEntry(ctx, id)
		if err != nil {
			return nil, &BatchError{i, fmt.Errorf("id: %w", err)}
		}
		out[i] = e
	}
	if err := st.DeleteEntries(ctx, ids); err != nil {
		return nil, fmt.Errorf("registration: delete the entries: %w", err)
	}
	return out, nil
}

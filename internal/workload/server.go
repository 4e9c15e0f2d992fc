package workload

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rampartsec/rampart/internal/selector"
)

// Identity is one X.509-SVID the agent holds, with the entry that grants it.
type Identity struct {
	EntryID   string
	SpiffeID  spiffeid.ID
	Selectors []selector.Selector
	Chain     []*x509.Certificate // leaf first
	Key       crypto.Signer
	// Hint, from the entry, tells a workload holding several SVIDs which
	// is which (the Workload API's hint field).
	Hint string
	// FederatesWith names the trust domains whose bundles a workload of
	// this identity is given besides its own (the entry's federates_with).
	FederatesWith []string
}

// Snapshot is what the agent holds at one moment. It is never modified once
// published; a change publishes a new one.
type Snapshot struct {
	TrustDomain spiffeid.TrustDomain
	Bundle      []*x509.Certificate // roots of TrustDomain
	JWTBundle   []byte              // JWKS of TrustDomain
	Identities  []Identity          // with their SVIDs, ordered by entry ID
	// Unminted are the entries the agent may serve but holds no valid SVID
	// for (Chain and Key nil): a Minter mints them on first request. A
	// snapshot built with IndexEntries leaves it empty: its shared entries
	// hold them (the agent's case).
	Unminted []Identity
	// Federated are the bundles of the trust domains this one federates
	// with, ordered by trust domain name (package federation). A workload
	// is given those its identities federate with (federatedFor).
	Federated []FederatedBundle

	owners *ownerIndex // Index; nil: every entry is read
}

// FederatedBundle is another trust domain's bundle.
type FederatedBundle struct {
	TrustDomain spiffeid.TrustDomain
	X509        []*x509.Certificate
	JWT         []byte // JWKS
}

// federatedFor returns the federated bundles a workload holding ids is
// given: those of the trust domains one of its entries federates with,
// ordered by trust domain name. A workload whose entries federate with
// nobody gets none, even if the agent holds some for other workloads.
func (snap *Snapshot) federatedFor(ids []Identity) []FederatedBundle {
	var out []FederatedBundle
	for _, f := range snap.Federated {
		name := f.TrustDomain.Name()
		if slices.ContainsFunc(ids, func(id Identity) bool { return slices.Contains(id.FederatesWith, name) }) {
			out = append(out, f)
		}
	}
	return out
}

// federatedX509 is the federated bundles of ids as the Workload API
// carries them: concatenated DER by trust domain ID; nil when there are
// none.
func (snap *Snapshot) federatedX509(ids []Identity) map[string][]byte {
	fed := snap.federatedFor(ids)
	if len(fed) == 0 {
		return nil
	}
	out := make(map[string][]byte, len(fed))
	for _, f := range fed {
		out[f.TrustDomain.IDString()] = concatDER(f.X509)
	}
	return out
}

// Source is what the Workload API serves from; the agent implements it.
type Source interface {
	// Snapshot returns the current snapshot and a channel closed when a
	// newer one is published.
	Snapshot() (*Snapshot, <-chan struct{})
	// FetchJWTSVID returns a JWT-SVID for the entry and audience.
	FetchJWTSVID(ctx context.Context, entryID string, audience []string) (string, error)
}

// Minter is a Source that mints SVIDs when a workload first asks for them
// rather than for every entry it could serve (the agent).
type Minter interface {
	// Mint makes sure the source holds valid X.509-SVIDs for the entries,
	// minting those it lacks, and returns once they are in the snapshot
	// or could not be minted. Every call also says the entries are in use,
	// which keeps their SVIDs rotating.
	Mint(ctx context.Context, entryIDs []string) error
}

// Metrics counts Workload API calls; nil fields are not counted.
type Metrics interface {
	Call(method string, code codes.Code)
}

// Server is the Workload API.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	src      Source
	attestor Attestor
	log      *slog.Logger
	metrics  Metrics
	audit    *auditor // nil: refusals are only logged
	// inspector, if set, sees each caller's executable before it gets
	// identities (inventory and scan gate; inspect.go).
	inspector Inspector
}

// NewServer returns a Workload API server over src.
func NewServer(src Source, attestor Attestor, log *slog.Logger, m Metrics) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{src: src, attestor: attestor, log: log, metrics: m}
}

// Serve serves the Workload API on ln until ctx is done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	gs := grpc.NewServer(grpc.Creds(peerCreds{}),
		grpc.ChainUnaryInterceptor(s.unaryGuard), grpc.ChainStreamInterceptor(s.streamGuard))
	workload.RegisterSpiffeWorkloadAPIServer(gs, s)
	secretv3.RegisterSecretDiscoveryServiceServer(gs, &sds{s: s})
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	if err := gs.Serve(pinListener{Listener: ln, procDir: s.attestor.procDir(), budget: newConnBudget(s.log)}); err != nil && ctx.Err() == nil {
		return fmt.Errorf("workload: %w", err)
	}
	return nil
}

// The spec: "All Workload API requests MUST include the metadata key
// workload.spiffe.io with a value of true"; others are refused with
// InvalidArgument. Envoy's SDS (same socket, another service) has no such
// header: Envoy does not send it, and SPIRE does not ask for it there.
func checkHeader(ctx context.Context, method string) error {
	if strings.HasPrefix(method, sdsService) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

func (s *Server) unaryGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	err := checkHeader(ctx, info.FullMethod)
	var resp any
	if err == nil {
		resp, err = h(ctx, req)
	}
	s.count(info.FullMethod, err)
	return resp, err
}

func (s *Server) streamGuard(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := checkHeader(ss.Context(), info.FullMethod)
	if err == nil {
		err = h(srv, ss)
	}
	s.count(info.FullMethod, err)
	return err
}

// entitlement is what a call needs of the caller's identities.
type entitlement int

const (
	needSVIDs   entitlement = iota // X.509-SVIDs: minted before the answer
	needEntries                    // JWT-SVIDs: the entries only
	// needBundles: the entries' federates_with only; a caller matching no
	// entry is not refused (it is given its own trust domain's bundle).
	needBundles
)

func (s *Server) count(method string, err error) {
	if s.metrics != nil {
		s.metrics.Call(filepath.Base(method), status.Code(err))
	}
}

// entitled attests the caller and returns the identities it may have,
// with the snapshot they come from (newer than snap if SVIDs were minted
// for the caller). A caller that cannot be attested (exited, changed since
// it connected) is refused with PermissionDenied, logged and audited with
// the reason; one entitled to nothing is logged and audited too, with the
// selectors of its executable that were not attested and why.
//
// Entries the source holds no SVID for yet (Snapshot.Unminted) match like
// the others; with needSVIDs, when the source is a Minter, their SVIDs are
// minted now, before the answer (the first request of a new workload
// waits one round trip to the server). Otherwise (JWT-SVIDs need only the
// entry, bundles only its federates_with) they are returned without Chain
// and Key.
func (s *Server) entitled(ctx context.Context, snap *Snapshot, method string, need entitlement) (*Snapshot, []Identity, error) {
	mint := need == needSVIDs
	p, ok := callerFrom(ctx)
	if !ok {
		return snap, nil, status.Error(codes.Internal, "caller credentials unavailable")
	}
	// Only the entries filed under the caller's uid and groups can match
	// it (ownerIndex); the attestor says which those are once it has read
	// the caller's groups.
	var cands []Identity
	att, err := s.attestor.Attest(ctx, p, func(owner selector.Set) [][]selector.Selector {
		cands = snap.candidates(owner)
		sels := make([][]selector.Selector, len(cands))
		for i, id := range cands {
			sels[i] = id.Selectors
		}
		return sels
	})
	if errors.Is(err, errClosed) {
		return snap, nil, status.Error(codes.Canceled, "the connection is closed")
	}
	if err != nil {
		s.log.Warn("workload refused: the caller could not be attested", "pid", p.PID, "uid", p.UID, "gid", p.GID, "exe", p.exe.path,
			"user_ns", p.ns.user.String(), "mnt_ns", p.ns.mnt.String(), "pinned_by", p.pidfdKind, "err", err)
		s.audit.refused(ctx, p, method, err.Error())
		return snap, nil, status.Error(codes.PermissionDenied, "the calling process could not be attested")
	}
	for _, why := range att.NotAttested {
		s.log.Warn("workload: a selector of the caller's executable was not attested", "pid", p.PID, "uid", p.UID, "gid", p.GID, "exe", p.exe.path,
			"user_ns", p.ns.user.String(), "mnt_ns", p.ns.mnt.String(), "reason", why)
	}
	out := s.matching(cands, att.Selectors, p)
	if len(out) == 0 && need == needBundles {
		return snap, nil, nil // a verifier: served its own trust domain's bundle, refused nothing
	}
	if len(out) == 0 {
		s.log.Info("workload refused: no entry matches", "pid", p.PID, "uid", p.UID, "gid", p.GID, "exe", p.exe.path)
		s.audit.refused(ctx, p, method, noMatch, att.NotAttested...)
		return snap, nil, nil
	}
	// The gate sees every identity the caller matched, minted or not: a
	// withheld one is never minted.
	out, err = s.inspect(ctx, p, method, out)
	if err != nil {
		return snap, nil, err
	}
	minter, _ := s.src.(Minter)
	if minter == nil || !mint {
		return snap, out, nil
	}
	want := make([]string, len(out))
	pending := false
	for i, id := range out {
		want[i] = id.EntryID
		pending = pending || id.Chain == nil
	}
	mintErr := minter.Mint(ctx, want)
	if !pending {
		return snap, out, nil
	}
	// The SVIDs just minted are in a newer snapshot; take the allowed
	// identities from it.
	snap, _ = s.src.Snapshot()
	held := make([]Identity, 0, len(out))
	for _, id := range snap.Identities {
		if slices.ContainsFunc(out, func(o Identity) bool { return o.EntryID == id.EntryID }) {
			held = append(held, id)
		}
	}
	if len(held) == 0 {
		s.log.Warn("workload: the caller's SVIDs could not be minted", "pid", p.PID, "uid", p.UID, "err", mintErr)
		return snap, nil, status.Error(codes.Unavailable, "the SVID could not be minted now; retry")
	}
	return snap, held, nil
}

// matching returns the identities whose selectors the caller has all of.
func (s *Server) matching(ids []Identity, set selector.Set, p *process) []Identity {
	var out []Identity
	for _, id := range ids {
		if !set.Matches(id.Selectors) {
			continue
		}
		// Entries stored before every entry needed a uid or gid selector
		// are not served; the operator learns which and why.
		if err := selector.CheckEntry(id.Selectors); err != nil {
			s.log.Warn("workload: not serving an entry that breaks the selector rule; recreate it with a unix:uid or unix:gid selector",
				"entry_id", id.EntryID, "spiffe_id", id.SpiffeID.String(), "pid", p.PID, "err", err)
			continue
		}
		out = append(out, id)
	}
	return out
}

var errNoIdentity = status.Error(codes.PermissionDenied, "no identity issued")

func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	var last []byte
	for {
		snap, changed := s.src.Snapshot()
		snap, ids, err := s.entitled(ctx, snap, "FetchX509SVID", needSVIDs)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return errNoIdentity
		}
		resp, err := x509Response(snap, ids)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if fp := fingerprint(resp); !bytes.Equal(fp, last) {
			if err := stream.Send(resp); err != nil {
				return err
			}
			last = fp
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

func x509Response(snap *Snapshot, ids []Identity) (*workload.X509SVIDResponse, error) {
	bundle := concatDER(snap.Bundle)
	// SPIFFE Workload API: federated_bundles, the CA certificates of
	// trust domains the workload may trust besides its own.
	resp := &workload.X509SVIDResponse{FederatedBundles: snap.federatedX509(ids)}
	for _, id := range ids {
		key, err := x509.MarshalPKCS8PrivateKey(id.Key)
		if err != nil {
			return nil, fmt.Errorf("workload: %w", err)
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId: id.SpiffeID.String(), X509Svid: concatDER(id.Chain), X509SvidKey: key, Bundle: bundle, Hint: id.Hint,
		})
	}
	return resp, nil
}

// fingerprint identifies what a response says, so an unchanged one is not
// resent when an unrelated identity rotated.
func fingerprint(resp *workload.X509SVIDResponse) []byte {
	var b bytes.Buffer
	for _, s := range resp.Svids {
		b.WriteString(s.SpiffeId)
		b.WriteString("\x00" + s.Hint + "\x00")
		b.Write(s.X509Svid)
		b.Write(s.Bundle)
	}
	for _, td := range slices.Sorted(maps.Keys(resp.FederatedBundles)) {
		b.WriteString("\x00" + td + "\x00")
		b.Write(resp.FederatedBundles[td])
	}
	return b.Bytes()
}

// bundlesFingerprint identifies a map of bundles, so an unchanged one is
// not resent.
func bundlesFingerprint(bundles map[string][]byte) []byte {
	var b bytes.Buffer
	for _, td := range slices.Sorted(maps.Keys(bundles)) {
		b.WriteString(td + "\x00")
		b.Write(bundles[td])
		b.WriteString("\x00")
	}
	return b.Bytes()
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	ctx := stream.Context()
	var last []byte
	for {
		snap, changed := s.src.Snapshot()
		_, ids, err := s.entitled(ctx, snap, "FetchX509Bundles", needBundles)
		if err != nil {
			return err
		}
		bundles := map[string][]byte{snap.TrustDomain.IDString(): concatDER(snap.Bundle)}
		maps.Copy(bundles, snap.federatedX509(ids))
		if b := bundlesFingerprint(bundles); !bytes.Equal(b, last) {
			if err := stream.Send(&workload.X509BundlesResponse{Bundles: bundles}); err != nil {
				return err
			}
			last = b
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *Server) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	snap, _ := s.src.Snapshot()
	_, ids, err := s.entitled(ctx, snap, "FetchJWTSVID", needEntries)
	if err != nil {
		return nil, err
	}
	if req.SpiffeId != "" {
		want, err := spiffeid.FromString(req.SpiffeId)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
		ids = slices.DeleteFunc(ids, func(id Identity) bool { return id.SpiffeID != want })
	}
	if len(ids) == 0 {
		return nil, errNoIdentity
	}
	resp := &workload.JWTSVIDResponse{}
	seen := map[spiffeid.ID]bool{}
	for _, id := range ids {
		if seen[id.SpiffeID] {
			continue
		}
		seen[id.SpiffeID] = true
		tok, err := s.src.FetchJWTSVID(ctx, id.EntryID, req.Audience)
		if err != nil {
			s.log.Warn("fetching a JWT-SVID failed", "spiffe_id", id.SpiffeID.String(), "err", err)
			return nil, status.Error(codes.Unavailable, "could not fetch JWT-SVID")
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: id.SpiffeID.String(), Svid: tok, Hint: id.Hint})
	}
	return resp, nil
}

func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	ctx := stream.Context()
	var last []byte
	for {
		snap, changed := s.src.Snapshot()
		_, ids, err := s.entitled(ctx, snap, "FetchJWTBundles", needBundles)
		if err != nil {
			return err
		}
		bundles := map[string][]byte{snap.TrustDomain.IDString(): snap.JWTBundle}
		for _, f := range snap.federatedFor(ids) {
			if f.JWT != nil {
				bundles[f.TrustDomain.IDString()] = f.JWT
			}
		}
		if b := bundlesFingerprint(bundles); !bytes.Equal(b, last) {
			if err := stream.Send(&workload.JWTBundlesResponse{Bundles: bundles}); err != nil {
				return err
			}
			last = b
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *Server) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if req.Audience == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	snap, _ := s.src.Snapshot()
	bundle, err := jwtbundle.Parse(snap.TrustDomain, snap.JWTBundle)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "JWT bundle unavailable")
	}
	_, ids, err := s.entitled(ctx, snap, "ValidateJWTSVID", needBundles)
	if err != nil {
		return nil, err
	}
	// A JWT-SVID of a federated trust domain is checked with that trust
	// domain's keys, never with ours (jwtsvid picks by the token's
	// subject), and only if the caller's entries federate with it.
	set := jwtbundle.NewSet(bundle)
	for _, f := range snap.federatedFor(ids) {
		if fb, err := jwtbundle.Parse(f.TrustDomain, f.JWT); err == nil && f.JWT != nil {
			set.Add(fb)
		}
	}
	sv, err := jwtsvid.ParseAndValidate(req.Svid, set, []string{req.Audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(sv.Claims)
	if err != nil {
		return nil, status.Error(codes.Internal, "cannot encode claims")
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: sv.ID.String(), Claims: claims}, nil
}

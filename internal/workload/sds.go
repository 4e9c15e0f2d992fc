package workload

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource names, as SPIRE's agent answers them (its defaults), so that an
// Envoy configuration written for SPIRE works unchanged.
const (
	// SDSDefaultSVID names the caller's first X.509-SVID (by entry ID).
	SDSDefaultSVID = "default"
	// SDSRootCA names the trust domain's bundle as a validation context.
	SDSRootCA = "ROOTCA"
	// SDSAllBundles names every bundle the caller may trust, as one
	// validation context for Envoy's SPIFFE certificate validator.
	SDSAllBundles = "ALL"
)

// SDSSecretType is the type URL of every resource SDS serves.
const SDSSecretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// sdsService prefixes the methods of Envoy's SDS on the shared gRPC server.
const sdsService = "/envoy.service.secret.v3.SecretDiscoveryService/"

// sds is Envoy's Secret Discovery Service (v3) over the same snapshot,
// attestation and inspector as the Workload API.
type sds struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	s *Server
}

// sdsRequest is what one request resolves against.
type sdsRequest struct {
	names []string // without empty names; none: every secret
	// spiffeValidator: the client understands Envoy's SPIFFE certificate
	// validator (Envoy 1.18 and later say so in their node's build
	// version); others get the bundle as trusted CAs.
	spiffeValidator bool
}

func newSDSRequest(req *discoveryv3.DiscoveryRequest) (sdsRequest, error) {
	if req.TypeUrl != "" && req.TypeUrl != SDSSecretType {
		return sdsRequest{}, status.Errorf(codes.InvalidArgument, "type_url %q is not served here; SDS serves %s", req.TypeUrl, SDSSecretType)
	}
	r := sdsRequest{spiffeValidator: supportsSPIFFEValidator(req.Node)}
	for _, n := range req.ResourceNames {
		if n != "" && !slices.Contains(r.names, n) {
			r.names = append(r.names, n)
		}
	}
	slices.Sort(r.names)
	return r, nil
}

func supportsSPIFFEValidator(n *corev3.Node) bool {
	v := n.GetUserAgentBuildVersion().GetVersion()
	if v == nil {
		return false
	}
	return v.MajorNumber > 1 || (v.MajorNumber == 1 && v.MinorNumber >= 18)
}

// Reasons of SDS refusals, as audited (kinds for auditor's rate limit).
const (
	sdsNotEntitled = "SDS: the workload asked for secrets it is not entitled to: "
	sdsWithheld    = "SDS: federated bundles withheld (no entry of the caller federates with them; served our trust domain's roots under their names): "
)

// isOwnBundleName reports whether name asks for our own trust domain's
// bundle, which is public (FetchX509Bundles gives it to anyone on the
// socket).
func isOwnBundleName(snap *Snapshot, name string) bool {
	return name == SDSRootCA || name == snap.TrustDomain.IDString()
}

// isFederatedName reports whether name asks for federated bundles, which
// a caller is given only for the trust domains its entries federate with:
// ALL, or another trust domain's ID (an SVID's name always has a path).
func isFederatedName(snap *Snapshot, name string) bool {
	return name == SDSAllBundles || otherTrustDomain(snap, name)
}

// otherTrustDomain reports whether name is the ID of a trust domain other
// than ours, held by the agent or not.
func otherTrustDomain(snap *Snapshot, name string) bool {
	td, err := spiffeid.TrustDomainFromString(name)
	return err == nil && strings.HasPrefix(name, "spiffe://") && td.IDString() == name && td != snap.TrustDomain
}

// federated returns the federated bundle whose trust domain ID is name.
func (snap *Snapshot) federated(name string) *FederatedBundle {
	for i := range snap.Federated {
		if snap.Federated[i].TrustDomain.IDString() == name {
			return &snap.Federated[i]
		}
	}
	return nil
}

// tdRoots is one trust domain's roots, for a validation context.
type tdRoots struct {
	td    spiffeid.TrustDomain
	roots []*x509.Certificate
}

func own(snap *Snapshot) []tdRoots { return []tdRoots{{snap.TrustDomain, snap.Bundle}} }

// ownAndFederated is ours and the federated bundles fed.
func ownAndFederated(snap *Snapshot, fed []FederatedBundle) []tdRoots {
	out := own(snap)
	for _, f := range fed {
		out = append(out, tdRoots{f.TrustDomain, f.X509})
	}
	return out
}

// resolve returns the secrets r names, for the caller of ctx. Naming an
// identity the caller is not entitled to (another workload's SPIFFE ID, or
// one that does not exist) refuses the whole request with
// PermissionDenied, which does not say which of the two it was.
func (d *sds) resolve(ctx context.Context, snap *Snapshot, r sdsRequest, method string) ([]*tlsv3.Secret, error) {
	if snap == nil {
		return nil, status.Error(codes.Unavailable, "the agent holds no trust bundle yet")
	}
	wildcard := len(r.names) == 0
	wantSVIDs := wildcard || slices.ContainsFunc(r.names, func(n string) bool { return !isOwnBundleName(snap, n) && !isFederatedName(snap, n) })
	var ids []Identity
	var err error
	switch {
	case wantSVIDs:
		if snap, ids, err = d.s.entitled(ctx, snap, method, needSVIDs); err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return nil, errNoIdentity
		}
	case slices.ContainsFunc(r.names, func(n string) bool { return isFederatedName(snap, n) }):
		// Bundles only: the entries say which federated ones.
		if _, ids, err = d.s.entitled(ctx, snap, method, needBundles); err != nil {
			return nil, err
		}
	}
	fed := snap.federatedFor(ids)
	var out []*tlsv3.Secret
	if wildcard {
		out = append(out, d.validationContext(snap.TrustDomain.IDString(), own(snap), r.spiffeValidator))
		for _, f := range fed {
			out = append(out, d.validationContext(f.TrustDomain.IDString(), []tdRoots{{f.TrustDomain, f.X509}}, r.spiffeValidator))
		}
		seen := map[string]bool{}
		for _, id := range ids {
			if name := id.SpiffeID.String(); !seen[name] {
				seen[name] = true
				out = append(out, tlsCertificate(name, id))
			}
		}
		return out, nil
	}
	var refused, withheld []string
	for _, name := range r.names {
		switch {
		case name == SDSRootCA, name == snap.TrustDomain.IDString():
			out = append(out, d.validationContext(name, own(snap), r.spiffeValidator))
		case name == SDSAllBundles:
			// SPIRE's "ALL": one SPIFFE validator holding our trust domain
			// and those the caller federates with, each checked against its
			// own roots only.
			out = append(out, d.validationContext(name, ownAndFederated(snap, fed), true))
		case otherTrustDomain(snap, name):
			i := slices.IndexFunc(fed, func(f FederatedBundle) bool { return f.TrustDomain.IDString() == name })
			if i >= 0 {
				out = append(out, d.validationContext(name, []tdRoots{{fed[i].TrustDomain, fed[i].X509}}, r.spiffeValidator))
				continue
			}
			// Withheld: none of the caller's entries federates with it (any
			// more), or the federation ended. The name is answered, with
			// our trust domain's roots only, not refused: an Envoy keeps
			// the last validation context it accepted when its stream
			// fails, so a refusal would leave it trusting the other trust
			// domain's roots it was given while it federated. Never an
			// empty context: Envoy would validate nothing.
			out = append(out, d.validationContext(name, own(snap), r.spiffeValidator))
			withheld = append(withheld, name)
		case name == SDSDefaultSVID:
			out = append(out, tlsCertificate(name, ids[0]))
		default:
			i := slices.IndexFunc(ids, func(id Identity) bool { return id.SpiffeID.String() == name })
			if i < 0 {
				refused = append(refused, name)
				continue
			}
			out = append(out, tlsCertificate(name, ids[i]))
		}
	}
	if slices.ContainsFunc(withheld, func(n string) bool { return snap.federated(n) != nil }) {
		// The agent holds that bundle for other workloads: this one asked
		// for roots it is not entitled to.
		if p, ok := callerFrom(ctx); ok {
			reason := sdsWithheld + strings.Join(withheld, ", ")
			d.s.log.Warn("workload: "+reason, "pid", p.PID, "uid", p.UID, "gid", p.GID, "exe", p.exe.path)
			d.s.audit.refused(ctx, p, method, reason)
		}
	}
	if len(refused) > 0 {
		reason := sdsNotEntitled + strings.Join(refused, ", ")
		if p, ok := callerFrom(ctx); ok {
			d.s.log.Warn("workload refused: "+reason, "pid", p.PID, "uid", p.UID, "gid", p.GID, "exe", p.exe.path)
			d.s.audit.refused(ctx, p, method, reason)
		}
		return nil, status.Errorf(codes.PermissionDenied, "the workload is not entitled to the requested secrets %q", refused)
	}
	return out, nil
}

// validationContext is the bundles of tds under name: for Envoy 1.18 and
// later as a SPIFFE certificate validator (which checks that a peer's
// SPIFFE ID is of the trust domain whose roots signed it), for older
// clients as plain trusted CAs (which cannot say which roots vouch for
// which trust domain: only ever one trust domain's).
func (d *sds) validationContext(name string, tds []tdRoots, spiffe bool) *tlsv3.Secret {
	vc := &tlsv3.CertificateValidationContext{}
	if spiffe {
		var v []*tlsv3.SPIFFECertValidatorConfig_TrustDomain
		for _, t := range tds {
			v = append(v, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{Name: t.td.Name(), TrustBundle: inline(pemCerts(t.roots))})
		}
		cfg, _ := anypb.New(&tlsv3.SPIFFECertValidatorConfig{TrustDomains: v})
		vc.CustomValidatorConfig = &corev3.TypedExtensionConfig{Name: "envoy.tls.cert_validator.spiffe", TypedConfig: cfg}
	} else {
		vc.TrustedCa = inline(pemCerts(tds[0].roots))
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}
}

func tlsCertificate(name string, id Identity) *tlsv3.Secret {
	key, err := x509.MarshalPKCS8PrivateKey(id.Key)
	if err != nil {
		// The agent generates every key (ECDSA P-256); nothing else is held.
		panic(fmt.Sprintf("workload: key of %s cannot be encoded: %v", id.SpiffeID, err))
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(pemCerts(id.Chain)),
		PrivateKey:       inline(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})),
	}}}
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func pemCerts(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// response wraps secrets; the digest says whether two responses carry
// the same content (the nonce and version aside).
func response(typeURL string, secrets []*tlsv3.Secret) (*discoveryv3.DiscoveryResponse, []byte, error) {
	if typeURL == "" {
		typeURL = SDSSecretType
	}
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: typeURL}
	h := sha256.New()
	for _, s := range secrets {
		a, err := anypb.New(s)
		if err != nil {
			return nil, nil, status.Error(codes.Internal, "encoding a secret failed")
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
		if err != nil {
			return nil, nil, status.Error(codes.Internal, "encoding a secret failed")
		}
		h.Write([]byte(s.Name + "\x00"))
		h.Write(b)
		resp.Resources = append(resp.Resources, a)
	}
	return resp, h.Sum(nil), nil
}

// FetchSecrets answers one request (no version, no nonce).
func (d *sds) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	r, err := newSDSRequest(req)
	if err != nil {
		return nil, err
	}
	snap, _ := d.s.src.Snapshot()
	secrets, err := d.resolve(ctx, snap, r, "FetchSecrets")
	if err != nil {
		return nil, err
	}
	resp, _, err := response(req.TypeUrl, secrets)
	return resp, err
}

// StreamSecrets is the state-of-the-world xDS protocol as Envoy speaks it:
//
//   - The client's first request names the resources; the server answers
//     with a version and a nonce.
//   - The client answers each response with a request carrying that
//     nonce: an ACK repeats the version, a NACK keeps the previous one and
//     sets error_detail. Either way the server waits for a change before it
//     sends again (resending what was refused would loop).
//   - A request whose nonce is not the last one sent is stale (it crossed a
//     newer response on the wire) and is ignored, as the xDS protocol says.
//   - A request naming other resources is answered at once; a change of
//     what the caller holds (rotation, bundle, entries) is pushed as a new
//     version.
func (d *sds) StreamSecrets(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	ctx := stream.Context()
	reqs := make(chan *discoveryv3.DiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		cur       sdsRequest
		typeURL   string
		subscribe bool // a request has been seen
		version   uint64
		nonce     string
		sent      []byte // digest of the last response
	)
	snap, changed := d.s.src.Snapshot()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		case req := <-reqs:
			if nonce != "" && req.ResponseNonce != nonce {
				d.s.log.Debug("SDS: ignoring a stale request", "nonce", req.ResponseNonce, "expect", nonce)
				continue
			}
			if req.ErrorDetail != nil {
				d.s.log.Warn("SDS: the client rejected secrets (NACK)", "version", req.VersionInfo, "rejected_version", strconv.FormatUint(version, 10),
					"resource_names", req.ResourceNames, "error", req.ErrorDetail.GetMessage())
			}
			r, err := newSDSRequest(req)
			if err != nil {
				return err
			}
			if subscribe && slices.Equal(r.names, cur.names) && r.spiffeValidator == cur.spiffeValidator {
				continue // an ACK or NACK of what was sent: wait for a change
			}
			cur, typeURL, subscribe = r, req.TypeUrl, true
			sent = nil // answer a new subscription even if its content is the same
		case <-changed:
			snap, changed = d.s.src.Snapshot()
			if !subscribe {
				continue
			}
		}
		secrets, err := d.resolve(ctx, snap, cur, "StreamSecrets")
		if err != nil {
			return err
		}
		resp, digest, err := response(typeURL, secrets)
		if err != nil {
			return err
		}
		if sent != nil && bytes.Equal(digest, sent) {
			continue // an unrelated change (another workload rotated)
		}
		version++
		resp.VersionInfo = strconv.FormatUint(version, 10)
		resp.Nonce = newNonce()
		if err := stream.Send(resp); err != nil {
			return err
		}
		nonce, sent = resp.Nonce, digest
	}
}

func newNonce() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

package workload

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/rampartsec/rampart/internal/selector"
)

var (
	meID    = spiffeid.RequireFromString("spiffe://example.org/me")
	otherID = spiffeid.RequireFromString("spiffe://example.org/other")
)

// twoWorkloads is a snapshot with the caller's identity and another
// workload's (another uid), signed by one root.
func twoWorkloads(t *testing.T) *Snapshot {
	snap := snapshotFor(t, uidSel())
	_, leaf, key := selfSigned(t, otherID)
	snap.Identities = append(snap.Identities, Identity{EntryID: "e2", SpiffeID: otherID,
		Selectors: []selector.Selector{{Type: selector.UnixUID, Value: "54321"}}, Chain: []*x509.Certificate{leaf}, Key: key})
	return snap
}

func sdsClient(t *testing.T, sock string) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return secretv3.NewSecretDiscoveryServiceClient(conn)
}

// envoyNode is the node an Envoy of the given minor version describes
// itself as; SDS picks the validation context it understands from it.
func envoyNode(minor uint32) *corev3.Node {
	return &corev3.Node{Id: "sidecar~10.0.0.1~orders~default", Cluster: "orders", UserAgentName: "envoy",
		UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: minor}}}}
}

func secretsOf(t *testing.T, resp *discoveryv3.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	out := map[string]*tlsv3.Secret{}
	for _, a := range resp.Resources {
		if a.TypeUrl != SDSSecretType {
			t.Fatalf("resource of type %s", a.TypeUrl)
		}
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		out[s.Name] = &s
	}
	return out
}

// leafOf checks that a TlsCertificate secret holds a chain and the key of
// its leaf, as Envoy would load them, and returns the leaf.
func leafOf(t *testing.T, s *tlsv3.Secret) *x509.Certificate {
	t.Helper()
	tc := s.GetTlsCertificate()
	if tc == nil {
		t.Fatalf("secret %s is not a TLS certificate", s.Name)
	}
	cb, _ := pem.Decode(tc.CertificateChain.GetInlineBytes())
	kb, _ := pem.Decode(tc.PrivateKey.GetInlineBytes())
	if cb == nil || kb == nil || kb.Type != "PRIVATE KEY" {
		t.Fatalf("secret %s: chain or key is not PEM", s.Name)
	}
	leaf, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.(crypto.Signer).Public()) {
		t.Fatalf("secret %s: key does not match the certificate", s.Name)
	}
	return leaf
}

func sameCert(t *testing.T, got *x509.Certificate, want *x509.Certificate) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("served certificate %x, want %x", got.SerialNumber, want.SerialNumber)
	}
}

// recv receives one response or fails after a bound (a missing push is a
// failure, not a hang).
func recv(t *testing.T, stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) (*discoveryv3.DiscoveryResponse, error) {
	t.Helper()
	type res struct {
		r   *discoveryv3.DiscoveryResponse
		err error
	}
	c := make(chan res, 1)
	go func() { r, err := stream.Recv(); c <- res{r, err} }()
	select {
	case r := <-c:
		return r.r, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("no SDS response")
		return nil, nil
	}
}

// Envoy's subscription, step by step: resource names, version and nonce,
// ACK, rotation pushed as a new version, NACK not answered by a resend,
// stale requests ignored.
func TestSDSStreamAsEnvoy(t *testing.T) {
	src := &staticSource{snap: twoWorkloads(t), changed: make(chan struct{})}
	c := sdsClient(t, serve(t, src))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := envoyNode(30)
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: SDSSecretType, ResourceNames: []string{meID.String(), SDSRootCA}}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	r1, err := recv(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	if r1.VersionInfo == "" || r1.Nonce == "" || r1.TypeUrl != SDSSecretType {
		t.Fatalf("response without version, nonce or type: %v", r1)
	}
	got := secretsOf(t, r1)
	if len(got) != 2 {
		t.Fatalf("got secrets %v, want %s and ROOTCA", keys(got), meID)
	}
	sameCert(t, leafOf(t, got[meID.String()]), src.snap.Identities[0].Chain[0])
	// Envoy 1.30 gets the SPIFFE validator with the trust domain's roots.
	vc := got[SDSRootCA].GetValidationContext()
	var spiffe tlsv3.SPIFFECertValidatorConfig
	if vc == nil || vc.CustomValidatorConfig.GetName() != "envoy.tls.cert_validator.spiffe" || vc.CustomValidatorConfig.TypedConfig.UnmarshalTo(&spiffe) != nil {
		t.Fatalf("ROOTCA is not a SPIFFE validation context: %v", got[SDSRootCA])
	}
	if len(spiffe.TrustDomains) != 1 || spiffe.TrustDomains[0].Name != "example.org" {
		t.Fatalf("validator trust domains: %v", spiffe.TrustDomains)
	}
	if b, _ := pem.Decode(spiffe.TrustDomains[0].TrustBundle.GetInlineBytes()); b == nil || !sameDER(b.Bytes, src.snap.Bundle[0].Raw) {
		t.Fatal("validator bundle is not the trust domain's root")
	}

	// ACK, then rotation: a new version with the new certificate.
	ack := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: SDSSecretType, ResourceNames: req.ResourceNames, VersionInfo: r1.VersionInfo, ResponseNonce: r1.Nonce}
	if err := stream.Send(ack); err != nil {
		t.Fatal(err)
	}
	rotated := twoWorkloads(t)
	src.set(rotated)
	r2, err := recv(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	if r2.VersionInfo == r1.VersionInfo || r2.Nonce == r1.Nonce {
		t.Fatalf("rotation pushed with version %s nonce %s, same as before", r2.VersionInfo, r2.Nonce)
	}
	sameCert(t, leafOf(t, secretsOf(t, r2)[meID.String()]), rotated.Identities[0].Chain[0])

	// NACK: Envoy keeps the previous version and says why. The server
	// does not resend what was refused; the next change is the next push.
	nack := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: SDSSecretType, ResourceNames: req.ResourceNames, VersionInfo: r1.VersionInfo,
		ResponseNonce: r2.Nonce, ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "bad key"}}
	if err := stream.Send(nack); err != nil {
		t.Fatal(err)
	}
	again := twoWorkloads(t)
	src.set(again)
	r3, err := recv(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	sameCert(t, leafOf(t, secretsOf(t, r3)[meID.String()]), again.Identities[0].Chain[0])
	if r3.VersionInfo == r2.VersionInfo {
		t.Fatal("the NACKed version was resent")
	}

	// A stale request (an old nonce) naming only ROOTCA is ignored; the
	// current one naming "default" is answered with just that.
	stale := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: SDSSecretType, ResourceNames: []string{SDSRootCA}, ResponseNonce: r2.Nonce}
	cur := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: SDSSecretType, ResourceNames: []string{SDSDefaultSVID}, VersionInfo: r3.VersionInfo, ResponseNonce: r3.Nonce}
	if err := stream.Send(stale); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(cur); err != nil {
		t.Fatal(err)
	}
	r4, err := recv(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	got = secretsOf(t, r4)
	if len(got) != 1 || got[SDSDefaultSVID] == nil {
		t.Fatalf("after a stale request and a current one got %v, want only %q", keys(got), SDSDefaultSVID)
	}
	sameCert(t, leafOf(t, got[SDSDefaultSVID]), again.Identities[0].Chain[0])
}

func keys(m map[string]*tlsv3.Secret) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func sameDER(a, b []byte) bool { return string(a) == string(b) }

// The attack: a workload names another workload's SPIFFE ID. Refused, in
// both calls, and in the same words as an ID that does not exist; the
// wildcard hands out only the caller's own.
func TestSDSRefusesAnotherWorkloadsSecret(t *testing.T) {
	src := &staticSource{snap: twoWorkloads(t), changed: make(chan struct{})}
	c := sdsClient(t, serve(t, src))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, names := range [][]string{
		{otherID.String()},
		{meID.String(), otherID.String()},
		{"spiffe://example.org/nobody"},
	} {
		_, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: SDSSecretType, ResourceNames: names})
		if grpcstatus.Code(err) != codes.PermissionDenied {
			t.Fatalf("FetchSecrets %v: got %v, want PermissionDenied", names, err)
		}
		if strings.Contains(grpcstatus.Convert(err).Message(), meID.String()) {
			t.Fatalf("refusal names a secret the caller may have: %v", err)
		}
		stream, err := c.StreamSecrets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: SDSSecretType, ResourceNames: names})
		if _, err := recv(t, stream); grpcstatus.Code(err) != codes.PermissionDenied {
			t.Fatalf("StreamSecrets %v: got %v, want PermissionDenied", names, err)
		}
	}
	resp, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: SDSSecretType})
	if err != nil {
		t.Fatal(err)
	}
	got := secretsOf(t, resp)
	if len(got) != 2 || got[meID.String()] == nil || got[td.IDString()] == nil {
		t.Fatalf("wildcard gave %v, want the caller's SVID and its trust domain's bundle", keys(got))
	}
}

// A caller entitled to nothing gets the bundle (public, as from
// FetchX509Bundles) and no SVID, not even as "default".
func TestSDSCallerWithoutEntry(t *testing.T) {
	snap := snapshotFor(t, selector.Selector{Type: selector.UnixUID, Value: "54321"})
	c := sdsClient(t, serve(t, &staticSource{snap: snap, changed: make(chan struct{})}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: []string{SDSDefaultSVID}}); grpcstatus.Code(err) != codes.PermissionDenied {
		t.Fatalf("default SVID for a caller without entry: got %v", err)
	}
	if _, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{}); grpcstatus.Code(err) != codes.PermissionDenied {
		t.Fatalf("wildcard for a caller without entry: got %v", err)
	}
	resp, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: []string{SDSRootCA}})
	if err != nil {
		t.Fatal(err)
	}
	// No build version: an old or unknown client gets trusted CAs.
	vc := secretsOf(t, resp)[SDSRootCA].GetValidationContext()
	if b, _ := pem.Decode(vc.GetTrustedCa().GetInlineBytes()); b == nil || !sameDER(b.Bytes, snap.Bundle[0].Raw) {
		t.Fatalf("ROOTCA for a client without build version: %v", vc)
	}
}

func TestSDSRequestRules(t *testing.T) {
	src := &staticSource{snap: twoWorkloads(t), changed: make(chan struct{})}
	c := sdsClient(t, serve(t, src))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name string
		req  *discoveryv3.DiscoveryRequest
		code codes.Code
		want []string // secret names
	}{
		{"another type", &discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}, codes.InvalidArgument, nil},
		{"ALL is a SPIFFE validator", &discoveryv3.DiscoveryRequest{ResourceNames: []string{SDSAllBundles}}, codes.OK, []string{SDSAllBundles}},
		{"trust domain by ID", &discoveryv3.DiscoveryRequest{ResourceNames: []string{td.IDString()}}, codes.OK, []string{td.IDString()}},
		{"default is the first entry's", &discoveryv3.DiscoveryRequest{ResourceNames: []string{SDSDefaultSVID, ""}}, codes.OK, []string{SDSDefaultSVID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.FetchSecrets(ctx, tt.req)
			if grpcstatus.Code(err) != tt.code {
				t.Fatalf("got %v, want %v", err, tt.code)
			}
			if err != nil {
				return
			}
			got := secretsOf(t, resp)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", keys(got), tt.want)
			}
			for _, n := range tt.want {
				if got[n] == nil {
					t.Fatalf("got %v, want %v", keys(got), tt.want)
				}
			}
			if s := got[SDSAllBundles]; s != nil && s.GetValidationContext().GetCustomValidatorConfig() == nil {
				t.Fatal("ALL is not a SPIFFE validator config")
			}
			if s := got[SDSDefaultSVID]; s != nil {
				sameCert(t, leafOf(t, s), src.snap.Identities[0].Chain[0])
			}
		})
	}
}

func recvDelta(t *testing.T, stream grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) (*discoveryv3.DeltaDiscoveryResponse, error) {
	t.Helper()
	type res struct {
		r   *discoveryv3.DeltaDiscoveryResponse
		err error
	}
	c := make(chan res, 1)
	go func() { r, err := stream.Recv(); c <- res{r, err} }()
	select {
	case r := <-c:
		return r.r, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("no delta SDS response")
		return nil, nil
	}
}

func deltaNames(resp *discoveryv3.DeltaDiscoveryResponse) map[string]string {
	out := map[string]string{}
	for _, r := range resp.Resources {
		out[r.Name] = r.Version
	}
	return out
}

// Incremental SDS (DELTA_GRPC): per-resource versions, only what changed
// is sent, subscriptions change, a reconnecting client's versions count,
// another workload's secret is refused.
func TestSDSDelta(t *testing.T) {
	src := &staticSource{snap: twoWorkloads(t), changed: make(chan struct{})}
	c := sdsClient(t, serve(t, src))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := envoyNode(30)
	stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: SDSSecretType, ResourceNamesSubscribe: []string{meID.String(), SDSRootCA}})
	r1, err := recvDelta(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	v1 := deltaNames(r1)
	if len(v1) != 2 || v1[meID.String()] == "" || v1[SDSRootCA] == "" || r1.Nonce == "" {
		t.Fatalf("first delta response: %v", v1)
	}
	stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: SDSSecretType, ResponseNonce: r1.Nonce}) // ACK
	// Rotation: only the certificate is sent, the bundle did not change.
	rotated := twoWorkloads(t)
	rotated.Bundle = src.snap.Bundle
	src.set(rotated)
	r2, err := recvDelta(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	v2 := deltaNames(r2)
	if len(v2) != 1 || v2[meID.String()] == v1[meID.String()] || v2[meID.String()] == "" {
		t.Fatalf("after rotation got %v, want only the new certificate", v2)
	}
	var sec tlsv3.Secret
	r2.Resources[0].Resource.UnmarshalTo(&sec)
	sameCert(t, leafOf(t, &sec), rotated.Identities[0].Chain[0])
	// Change of subscription: answered with just the new name.
	stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: SDSSecretType, ResponseNonce: r2.Nonce,
		ResourceNamesSubscribe: []string{SDSDefaultSVID}, ResourceNamesUnsubscribe: []string{SDSRootCA}})
	r3, err := recvDelta(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	if v3 := deltaNames(r3); len(v3) != 1 || v3[SDSDefaultSVID] == "" {
		t.Fatalf("after subscribing to default got %v", v3)
	}
	// The attack: subscribing to another workload's secret ends the stream.
	stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: SDSSecretType, ResponseNonce: r3.Nonce, ResourceNamesSubscribe: []string{otherID.String()}})
	if _, err := recvDelta(t, stream); grpcstatus.Code(err) != codes.PermissionDenied {
		t.Fatalf("another workload's secret over delta SDS: got %v, want PermissionDenied", err)
	}

	// A reconnecting client that holds the current certificate gets only
	// what it lacks.
	again, err := c.DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: SDSSecretType, ResourceNamesSubscribe: []string{meID.String(), SDSRootCA},
		InitialResourceVersions: map[string]string{meID.String(): v2[meID.String()]}})
	r4, err := recvDelta(t, again)
	if err != nil {
		t.Fatal(err)
	}
	if v4 := deltaNames(r4); len(v4) != 1 || v4[SDSRootCA] == "" {
		t.Fatalf("reconnect with the current certificate's version got %v, want only ROOTCA", v4)
	}
}

// A second local account asks for the first one's secret over SDS: it
// gets its own, never the other's.
func TestSDSSecondUserGetsOnlyItsOwn(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	snap := snapshotFor(t, uidSel()) // root's
	_, leaf, key := selfSigned(t, otherID)
	snap.Identities = append(snap.Identities, Identity{EntryID: "e2", SpiffeID: otherID,
		Selectors: []selector.Selector{{Type: selector.UnixUID, Value: "65534"}}, Chain: []*x509.Certificate{leaf}, Key: key})
	dir := sharedDir(t)
	sock, _, _ := raceServer(t, dir, snap)
	bin := copyTestBinary(t, dir, "envoy-like")
	for name, want := range map[string]string{
		meID.String():  "refused PermissionDenied",
		SDSDefaultSVID: "granted " + otherID.String(),
		"":             "granted " + otherID.String(),
	} {
		cmd := helperCmd(bin, "sds", "RAMPART_WL_SOCK="+sock, "RAMPART_WL_NAME="+name)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v: %s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Fatalf("uid 65534 asking for %q: %q, want %q", name, got, want)
		}
	}
}

// sdsHelper asks for one resource name (empty: all) over SDS and prints
// "granted ID..." with the SPIFFE IDs of the certificates it got, or
// "refused CODE".
func sdsHelper() int {
	conn, err := grpc.NewClient("unix://"+os.Getenv("RAMPART_WL_SOCK"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &discoveryv3.DiscoveryRequest{Node: envoyNode(30), TypeUrl: SDSSecretType}
	if n := os.Getenv("RAMPART_WL_NAME"); n != "" {
		req.ResourceNames = []string{n}
	}
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err == nil {
		err = stream.Send(req)
	}
	var resp *discoveryv3.DiscoveryResponse
	if err == nil {
		resp, err = stream.Recv()
	}
	if err != nil {
		fmt.Println("refused", grpcstatus.Code(err))
		return 0
	}
	var ids []string
	for _, a := range resp.Resources {
		var s tlsv3.Secret
		a.UnmarshalTo(&s)
		if tc := s.GetTlsCertificate(); tc != nil {
			b, _ := pem.Decode(tc.CertificateChain.GetInlineBytes())
			c, _ := x509.ParseCertificate(b.Bytes)
			ids = append(ids, c.URIs[0].String())
		}
	}
	fmt.Println("granted " + strings.Join(ids, " "))
	return 0
}

package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const sdsType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// Envoy's SDS on the agent's socket, with real processes: a subscription
// as Envoy makes it gets the workload's SVID and the server's bundle, the
// rotation is pushed on the open stream, another workload's SVID is refused.
func TestSDSWithRealAgent(t *testing.T) {
	s, a := setup(t)
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders",
		"--parent", agentID, "--selector", myUID(), "--ttl", "8s")
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/payments",
		"--parent", agentID, "--selector", "unix:uid:54321")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+a.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := secretv3.NewSecretDiscoveryServiceClient(conn)
	node := &corev3.Node{Id: "orders-envoy", Cluster: "orders"}
	var stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	var first *discoveryv3.DiscoveryResponse
	eventually(t, 20*time.Second, "first SDS response", func() error {
		var err error
		if stream, err = client.StreamSecrets(ctx); err != nil {
			return err
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: sdsType,
			ResourceNames: []string{"spiffe://example.org/orders", "ROOTCA"}}); err != nil {
			return err
		}
		first, err = stream.Recv()
		return err
	})
	chain, roots := sdsSecrets(t, first)
	leaf := chain[0]
	pemBundle, _ := os.ReadFile(filepath.Join(s.dir, "bundle.pem"))
	if b, _ := pem.Decode(pemBundle); b == nil || !roots[0].Equal(mustParse(t, b.Bytes)) {
		t.Fatal("ROOTCA is not the server's bundle")
	}
	if _, _, err := x509svid.ParseAndVerify(rawChain(chain), x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("example.org"), roots)); err != nil {
		t.Fatalf("the SVID from SDS does not verify against ROOTCA: %v", err)
	}
	// ACK; the rotation (8 s TTL, renewed at 40-50%) comes as a new version.
	stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: sdsType, VersionInfo: first.VersionInfo, ResponseNonce: first.Nonce,
		ResourceNames: []string{"spiffe://example.org/orders", "ROOTCA"}})
	next, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	rotatedChain, _ := sdsSecrets(t, next)
	rotated := rotatedChain[0]
	if next.VersionInfo == first.VersionInfo || rotated.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatalf("push after ACK is not a rotation: version %s -> %s", first.VersionInfo, next.VersionInfo)
	}
	if !time.Now().Before(leaf.NotAfter) {
		t.Fatal("the rotation arrived only after the old SVID expired")
	}

	// The attack: the same process names the other workload's SPIFFE ID.
	_, err = client.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: sdsType, ResourceNames: []string{"spiffe://example.org/payments"}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another workload's SVID over SDS: got %v, want PermissionDenied", err)
	}
}

// sdsSecrets returns the chain of the one TLS certificate and the roots of
// the one validation context in resp.
func sdsSecrets(t *testing.T, resp *discoveryv3.DiscoveryResponse) (chain, roots []*x509.Certificate) {
	t.Helper()
	var leaf *x509.Certificate
	for _, r := range resp.Resources {
		var s tlsv3.Secret
		if err := r.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		if tc := s.GetTlsCertificate(); tc != nil {
			chain = pemChain(t, tc.CertificateChain.GetInlineBytes())
			leaf = chain[0]
		}
		if vc := s.GetValidationContext(); vc != nil {
			roots = pemChain(t, vc.GetTrustedCa().GetInlineBytes())
		}
	}
	if leaf == nil || len(roots) == 0 {
		t.Fatalf("response lacks a certificate or the bundle: %d resources", len(resp.Resources))
	}
	return chain, roots
}

func pemChain(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return out
		}
		out = append(out, mustParse(t, blk.Bytes))
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func rawChain(certs []*x509.Certificate) [][]byte {
	var out [][]byte
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}

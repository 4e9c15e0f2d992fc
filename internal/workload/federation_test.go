package workload

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

var tdOther = spiffeid.RequireTrustDomainFromString("other.test")

// withFederated adds another trust domain's bundle to a snapshot.
func withFederated(t *testing.T, snap *Snapshot) *Snapshot {
	root, _, _ := selfSigned(t, spiffeid.RequireFromString("spiffe://example.org/x"))
	snap.Federated = []FederatedBundle{{TrustDomain: tdOther, X509: []*x509.Certificate{root}, JWT: []byte(`{"keys":[]}`)}}
	return snap
}

// go-spiffe's client sees federated bundles in FetchX509SVID
// (federated_bundles) and FetchX509Bundles, each under its own trust
// domain: a certificate of other.test verifies only with other.test's
// roots.
func TestWorkloadAPIServesFederatedBundles(t *testing.T) {
	snap := withFederated(t, snapshotFor(t, uidSel()))
	sock := serve(t, &staticSource{snap: snap, changed: make(chan struct{})})
	x, err := fetch(t, sock)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := x.Bundles.GetX509BundleForTrustDomain(tdOther)
	if err != nil || !ob.HasX509Authority(snap.Federated[0].X509[0]) {
		t.Fatalf("FetchX509SVID: no bundle of other.test: %v", err)
	}
	own, err := x.Bundles.GetX509BundleForTrustDomain(td)
	if err != nil || own.HasX509Authority(snap.Federated[0].X509[0]) {
		t.Fatal("FetchX509SVID: the federated root is in our own bundle")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	set, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 2 || !set.Has(tdOther) {
		t.Fatalf("FetchX509Bundles: %d bundles", set.Len())
	}
	jset, err := workloadapi.FetchJWTBundles(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil || !jset.Has(tdOther) {
		t.Fatalf("FetchJWTBundles: no bundle of other.test: %v", err)
	}
}

// SDS: the federated trust domain's ID names its bundle alone; ALL holds
// every trust domain, each with its own roots.
func TestSDSServesFederatedBundles(t *testing.T) {
	snap := withFederated(t, twoWorkloads(t))
	c := sdsClient(t, serve(t, &staticSource{snap: snap, changed: make(chan struct{})}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode(30), TypeUrl: SDSSecretType, ResourceNames: []string{"spiffe://other.test", SDSAllBundles}}); err != nil {
		t.Fatal(err)
	}
	r, err := recv(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	got := secretsOf(t, r)
	validator := func(name string) map[string][]byte {
		vc := got[name].GetValidationContext()
		var v tlsv3.SPIFFECertValidatorConfig
		if vc == nil || vc.CustomValidatorConfig.TypedConfig.UnmarshalTo(&v) != nil {
			t.Fatalf("%s is not a SPIFFE validation context", name)
		}
		out := map[string][]byte{}
		for _, d := range v.TrustDomains {
			b, _ := pem.Decode(d.TrustBundle.GetInlineBytes())
			out[d.Name] = b.Bytes
		}
		return out
	}
	other := validator("spiffe://other.test")
	if len(other) != 1 || !sameDER(other["other.test"], snap.Federated[0].X509[0].Raw) {
		t.Fatalf("spiffe://other.test holds %v", keys2(other))
	}
	all := validator(SDSAllBundles)
	if len(all) != 2 || !sameDER(all["example.org"], snap.Bundle[0].Raw) || !sameDER(all["other.test"], snap.Federated[0].X509[0].Raw) {
		t.Fatalf("ALL holds %v", keys2(all))
	}
}

func keys2(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

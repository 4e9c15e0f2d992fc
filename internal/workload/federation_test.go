package workload

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/selector"
)

var (
	tdOther = spiffeid.RequireTrustDomainFromString("other.test")
	tdThird = spiffeid.RequireTrustDomainFromString("third.test")
)

// withFederated gives the agent's snapshot the bundles of other.test and
// third.test, and makes the entries named federate with other.test only.
func withFederated(t *testing.T, snap *Snapshot, federating ...string) *Snapshot {
	for _, td := range []spiffeid.TrustDomain{tdOther, tdThird} {
		root, _, _ := selfSigned(t, td.ID())
		snap.Federated = append(snap.Federated, FederatedBundle{TrustDomain: td, X509: []*x509.Certificate{root}, JWT: []byte(`{"keys":[]}`)})
	}
	for i := range snap.Identities {
		if slices.Contains(federating, snap.Identities[i].EntryID) {
			snap.Identities[i].FederatesWith = []string{tdOther.Name()}
		}
	}
	return snap
}

// bundleSets fetches what go-spiffe's client sees of the federated
// bundles: in FetchX509SVID (nil if refused), FetchX509Bundles and
// FetchJWTBundles.
func bundleSets(t *testing.T, sock string) (svid *workloadapi.X509Context, x509s *x509bundle.Set, jwts *jwtbundle.Set) {
	t.Helper()
	svid, _ = fetch(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	x509s, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		t.Fatal(err)
	}
	jwts, err = workloadapi.FetchJWTBundles(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		t.Fatal(err)
	}
	return svid, x509s, jwts
}

// go-spiffe's client sees the bundles of the trust domains its entry
// federates with in FetchX509SVID (federated_bundles), FetchX509Bundles
// and FetchJWTBundles, each under its own trust domain (a certificate of
// other.test verifies only with other.test's roots), and not those of a
// trust domain the agent holds for others (third.test).
func TestWorkloadAPIServesFederatedBundles(t *testing.T) {
	snap := withFederated(t, snapshotFor(t, uidSel()), "e1")
	sock := serve(t, &staticSource{snap: snap, changed: make(chan struct{})})
	x, xset, jset := bundleSets(t, sock)
	if x == nil {
		t.Fatal("FetchX509SVID refused")
	}
	ob, err := x.Bundles.GetX509BundleForTrustDomain(tdOther)
	if err != nil || !ob.HasX509Authority(snap.Federated[0].X509[0]) {
		t.Fatalf("FetchX509SVID: no bundle of other.test: %v", err)
	}
	own, err := x.Bundles.GetX509BundleForTrustDomain(td)
	if err != nil || own.HasX509Authority(snap.Federated[0].X509[0]) {
		t.Fatal("FetchX509SVID: the federated root is in our own bundle")
	}
	if x.Bundles.Has(tdThird) || xset.Has(tdThird) || jset.Has(tdThird) {
		t.Fatal("third.test's bundle was given to a workload that does not federate with it")
	}
	if xset.Len() != 2 || !xset.Has(tdOther) {
		t.Fatalf("FetchX509Bundles: %d bundles", xset.Len())
	}
	if jset.Len() != 2 || !jset.Has(tdOther) {
		t.Fatalf("FetchJWTBundles: %d bundles", jset.Len())
	}
}

// The attack: a workload whose entry federates with nobody, on an agent
// that holds other.test's bundle for another workload (e2), asks for the
// federated bundles every way the Workload API has. It gets its own trust
// domain's only, so it cannot be talked into trusting other.test's CA. A
// caller matching no entry (a verifier) gets our bundle and is not
// refused.
func TestWorkloadAPIWithholdsFederatedBundles(t *testing.T) {
	for _, tc := range []struct {
		name     string
		snap     *Snapshot
		hasSVIDs bool
	}{
		{"entry without federates_with", withFederated(t, twoWorkloads(t), "e2"), true},
		{"no entry", withFederated(t, snapshotFor(t, selector.Selector{Type: selector.UnixUID, Value: "54321"}), "e1"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := serve(t, &staticSource{snap: tc.snap, changed: make(chan struct{})})
			x, xset, jset := bundleSets(t, sock)
			if (x != nil) != tc.hasSVIDs {
				t.Fatalf("FetchX509SVID answered %v, want %v", x != nil, tc.hasSVIDs)
			}
			if x != nil && x.Bundles.Len() != 1 {
				t.Fatalf("FetchX509SVID: %d trust domains' bundles, want our own only", x.Bundles.Len())
			}
			if xset.Len() != 1 || !xset.Has(td) || jset.Len() != 1 || !jset.Has(td) {
				t.Fatalf("bundles: X.509 %d, JWT %d; want our own only", xset.Len(), jset.Len())
			}
		})
	}
}

// SDS: the federated trust domain's ID names its bundle alone; ALL holds
// ours and those the caller federates with, each with its own roots.
func TestSDSServesFederatedBundles(t *testing.T) {
	snap := withFederated(t, twoWorkloads(t), "e1")
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

// The attack: a workload names, over SDS, the bundle of a trust domain its
// entry does not federate with (held by the agent for another workload,
// or not held at all). It is answered under that name with our trust
// domain's roots only: never the other's, never refused (an Envoy keeps
// the last context it accepted when a stream fails), never empty (Envoy
// would then validate nothing). ALL holds our trust domain only.
func TestSDSWithholdsUnfederatedBundle(t *testing.T) {
	snap := withFederated(t, twoWorkloads(t), "e2")
	c := sdsClient(t, serve(t, &staticSource{snap: snap, changed: make(chan struct{})}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	onlyOurs := func(t *testing.T, sec *tlsv3.Secret) {
		t.Helper()
		var v tlsv3.SPIFFECertValidatorConfig
		vc := sec.GetValidationContext()
		if vc == nil || vc.CustomValidatorConfig.TypedConfig.UnmarshalTo(&v) != nil || len(v.TrustDomains) != 1 || v.TrustDomains[0].Name != td.Name() {
			t.Fatalf("%s: %v, want a SPIFFE validator of %s alone", sec.Name, vc, td.Name())
		}
		b, _ := pem.Decode(v.TrustDomains[0].TrustBundle.GetInlineBytes())
		if b == nil || !sameDER(b.Bytes, snap.Bundle[0].Raw) {
			t.Fatalf("%s: not our roots", sec.Name)
		}
	}
	for _, names := range [][]string{{"spiffe://other.test"}, {"spiffe://third.test"}, {"spiffe://nobody.test"}, {SDSRootCA, "spiffe://other.test"}, {SDSAllBundles}} {
		resp, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{Node: envoyNode(30), TypeUrl: SDSSecretType, ResourceNames: names})
		if err != nil {
			t.Fatalf("%v: %v", names, err)
		}
		got := secretsOf(t, resp)
		if len(got) != len(names) {
			t.Fatalf("%v: got %v", names, keys(got))
		}
		for _, n := range names {
			if n != SDSRootCA {
				onlyOurs(t, got[n])
			}
		}
	}
	// The wildcard: the caller's SVID and our bundle, no federated one.
	resp, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: SDSSecretType})
	if err != nil {
		t.Fatal(err)
	}
	if got := secretsOf(t, resp); len(got) != 2 || got["spiffe://other.test"] != nil {
		t.Fatalf("wildcard gave %v", keys(got))
	}
}

func keys2(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

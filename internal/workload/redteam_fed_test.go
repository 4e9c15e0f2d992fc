package workload

// Red team (federation boundary, per-entry federates_with): an Envoy that
// subscribed to a federated trust domain's bundle by name
// ("spiffe://b.example", as docs/deploy.md's validation_context_sds_secret_config
// shows for our own trust domain) must be told in-band when its workload
// stops federating with that trust domain. Ending the stream with
// PermissionDenied is not enough: xDS clients keep the last resource they
// accepted when a stream fails (Envoy keeps serving with the last
// validation context and retries), so the proxy would go on accepting
// b.example's callers with b.example's roots until it restarts, although
// the entry (or the federation) no longer allows it. The ALL subscription
// and the Workload API streams do push the narrowed bundle set; the named
// one must too (for instance a validation context under the same name
// that holds our trust domain only).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rampartsec/rampart/internal/audit/auditentry"
	"github.com/rampartsec/rampart/internal/selector"
)

func rtfedRoot(t *testing.T, td string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://" + td)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root " + td}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rtfedHoldsTD reports whether a validation context trusts td's roots.
func rtfedHoldsTD(sec *tlsv3.Secret, td string, root *x509.Certificate) bool {
	vc := sec.GetValidationContext()
	if vc == nil {
		return false
	}
	if cv := vc.GetCustomValidatorConfig(); cv != nil {
		var cfg tlsv3.SPIFFECertValidatorConfig
		if err := cv.GetTypedConfig().UnmarshalTo(&cfg); err != nil {
			return false
		}
		for _, d := range cfg.TrustDomains {
			if d.Name == td {
				return true
			}
		}
		return false
	}
	return strings.Contains(string(vc.GetTrustedCa().GetInlineBytes()), string(pemCerts([]*x509.Certificate{root})))
}

func TestRedTeamSDSNamedFederatedBundleWithdrawnInBand(t *testing.T) {
	a := spiffeid.RequireTrustDomainFromString("a.example")
	b := spiffeid.RequireTrustDomainFromString("b.example")
	rootA, rootB := rtfedRoot(t, "a.example"), rtfedRoot(t, "b.example")
	sel, err := selector.Parse("unix:uid:" + strconv.Itoa(os.Getuid()))
	if err != nil {
		t.Fatal(err)
	}
	snapWith := func(fedWith []string, federated bool) *Snapshot {
		s := &Snapshot{TrustDomain: a, Bundle: []*x509.Certificate{rootA}, JWTBundle: []byte(`{"keys":[]}`),
			Unminted: []Identity{{EntryID: "e1", SpiffeID: spiffeid.RequireFromPath(a, "/proxy"), Selectors: []selector.Selector{sel}, FederatesWith: fedWith}}}
		if federated {
			s.Federated = []FederatedBundle{{TrustDomain: b, X509: []*x509.Certificate{rootB}}}
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		after *Snapshot
	}{
		// The operator takes b.example off the proxy's entry; another
		// entry of the agent still federates, so the agent keeps the bundle.
		{"entry stops federating", snapWith(nil, true)},
		// The federation ends: the bundle leaves the agent.
		{"relationship deleted", snapWith([]string{"b.example"}, false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &staticSource{snap: snapWith([]string{"b.example"}, true), changed: make(chan struct{})}
			dir := t.TempDir()
			sock := filepath.Join(dir, "w.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go NewServer(src, Attestor{}, nil, nil).Serve(ctx, ln)
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			node := &corev3.Node{Id: "envoy", UserAgentName: "envoy", UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{
				UserAgentBuildVersion: &corev3.BuildVersion{Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: 30}}}}
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			defer scancel()
			stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(sctx)
			if err != nil {
				t.Fatal(err)
			}
			names := []string{b.IDString()}
			if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: SDSSecretType}); err != nil {
				t.Fatal(err)
			}
			first, err := stream.Recv()
			if err != nil {
				t.Fatalf("while federating, %s: %v", b.IDString(), err)
			}
			var sec tlsv3.Secret
			if len(first.Resources) != 1 || first.Resources[0].UnmarshalTo(&sec) != nil || !rtfedHoldsTD(&sec, "b.example", rootB) {
				t.Fatalf("while federating, the first response should hold b.example's roots: %v", first)
			}
			// ACK, as Envoy does.
			if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: SDSSecretType,
				VersionInfo: first.VersionInfo, ResponseNonce: first.Nonce}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			src.set(tc.after)
			next, err := stream.Recv()
			if err != nil {
				t.Fatalf("the stream ended (%v) instead of withdrawing b.example's roots: an Envoy keeps the last validation context "+
					"it accepted when its SDS stream fails, so it goes on trusting b.example although its workload no longer federates with it", err)
			}
			for _, r := range next.Resources {
				var s tlsv3.Secret
				if err := r.UnmarshalTo(&s); err != nil {
					t.Fatal(err)
				}
				if s.Name == b.IDString() && rtfedHoldsTD(&s, "b.example", rootB) {
					t.Fatalf("after the federation ended for this workload, %s still holds b.example's roots", s.Name)
				}
			}
			if len(next.Resources) == 0 {
				t.Fatalf("the update names no resource: %s keeps its last content (b.example's roots) in the client", b.IDString())
			}
		})
	}
}

type rtfedRecorder struct {
	mu sync.Mutex
	es []*auditentry.Entry
}

func (r *rtfedRecorder) Record(e *auditentry.Entry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.es = append(r.es, e)
	return nil
}

// Red team (audit of SDS refusals, low): refusals are deduplicated per uid
// and executable for 10 s, whatever they asked for. A local user first asks
// for a federated bundle it does not federate with (a refusal that reads as
// a misconfigured proxy), then, within 10 s, for another workload's SVID:
// the second attempt, the one docs/threat-boundaries.md says is "refused
// whole with PermissionDenied ... and audited", leaves no entry naming
// what was asked (only a suppressed count in the next entry, if there ever
// is one).
func TestRedTeamSDSRefusalForAnotherWorkloadsSVIDAuditedAfterADecoy(t *testing.T) {
	a := spiffeid.RequireTrustDomainFromString("a.example")
	b := spiffeid.RequireTrustDomainFromString("b.example")
	rootA, rootB := rtfedRoot(t, "a.example"), rtfedRoot(t, "b.example")
	mine, err := selector.Parse("unix:uid:" + strconv.Itoa(os.Getuid()))
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := selector.Parse("unix:uid:" + strconv.Itoa(os.Getuid()+4242))
	if err != nil {
		t.Fatal(err)
	}
	victim := spiffeid.RequireFromPath(a, "/payments")
	src := &staticSource{changed: make(chan struct{}), snap: &Snapshot{TrustDomain: a, Bundle: []*x509.Certificate{rootA}, JWTBundle: []byte(`{"keys":[]}`),
		Unminted: []Identity{
			{EntryID: "e1", SpiffeID: spiffeid.RequireFromPath(a, "/orders"), Selectors: []selector.Selector{mine}},
			{EntryID: "e2", SpiffeID: victim, Selectors: []selector.Selector{theirs}, FederatesWith: []string{"b.example"}},
		},
		Federated: []FederatedBundle{{TrustDomain: b, X509: []*x509.Certificate{rootB}}}}}
	rec := &rtfedRecorder{}
	srv := NewServer(src, Attestor{}, nil, nil)
	srv.SetRecorder(rec, spiffeid.RequireFromPath(a, "/rampart/agent/node-1"))
	sock := filepath.Join(t.TempDir(), "w.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, ln)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := secretv3.NewSecretDiscoveryServiceClient(conn)
	// The decoy: a federated bundle the caller does not federate with
	// (withheld: answered with our roots, audited), then the attempt.
	if _, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: []string{b.IDString()}, TypeUrl: SDSSecretType}); err != nil {
		t.Fatalf("%s: %v", b.IDString(), err)
	}
	if _, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: []string{victim.String()}, TypeUrl: SDSSecretType}); err == nil {
		t.Fatalf("%s was served", victim)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, e := range rec.es {
		if strings.Contains(e.Reason, victim.String()) {
			return
		}
	}
	var got []string
	for _, e := range rec.es {
		got = append(got, e.Reason)
	}
	t.Fatalf("the attempt to fetch %s's SVID was not audited after a decoy refusal; entries: %q", victim, got)
}

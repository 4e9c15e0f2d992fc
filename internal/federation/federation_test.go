package federation_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	gofed "github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/federation"
	"github.com/rampartsec/rampart/internal/svid"
)

var (
	tdA = spiffeid.RequireTrustDomainFromString("a.test")
	tdB = spiffeid.RequireTrustDomainFromString("b.test")
	tdC = spiffeid.RequireTrustDomainFromString("c.test")
	// The endpoint ID of B's server.
	serverB = spiffeid.RequireFromString("spiffe://b.test/rampart/server")
	t0      = time.Now().Truncate(time.Second)
)

// testCA is a root of a trust domain, made in code.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(t *testing.T, td spiffeid.TrustDomain) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl, err := svid.CATemplate(td, td.Name()+" root", t0.Add(-time.Hour), t0.Add(48*time.Hour), -1)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{td: td, cert: c, key: key}
}

// svid signs an X.509-SVID of id for the loopback address.
func (ca *testCA) svid(t *testing.T, id spiffeid.ID) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl, err := svid.LeafTemplate(id, key.Public(), t0, t0.Add(24*time.Hour), nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// webCert is a Web PKI certificate for 127.0.0.1 from its own root.
func webCert(t *testing.T) (*tls.Certificate, *x509.CertPool) {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test web root"}, NotBefore: t0.Add(-time.Hour),
		NotAfter: t0.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, _ := x509.CreateCertificate(rand.Reader, root, root, rootKey.Public(), rootKey)
	rootCert, _ := x509.ParseCertificate(rootDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bundle.b.test"}, NotBefore: t0.Add(-time.Hour),
		NotAfter: t0.Add(48 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, _ := x509.CreateCertificate(rand.Reader, leaf, rootCert, key.Public(), rootKey)
	pool := x509.NewCertPool()
	pool.AddCert(rootCert)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// endpoint is a bundle endpoint of B: what it serves and with which
// certificate can be changed while it runs.
type endpoint struct {
	*tlsServer
	mu       sync.Mutex
	roots    []*x509.Certificate
	cert     *tls.Certificate
	hint     time.Duration
	seq      uint64
	override http.HandlerFunc // serves instead of the endpoint when set
	hits     atomic.Int64
}

func newEndpoint(t *testing.T, roots []*x509.Certificate, cert *tls.Certificate) *endpoint {
	e := &endpoint{roots: roots, cert: cert, hint: 10 * time.Minute, seq: 7}
	ep := &federation.Endpoint{TrustDomain: tdB, Bundle: func() (federation.Authorities, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return federation.Authorities{X509: e.roots, Sequence: e.seq}, nil
	}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		e.mu.Lock()
		ep.RefreshHint = e.hint
		o := e.override
		e.mu.Unlock()
		if o != nil {
			o(w, r)
			return
		}
		ep.ServeHTTP(w, r)
	})
	e.tlsServer = serveTLS(t, h, federation.SPIFFEServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.cert, nil
	}))
	return e
}

func (e *endpoint) set(f func(e *endpoint)) { e.mu.Lock(); f(e); e.mu.Unlock() }

// memStore keeps relationships in memory (the SQL store has its own
// tests; this one records what the refresher asked).
type memStore struct {
	mu   sync.Mutex
	rels map[spiffeid.TrustDomain]*federation.Relationship
	docs map[spiffeid.TrustDomain][]byte
	errs map[spiffeid.TrustDomain]string
}

func newMemStore(rels ...federation.Relationship) *memStore {
	s := &memStore{rels: map[spiffeid.TrustDomain]*federation.Relationship{}, docs: map[spiffeid.TrustDomain][]byte{}, errs: map[spiffeid.TrustDomain]string{}}
	for _, r := range rels {
		s.rels[r.TrustDomain] = &r
	}
	return s
}

func (s *memStore) Relationships(context.Context) ([]federation.Relationship, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []federation.Relationship
	for _, r := range s.rels {
		out = append(out, *r)
	}
	return out, nil
}

func (s *memStore) Accept(_ context.Context, td spiffeid.TrustDomain, doc []byte, at, next time.Time) error {
	b, err := federation.ParseBundle(td, doc)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rels[td].Bundle, s.rels[td].NextRefresh, s.docs[td], s.errs[td] = b, next, doc, ""
	return nil
}

func (s *memStore) Attempted(_ context.Context, td spiffeid.TrustDomain, at, next time.Time, errText string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rels[td].NextRefresh, s.errs[td] = next, errText
	return nil
}

func (s *memStore) get(td spiffeid.TrustDomain) (federation.Relationship, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *s.rels[td], s.errs[td]
}

// setup: A federates with B over https_spiffe, holding B's bundle.
type setup struct {
	caA, caB *testCA
	ep       *endpoint
	st       *memStore
	clock    *fakeclock.Clock
	r        *federation.Refresher
	results  []federation.Result
}

func newSetup(t *testing.T) *setup {
	s := &setup{caA: newCA(t, tdA), caB: newCA(t, tdB), clock: fakeclock.New(t0)}
	s.ep = newEndpoint(t, []*x509.Certificate{s.caB.cert}, s.caB.svid(t, serverB))
	s.st = newMemStore(federation.Relationship{TrustDomain: tdB, URL: s.ep.URL + "/", Profile: federation.ProfileSPIFFE, EndpointID: serverB,
		Bundle: spiffebundle.FromX509Authorities(tdB, []*x509.Certificate{s.caB.cert}), NextRefresh: t0})
	s.r = &federation.Refresher{TrustDomain: tdA, Own: func() []*x509.Certificate { return []*x509.Certificate{s.caA.cert} },
		Store: s.st, Now: s.clock.Now, OnRefresh: func(r federation.Result) { s.results = append(s.results, r) }}
	return s
}

func (s *setup) last(t *testing.T) federation.Result {
	t.Helper()
	if len(s.results) == 0 {
		t.Fatal("no refresh was reported")
	}
	return s.results[len(s.results)-1]
}

func TestRefreshSPIFFEFollowsRotationAndHint(t *testing.T) {
	s := newSetup(t)
	ctx := t.Context()
	next, err := s.r.RefreshDue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.last(t); got.Outcome != federation.OutcomeUnchanged {
		t.Fatalf("first fetch: %+v, want unchanged", got)
	}
	if want := t0.Add(10 * time.Minute); !next.Equal(want) {
		t.Errorf("next refresh %s, want the hint's %s", next, want)
	}
	// Not yet due: no fetch.
	s.clock.Add(9 * time.Minute)
	hits := s.ep.hits.Load()
	if _, err := s.r.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	if s.ep.hits.Load() != hits {
		t.Error("the refresher fetched before the hint was up")
	}
	// B rotates: a second root appears; A takes it at the next refresh.
	newRoot := newCA(t, tdB)
	s.ep.set(func(e *endpoint) { e.roots = append(e.roots, newRoot.cert) })
	s.clock.Add(time.Minute)
	if _, err := s.r.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.last(t); got.Outcome != federation.OutcomeUpdated {
		t.Fatalf("after rotation: %+v, want updated", got)
	}
	rel, _ := s.st.get(tdB)
	if !rel.Bundle.HasX509Authority(newRoot.cert) || !rel.Bundle.HasX509Authority(s.caB.cert) {
		t.Error("the stored bundle lacks the new or the old root")
	}
	if seq, ok := rel.Bundle.SequenceNumber(); !ok || seq != 7 {
		t.Errorf("sequence %d %v, want 7", seq, ok)
	}
	// B's server now presents an SVID from the new root only: still
	// authenticated, by the bundle just accepted.
	s.ep.set(func(e *endpoint) { e.cert = newRoot.svid(t, serverB); e.roots = []*x509.Certificate{newRoot.cert} })
	s.clock.Add(10 * time.Minute)
	if _, err := s.r.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	if rel, _ := s.st.get(tdB); rel.Bundle.HasX509Authority(s.caB.cert) || s.last(t).Outcome != federation.OutcomeUpdated {
		t.Error("the old root was not dropped after B dropped it")
	}
}

func TestRefreshHintBounds(t *testing.T) {
	r := &federation.Refresher{MinRefresh: time.Minute, MaxRefresh: time.Hour}
	for _, tc := range []struct {
		hint time.Duration
		set  bool
		want time.Duration
	}{
		{time.Second, true, time.Minute},           // an endpoint cannot make us hammer it
		{365 * 24 * time.Hour, true, time.Hour},    // nor make us miss a rotation for a year
		{20 * time.Minute, true, 20 * time.Minute}, // a reasonable hint is honoured
		{0, false, federation.DefaultRefreshHint},  // no hint: the default
	} {
		b := spiffebundle.New(tdB)
		if tc.set {
			b.SetRefreshHint(tc.hint)
		}
		if got := r.Interval(b); got != tc.want {
			t.Errorf("hint %s: interval %s, want %s", tc.hint, got, tc.want)
		}
	}
}

// Every refusal keeps the bundle held, names what was wrong, and retries
// soon.
func TestRefreshRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, s *setup)
		want    string
	}{
		{"endpoint presents another SPIFFE ID", func(t *testing.T, s *setup) {
			s.ep.set(func(e *endpoint) { e.cert = s.caB.svid(t, spiffeid.RequireFromString("spiffe://b.test/web")) })
		}, `unexpected ID "spiffe://b.test/web"`},
		{"endpoint's SVID does not chain to B's bundle (an attacker's CA claiming B)", func(t *testing.T, s *setup) {
			evil := newCA(t, tdB)
			s.ep.set(func(e *endpoint) { e.cert = evil.svid(t, serverB); e.roots = []*x509.Certificate{evil.cert} })
		}, "could not verify leaf certificate"},
		{"an SVID of B signed by A's CA", func(t *testing.T, s *setup) {
			s.ep.set(func(e *endpoint) { e.cert = s.caA.svid(t, serverB) })
		}, "could not verify leaf certificate"},
		{"bundle names another trust domain", func(t *testing.T, s *setup) {
			c := newCA(t, tdC)
			s.ep.set(func(e *endpoint) { e.roots = []*x509.Certificate{c.cert} })
		}, "names another trust domain"},
		{"bundle without X.509 authorities", func(t *testing.T, s *setup) {
			s.ep.set(func(e *endpoint) {
				e.override = func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"keys":[]}`)) }
			})
		}, "no X.509 authority"},
		{"a leaf posing as an authority", func(t *testing.T, s *setup) {
			leaf, _ := x509.ParseCertificate(s.caB.svid(t, serverB).Certificate[0])
			s.ep.set(func(e *endpoint) { e.roots = []*x509.Certificate{leaf} })
		}, "is not a CA certificate"},
		{"oversized bundle", func(t *testing.T, s *setup) {
			s.ep.set(func(e *endpoint) {
				e.override = func(w http.ResponseWriter, r *http.Request) {
					w.Write([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", federation.MaxBundleSize) + `"}`))
				}
			})
		}, "larger than"},
		{"error status", func(t *testing.T, s *setup) {
			s.ep.set(func(e *endpoint) {
				e.override = func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusBadGateway) }
			})
		}, "502"},
		{"redirect elsewhere", func(t *testing.T, s *setup) {
			s.ep.set(func(e *endpoint) {
				e.override = func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, "https://127.0.0.1:1/", http.StatusFound)
				}
			})
		}, "redirect"},
		{"an older bundle: lower spiffe_sequence, other roots (a replay bringing back a removed root)", func(t *testing.T, s *setup) {
			held, _ := s.st.get(tdB)
			held.Bundle.SetSequenceNumber(9)
			removed := newCA(t, tdB)
			s.ep.set(func(e *endpoint) { e.roots = append(e.roots, removed.cert) })
		}, "went back from spiffe_sequence 9 to 7"},
		{"not JSON", func(t *testing.T, s *setup) {
			s.ep.set(func(e *endpoint) {
				e.override = func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }
			})
		}, "unable to parse JWKS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			before, _ := s.st.get(tdB)
			tc.prepare(t, s)
			next, err := s.r.RefreshDue(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			after, lastErr := s.st.get(tdB)
			if !federation.SameAuthorities(before.Bundle, after.Bundle) {
				t.Error("a refused fetch changed the bundle held")
			}
			if !strings.Contains(lastErr, tc.want) {
				t.Errorf("recorded error %q", lastErr)
			}
			if res := s.last(t); res.Outcome != federation.OutcomeFailed || res.Bundle != nil {
				t.Errorf("reported %+v", res)
			}
			if want := t0.Add(federation.DefaultRetry); !next.Equal(want) {
				t.Errorf("retry at %s, want %s", next, want)
			}
		})
	}
}

func TestRefreshSPIFFEWithoutAFirstBundle(t *testing.T) {
	s := newSetup(t)
	s.st.rels[tdB].Bundle = nil
	_, err := s.r.RefreshDue(t.Context())
	if err == nil || !strings.Contains(err.Error(), "no bundle of b.test is held") {
		t.Fatalf("error %v", err)
	}
	if s.ep.hits.Load() != 0 {
		t.Error("the endpoint was contacted with nothing to authenticate it")
	}
}

func TestRefreshWeb(t *testing.T) {
	caB := newCA(t, tdB)
	cert, pool := webCert(t)
	ep := newEndpoint(t, []*x509.Certificate{caB.cert}, cert)
	st := newMemStore(federation.Relationship{TrustDomain: tdB, URL: ep.URL + "/", Profile: federation.ProfileWeb, NextRefresh: t0})
	clock := fakeclock.New(t0)
	r := &federation.Refresher{TrustDomain: tdA, Store: st, WebRoots: pool, Now: clock.Now}
	if _, err := r.RefreshDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	rel, _ := st.get(tdB)
	if rel.Bundle == nil || !rel.Bundle.HasX509Authority(caB.cert) {
		t.Fatal("the https_web bundle was not accepted")
	}
	// Without the web root (the system roots do not know it): refused,
	// and the bundle held stays.
	r.WebRoots = x509.NewCertPool()
	clock.Add(time.Hour)
	_, err := r.RefreshDue(t.Context())
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("error %v", err)
	}
	if rel, _ := st.get(tdB); rel.Bundle == nil {
		t.Error("the failed fetch dropped the bundle")
	}
}

func TestRelationshipCheck(t *testing.T) {
	ok := federation.Relationship{TrustDomain: tdB, URL: "https://b.test/", Profile: federation.ProfileSPIFFE, EndpointID: serverB}
	for _, tc := range []struct {
		name string
		edit func(*federation.Relationship)
		want string
	}{
		{"own trust domain", func(r *federation.Relationship) { r.TrustDomain = tdA }, "own trust domain"},
		{"plain http", func(r *federation.Relationship) { r.URL = "http://b.test/" }, "want https"},
		{"credentials in the URL", func(r *federation.Relationship) { r.URL = "https://u:p@b.test/" }, "without credentials"},
		{"spiffe without endpoint ID", func(r *federation.Relationship) { r.EndpointID = spiffeid.ID{} }, "needs the endpoint's SPIFFE ID"},
		{"web with endpoint ID", func(r *federation.Relationship) { r.Profile = federation.ProfileWeb }, "https_spiffe only"},
		{"unknown profile", func(r *federation.Relationship) { r.Profile = "https_ftp" }, "unknown profile"},
		// Look-alikes of our own trust domain (a.test): other trust
		// domains to every comparison, read as ours by people.
		{"trailing dot", func(r *federation.Relationship) { r.TrustDomain = spiffeid.RequireTrustDomainFromString("a.test.") }, "empty label"},
		{"doubled dot", func(r *federation.Relationship) { r.TrustDomain = spiffeid.RequireTrustDomainFromString("a..test") }, "empty label"},
		{"leading dot", func(r *federation.Relationship) { r.TrustDomain = spiffeid.RequireTrustDomainFromString(".a.test") }, "empty label"},
	} {
		r := ok
		tc.edit(&r)
		if err := r.Check(tdA); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := ok.Check(tdA); err != nil {
		t.Error(err)
	}
}

// go-spiffe's federation client reads our endpoint, with both profiles.
func TestGoSPIFFEFetchesOurEndpoint(t *testing.T) {
	caB := newCA(t, tdB)
	jwtKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ep := &federation.Endpoint{TrustDomain: tdB, RefreshHint: 90 * time.Second, Bundle: func() (federation.Authorities, error) {
		return federation.Authorities{X509: []*x509.Certificate{caB.cert}, JWT: map[string]crypto.PublicKey{"k1": jwtKey.Public()}, Sequence: 42}, nil
	}}
	check := func(t *testing.T, b *spiffebundle.Bundle) {
		if !b.HasX509Authority(caB.cert) || !b.HasJWTAuthority("k1") {
			t.Error("the bundle lacks our authorities")
		}
		if seq, _ := b.SequenceNumber(); seq != 42 {
			t.Errorf("spiffe_sequence %d", seq)
		}
		if h, _ := b.RefreshHint(); h != 90*time.Second {
			t.Errorf("spiffe_refresh_hint %s", h)
		}
	}
	t.Run("https_spiffe", func(t *testing.T) {
		cert := caB.svid(t, serverB)
		srv := serveTLS(t, ep, federation.SPIFFEServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }))
		trust := x509bundle.FromX509Authorities(tdB, []*x509.Certificate{caB.cert})
		b, err := gofed.FetchBundle(t.Context(), tdB, srv.URL+"/", gofed.WithSPIFFEAuth(trust, serverB))
		if err != nil {
			t.Fatal(err)
		}
		check(t, b)
		// go-spiffe refuses us too when it expects another endpoint ID.
		if _, err := gofed.FetchBundle(t.Context(), tdB, srv.URL+"/", gofed.WithSPIFFEAuth(trust, spiffeid.RequireFromString("spiffe://b.test/other"))); err == nil {
			t.Error("go-spiffe accepted an endpoint with another SPIFFE ID")
		}
	})
	t.Run("https_web", func(t *testing.T) {
		cert, pool := webCert(t)
		dir := t.TempDir()
		certFile, keyFile := writeKeyPair(t, dir, cert)
		cfg, err := federation.WebServerTLS(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		srv := serveTLS(t, ep, cfg)
		b, err := gofed.FetchBundle(t.Context(), tdB, srv.URL+"/", gofed.WithWebPKIRoots(pool))
		if err != nil {
			t.Fatal(err)
		}
		check(t, b)
	})
}

func TestEndpointServesOnlyTheBundle(t *testing.T) {
	ep := &federation.Endpoint{TrustDomain: tdB, Bundle: func() (federation.Authorities, error) { return federation.Authorities{}, errors.New("boom") }}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/other", http.StatusNotFound},
		{"POST", "/", http.StatusMethodNotAllowed},
		{"GET", "/", http.StatusInternalServerError}, // and the error is not shown
	} {
		w := httptest.NewRecorder()
		ep.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if w.Code != tc.want || strings.Contains(w.Body.String(), "boom") {
			t.Errorf("%s %s: %d %q", tc.method, tc.path, w.Code, w.Body.String())
		}
	}
}

package mtls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/fakeclock"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// svidAt issues an SVID valid from notBefore (backdated by 30 s, as the
// agent's CA does) to notAfter.
func (ca *testCA) svidAt(t *testing.T, path string, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	id := spiffeid.RequireFromPath(ca.td, path)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: notBefore.Add(-30 * time.Second), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{id.URL()}, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// svidBox is a rotating x509svid.Source, as the Workload API's is.
type svidBox struct{ p atomic.Pointer[x509svid.SVID] }

func newBox(s *x509svid.SVID) *svidBox {
	b := &svidBox{}
	b.p.Store(s)
	return b
}

func (b *svidBox) GetX509SVID() (*x509svid.SVID, error) { return b.p.Load(), nil }

// events counts what the callbacks of one side report.
type events struct {
	mu              sync.Mutex
	fails, declined []string
	full, resumed   int
}

func (e *events) fail(r string)    { e.mu.Lock(); e.fails = append(e.fails, r); e.mu.Unlock() }
func (e *events) decline(r string) { e.mu.Lock(); e.declined = append(e.declined, r); e.mu.Unlock() }
func (e *events) handshake(resumed bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if resumed {
		e.resumed++
	} else {
		e.full++
	}
}
func (e *events) snapshot() events {
	e.mu.Lock()
	defer e.mu.Unlock()
	return events{fails: append([]string(nil), e.fails...), declined: append([]string(nil), e.declined...), full: e.full, resumed: e.resumed}
}

// tlsServer accepts connections on one loopback address (the client's
// session cache is keyed by it) and reports each handshake's outcome.
type tlsServer struct {
	addr  string
	cfg   *tls.Config
	ln    net.Listener
	state chan serverResult
}

type serverResult struct {
	cs  tls.ConnectionState
	err error
}

func startTLSServer(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: ln.Addr().String(), cfg: cfg, ln: ln, state: make(chan serverResult, 16)}
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer raw.Close()
				raw.SetDeadline(time.Now().Add(10 * time.Second))
				c := tls.Server(raw, cfg)
				err := c.Handshake()
				if err == nil {
					// The ticket goes out with the first write; the client
					// reads it with this byte.
					_, err = c.Write([]byte("x"))
				}
				s.state <- serverResult{c.ConnectionState(), err}
				if err == nil {
					c.Read(make([]byte, 1)) // until the client closes
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

// dial connects with d, reads the server's byte, closes, and returns both
// sides' views.
func (s *tlsServer) dial(t *testing.T, d *Dialer) (client tls.ConnectionState, server serverResult, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", s.addr)
	if err == nil {
		tc := c.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = tc.Read(make([]byte, 1))
		client = tc.ConnectionState()
		tc.Close()
	}
	// A refused dial may have been two handshakes (Dialer's retry): the
	// last one's outcome is what counts.
	for {
		select {
		case server = <-s.state:
		case <-time.After(2 * time.Second):
			return client, server, err
		}
		// The client's retry succeeded: its handshake's outcome may not
		// be in yet behind the refused one's (a race under load).
		if err == nil && server.err != nil {
			continue
		}
		if len(s.state) == 0 {
			return client, server, err
		}
	}
}

type resumeFixture struct {
	ca                   *testCA
	clock                *fakeclock.Clock
	t0                   time.Time
	client, server       *svidBox
	revs                 *Revocations // the server's
	clientRevs           *Revocations
	srvEvents, cliEvents *events
	srv                  *tlsServer
	dialer               *Dialer
}

func newResumeFixture(t *testing.T) *resumeFixture {
	t.Helper()
	ca := newCA(t, "example.org")
	t0 := time.Now().Truncate(time.Second)
	f := &resumeFixture{ca: ca, clock: fakeclock.New(t0), t0: t0, revs: &Revocations{}, clientRevs: &Revocations{},
		srvEvents: &events{}, cliEvents: &events{}}
	f.client = newBox(ca.svidAt(t, "/orders", t0, t0.Add(time.Hour)))
	f.server = newBox(ca.svidAt(t, "/payments", t0, t0.Add(time.Hour)))
	srvCfg := ServerConfig(Options{SVID: f.server, Bundles: ca.bundle(), Authorize: tlsconfig.AuthorizeMemberOf(ca.td), Revocations: f.revs,
		OnFail: f.srvEvents.fail, OnHandshake: f.srvEvents.handshake, OnSessionDeclined: f.srvEvents.decline, Now: f.clock.Now})
	cliCfg := ClientConfig(Options{SVID: f.client, Bundles: ca.bundle(), Authorize: tlsconfig.AuthorizeID(spiffeid.RequireFromPath(ca.td, "/payments")),
		Revocations: f.clientRevs, OnFail: f.cliEvents.fail, OnHandshake: f.cliEvents.handshake, Now: f.clock.Now})
	f.srv = startTLSServer(t, srvCfg)
	f.dialer = &Dialer{Config: cliCfg}
	return f
}

// A second connection resumes the first one's session, and the server
// still verifies the client certificate the session carries: it sees the
// same verified peer, and its verifier ran on the resumption.
func TestSessionResumedAndVerifiedAgain(t *testing.T) {
	f := newResumeFixture(t)
	cs, ss, err := f.srv.dial(t, f.dialer)
	if err != nil || ss.err != nil || cs.DidResume {
		t.Fatalf("first handshake: %v / %v, resumed %v", err, ss.err, cs.DidResume)
	}
	cs, ss, err = f.srv.dial(t, f.dialer)
	if err != nil || ss.err != nil {
		t.Fatalf("second handshake: %v / %v", err, ss.err)
	}
	if !cs.DidResume || !ss.cs.DidResume {
		t.Fatalf("second handshake not resumed (client %v, server %v)", cs.DidResume, ss.cs.DidResume)
	}
	peer, err := PeerID(&ss.cs)
	if err != nil || peer.String() != "spiffe://example.org/orders" {
		t.Fatalf("server's peer on the resumed session: %v %v", peer, err)
	}
	if got := ss.cs.PeerCertificates[0]; !got.Equal(f.client.p.Load().Certificates[0]) {
		t.Fatal("resumed session carries another client certificate")
	}
	if e := f.srvEvents.snapshot(); e.full != 1 || e.resumed != 1 {
		t.Fatalf("server verified %d full and %d resumed handshakes, want 1 and 1", e.full, e.resumed)
	}
	if e := f.cliEvents.snapshot(); e.full != 1 || e.resumed != 1 {
		t.Fatalf("client verified %d full and %d resumed handshakes, want 1 and 1", e.full, e.resumed)
	}
}

// A client whose certificate was revoked after its session began cannot
// resume it: the ticket is declined, and the full handshake refused.
func TestRevokedClientCannotResume(t *testing.T) {
	f := newResumeFixture(t)
	if _, ss, err := f.srv.dial(t, f.dialer); err != nil || ss.err != nil {
		t.Fatalf("first handshake: %v / %v", err, ss.err)
	}
	f.revs.Set([]string{f.client.p.Load().Certificates[0].SerialNumber.Text(16)})
	_, ss, err := f.srv.dial(t, f.dialer)
	if err == nil && ss.err == nil {
		t.Fatal("a revoked client resumed its session")
	}
	e := f.srvEvents.snapshot()
	if len(e.declined) == 0 || e.declined[0] != SessionRevoked {
		t.Fatalf("tickets declined for %v, want %s", e.declined, SessionRevoked)
	}
	if len(e.fails) == 0 || e.fails[len(e.fails)-1] != ReasonRevoked {
		t.Fatalf("refusals %v, want %s", e.fails, ReasonRevoked)
	}
}

// Rotation: past three quarters of the certificate the session was made
// with, the client (which holds a rotated SVID by then) is not resumed but
// handshakes in full and presents its new SVID, so a session never
// carries an old certificate up to its expiry (where every request on it
// would be refused). This fails with plain crypto/tls tickets, which are
// resumed until the certificate expires.
func TestStaleSessionGivesWayToFullHandshake(t *testing.T) {
	f := newResumeFixture(t)
	if _, ss, err := f.srv.dial(t, f.dialer); err != nil || ss.err != nil {
		t.Fatalf("first handshake: %v / %v", err, ss.err)
	}
	f.clock.Add(50 * time.Minute) // past 45 min of 60, before expiry
	rotated := f.ca.svidAt(t, "/orders", f.t0.Add(30*time.Minute), f.t0.Add(90*time.Minute))
	f.client.p.Store(rotated)
	cs, ss, err := f.srv.dial(t, f.dialer)
	if err != nil || ss.err != nil {
		t.Fatalf("handshake after rotation: %v / %v", err, ss.err)
	}
	if cs.DidResume || ss.cs.DidResume {
		t.Fatal("a session whose certificate is due for rotation was resumed")
	}
	if !ss.cs.PeerCertificates[0].Equal(rotated.Certificates[0]) {
		t.Fatal("the server did not get the rotated certificate")
	}
	if e := f.srvEvents.snapshot(); len(e.declined) != 1 || e.declined[0] != SessionStale {
		t.Fatalf("tickets declined for %v, want [%s]", e.declined, SessionStale)
	}
	// The new session is resumable again.
	if cs, _, err := f.srv.dial(t, f.dialer); err != nil || !cs.DidResume {
		t.Fatalf("session of the rotated certificate: %v, resumed %v", err, cs.DidResume)
	}
}

// A session's certificate never outlives its expiry: crypto/tls refuses
// to resume it, and the certificate is then refused in full.
func TestExpiredClientCannotResume(t *testing.T) {
	f := newResumeFixture(t)
	if _, ss, err := f.srv.dial(t, f.dialer); err != nil || ss.err != nil {
		t.Fatalf("first handshake: %v / %v", err, ss.err)
	}
	f.clock.Add(61 * time.Minute)
	if _, ss, err := f.srv.dial(t, f.dialer); err == nil && ss.err == nil {
		t.Fatal("an expired client certificate was accepted")
	}
	if e := f.srvEvents.snapshot(); e.resumed != 0 {
		t.Fatalf("%d resumed handshakes after expiry", e.resumed)
	}
}

// The client verifies a resumed server too: when the server's certificate
// in the session was revoked (and the server rotated to a new SVID), the
// resumption is refused and Dialer's second attempt, a full handshake,
// gets the new certificate, so the caller sees no error.
func TestDialerRetriesRefusedResumption(t *testing.T) {
	f := newResumeFixture(t)
	if _, ss, err := f.srv.dial(t, f.dialer); err != nil || ss.err != nil {
		t.Fatalf("first handshake: %v / %v", err, ss.err)
	}
	old := f.server.p.Load()
	f.server.p.Store(f.ca.svidAt(t, "/payments", f.t0, f.t0.Add(time.Hour)))
	f.clientRevs.Set([]string{old.Certificates[0].SerialNumber.Text(16)})
	cs, ss, err := f.srv.dial(t, f.dialer)
	if err != nil || ss.err != nil {
		t.Fatalf("dial after the server's certificate was revoked: %v / %v", err, ss.err)
	}
	if cs.DidResume || !cs.PeerCertificates[0].Equal(f.server.p.Load().Certificates[0]) {
		t.Fatalf("resumed %v; the client should have the server's new certificate", cs.DidResume)
	}
	if e := f.cliEvents.snapshot(); len(e.fails) != 1 || e.fails[0] != ReasonRevoked {
		t.Fatalf("client refusals %v, want one %s (the resumption)", e.fails, ReasonRevoked)
	}
}

func TestRecycleAt(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name                string
		notBefore, notAfter time.Time
		want                time.Time
	}{
		{"backdated SVID: life counted from issuance", t0.Add(-30 * time.Second), t0.Add(time.Hour), t0.Add(45 * time.Minute)},
		{"not backdated", t0, t0.Add(20 * time.Second), t0.Add(15 * time.Second)},
	} {
		got := RecycleAt(&x509.Certificate{NotBefore: tc.notBefore, NotAfter: tc.notAfter})
		if !got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestTicketGuardRoundTrip(t *testing.T) {
	leaf := &x509.Certificate{SerialNumber: big.NewInt(0xabc), NotBefore: time.Unix(1000, 0), NotAfter: time.Unix(5000, 0)}
	extra := [][]byte{[]byte("other-layer"), encodeTicketGuard(leaf)}
	g, ok := findTicketGuard(extra)
	if !ok || g.serial != "abc" || !g.recycleAt.Equal(RecycleAt(leaf).Truncate(time.Second)) {
		t.Fatalf("got %+v %v", g, ok)
	}
	for _, bad := range [][]byte{nil, []byte(ticketGuardTag), []byte("rampart-ticket-v2:12345678")} {
		if _, ok := findTicketGuard([][]byte{bad}); ok {
			t.Errorf("%q parsed as a ticket guard", bad)
		}
	}
}

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// domain is one trust domain: its server (serving its bundle endpoint),
// one agent, and proxy binaries attested as its services.
type domain struct {
	t       *testing.T
	td      string
	s       *server
	a       *agent
	fedAddr string
	binDir  string
}

func newDomain(t *testing.T, td string) *domain {
	t.Helper()
	root := t.TempDir()
	d := &domain{t: t, td: td, fedAddr: freeAddr(t), binDir: t.TempDir()}
	d.s = startServer(t, filepath.Join(root, "server"), "--trust-domain", td, "--federation-listen", d.fedAddr, "--federation-refresh-hint", "30s")
	tok := mustCLI(t, d.s.adminEnv(), "token", "create", "--agent-name", "node-1")
	d.a = startAgent(t, d.s, filepath.Join(root, "agent"), tok)
	return d
}

// identity registers spiffe://TD/NAME for a copy of the binary at
// binDir/NAME-proxy, federating with the trust domains fedWith.
func (d *domain) identity(name string, fedWith ...string) {
	d.t.Helper()
	bin := filepath.Join(d.binDir, name+"-proxy")
	b, err := os.ReadFile(rampartBin)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		d.t.Fatal(err)
	}
	args := []string{"entry", "create", "--spiffe-id", "spiffe://" + d.td + "/" + name, "--parent", "spiffe://" + d.td + "/rampart/agent/node-1",
		"--selector", myUID(), "--selector", "unix:path:" + bin}
	for _, td := range fedWith {
		args = append(args, "--federates-with", td)
	}
	mustCLI(d.t, d.s.adminEnv(), args...)
}

func (d *domain) proxy(name string, args ...string) []string {
	d.t.Helper()
	bin := filepath.Join(d.binDir, name+"-proxy")
	ready := filepath.Join(d.binDir, name+".ready")
	p := startBin(d.t, bin, []string{"RAMPART_READY_FILE=" + ready}, append([]string{"proxy", "--socket", d.a.socket, "--server", d.s.addr}, args...)...)
	return strings.Split(strings.TrimRight(waitFile(d.t, p, ready), "\n"), "\n")
}

// federateWith makes d trust other: other's bundle, taken from other's
// CLI (out of band), bootstraps the https_spiffe relationship.
func (d *domain) federateWith(other *domain) {
	d.t.Helper()
	f := filepath.Join(d.binDir, other.td+".bundle.json")
	mustCLI(d.t, other.s.adminEnv(), "federation", "bundle", "--out", f)
	mustCLI(d.t, d.s.adminEnv(), "federation", "create", "--trust-domain", other.td, "--bundle-endpoint-url", "https://"+other.fedAddr+"/",
		"--profile", "https_spiffe", "--endpoint-spiffe-id", "spiffe://"+other.td+"/rampart/server", "--bundle-file", f)
}

// A service of trust domain A calls one of B through their proxies, as B's
// policy names it; refused: a caller of A the policy does not name, a
// caller of A whose entry does not federate with B (its proxy is not given
// B's bundle, so it cannot verify B's), a caller of a trust domain B does
// not federate with, a certificate naming A's service from a CA that is
// not A's, and every A caller once B ends the federation.
func TestFederationTwoTrustDomains(t *testing.T) {
	a, b := newDomain(t, "a.example"), newDomain(t, "b.example")
	a.federateWith(b)
	b.federateWith(a)

	// Each side refreshed the other's bundle from its endpoint.
	for _, d := range []*domain{a, b} {
		eventually(t, 20*time.Second, d.td+" refreshed its peer's bundle", func() error {
			out := mustCLI(t, d.s.adminEnv(), "federation", "list", "--json")
			var fs []struct {
				LastAttempt *time.Time `json:"last_attempt"`
				LastError   string     `json:"last_error"`
			}
			if err := json.Unmarshal([]byte(out), &fs); err != nil || len(fs) != 1 {
				return fmt.Errorf("list: %v %s", err, out)
			}
			if fs[0].LastAttempt == nil || fs[0].LastError != "" {
				return fmt.Errorf("not refreshed yet: %s", out)
			}
			return nil
		})
	}

	// An entry naming a trust domain with no relationship is refused.
	if out, err := cli(t, a.s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://a.example/x", "--parent", "spiffe://a.example/rampart/agent/node-1",
		"--selector", myUID(), "--federates-with", "c.example"); err == nil || !strings.Contains(out, "no federation relationship with c.example") {
		t.Fatalf("federates_with an unknown trust domain: %v %s", err, out)
	}
	a.identity("orders", "b.example")
	a.identity("rogue", "b.example")
	a.identity("loner")
	b.identity("payments", "a.example")
	pol := filepath.Join(b.binDir, "payments.yaml")
	os.WriteFile(pol, []byte(`service: spiffe://b.example/payments
rules:
  - name: a-orders-reads-payments
    callers: [spiffe://a.example/orders]
    methods: [GET]
    paths: ["/payments/{id}"]
`), 0o600)
	mustCLI(t, b.s.adminEnv(), "policy", "put", pol)

	inB := b.proxy("payments", "--inbound", "127.0.0.1:0", "--app", app(t))[0]
	outOrders := a.proxy("orders", "--outbound", "127.0.0.1:0="+inB+",spiffe://b.example/payments")[1]
	outRogue := a.proxy("rogue", "--outbound", "127.0.0.1:0="+inB+",spiffe://b.example/payments")[1]
	outLoner := a.proxy("loner", "--outbound", "127.0.0.1:0="+inB+",spiffe://b.example/payments")[1]

	// Allowed: A's orders, named by B's policy; the app sees A's identity.
	var saw appSaw
	eventually(t, 30*time.Second, "a.example/orders reaches b.example/payments", func() error {
		code, body := get(t, "http://"+outOrders+"/payments/7", nil)
		if code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return json.Unmarshal([]byte(body), &saw)
	})
	if len(saw.Caller) != 1 || saw.Caller[0] != "spiffe://a.example/orders" {
		t.Fatalf("the app saw caller %v", saw.Caller)
	}
	// Refused by the policy: an A caller it does not name, a method it
	// does not allow.
	if code, body := get(t, "http://"+outRogue+"/payments/7", nil); code != 403 {
		t.Fatalf("a.example/rogue: %d %s", code, body)
	}
	// Not federating: the loner's proxy holds only A's bundle and refuses
	// B's certificate; nothing reaches B's app.
	if code, body := get(t, "http://"+outLoner+"/payments/7", nil); code == 200 || code == 403 {
		t.Fatalf("a.example/loner (no federates_with): %d %s", code, body)
	}

	// Refused at the handshake: a client certificate of a trust domain B
	// does not federate with, and one naming A's orders from a CA that
	// is not A's.
	for _, id := range []string{"spiffe://c.example/orders", "spiffe://a.example/orders"} {
		cert := forgedSVID(t, id)
		c, err := tls.Dial("tcp", inB, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if err == nil {
			// TLS 1.3: the server's verdict on the client certificate
			// arrives with the first read.
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "GET /payments/7 HTTP/1.1\r\nHost: payments\r\n\r\n")
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Fatalf("%s from a foreign CA was let in", id)
		}
	}

	// B ends the federation: A's bundle leaves B's agent and proxy, and
	// A's orders is refused.
	mustCLI(t, b.s.adminEnv(), "federation", "delete", "a.example")
	eventually(t, 30*time.Second, "a.example/orders refused after B ended the federation", func() error {
		if code, _ := get(t, "http://"+outOrders+"/payments/8", nil); code == 200 {
			return fmt.Errorf("still allowed")
		}
		return nil
	})
}

// forgedSVID is an X.509-SVID of id from a CA made here, not any trust
// domain's.
func forgedSVID(t *testing.T, id string) tls.Certificate {
	t.Helper()
	u, _ := url.Parse(id)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{{Scheme: "spiffe", Host: u.Host}}}
	caDER, _ := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{u}}
	der, _ := x509.CreateCertificate(rand.Reader, leaf, caCert, key.Public(), caKey)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

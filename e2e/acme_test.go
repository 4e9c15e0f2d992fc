package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/acme"
	legoapi "github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/http01"
	"github.com/go-acme/lego/v5/challenge/tlsalpn01"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"

	"github.com/rampartsec/rampart/internal/acme/acmetest"
	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/identity"
)

// The ACME server against real clients on loopback: a real rampart server
// process, a DNS server that sends *.acme.test to 127.0.0.1 (the server
// validates through it: --acme-dns-resolver), challenge ports moved off
// 80 and 443 (--acme-http-port, --acme-tls-port), lego as a library and
// certbot as a process.

type acmeEnv struct {
	srv       *server
	dns       *acmetest.DNS
	httpPort  int
	tlsPort   int
	directory string
	bundle    *x509.CertPool
	admin     *api.Client
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startACME(t *testing.T, extra ...string) *acmeEnv {
	t.Helper()
	dns, err := acmetest.StartDNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dns.Close)
	dns.SetDefault(netip.MustParseAddr("127.0.0.1"))
	e := &acmeEnv{dns: dns, httpPort: freePort(t), tlsPort: freePort(t)}
	e.srv = startServer(t, t.TempDir(), append([]string{"--acme-dns-resolver", dns.Addr, "--acme-http-port", strconv.Itoa(e.httpPort),
		"--acme-tls-port", strconv.Itoa(e.tlsPort), "--acme-allow", "*.acme.test"}, extra...)...)
	e.directory = "https://" + e.srv.addr + "/acme/directory"
	hc, tok := adminHTTP(t, e.srv)
	e.bundle = hc.Transport.(*http.Transport).TLSClientConfig.RootCAs
	e.admin = &api.Client{BaseURL: "https://" + e.srv.addr, HTTP: hc, AdminToken: tok}
	return e
}

func (e *acmeEnv) eab(t *testing.T, names ...string) api.ACMEEABKey {
	t.Helper()
	var k api.ACMEEABKey
	if err := e.admin.Do(t.Context(), http.MethodPost, "/v1/acme/eab-keys", api.ACMEEABKeyRequest{AllowedNames: names, Label: t.Name()}, &k); err != nil {
		t.Fatal(err)
	}
	return k
}

// checkProfile checks that chain (leaf first) chains to the server's
// bundle for names and carries the TLS profile.
func (e *acmeEnv) checkProfile(t *testing.T, chain []*x509.Certificate, names ...string) {
	t.Helper()
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: e.bundle, Intermediates: inter}); err != nil {
			t.Errorf("certificate for %s does not verify against the bundle: %v", n, err)
		}
	}
	if len(leaf.URIs) != 0 {
		t.Errorf("URI SANs %v: an ACME certificate carries no SPIFFE ID", leaf.URIs)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("EKU %v: want server auth only", leaf.ExtKeyUsage)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 25*time.Hour {
		t.Errorf("lifetime %v, want the 24h default", life)
	}
}

type legoUser struct {
	key crypto.Signer
	reg *acme.ExtendedAccount
}

func (u *legoUser) GetEmail() string                       { return "" }
func (u *legoUser) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.Signer           { return u.key }

// legoClient registers a lego account with an EAB key for names.
func (e *acmeEnv) legoClient(t *testing.T, names ...string) *lego.Client {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u := &legoUser{key: k}
	cfg := lego.NewConfig(u)
	cfg.CADirURL = e.directory
	cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.bundle, MinVersion: tls.VersionTLS13}}}
	c, err := lego.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eab := e.eab(t, names...)
	reg, err := c.Registration.RegisterWithExternalAccountBinding(t.Context(), registration.RegisterEABOptions{TermsOfServiceAgreed: true, Kid: eab.KeyID, HmacEncoded: eab.HMACKey})
	if err != nil {
		t.Fatal(err)
	}
	u.reg = reg
	return c
}

func parseChain(t *testing.T, pemBytes []byte) []*x509.Certificate {
	t.Helper()
	chain, err := identity.ParsePEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

// acmeProblem returns the ACME error type of a lego error.
func acmeProblem(err error) string {
	var p *acme.ProblemDetails
	if errors.As(err, &p) {
		return p.Type
	}
	return ""
}

func TestACMELego(t *testing.T) {
	e := startACME(t)

	t.Run("http-01", func(t *testing.T) {
		c := e.legoClient(t, "*.lego.acme.test")
		if err := c.Challenge.SetHTTP01Provider(http01.NewProviderServer("127.0.0.1", strconv.Itoa(e.httpPort))); err != nil {
			t.Fatal(err)
		}
		res, err := c.Certificate.Obtain(t.Context(), certificate.ObtainRequest{Domains: []string{"web.lego.acme.test", "api.lego.acme.test"}, Bundle: true, KeyType: certcrypto.EC256})
		if err != nil {
			t.Fatal(err)
		}
		e.checkProfile(t, parseChain(t, res.Certificate), "web.lego.acme.test", "api.lego.acme.test")

		// A name outside the account's names is refused, with the names
		// the account may order.
		_, err = c.Certificate.Obtain(t.Context(), certificate.ObtainRequest{Domains: []string{"web.other.acme.test"}, KeyType: certcrypto.EC256})
		if acmeProblem(err) != "urn:ietf:params:acme:error:rejectedIdentifier" || !strings.Contains(err.Error(), "*.lego.acme.test") {
			t.Fatalf("a name outside the account's: %v", err)
		}
	})

	t.Run("tls-alpn-01", func(t *testing.T) {
		c := e.legoClient(t, "*.lego.acme.test")
		if err := c.Challenge.SetTLSALPN01Provider(tlsalpn01.NewProviderServer("127.0.0.1", strconv.Itoa(e.tlsPort))); err != nil {
			t.Fatal(err)
		}
		res, err := c.Certificate.Obtain(t.Context(), certificate.ObtainRequest{Domains: []string{"tls.lego.acme.test"}, Bundle: true, KeyType: certcrypto.EC256})
		if err != nil {
			t.Fatal(err)
		}
		e.checkProfile(t, parseChain(t, res.Certificate), "tls.lego.acme.test")
	})

	t.Run("renewal with ARI", func(t *testing.T) {
		c := e.legoClient(t, "*.lego.acme.test")
		if err := c.Challenge.SetHTTP01Provider(http01.NewProviderServer("127.0.0.1", strconv.Itoa(e.httpPort))); err != nil {
			t.Fatal(err)
		}
		res, err := c.Certificate.Obtain(t.Context(), certificate.ObtainRequest{Domains: []string{"renew.lego.acme.test"}, Bundle: true, KeyType: certcrypto.EC256})
		if err != nil {
			t.Fatal(err)
		}
		leaf := parseChain(t, res.Certificate)[0]
		ri, err := c.Certificate.GetRenewalInfo(t.Context(), leaf)
		if err != nil {
			t.Fatal(err)
		}
		if at := ri.ShouldRenewAt(time.Now(), 0); at != nil {
			t.Fatalf("a fresh certificate should not be renewed now (window %v to %v)", ri.SuggestedWindow.Start, ri.SuggestedWindow.End)
		}
		// The operator revokes it (the CLI, as an operator would): ARI
		// tells the client to renew at once.
		serial := leaf.SerialNumber.Text(16)
		out := mustCLI(t, e.srv.adminEnv(), "acme", "certs", "revoke", serial, "--reason", "superseded")
		if !strings.Contains(out, "revoked") {
			t.Fatalf("certs revoke: %s", out)
		}
		if ri, err = c.Certificate.GetRenewalInfo(t.Context(), leaf); err != nil {
			t.Fatal(err)
		}
		if at := ri.ShouldRenewAt(time.Now(), 0); at == nil {
			t.Fatalf("a revoked certificate should be renewed now (window %v to %v)", ri.SuggestedWindow.Start, ri.SuggestedWindow.End)
		}
		renewed, err := c.Certificate.Renew(t.Context(), *res, &certificate.RenewOptions{UseARICertID: true, Bundle: true, KeyType: certcrypto.EC256})
		if err != nil {
			t.Fatal(err)
		}
		e.checkProfile(t, parseChain(t, renewed.Certificate), "renew.lego.acme.test")
		// The server knows the old one was replaced, and refuses a second
		// replacement.
		var certs []api.ACMECert
		if err := json.Unmarshal([]byte(mustCLI(t, e.srv.adminEnv(), "acme", "certs", "list", "--all", "--json")), &certs); err != nil {
			t.Fatal(err)
		}
		var old *api.ACMECert
		for i := range certs {
			if certs[i].Serial == serial {
				old = &certs[i]
			}
		}
		id, _ := legoapi.MakeARICertID(leaf)
		if old == nil || old.ReplacedBy == "" || old.Status != "revoked" || old.CertID != id {
			t.Fatalf("the replaced certificate as the server lists it: %+v", old)
		}
		var renewedOrder string
		for _, c := range certs {
			if c.Serial == parseChain(t, renewed.Certificate)[0].SerialNumber.Text(16) {
				renewedOrder = c.Order
			}
		}
		if old.ReplacedBy != renewedOrder {
			t.Fatalf("replaced by %q, want the renewal's order %q", old.ReplacedBy, renewedOrder)
		}
		// lego answers alreadyReplaced (RFC 9773 §5) by ordering again
		// without replaces: the server refused, and the replacement
		// stands.
		if _, err := c.Certificate.Obtain(t.Context(), certificate.ObtainRequest{Domains: []string{"renew.lego.acme.test"}, ReplacesCertID: id, KeyType: certcrypto.EC256}); err != nil {
			t.Fatal(err)
		}
		if n := metric(t, e, `rampart_acme_problems_total{error="alreadyReplaced"}`); n != 1 {
			t.Fatalf("alreadyReplaced answered %v times, want 1", n)
		}
		if err := e.admin.Do(t.Context(), http.MethodGet, "/v1/acme/certs?all=true", nil, &certs); err != nil {
			t.Fatal(err)
		}
		for _, c := range certs {
			if c.Serial == serial && c.ReplacedBy != renewedOrder {
				t.Fatalf("a refused replacement took over: replaced by %q", c.ReplacedBy)
			}
		}
	})

	t.Run("refused without EAB", func(t *testing.T) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		cfg := lego.NewConfig(&legoUser{key: k})
		cfg.CADirURL = e.directory
		cfg.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.bundle}}}
		c, err := lego.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !c.GetServerMetadata().ExternalAccountRequired {
			t.Error("the directory does not say an external account is required")
		}
		_, err = c.Registration.Register(t.Context(), registration.RegisterOptions{TermsOfServiceAgreed: true})
		if acmeProblem(err) != "urn:ietf:params:acme:error:externalAccountRequired" {
			t.Fatalf("registration without EAB: %v", err)
		}
	})
}

// certbot, the Debian package, as a process: EAB, http-01 on a high port
// (standalone), the server's bundle as its CA (never --no-verify-ssl), then
// revocation with its account key.
func TestACMECertbot(t *testing.T) {
	certbot, err := exec.LookPath("certbot")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("certbot is not installed; .ci/run installs it")
		}
		t.Skip("certbot is not installed (apt-get install certbot)")
	}
	e := startACME(t)
	dir := t.TempDir()
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, certbot, append(args, "--non-interactive", "--config-dir", filepath.Join(dir, "config"),
			"--work-dir", filepath.Join(dir, "work"), "--logs-dir", filepath.Join(dir, "logs"), "--server", e.directory)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "REQUESTS_CA_BUNDLE=" + filepath.Join(e.srv.dir, "bundle.pem")}
		out, err := cmd.CombinedOutput()
		if err != nil {
			if log, rerr := os.ReadFile(filepath.Join(dir, "logs", "letsencrypt.log")); rerr == nil {
				out = append(out, "\n--- letsencrypt.log:\n"...)
				out = append(out, log...)
			}
		}
		return string(out), err
	}
	k := e.eab(t, "*.certbot.acme.test")
	certonly := func(name string) (string, error) {
		return run("certonly", "--standalone", "--http-01-port", strconv.Itoa(e.httpPort), "--http-01-address", "127.0.0.1",
			"--agree-tos", "--register-unsafely-without-email", "--eab-kid", k.KeyID, "--eab-hmac-key="+k.HMACKey, // "=": a key may begin with "-"
			"--key-type", "ecdsa", "-d", name)
	}
	if out, err := certonly("web.certbot.acme.test"); err != nil {
		t.Fatalf("certbot certonly: %v\n%s", err, out)
	}
	pemBytes, err := os.ReadFile(filepath.Join(dir, "config", "live", "web.certbot.acme.test", "fullchain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	chain := parseChain(t, pemBytes)
	e.checkProfile(t, chain, "web.certbot.acme.test")

	// A name outside the key's names: certbot reports the refusal.
	out, err := certonly("web.other.acme.test")
	if err == nil || !strings.Contains(out, "rejectedIdentifier") {
		t.Fatalf("certbot for a name outside the account's: %v\n%s", err, out)
	}

	// Revocation with the account key.
	if out, err := run("revoke", "--cert-path", filepath.Join(dir, "config", "live", "web.certbot.acme.test", "cert.pem"),
		"--reason", "superseded", "--no-delete-after-revoke"); err != nil {
		t.Fatalf("certbot revoke: %v\n%s", err, out)
	}
	var certs []api.ACMECert
	if err := e.admin.Do(t.Context(), http.MethodGet, "/v1/acme/certs?all=true", nil, &certs); err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 || certs[0].Serial != chain[0].SerialNumber.Text(16) || certs[0].Status != "revoked" || certs[0].RevocationReason != "superseded" {
		t.Fatalf("certificates after certbot revoke: %+v", certs)
	}
}

// metric reads one sample from the server's /metrics (with the admin
// token); 0 if it is absent.
func metric(t *testing.T, e *acmeEnv, name string) float64 {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+e.srv.addr+"/metrics", nil)
	tok, err := os.ReadFile(filepath.Join(e.srv.dir, "metrics.token")) // the scrape token: /metrics takes no admin token
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := e.admin.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

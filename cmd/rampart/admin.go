package main

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/identity/ids"
	"github.com/rampartsec/rampart/internal/operator"
	"github.com/rampartsec/rampart/internal/signin"
)

type adminFlags struct {
	server, bundle string
	token          *secretFlag
}

func addAdminFlags(fs *flag.FlagSet) *adminFlags {
	a := &adminFlags{}
	fs.StringVar(&a.server, "server", "127.0.0.1:8443", "server API address")
	a.token = addSecretFlag(fs, "admin-token", "the admin token", "; the server wrote it to DATA/admin.token")
	fs.StringVar(&a.bundle, "ca-bundle", "", "the server's bundle.pem, to verify the server")
	return a
}

// client returns an API client for the server, authenticated by (in
// this order) the admin token file given on the command line (break
// glass, deliberate), the operator signed in with rampart login, or the
// admin token from the environment.
func (a *adminFlags) client(env *cliEnv) (*api.Client, error) {
	var sess *signin.Session
	tok := ""
	if !a.token.onCommandLine {
		dir, err := a.sessionDir(env)
		if err == nil {
			sess, err = signin.Load(dir)
		}
		if err != nil && !errors.Is(err, signin.ErrNoSession) && !errors.Is(err, errNoConfigDir) {
			return nil, err
		}
	}
	if sess == nil {
		var err error
		if tok, err = a.token.get(); err != nil {
			return nil, err
		}
		if tok == "" {
			return nil, usagef("no admin token: set RAMPART_ADMIN_TOKEN or --admin-token-file (the server wrote it to DATA/admin.token; break glass, every use alerted on), or sign in as an operator: rampart login")
		}
	}
	hc, err := a.httpClient()
	if err != nil {
		return nil, err
	}
	c := &api.Client{BaseURL: "https://" + trimScheme(a.server), HTTP: hc, AdminToken: tok}
	if sess != nil {
		sess.Client = a.signinClient(hc, sess.Key)
		c.Authorize = sess.Authorize
	}
	return c, nil
}

// httpClient verifies the server against the CA bundle.
func (a *adminFlags) httpClient() (*http.Client, error) {
	if a.bundle == "" {
		return nil, usagef("no CA bundle to verify the server: set RAMPART_CA_BUNDLE or --ca-bundle (the server wrote DATA/bundle.pem)")
	}
	pem, err := os.ReadFile(a.bundle)
	if err != nil {
		return nil, fmt.Errorf("ca bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca bundle %s: no certificates", a.bundle)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: serverTLS(pool)}}, nil
}

// sessionDir is where the operator session for this server is kept.
func (a *adminFlags) sessionDir(env *cliEnv) (string, error) {
	dir, err := configDir(env)
	if err != nil {
		return "", err
	}
	return signin.Dir(dir, trimScheme(a.server)), nil
}

// session loads the operator session for this server (signin.ErrNoSession
// if nobody signed in here).
func (a *adminFlags) session(env *cliEnv, hc *http.Client) (*signin.Session, error) {
	dir, err := a.sessionDir(env)
	if err != nil {
		return nil, fmt.Errorf("%w (%w)", signin.ErrNoSession, err)
	}
	s, err := signin.Load(dir)
	if err != nil {
		return nil, err
	}
	s.Client = a.signinClient(hc, s.Key)
	return s, nil
}

func (a *adminFlags) signinClient(hc *http.Client, key crypto.Signer) *signin.Client {
	return &signin.Client{Issuer: "https://" + trimScheme(a.server), ClientID: operator.ClientID, HTTP: hc, Key: key}
}

// configDir is the user's configuration directory: $XDG_CONFIG_HOME, or
// $HOME/.config (the XDG Base Directory default).
// errNoConfigDir: neither XDG_CONFIG_HOME nor HOME says where to keep
// the session.
var errNoConfigDir = errors.New("neither XDG_CONFIG_HOME nor HOME is an absolute path: nowhere to keep the operator session")

func configDir(env *cliEnv) (string, error) {
	if env.getenv == nil {
		return "", errNoConfigDir
	}
	if d := env.getenv("XDG_CONFIG_HOME"); filepath.IsAbs(d) {
		return d, nil
	}
	if h := env.getenv("HOME"); filepath.IsAbs(h) {
		return filepath.Join(h, ".config"), nil
	}
	return "", errNoConfigDir
}

// serverTLS verifies the server against the bundle, by the address it is
// reached at and by its SPIFFE ID (spiffe://TD/rampart/server): the bundle
// also vouches for the TLS certificates ACME issues (for names, not IDs),
// and one of those for a name the CLI uses (another replica's, a load
// balancer's) would otherwise pass for the server and receive the admin
// token. Only the server's own certificate carries that ID (workload
// entries may not use /rampart/ paths).
func serverTLS(pool *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, VerifyConnection: func(cs tls.ConnectionState) error {
		leaf := cs.PeerCertificates[0]
		if len(leaf.URIs) == 1 {
			if id, err := spiffeid.FromURI(leaf.URIs[0]); err == nil && id == ids.ServerID(id.TrustDomain()) {
				if !ids.DirectChain(cs.VerifiedChains) {
					return fmt.Errorf("the certificate of %s carries the server's ID but was signed under a downstream CA", cs.ServerName)
				}
				return nil
			}
		}
		return fmt.Errorf("the certificate of %s is not the Rampart server's (it carries no spiffe://TRUST-DOMAIN/rampart/server ID; URIs %v)", cs.ServerName, leaf.URIs)
	}}
}

func printJSON(env *cliEnv, v any) error {
	enc := json.NewEncoder(env.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printFields(env *cliEnv, kv ...string) error {
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], kv[i+1])
	}
	return tw.Flush()
}

type tableWriter struct{ tw *tabwriter.Writer }

func table(env *cliEnv, headers ...string) *tableWriter {
	t := &tableWriter{tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)}
	t.row(headers...)
	return t
}

func (t *tableWriter) row(cells ...string) { fmt.Fprintln(t.tw, strings.Join(cells, "\t")) }
func (t *tableWriter) flush() error        { return t.tw.Flush() }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func pathEscape(s string) string { return url.PathEscape(s) }

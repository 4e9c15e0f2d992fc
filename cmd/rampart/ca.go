package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/safedir"
	"github.com/rampartsec/rampart/internal/svid"
	"github.com/rampartsec/rampart/internal/workload/endpoint"
)

const caUsage = `rampart ca status [--json]
       rampart ca rotate (--intermediate | --root-prepare | --root-activate) [--json]
       rampart ca init-root --trust-domain TD --out DIR [--ttl 87600h]
       rampart ca downstream --server ADDR --out-cert FILE --out-key FILE [--out-bundle FILE] [--socket PATH] [--ttl D]`

func runCA(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("usage: %s", caUsage)
	}
	switch args[0] {
	case "status", "rotate":
	case "init-root":
		return runCAInitRoot(env, args[1:])
	case "downstream":
		return runCADownstream(ctx, env, args[1:])
	case "-h", "--help":
		fmt.Fprintln(env.stdout, "Usage: "+caUsage)
		return nil
	default:
		return usagef("unknown verb %q; usage: %s", args[0], caUsage)
	}
	verb := args[0]
	fs := newFlags(env, "ca "+verb, caUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	inter := fs.Bool("intermediate", false, "replace the intermediate CA now")
	prep := fs.Bool("root-prepare", false, "create the next root and publish it in the bundle")
	act := fs.Bool("root-activate", false, "sign with the prepared root from now on (the old one stays in the bundle until it expires)")
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	c, err := ac.client(env)
	if err != nil {
		return err
	}
	var st api.CAStatus
	if verb == "status" {
		err = c.Do(ctx, http.MethodGet, "/v1/ca", nil, &st)
	} else {
		var target string
		n := 0
		for t, on := range map[string]bool{api.RotateIntermediate: *inter, api.RotateRootPrepare: *prep, api.RotateRootActivate: *act} {
			if on {
				target, n = t, n+1
			}
		}
		if n != 1 {
			return usagef("ca rotate needs exactly one of --intermediate, --root-prepare, --root-activate")
		}
		err = c.Do(ctx, http.MethodPost, "/v1/ca/rotate", api.RotateRequest{Target: target}, &st)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, st)
	}
	fmt.Fprintf(env.stdout, "trust domain %s\n", st.TrustDomain)
	tw := table(env, "KIND", "STATE", "ID", "NOT AFTER", "LEFT")
	for _, k := range st.Keys {
		tw.row(k.Kind, k.State, k.ID, fmtTime(k.NotAfter), time.Until(k.NotAfter).Round(time.Minute).String())
	}
	return tw.flush()
}

// runCAInitRoot creates a root to keep outside the server: the server is
// then started with --upstream-ca-cert/--upstream-ca-key and never stores it.
func runCAInitRoot(env *cliEnv, args []string) error {
	fs := newFlags(env, "ca init-root", "rampart ca init-root --trust-domain TD --out DIR [--ttl 87600h]")
	tdName := fs.String("trust-domain", "", "trust domain (required)")
	out := fs.String("out", "", "directory for root.pem and root.key (0600) (required)")
	ttl := fs.Duration("ttl", 10*365*24*time.Hour, "root lifetime")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *tdName == "" || *out == "" {
		return usagef("--trust-domain and --out are required")
	}
	td, err := spiffeid.TrustDomainFromString(*tdName)
	if err != nil {
		return usagef("--trust-domain: %v", err)
	}
	// Whoever else controls the directory could swap the root key for
	// one they know before it is used to sign intermediates (safedir).
	if *out, err = safedir.Make(*out, "the --out directory", os.Geteuid(), 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl, err := svid.CATemplate(td, "Rampart offline root "+td.Name(), now, now.Add(*ttl), -1)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	cert, _ := x509.ParseCertificate(der)
	keyPath := filepath.Join(*out, "root.key")
	if _, err := os.Stat(keyPath); err == nil {
		return fmt.Errorf("%s exists; refusing to overwrite a root key", keyPath)
	}
	if err := identity.WriteKeyFile(keyPath, key); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "root.pem"), identity.EncodePEM([]*x509.Certificate{cert}), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "wrote %s and %s\nstart the server with --upstream-ca-cert %s --upstream-ca-key %s, and keep root.key offline between intermediate rotations\n",
		filepath.Join(*out, "root.pem"), keyPath, filepath.Join(*out, "root.pem"), keyPath)
	return nil
}

const caDownstreamUsage = `rampart ca downstream --server ADDR --out-cert FILE --out-key FILE [--out-bundle FILE] [--socket PATH] [--ttl D]

Mints a downstream CA (SPIRE's MintX509CA) for this workload: its SVID,
fetched from the agent's Workload API, must be that of an entry marked
downstream (set by an admin), and the server must run with
--downstream-max-ttl. The key is made here and never leaves this host
(--out-key, 0600); the server signs a CA certificate for it, constrained
to the trust domain's SPIFFE IDs (no DNS names, no IP addresses), with
path length 1 and a life of at most the server's maximum.
--out-cert gets the chain (the new CA first, then the server's
intermediate), --out-bundle the trust bundle's roots.`

// runCADownstream asks the server for a downstream CA over mTLS with
// this workload's SVID.
func runCADownstream(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "ca downstream", caDownstreamUsage)
	ws := addWorkloadFlags(fs)
	server := fs.String("server", "", "the Rampart server's API address (host:port)")
	outCert := fs.String("out-cert", "", "write the CA certificate chain here (PEM: the new CA, then the server's intermediate)")
	outKey := fs.String("out-key", "", "write the CA's private key here (PKCS#8 PEM, 0600)")
	outBundle := fs.String("out-bundle", "", "write the trust bundle's roots here (PEM)")
	ttl := fs.Duration("ttl", 0, "ask for this life (0: the server's maximum; never more)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *server == "" || *outCert == "" || *outKey == "" {
		return usagef("ca downstream needs --server, --out-cert and --out-key")
	}
	if *ttl < 0 {
		return usagef("--ttl must be positive (or 0 for the server's maximum)")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	socket, want, err := ws.resolve(env)
	if err != nil {
		return err
	}
	opts, err := endpoint.ClientOptions(ctx, socket, want)
	if err != nil {
		return err
	}
	x509ctx, err := workloadapi.FetchX509Context(ctx, opts...)
	if err != nil {
		return fmt.Errorf("fetch the SVID from %s: %w", socket, err)
	}
	me := x509ctx.DefaultSVID()
	c := authz.ServerClient(*server, me.ID.TrustDomain(), me, x509ctx.Bundles)
	var resp api.DownstreamResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/ca/downstream", api.DownstreamRequest{CSR: csr, TTLSeconds: int64(*ttl / time.Second)}, &resp); err != nil {
		return fmt.Errorf("as %s: %w", me.ID, err)
	}
	chain, err := parseDERs(resp.Chain)
	if err != nil || len(chain) == 0 || !key.PublicKey.Equal(chain[0].PublicKey) {
		return fmt.Errorf("the server's answer is not a chain for the key made here (%v)", err)
	}
	// The key first: a chain without its key is of no use, a key without
	// its chain is made again next time.
	if err := identity.WriteKeyFile(*outKey, key); err != nil {
		return err
	}
	if err := os.WriteFile(*outCert, identity.EncodePEM(chain), 0o644); err != nil {
		return err
	}
	if *outBundle != "" {
		roots, err := parseDERs(resp.Bundle)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*outBundle, identity.EncodePEM(roots), 0o644); err != nil {
			return err
		}
	}
	if *asJSON {
		return printJSON(env, map[string]any{"spiffe_id": me.ID.String(), "serial": resp.Serial, "expires_at": resp.ExpiresAt})
	}
	fmt.Fprintf(env.stdout, "downstream CA serial %s for %s, expires %s; wrote %s and %s\n", resp.Serial, me.ID, fmtTime(resp.ExpiresAt), *outCert, *outKey)
	return nil
}

func parseDERs(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

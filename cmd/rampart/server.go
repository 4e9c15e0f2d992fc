package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/term"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/federation"
	"github.com/rampartsec/rampart/internal/keywrap"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/server"
)

// secretReader returns a function that reads a secret from path (- is
// standard input) or, without a path, asks for it on the terminal without
// echo. Secrets never come from flags: flags show in ps.
func secretReader(env *cliEnv, path, prompt string) func() ([]byte, error) {
	return func() ([]byte, error) {
		if path != "" {
			s, err := readPassword(path)
			return []byte(s), err
		}
		fd := int(os.Stdin.Fd())
		if !term.IsTerminal(fd) {
			return nil, errors.New("no terminal to ask on; give a file (or - for standard input)")
		}
		fmt.Fprint(env.stderr, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(env.stderr)
		return b, err
	}
}

func newLogger(env *cliEnv, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(env.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.stderr, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}

func runServer(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "server", "rampart server --data DIR --trust-domain TD [--listen ADDR] [flags]")
	var cfg server.Config
	var td, logLevel, logFormat string
	var dns listFlag
	var err error
	fs.StringVar(&cfg.DataDir, "data", "rampart-data", "data directory (created on first start)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8443", "address of the HTTPS API")
	fs.StringVar(&td, "trust-domain", "", "SPIFFE trust domain, e.g. example.org (required)")
	fs.Var(&dns, "dns", "extra DNS name for the server certificate (repeatable)")
	fs.Var(dsnFlag{&cfg.PostgresDSN}, "postgres", "PostgreSQL URL for the store, without its password (PGPASSFILE or PGPASSWORD; or the whole URL in RAMPART_POSTGRES) (default: SQLite in the data dir)")
	fs.StringVar(&cfg.KEKFile, "kek-file", "", "with --master-key file: the file holding the key that encrypts every key at rest (default DATA/keys/kek)")
	masterKey := fs.String("master-key", "file", "where the key-encryption key comes from: file, passphrase (asked at start) or pkcs11 (an HSM)")
	passFile := fs.String("master-passphrase-file", "", "with --master-key passphrase: file holding the passphrase, or - for standard input (default: ask on the terminal)")
	fs.StringVar(&cfg.Master.PKCS11.Module, "pkcs11-module", "", "with --master-key pkcs11: the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so")
	fs.StringVar(&cfg.Master.PKCS11.TokenLabel, "pkcs11-token", "", "with --master-key pkcs11: label of the token")
	fs.StringVar(&cfg.Master.PKCS11.KeyLabel, "pkcs11-key", "rampart-kek", "with --master-key pkcs11: label of the AES key that seals the key-encryption key (generated if absent)")
	pinFile := fs.String("pkcs11-pin-file", "", "with --master-key pkcs11: file holding the user PIN, or - for standard input (default: ask on the terminal)")
	fs.StringVar(&cfg.UpstreamCertFile, "upstream-ca-cert", "", "PEM root certificate(s) kept outside the server (see: rampart ca init-root)")
	fs.StringVar(&cfg.UpstreamKeyFile, "upstream-ca-key", "", "PEM key of the upstream root; may be absent while the root is offline")
	fs.DurationVar(&cfg.DefaultX509TTL, "default-svid-ttl", server.DefaultX509TTL, "X.509-SVID lifetime for entries without --ttl")
	fs.DurationVar(&cfg.DefaultJWTTTL, "default-jwt-ttl", server.DefaultJWTTTL, "JWT-SVID lifetime for entries without --jwt-ttl")
	fs.DurationVar(&cfg.AgentTTL, "agent-svid-ttl", server.DefaultAgentTTL, "agent SVID lifetime")
	fs.DurationVar(&cfg.JoinTokenTTL, "join-token-ttl", server.DefaultJoinTokenTTL, "default join token lifetime")
	var x509popCAs, tpmEKs repeatFlag
	fs.Var(&tpmEKs, "node-attest-tpm-ek-hash", "SHA-256 (hex) of a TPM endorsement key's public area allowed for tpm agent attestation (repeatable; the agent logs its own; default: tpm off)")
	fs.Var(&x509popCAs, "node-attest-x509pop-ca", "PEM CA bundle node certificates must chain to for x509pop agent attestation (repeatable; default: x509pop off)")
	fs.DurationVar(&cfg.RootTTL, "root-ttl", 0, "root CA lifetime (default 8760h)")
	fs.DurationVar(&cfg.IntermediateTTL, "intermediate-ttl", 0, "intermediate CA lifetime (default 72h)")
	fs.DurationVar(&cfg.DownstreamMaxTTL, "downstream-max-ttl", 0, "mint downstream CAs (POST /v1/ca/downstream, rampart ca downstream) for workloads of entries marked downstream, living at most this long (0: off; on, intermediates are made with path length 2 and one of length 0 is replaced at start)")
	fs.StringVar(&cfg.Issuer, "issuer", "", "OAuth/OIDC issuer URL clients and services see (default https://LISTEN)")
	fs.StringVar(&cfg.JWTIssuer, "jwt-issuer", "", "iss of JWT-SVIDs, with OIDC discovery served at ISSUER/.well-known/openid-configuration (https, with a path: https://HOST:PORT/spiffe; default: none)")
	oauthAlg := fs.String("oauth-alg", "ES256", "signing algorithm of new OAuth token keys: ES256 or EdDSA")
	fs.DurationVar(&cfg.OAuth.AccessTokenTTL, "access-token-ttl", 0, "OAuth access token lifetime (default 10m)")
	fs.DurationVar(&cfg.OAuth.RefreshTokenTTL, "refresh-token-ttl", 0, "lifetime of a refresh token family; rotation does not extend it (default 24h)")
	fs.IntVar(&cfg.OAuth.MaxActDepth, "oauth-max-act-depth", 0, "most services that may act in turn for one user by token exchange (default 4)")
	archive := fs.String("audit-archive", "", "copy sealed audit segments and checkpoints to S3-compatible storage: s3://BUCKET[/PREFIX][?endpoint=URL&region=R] (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
	fs.StringVar(&cfg.AuditForwardTo, "audit-forward-to", "", "on a replica that shares --postgres with the one keeping the deployment's audit log: that replica's API address (host:port); this one spools its entries in DATA/audit-spool and ships them there")
	fs.Int64Var(&cfg.AuditSegmentEntries, "audit-segment-entries", audit.DefaultSegmentEntries, "audit entries per sealed, compressed segment (a multiple of 256)")
	backupConfig := fs.String("backup-config", "", "backups and restore drills on a schedule (YAML: destinations, recipients, every, retention, drill; see docs/backup.md)")
	acmeOn := fs.Bool("acme", true, "serve ACME (RFC 8555) at https://SERVER/acme/directory (see docs/acme.md)")
	acmeEAB := fs.Bool("acme-require-eab", true, "ACME accounts need an external account binding key (rampart acme eab create)")
	var acmeAllow listFlag
	fs.Var(&acmeAllow, "acme-allow", "name patterns ACME may issue, for every account (repeatable): api.example.org, *.internal.example.org, 10.1.0.0/16 (default: only what each EAB key allows)")
	fs.DurationVar(&cfg.ACME.CertTTL, "acme-cert-ttl", 0, "lifetime of ACME certificates, cut to the intermediate's (default 24h)")
	fs.IntVar(&cfg.ACME.HTTPPort, "acme-http-port", 80, "port where http-01 challenges are validated (another only for tests and internal networks)")
	fs.IntVar(&cfg.ACME.TLSPort, "acme-tls-port", 443, "port where tls-alpn-01 challenges are validated")
	fs.StringVar(&cfg.ACME.Resolver, "acme-dns-resolver", "", "DNS server (host:port) for ACME validations: dns-01 TXT and http-01/tls-alpn-01 addresses (default: the system's)")
	var adminToken adminTokenMode
	fs.Var(&adminToken, "admin-token", "the break-glass admin token (DATA/admin.token): on (every use audited and alerted on) or off (refused: operators sign in with rampart login) (default on)")
	var approvers repeatFlag
	webhooksLocal := fs.Bool("playbook-webhooks-local", false, "let playbook webhooks and Slack notices reach loopback and link-local addresses (refused by default: the server's own API, cloud metadata)")
	fs.Var(&approvers, "approver", "a workload SPIFFE ID (or ID/*) that may approve playbook steps with its SVID (repeatable; until operators hold roles)")
	detectRules := fs.String("detect-rules", "", "detection rules and alert sinks (YAML; default: the built-in rules, see rampart detect rules)")
	fs.StringVar(&cfg.Federation.Listen, "federation-listen", "", "serve this trust domain's SPIFFE bundle to federated trust domains at https://ADDRESS/ (host:port; default: not served)")
	fedProfile := fs.String("federation-profile", "https_spiffe", "how the bundle endpoint authenticates: https_spiffe (the server's SVID, spiffe://TD/rampart/server) or https_web (--federation-cert and --federation-key)")
	fs.StringVar(&cfg.Federation.CertFile, "federation-cert", "", "with https_web: the bundle endpoint's certificate chain (PEM), read again when it changes")
	fs.StringVar(&cfg.Federation.KeyFile, "federation-key", "", "with https_web: its private key (PEM)")
	fs.DurationVar(&cfg.Federation.RefreshHint, "federation-refresh-hint", 0, "the spiffe_refresh_hint served: how often others should fetch our bundle (default 5m)")
	fs.StringVar(&cfg.Federation.WebRootsFile, "federation-web-roots", "", "roots (PEM) that other trust domains' https_web endpoints are verified with instead of the system's")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	cfg.NodeAttestX509PoPCAs = x509popCAs
	cfg.NodeAttestTPMEKHashes = tpmEKs
	if cfg.Federation.Profile, err = federation.ParseProfile(*fedProfile); err != nil {
		return usagef("--federation-profile: %v", err)
	}
	if td == "" {
		return usagef("--trust-domain is required (for example --trust-domain example.org)")
	}
	if cfg.TrustDomain, err = spiffeid.TrustDomainFromString(td); err != nil {
		return usagef("--trust-domain %q: %v", td, err)
	}
	cfg.DNSNames = dns
	cfg.ACME.Disabled, cfg.ACME.EABOptional, cfg.ACME.AllowedNames = !*acmeOn, !*acmeEAB, acmeAllow
	if cfg.Master.Source, err = keywrap.ParseSource(*masterKey); err != nil {
		return usagef("--master-key: %v", err)
	}
	cfg.Master.Passphrase = secretReader(env, *passFile, "Passphrase of the key-encryption key: ")
	cfg.Master.PKCS11.PIN = secretReader(env, *pinFile, "PKCS#11 user PIN: ")
	cfg.OAuth.Algorithm = jose.SignatureAlgorithm(*oauthAlg)
	cfg.AdminTokenOff = adminToken.off
	if *archive != "" {
		b, err := openBucket("--audit-archive", *archive)
		if err != nil {
			return err
		}
		cfg.AuditArchive = b
	}
	if *backupConfig != "" {
		if cfg.Backup, err = loadBackupConfig(*backupConfig); err != nil {
			return err
		}
	}
	if *detectRules != "" {
		if cfg.DetectRules, err = os.ReadFile(*detectRules); err != nil {
			return fmt.Errorf("--detect-rules: %w", err)
		}
	}
	if cfg.Log, err = newLogger(env, logLevel, logFormat); err != nil {
		return err
	}
	for _, a := range approvers {
		if err := mtls.CheckQuarantinePattern(a); err != nil {
			return usagef("--approver %v", err)
		}
	}
	cfg.Approvers = approvers
	cfg.PlaybookWebhooksLocal = *webhooksLocal
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	abs, _ := filepath.Abs(cfg.DataDir)
	cfg.Log.Info("ready", "api", "https://"+ln.Addr().String(), "admin_token_file", filepath.Join(abs, "admin.token"), "bundle", filepath.Join(abs, "bundle.pem"))
	if p := env.getenv("RAMPART_READY_FILE"); p != "" {
		// Lets scripts and tests wait for readiness and learn the port.
		os.WriteFile(p, []byte(ln.Addr().String()+"\n"), 0o600)
	}
	return srv.Serve(ctx, ln)
}

// trimScheme accepts both host:port and https://host:port.
func trimScheme(s string) string {
	return strings.TrimSuffix(strings.TrimPrefix(s, "https://"), "/")
}

// adminTokenMode is the server's --admin-token on|off. Its environment
// name, RAMPART_ADMIN_TOKEN, is where admin commands take the token
// itself from: a value other than on or off there is that secret, and is
// neither used nor repeated in an error.
type adminTokenMode struct{ off bool }

func (m *adminTokenMode) String() string {
	if m != nil && m.off {
		return "off"
	}
	return ""
}

func (m *adminTokenMode) Set(v string) error {
	switch v {
	case "on":
		m.off = false
	case "off":
		m.off = true
	default:
		return errors.New("want on or off")
	}
	return nil
}

func (m *adminTokenMode) SetFromEnv(v string) error {
	if v == "on" || v == "off" {
		return m.Set(v)
	}
	return nil // the admin CLI's token, not a mode
}

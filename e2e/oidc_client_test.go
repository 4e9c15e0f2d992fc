package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// nodeInterop returns the node binary and the interop script's directory
// with its dependencies installed (.ci/run runs npm ci there).
func nodeInterop(t *testing.T) (node, dir string) {
	t.Helper()
	dir, _ = filepath.Abs("oidc-client")
	node, err := exec.LookPath("node")
	_, merr := os.Stat(filepath.Join(dir, "node_modules", "openid-client"))
	if err != nil || merr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node or the openid-client package is missing (.ci/run must install them): %v %v", err, merr)
		}
		t.Skip("node or e2e/oidc-client/node_modules missing; run: npm ci --prefix e2e/oidc-client")
	}
	return node, dir
}

// TestOpenIDClientInterop runs the openid-client npm package, an
// independent OAuth 2.0 / OIDC client, against a real rampart server: code
// + PKCE with DPoP, ID token and userinfo, refresh rotation and reuse,
// client credentials with a secret, with DPoP and with private_key_jwt,
// introspection and revocation, tls_client_auth with an SVID, and token
// exchange. The script's checks are in e2e/oidc-client/interop.mjs.
func TestOpenIDClientInterop(t *testing.T) {
	node, dir := nodeInterop(t)
	s, a := setup(t)
	env := s.adminEnv()
	work := t.TempDir()
	const cb = "http://127.0.0.1:9/callback"

	pw := filepath.Join(work, "pw")
	os.WriteFile(pw, []byte("alice-long-password\n"), 0o600)
	mustCLI(t, env, "oauth", "user", "create", "--username", "alice", "--password-file", pw, "--email", "alice@example.org")
	mustCLI(t, env, "oauth", "client", "create", "--id", "spa", "--auth-method", "none", "--grant", "authorization_code",
		"--grant", "refresh_token", "--redirect-uri", cb, "--audience", "spiffe://example.org/orders")
	out := mustCLI(t, env, "oauth", "client", "create", "--id", "backend", "--grant", "client_credentials")
	secret := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(out)
	if secret == nil {
		t.Fatalf("no secret printed:\n%s", out)
	}
	// private_key_jwt: the client's key stays with the client; the server
	// gets its public JWK set.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyFile := filepath.Join(work, "reports.key")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "reports-1", Algorithm: "ES256", Use: "sig"}}})
	jwksFile := filepath.Join(work, "reports.jwks")
	os.WriteFile(jwksFile, jwks, 0o600)
	mustCLI(t, env, "oauth", "client", "create", "--id", "reports", "--auth-method", "private_key_jwt", "--jwks-file", jwksFile, "--grant", "client_credentials")
	// tls_client_auth: orders authenticates with its SVID.
	mustCLI(t, env, "oauth", "client", "create", "--id", "orders", "--auth-method", "tls_client_auth", "--spiffe-id", "spiffe://example.org/orders",
		"--grant", "token-exchange", "--audience", "spiffe://example.org/payments")
	mustCLI(t, env, "entry", "create", "--spiffe-id", "spiffe://example.org/orders", "--parent", agentID, "--selector", myUID())
	svidDir := filepath.Join(work, "svid")
	eventually(t, 20*time.Second, "SVID for orders", func() error {
		_, err := cli(t, nil, "svid", "fetch", "--socket", a.socket, "--write", svidDir)
		return err
	})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "interop.mjs")
	cmd.Dir = dir
	bundle := filepath.Join(s.dir, "bundle.pem")
	cmd.Env = append(os.Environ(), "ISSUER=https://"+s.addr, "REDIRECT_URI="+cb, "ALICE_PASSWORD=alice-long-password",
		"BACKEND_SECRET="+secret[1], "JWT_CLIENT_KEY="+keyFile, "SVID_CERT="+filepath.Join(svidDir, "svid.pem"),
		"SVID_KEY="+filepath.Join(svidDir, "svid.key"), "CA_BUNDLE="+bundle, "NODE_EXTRA_CA_CERTS="+bundle)
	res, err := cmd.CombinedOutput()
	t.Logf("openid-client:\n%s", res)
	if err != nil {
		t.Fatalf("the openid-client script failed: %v", err)
	}
	for _, want := range []string{"ok code grant issues a DPoP token", "ok ID token validated", "ok userinfo with a DPoP proof",
		"ok reused refresh token refused", "ok client credentials (private_key_jwt)", "ok token exchange: act names orders",
		"ok token exchange over tls_client_auth: bound to the SVID", "all openid-client checks passed"} {
		if !strings.Contains(string(res), want) {
			t.Errorf("the script did not report %q", want)
		}
	}
}

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// OIDC discovery for JWT-SVIDs, with real processes: go-oidc, knowing only
// the issuer URL, finds the keys and verifies a JWT-SVID that a workload
// fetched from the agent with go-spiffe; what must not verify does not.
func TestJWTSVIDVerifiedByGoOIDC(t *testing.T) {
	root := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	issuer := "https://" + listen + "/spiffe"
	s := startServerAt(t, filepath.Join(root, "server"), listen, "--jwt-issuer", issuer)
	a := startAgent(t, s, filepath.Join(root, "agent"), mustCLI(t, s.adminEnv(), "token", "create", "--agent-name", "node-1"))
	mustCLI(t, s.adminEnv(), "entry", "create", "--spiffe-id", "spiffe://example.org/orders", "--parent", agentID, "--selector", myUID())

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var svid *jwtsvid.SVID
	eventually(t, 20*time.Second, "JWT-SVID from the Workload API", func() error {
		var err error
		svid, err = workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "sts.amazonaws.com"}, addr(a))
		return err
	})

	// A relying party that trusts the server's TLS certificate and knows
	// nothing but the issuer URL: no admin token, no SPIFFE library.
	hc, _ := adminHTTP(t, s)
	octx := oidc.ClientContext(ctx, hc)
	provider, err := oidc.NewProvider(octx, issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: "sts.amazonaws.com", SupportedSigningAlgs: []string{oidc.ES256}})
	tok, err := verifier.Verify(octx, svid.Marshal())
	if err != nil {
		t.Fatalf("go-oidc refused the JWT-SVID: %v", err)
	}
	if tok.Subject != "spiffe://example.org/orders" || tok.Issuer != issuer {
		t.Fatalf("verified sub %q iss %q", tok.Subject, tok.Issuer)
	}

	// The discovery document and the keys are public, as published.
	resp, err := hc.Get(issuer + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var jwks struct {
		Keys []struct{ Use, Alg, Kid string } `json:"keys"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &jwks) != nil || len(jwks.Keys) == 0 {
		t.Fatalf("GET %s/keys: %d %s", issuer, resp.StatusCode, body)
	}
	for _, k := range jwks.Keys {
		if k.Use != "sig" || k.Alg != "ES256" || k.Kid == "" {
			t.Fatalf("published key %+v, want use sig, alg ES256 and a kid", k)
		}
	}

	// Refusals: another audience; a token whose payload was changed; and
	// a relying party of the OAuth server (another issuer, other keys)
	// does not take a JWT-SVID for one of its tokens.
	if _, err := verifier.Verify(octx, mustJWT(t, ctx, a, "vault")); err == nil {
		t.Fatal("a JWT-SVID for another audience verified")
	}
	parts := strings.Split(svid.Marshal(), ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	payload = []byte(strings.Replace(string(payload), "spiffe://example.org/orders", "spiffe://example.org/admins", 1))
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
	if _, err := verifier.Verify(octx, forged); err == nil {
		t.Fatal("a JWT-SVID with an altered payload verified")
	}
	oauthProvider, err := oidc.NewProvider(octx, "https://"+listen)
	if err != nil {
		t.Fatalf("OAuth server's discovery: %v", err)
	}
	if _, err := oauthProvider.Verifier(&oidc.Config{ClientID: "sts.amazonaws.com", SupportedSigningAlgs: []string{oidc.ES256, oidc.RS256}}).Verify(octx, svid.Marshal()); err == nil {
		t.Fatal("the OAuth server's relying party accepted a JWT-SVID")
	}
}

func mustJWT(t *testing.T, ctx context.Context, a *agent, aud string) string {
	t.Helper()
	sv, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud}, addr(a))
	if err != nil {
		t.Fatal(err)
	}
	return sv.Marshal()
}

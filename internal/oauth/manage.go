package oauth

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/store"
)

var (
	clientIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	usernameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._@-]{0,63}$`)
)

// MinPasswordLength is the shortest password the user store accepts
// (NIST SP 800-63B asks for at least 8; we ask for more).
const MinPasswordLength = 10

// ValidateClient checks a client registration; the error names the field
// and what is wrong with it.
func ValidateClient(c store.OAuthClient) error {
	if !clientIDRE.MatchString(c.ID) {
		return fmt.Errorf("id %q: use 1-128 letters, digits and . _ : -, starting with a letter or digit", c.ID)
	}
	if !slices.Contains(authMethods, c.AuthMethod) {
		return fmt.Errorf("auth_method %q: want one of %s", c.AuthMethod, strings.Join(authMethods, ", "))
	}
	if len(c.GrantTypes) == 0 {
		return fmt.Errorf("grant_types: at least one of %s", strings.Join(grantTypes, ", "))
	}
	for _, g := range c.GrantTypes {
		if !slices.Contains(grantTypes, g) {
			return fmt.Errorf("grant_types: %q: want one of %s", g, strings.Join(grantTypes, ", "))
		}
		if c.AuthMethod == "none" && (g == "client_credentials" || g == GrantTokenExchange) {
			return fmt.Errorf("grant_types: a public client (auth_method none) cannot use %s", g)
		}
	}
	if slices.Contains(c.GrantTypes, "authorization_code") && len(c.RedirectURIs) == 0 {
		return fmt.Errorf("redirect_uris: the authorization_code grant needs at least one")
	}
	for _, ru := range c.RedirectURIs {
		if err := checkRedirectURI(ru); err != nil {
			return fmt.Errorf("redirect_uris: %q: %v", ru, err)
		}
	}
	switch c.AuthMethod {
	case "tls_client_auth":
		if !strings.HasPrefix(c.SPIFFEID, "spiffe://") {
			return fmt.Errorf("spiffe_id: tls_client_auth needs the SPIFFE ID the client's SVID carries")
		}
	case "private_key_jwt":
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(c.JWKS, &set); err != nil || len(set.Keys) == 0 {
			return fmt.Errorf("jwks: private_key_jwt needs a JWK set with the client's public keys")
		}
		for _, k := range set.Keys {
			if !k.IsPublic() {
				return fmt.Errorf("jwks: key %q is a private key; register only public keys", k.KeyID)
			}
		}
	}
	if c.SPIFFEID != "" && !strings.HasPrefix(c.SPIFFEID, "spiffe://") {
		return fmt.Errorf("spiffe_id %q: want spiffe://trust-domain/path", c.SPIFFEID)
	}
	return nil
}

// checkRedirectURI: absolute, no fragment; https, or http on a loopback
// host for native apps (RFC 8252 §7.3).
func checkRedirectURI(ru string) error {
	u, err := url.Parse(ru)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("must be an absolute URL")
	}
	if u.Fragment != "" || strings.Contains(ru, "#") {
		return fmt.Errorf("must not contain a fragment")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && (u.Hostname() == "localhost" || u.Hostname() == "127.0.0.1" || u.Hostname() == "::1"):
	default:
		return fmt.Errorf("must be https (or http on localhost for native apps)")
	}
	return nil
}

// ValidateUser checks a username and, if not empty, a new password.
func ValidateUser(username, password string) error {
	if !usernameRE.MatchString(username) {
		return fmt.Errorf("username %q: use 1-64 lower-case letters, digits and . _ @ -", username)
	}
	if password != "" && len([]rune(password)) < MinPasswordLength {
		return fmt.Errorf("password: at least %d characters", MinPasswordLength)
	}
	return nil
}

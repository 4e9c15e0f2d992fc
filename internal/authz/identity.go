package authz

import (
	"fmt"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Identity headers other proxies, gateways and platforms set for the app
// behind them, and apps therefore read as proven: a client certificate, a
// SPIFFE ID, a peer or an authenticated user. Behind this proxy none of
// them was set by anyone the app can trust (the proxy sets only its own,
// X-Rampart-* and X-Forwarded-Client-Cert), so a caller's are removed
// before the policy and the app see the request. The list follows what
// the named software documents; docs/dataplane.md has it as a table, and
// operators add names with --strip-header (sdk.WithStripHeaders).
//
// Names are matched in their canonical form (so in any case); a name with
// "_" is removed anyway (sanitizeHeaders), so X_Spiffe_Id goes with
// X-Spiffe-Id. An entry ending in "-" or spelt as a prefix below matches
// every name it starts.
var identityHeaders = mustHeaderNames(
	// Workload identity and meshes.
	"X-Spiffe-*", "X-Peer-*", // SPIFFE IDs, peer identities set by sidecars
	"L5d-Client-Id",          // Linkerd: the meshed client's identity
	"X-Envoy-Peer-Metadata*", // Istio: the peer workload's metadata
	// Client certificates passed on by a TLS terminator (nginx, HAProxy,
	// Traefik, Apache, RFC 9440).
	"Client-Cert*", "Ssl-Client-*", "X-Ssl*", "X-Tls-Client-*",
	"X-Client-Cert*", "X-Client-Verify*", "X-Client-Dn", "X-Client-S-Dn", "X-Client-I-Dn",
	"X-Arr-Clientcert", // Azure App Service
	"X-Amzn-Mtls-*",    // AWS ALB mutual TLS
	// Remote and forwarded users (X-Forwarded-* also goes as an address
	// header: X-Forwarded-User, -Email, -Groups, -Access-Token).
	"X-Remote-*",                                             // Kubernetes front proxy (X-Remote-User, -Group, -Extra-*)
	"Remote-*",                                               // Authelia, tinyauth (Remote-User, -Groups, -Email, -Name)
	"X-Auth-Request-*",                                       // oauth2-proxy
	"X-Authenticated-*",                                      // Kong (X-Authenticated-Userid), Blue Coat, Squid
	"X-Consumer-*", "X-Credential-*", "X-Anonymous-Consumer", // Kong, APISIX
	"X-Userinfo",                                              // Kong's OIDC plugin
	"X-User", "X-User-*", "X-Username", "X-Userid", "X-Email", // nginx auth_request recipes
	"X-Auth-User", "X-Auth-Username", "X-Auth-Email",
	"X-Identity-Status", "X-Roles", "X-Groups", // OpenStack keystonemiddleware
	"X-Webauth-*",                                // Grafana's auth proxy, Tailscale's Caddy plugin
	"Tailscale-User-*",                           // Tailscale serve
	"X-Pomerium-*", "X-Authentik-*", "X-Vouch-*", // Pomerium, authentik, Vouch
	"X-Jwt-Assertion*",                    // WSO2
	"Shib-*", "Sm-User", "Sm-Universalid", // Shibboleth, SiteMinder
	// Cloud identity-aware proxies.
	"X-Amzn-Oidc-*",                                           // AWS ALB authentication
	"X-Goog-Authenticated-User-*", "X-Goog-Iap-Jwt-Assertion", // Google IAP
	"X-Apigateway-Api-Userinfo", "X-Endpoint-Api-Userinfo", // Google API Gateway, Cloud Endpoints
	"X-Ms-Client-Principal*", "X-Ms-Token-*", // Azure App Service authentication
	"Cf-Access-*", // Cloudflare Access
)

// HeaderNames is a set of header names and name prefixes, matched against
// canonical names (textproto.CanonicalMIMEHeaderKey), with "_" read as
// "-". The zero value (and nil) holds nothing.
type HeaderNames struct {
	exact  map[string]bool
	prefix [26][]string // by first letter: canonical names start upper case
}

// ParseStripHeaders parses the names an operator adds to the identity
// headers removed from requests: each a header name, or a prefix ending in
// "*", in any case, "_" read as "-". It names the first that is not a
// valid header name.
func ParseStripHeaders(names []string) (*HeaderNames, error) {
	var n HeaderNames
	for _, name := range names {
		if err := n.add(name); err != nil {
			return nil, err
		}
	}
	return &n, nil
}

func mustHeaderNames(names ...string) *HeaderNames {
	n, err := ParseStripHeaders(names)
	if err != nil {
		panic(err)
	}
	return n
}

func (n *HeaderNames) add(raw string) error {
	name := strings.TrimSpace(raw)
	prefix := strings.HasSuffix(name, "*")
	name = strings.ReplaceAll(strings.TrimSuffix(name, "*"), "_", "-")
	if name == "" || !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("authz: strip-header %q: not a header name (letters, digits and -, or a prefix ending in *)", raw)
	}
	c := textproto.CanonicalMIMEHeaderKey(name)
	if !prefix {
		if n.exact == nil {
			n.exact = map[string]bool{}
		}
		n.exact[c] = true
		return nil
	}
	if i := int(c[0]) - 'A'; i >= 0 && i < len(n.prefix) {
		n.prefix[i] = append(n.prefix[i], c)
		return nil
	}
	return fmt.Errorf("authz: strip-header %q: a prefix must start with a letter", raw)
}

// Match reports whether a canonical header name is in the set.
func (n *HeaderNames) Match(canonical string) bool {
	if n == nil || canonical == "" {
		return false
	}
	if n.exact[canonical] {
		return true
	}
	if i := int(canonical[0]) - 'A'; i >= 0 && i < len(n.prefix) {
		for _, p := range n.prefix[i] {
			if strings.HasPrefix(canonical, p) {
				return true
			}
		}
	}
	return false
}

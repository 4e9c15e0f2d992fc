package oauth

import (
	"net"
	"net/url"
	"slices"
)

// redirectAllowed says whether redirect URI ru may be used by a client
// that registered uris: an exact string match (RFC 9700 §4.1.3), or, for
// a native app's loopback redirect, the registered loopback URI with any
// port. RFC 8252 §7.3: "The authorization server MUST allow any port to
// be specified at the time of the request for loopback IP redirect URIs,
// to accommodate clients that obtain an available ephemeral port from
// the operating system at the time of the request." Only http, only the
// literal IPs 127.0.0.1 and [::1] (§8.3: not "localhost", which a
// resolver or a firewall may point elsewhere), and everything but the
// port must match.
func redirectAllowed(uris []string, ru string) bool {
	if slices.Contains(uris, ru) {
		return true
	}
	u, err := url.Parse(ru)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Fragment != "" || u.Port() == "" {
		return false
	}
	host := u.Hostname()
	if host != "127.0.0.1" && host != "::1" {
		return false
	}
	bare := *u
	bare.Host = u.Hostname()
	if host == "::1" {
		bare.Host = "[::1]"
	}
	if _, err := net.LookupPort("tcp", u.Port()); err != nil {
		return false
	}
	return slices.Contains(uris, bare.String())
}

package authz

import (
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// One set of rules for the headers that concern a single hop, so that every
// path (the proxy's HTTP/1.1 forwarder, net/http for HTTP/2 and gRPC, the
// SDK) judges and passes on the same headers.

// hopHeaders are meaningful for one connection only (RFC 9110 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// addressHeaders claim where a request came from: dropped from requests
// (as net/http's ReverseProxy does in Rewrite mode for X-Forwarded-For,
// -Host and -Proto), with every other X-Forwarded-* name, so a caller
// cannot pose as another address, host, port, scheme or path prefix to the
// policy or to the app (frameworks read them: Gin's ClientIP X-Real-IP,
// Spring's X-Forwarded-Prefix, Express's trust proxy X-Forwarded-*).
var addressHeaders = map[string]bool{
	"Forwarded": true, "X-Real-Ip": true, "True-Client-Ip": true, "X-Client-Ip": true,
	"X-Cluster-Client-Ip": true, "Client-Ip": true, "Cf-Connecting-Ip": true, "Fastly-Client-Ip": true,
}

// isAddressHeader reports whether a header name (in any case) claims a
// client's address or the URL it used.
func isAddressHeader(name string) bool {
	c := textproto.CanonicalMIMEHeaderKey(name)
	return addressHeaders[c] || strings.HasPrefix(c, "X-Forwarded-")
}

// RemoveHopByHop deletes the hop-by-hop headers and those the Connection
// header lists.
func RemoveHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = textproto.TrimString(tok); tok != "" {
				h.Del(tok)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// StripHopByHop makes a request's headers those of the next hop:
// hop-by-hop and address headers (Forwarded, X-Forwarded-*, X-Real-IP...)
// removed, "TE: trailers" kept (gRPC needs it), and an upgrade kept
// (Connection: Upgrade and its Upgrade header) unless it is to h2c: an app
// that accepted h2c would serve every later request on the connection as
// HTTP/2, none of them judged. HTTP2-Settings always goes. It returns the protocol of the upgrade kept,
// or "". Running it twice changes nothing more.
func StripHopByHop(h http.Header) (upgrade string) {
	if httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade") && !httpguts.HeaderValuesContainsToken(h["Upgrade"], "h2c") {
		upgrade = h.Get("Upgrade")
	}
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	RemoveHopByHop(h)
	delete(h, "Http2-Settings")
	for name := range h {
		if isAddressHeader(name) {
			delete(h, name)
		}
	}
	if trailers {
		h["Te"] = []string{"trailers"}
	}
	if upgrade != "" {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = []string{upgrade}
	}
	return upgrade
}

// IsIdentityHeader reports whether a canonical header name is one that
// only the guard sets: X-Rampart-* and X-Forwarded-Client-Cert.
func IsIdentityHeader(canonical string) bool {
	return strings.HasPrefix(canonical, "X-Rampart-") || canonical == HeaderXFCC
}

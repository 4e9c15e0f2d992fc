package acme

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Challenge validation (RFC 8555 §8.3, §8.4; RFC 8737; RFC 8738) must not
// be a lever against the network the server sits in (SSRF), so:
//
//   - it connects only to the identifier being validated (a name of the
//     order, which the name policy allowed), resolved through the
//     configured resolver, on the configured port (80 for http-01, 443
//     for tls-alpn-01);
//   - never to an address no service should be reached at through a
//     name: unspecified, "this network" (0.0.0.0/8), link-local (the
//     cloud metadata service at 169.254.169.254), multicast, broadcast;
//   - http-01 follows at most 10 redirects (§8.3: "The server SHOULD
//     follow redirects"), only to http or https on the same host and the
//     configured ports, never to another host;
//   - it reads at most 1 KiB of a response, and the whole validation has
//     a deadline (Config.ValidationTimeout);
//   - a failure's detail names what went wrong (status, address, the
//     first bytes of a wrong answer at most) but never echoes a body.

const (
	maxHTTP01Body = 1 << 10
	maxRedirects  = 10
)

// idPeACMEIdentifier is the tls-alpn-01 certificate extension (RFC 8737
// §3).
var idPeACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

type validator struct {
	resolver          *net.Resolver
	httpPort, tlsPort int
	timeout           time.Duration
	// dial connects to an address the resolver gave (tests can wrap it).
	dialer net.Dialer
}

func newValidator(cfg Config) *validator {
	v := &validator{httpPort: cfg.HTTPPort, tlsPort: cfg.TLSPort, timeout: cfg.ValidationTimeout, resolver: net.DefaultResolver}
	if cfg.Resolver != "" {
		server := cfg.Resolver
		v.resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}}
	}
	v.dialer = net.Dialer{Timeout: cfg.ValidationTimeout}
	return v
}

func (v *validator) validate(ctx context.Context, id identifier, typ, token, keyAuth string) *Problem {
	var p *Problem
	switch typ {
	case HTTP01:
		p = v.http01(ctx, id, token, keyAuth)
	case TLSALPN01:
		p = v.tlsALPN01(ctx, id, keyAuth)
	case DNS01:
		p = v.dns01(ctx, id, keyAuth)
	default:
		p = malformed("challenge type %q", typ)
	}
	if p != nil {
		p.Identifier = &identifier{Type: id.Type, Value: id.Value}
		if p.Status == 0 {
			p.Status = http.StatusForbidden
		}
	}
	return p
}

// forbidden reports whether a resolved address may never be validated
// against.
func forbidden(a netip.Addr) bool {
	a = a.Unmap()
	return !a.IsValid() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) ||
		a.Is4() && a.As4()[0] == 0
}

// addrs resolves the identifier to the addresses validation may use.
func (v *validator) addrs(ctx context.Context, id identifier) ([]netip.Addr, *Problem) {
	if id.Type == "ip" {
		a, err := netip.ParseAddr(id.Value)
		if err != nil {
			return nil, malformed("bad IP identifier")
		}
		if forbidden(a) {
			return nil, problem(0, errConnection, "%s: validation never connects to this kind of address", a)
		}
		return []netip.Addr{a}, nil
	}
	ips, err := v.resolver.LookupNetIP(ctx, "ip", id.Value+".")
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, problem(0, errDNS, "%s: no such name (NXDOMAIN or no A/AAAA records)", id.Value)
		}
		return nil, problem(0, errDNS, "%s: DNS lookup failed: %v", id.Value, lookupErr(err))
	}
	var out []netip.Addr
	var refused []string
	for _, a := range ips {
		if forbidden(a) {
			refused = append(refused, a.String())
			continue
		}
		out = append(out, a.Unmap())
	}
	if len(out) == 0 {
		return nil, problem(0, errConnection, "%s resolves only to addresses validation never connects to (%s)", id.Value, strings.Join(refused, ", "))
	}
	return out, nil
}

func lookupErr(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.Err
	}
	return err.Error()
}

// dial connects to the identifier on port, trying each address in turn.
func (v *validator) dial(ctx context.Context, id identifier, port int) (net.Conn, *Problem) {
	addrs, p := v.addrs(ctx, id)
	if p != nil {
		return nil, p
	}
	var last error
	for _, a := range addrs {
		c, err := v.dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(a, uint16(port)).String())
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, problem(0, errConnection, "%s: cannot connect to port %d: %v", id.Value, port, opErr(last))
}

// opErr shortens a dial error to its cause.
func opErr(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Addr.String() + ": " + oe.Err.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

func hostPort(id identifier, port int) string {
	return net.JoinHostPort(id.Value, strconv.Itoa(port))
}

// http01 fetches http://ID/.well-known/acme-challenge/TOKEN (§8.3).
func (v *validator) http01(ctx context.Context, id identifier, token, keyAuth string) *Problem {
	tr := &http.Transport{
		// Every connection goes to the identifier, whatever the URL
		// says; redirects elsewhere are refused below before this runs.
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			_, portStr, _ := net.SplitHostPort(addr)
			port, _ := strconv.Atoi(portStr)
			c, p := v.dial(ctx, id, port)
			if p != nil {
				return nil, p
			}
			return c, nil
		},
		// A redirect to https is followed without checking the
		// certificate: the key authorization is the proof, not TLS.
		TLSClientConfig:        &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
		DisableKeepAlives:      true,
		ResponseHeaderTimeout:  v.timeout,
		MaxResponseHeaderBytes: 16 << 10,
	}
	defer tr.CloseIdleConnections()
	hops := 0
	client := &http.Client{Transport: tr, Timeout: v.timeout, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		hops++
		if hops > maxRedirects {
			return fmt.Errorf("more than %d redirects", maxRedirects)
		}
		return v.checkRedirect(req.URL, id)
	}}
	u := &url.URL{Scheme: "http", Host: hostPort(id, v.httpPort), Path: "/.well-known/acme-challenge/" + token}
	if v.httpPort == 80 {
		u.Host = bracket(id)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return internal("cannot build the validation request")
	}
	req.Header.Set("User-Agent", "rampart-acme-validator")
	req.Header.Set("Accept", "*/*")
	resp, err := client.Do(req)
	if err != nil {
		var dp *Problem
		if errors.As(err, &dp) {
			return dp
		}
		var ue *url.Error
		if errors.As(err, &ue) && ue.Err != nil {
			err = ue.Err
		}
		return problem(0, errConnection, "%s: fetching %s: %v", id.Value, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return problem(0, errUnauthorized, "%s: %s answered HTTP %d, want 200 with the key authorization", id.Value, resp.Request.URL, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTP01Body+1))
	if err != nil {
		return problem(0, errConnection, "%s: reading the response: %v", id.Value, err)
	}
	if len(body) > maxHTTP01Body {
		return problem(0, errIncorrectResponse, "%s: the response is larger than %d bytes; want the key authorization", id.Value, maxHTTP01Body)
	}
	// §8.3: "the server ... verifies that the body ... matches the key
	// authorization", ignoring trailing whitespace.
	got := bytes.TrimRight(body, " \t\r\n")
	if subtle.ConstantTimeCompare(got, []byte(keyAuth)) != 1 {
		return problem(0, errIncorrectResponse, "%s: the response is not the key authorization for this challenge and account (got %d bytes starting %q)",
			id.Value, len(got), clip(got, 16))
	}
	return nil
}

func clip(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(bytes.ToValidUTF8(b, []byte("?")))
}

func bracket(id identifier) string {
	if a, err := netip.ParseAddr(id.Value); err == nil && a.Is6() {
		return "[" + id.Value + "]"
	}
	return id.Value
}

// checkRedirect allows a redirect only to the same host over http or
// https on the validation ports.
func (v *validator) checkRedirect(u *url.URL, id identifier) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("redirect to %s scheme %q refused (http or https only)", u.Redacted(), u.Scheme)
	}
	host := strings.ToLower(u.Hostname())
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.String()
	}
	if host != id.Value {
		return fmt.Errorf("redirect to another host (%s) refused: validation reaches %s only", u.Hostname(), id.Value)
	}
	want := v.httpPort
	if u.Scheme == "https" {
		want = v.tlsPort
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if port != strconv.Itoa(want) {
		return fmt.Errorf("redirect to port %s refused: %s validation uses port %d", port, u.Scheme, want)
	}
	return nil
}

// reverseName is the SNI of an IP identifier (RFC 8738 §6: the reverse
// mapping name, as in-addr.arpa and ip6.arpa).
func reverseName(a netip.Addr) string {
	if a.Is4() {
		b := a.As4()
		return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa", b[3], b[2], b[1], b[0])
	}
	b := a.As16()
	var sb strings.Builder
	for i := 15; i >= 0; i-- {
		fmt.Fprintf(&sb, "%x.%x.", b[i]&0xf, b[i]>>4)
	}
	sb.WriteString("ip6.arpa")
	return sb.String()
}

// tlsALPN01 connects with ALPN acme-tls/1 and checks the self-signed
// certificate (RFC 8737 §3): exactly the identifier as SAN, and a
// critical acmeIdentifier extension with SHA-256 of the key
// authorization.
func (v *validator) tlsALPN01(ctx context.Context, id identifier, keyAuth string) *Problem {
	conn, p := v.dial(ctx, id, v.tlsPort)
	if p != nil {
		return p
	}
	defer conn.Close()
	sni := id.Value
	if id.Type == "ip" {
		a, _ := netip.ParseAddr(id.Value)
		sni = reverseName(a)
	}
	// The certificate is self-signed by design; checkALPNCert checks it.
	cfg := &tls.Config{ServerName: sni, NextProtos: []string{"acme-tls/1"}, MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}
	tc := tls.Client(conn, cfg)
	if d, ok := ctx.Deadline(); ok {
		tc.SetDeadline(d)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return problem(0, errTLS, "%s: TLS handshake on port %d: %v", id.Value, v.tlsPort, err)
	}
	st := tc.ConnectionState()
	if st.NegotiatedProtocol != "acme-tls/1" {
		return problem(0, errTLS, "%s: the server did not negotiate ALPN acme-tls/1 (got %q)", id.Value, st.NegotiatedProtocol)
	}
	if len(st.PeerCertificates) == 0 {
		return problem(0, errTLS, "%s: no certificate", id.Value)
	}
	leaf := st.PeerCertificates[0]
	if p := checkALPNCert(leaf, id, keyAuth); p != nil {
		return p
	}
	return nil
}

func checkALPNCert(leaf *x509.Certificate, id identifier, keyAuth string) *Problem {
	names := len(leaf.DNSNames) + len(leaf.IPAddresses) + len(leaf.URIs) + len(leaf.EmailAddresses)
	var ok bool
	if id.Type == "ip" {
		ok = names == 1 && len(leaf.IPAddresses) == 1 && ipString(leaf.IPAddresses[0]) == id.Value
	} else {
		ok = names == 1 && len(leaf.DNSNames) == 1 && strings.EqualFold(leaf.DNSNames[0], id.Value)
	}
	if !ok {
		return problem(0, errIncorrectResponse, "%s: the acme-tls/1 certificate must name exactly %s (it has %v %v)", id.Value, id.Value, leaf.DNSNames, leaf.IPAddresses)
	}
	sum := sha256.Sum256([]byte(keyAuth))
	for _, ext := range leaf.Extensions {
		if !ext.Id.Equal(idPeACMEIdentifier) {
			continue
		}
		if !ext.Critical {
			return problem(0, errIncorrectResponse, "%s: the acmeIdentifier extension must be critical", id.Value)
		}
		var got []byte
		if rest, err := asn1.Unmarshal(ext.Value, &got); err != nil || len(rest) > 0 {
			return problem(0, errIncorrectResponse, "%s: the acmeIdentifier extension is not an OCTET STRING", id.Value)
		}
		if subtle.ConstantTimeCompare(got, sum[:]) != 1 {
			return problem(0, errIncorrectResponse, "%s: the acmeIdentifier extension is not the digest of the key authorization for this challenge and account", id.Value)
		}
		return nil
	}
	return problem(0, errIncorrectResponse, "%s: the acme-tls/1 certificate has no acmeIdentifier extension", id.Value)
}

// dns01 looks up the TXT records of _acme-challenge.NAME (§8.4).
func (v *validator) dns01(ctx context.Context, id identifier, keyAuth string) *Problem {
	if id.Type != "dns" {
		return malformed("dns-01 validates DNS names only")
	}
	base, _ := id.wildcard()
	if base == "" {
		base = id.Value
	}
	name := "_acme-challenge." + base
	txts, err := v.resolver.LookupTXT(ctx, name+".")
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return problem(0, errDNS, "%s: no TXT record at %s", id.Value, name)
		}
		return problem(0, errDNS, "%s: TXT lookup of %s failed: %v", id.Value, name, lookupErr(err))
	}
	sum := sha256.Sum256([]byte(keyAuth))
	want := base64.RawURLEncoding.EncodeToString(sum[:])
	for _, t := range txts {
		if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(t)), []byte(want)) == 1 {
			return nil
		}
	}
	return problem(0, errIncorrectResponse, "%s: none of the %d TXT records at %s is the digest of the key authorization for this challenge and account", id.Value, len(txts), name)
}

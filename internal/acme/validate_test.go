package acme

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Validation is not an SSRF lever: it reaches only the identifier, on the
// configured port, follows redirects only there, reads a bounded answer
// within a deadline, and never connects to link-local or unspecified
// addresses.
func TestValidationBoundaries(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ValidationTimeout = 2 * time.Second })
	v := h.srv.validator
	web := identifier{"dns", "web.acme.test"}
	const token, ka = "tok", "tok.thumb"
	var hits atomic.Int32
	check := func(t *testing.T, id identifier, typ string, handler http.HandlerFunc, kind, detail string) {
		t.Helper()
		h.http.setHandler(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			handler(w, r)
		})
		p := v.validate(t.Context(), id, typ, token, ka)
		if kind == "" {
			if p != nil {
				t.Fatalf("validation failed: %v", p)
			}
			return
		}
		if p == nil || p.Type != errPrefix+kind || !strings.Contains(p.Detail, detail) {
			t.Fatalf("got %v, want %s with %q", p, kind, detail)
		}
	}
	serve := func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, ka+"\r\n") }
	redirect := func(to string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/final" {
				serve(w, r)
				return
			}
			http.Redirect(w, r, to, http.StatusFound)
		}
	}
	port := h.http.port
	t.Run("answer with trailing whitespace", func(t *testing.T) { check(t, web, HTTP01, serve, "", "") })
	t.Run("redirect on the same host and port", func(t *testing.T) {
		check(t, web, HTTP01, redirect(fmt.Sprintf("http://web.acme.test:%d/final", port)), "", "")
	})
	t.Run("redirect to another host", func(t *testing.T) {
		hits.Store(0)
		check(t, web, HTTP01, redirect(fmt.Sprintf("http://internal-admin.acme.test:%d/final", port)), errConnection, "another host")
		if n := hits.Load(); n != 1 {
			t.Errorf("%d requests reached the responder; the redirect target must not be fetched", n)
		}
	})
	t.Run("redirect to an address", func(t *testing.T) {
		check(t, web, HTTP01, redirect(fmt.Sprintf("http://127.0.0.1:%d/final", port)), errConnection, "another host")
	})
	t.Run("redirect to another port", func(t *testing.T) {
		check(t, web, HTTP01, redirect("http://web.acme.test:8443/final"), errConnection, "port 8443 refused")
	})
	t.Run("redirect to another scheme", func(t *testing.T) {
		check(t, web, HTTP01, redirect("file:///etc/passwd"), errConnection, `scheme "file"`)
	})
	t.Run("redirect loop", func(t *testing.T) {
		hits.Store(0)
		check(t, web, HTTP01, redirect(fmt.Sprintf("http://web.acme.test:%d/again", port)), errConnection, "more than 10 redirects")
		if n := hits.Load(); n != maxRedirects+1 {
			t.Errorf("%d requests for a redirect loop", n)
		}
	})
	t.Run("oversized answer", func(t *testing.T) {
		check(t, web, HTTP01, func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 1<<20)) }, errIncorrectResponse, "larger than 1024 bytes")
	})
	t.Run("not found", func(t *testing.T) {
		check(t, web, HTTP01, http.NotFound, errUnauthorized, "HTTP 404")
	})
	t.Run("link-local name", func(t *testing.T) {
		h.dns.SetA("metadata.acme.test", netip.MustParseAddr("169.254.169.254"))
		check(t, identifier{"dns", "metadata.acme.test"}, HTTP01, serve, errConnection, "never connects to (169.254.169.254)")
	})
	t.Run("unspecified address", func(t *testing.T) {
		h.dns.SetA("zero.acme.test", netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("::"))
		check(t, identifier{"dns", "zero.acme.test"}, TLSALPN01, serve, errConnection, "never connects to")
	})
	t.Run("link-local IP identifier", func(t *testing.T) {
		check(t, identifier{"ip", "169.254.169.254"}, HTTP01, serve, errConnection, "never connects to this kind of address")
	})
	t.Run("no such name", func(t *testing.T) {
		check(t, web, DNS01, serve, errDNS, "no TXT record at _acme-challenge.web.acme.test")
	})
	t.Run("no ALPN", func(t *testing.T) {
		// The http-01 responder speaks no TLS at all.
		v2 := *v
		v2.tlsPort = port
		if p := v2.validate(t.Context(), web, TLSALPN01, token, ka); p == nil || p.Type != errPrefix+errTLS {
			t.Fatalf("got %v, want a tls problem", p)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		h.http.setHandler(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		if p := v.validate(ctx, web, HTTP01, token, ka); p == nil || p.Type != errPrefix+errConnection {
			t.Fatalf("a responder that never answers: got %v, want a connection problem", p)
		}
	})
}

func TestReverseName(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3":    "3.2.1.10.in-addr.arpa",
		"2001:db8::1": "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
	} {
		if got := reverseName(netip.MustParseAddr(in)); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

package server

import (
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/svid"
)

// logEntries returns the log's entries with the given action.
func logEntries(t *testing.T, l *audit.Log, action string) []*audit.Entry {
	t.Helper()
	var out []*audit.Entry
	for i := int64(0); i < l.Size(); i++ {
		b, err := l.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.ParseEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// Issue 25 item 10: a revoked SVID's request on a connection opened before
// the revocation was recorded as made by user "admin" (the entry builder's
// fallback). It must name the certificate's holder.
func TestRefusedRevokedSVIDNamesItsHolderNotAdmin(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	cert := h.workloadCert("node-1", "spiffe://example.org/orders")
	c := h.client("", cert) // one client: the connection stays open
	// Any workload route will do; the key-use policy denies, which is fine.
	c.Do(ctx, http.MethodPost, "/v1/kms/keys/k/encrypt", api.KMSRequest{Plaintext: []byte("x")}, nil)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	serial := svid.SerialString(leaf.SerialNumber)
	if err := h.admin.Do(ctx, http.MethodPost, "/v1/svids/revoke", api.RevokeRequest{Serial: serial}, nil); err != nil {
		t.Fatal(err)
	}
	err = c.Do(ctx, http.MethodPost, "/v1/kms/keys/k/encrypt", api.KMSRequest{Plaintext: []byte("x")}, nil)
	wantStatus(t, err, http.StatusForbidden, "revoked")
	es := logEntries(t, h.srv.audit, "svid.auth")
	if len(es) != 1 {
		t.Fatalf("%d svid.auth entries, want 1", len(es))
	}
	e := es[0]
	if e.Actor.User != "" || e.Actor.SpiffeID != "spiffe://example.org/orders" {
		t.Fatalf("actor %+v, want the revoked SVID's SPIFFE ID (never admin)", e.Actor)
	}
	if e.Details["cert_serial"] != serial || e.Details["cert_spiffe_id"] != "spiffe://example.org/orders" {
		t.Fatalf("details %v: want the certificate's serial and SPIFFE ID", e.Details)
	}
}

// Issue 26 item 4: a request with a wrong admin token was recorded as made
// by "admin".
func TestWrongAdminTokenIsAnonymousNotAdmin(t *testing.T) {
	h := newHarness(t)
	err := h.client("rpa_wrong", nil).Do(context.Background(), http.MethodGet, "/v1/entries", nil, nil)
	wantStatus(t, err, http.StatusUnauthorized, "admin token")
	es := logEntries(t, h.srv.audit, "admin.auth")
	if len(es) != 1 || es[0].Actor.User != "anonymous" || es[0].Actor.SpiffeID != "" {
		t.Fatalf("admin.auth entries %+v: want one by anonymous", es)
	}
	// A real admin call still names admin.
	h.joinToken("n")
	es = logEntries(t, h.srv.audit, "join_token.create")
	if len(es) != 1 || es[0].Actor.User != "admin" {
		t.Fatalf("join_token.create entries %+v: want one by admin", es)
	}
}

// Issue 26 item 4: a 60,000-byte path added 60 KB to the permanent log and
// a 900 KB one made the audit write fail (raising the failure metric
// operators alert on). Now the first is a bounded entry and the second is
// refused before any handler (431); neither fails a write.
func TestHugePathsCannotGrowOrBreakTheLog(t *testing.T) {
	h := newHarness(t)
	c := h.client("rpa_wrong", nil)
	for _, size := range []int{60_000, 900_000} {
		before := h.srv.audit.Size()
		err := c.Do(context.Background(), http.MethodGet, "/v1/entries/"+strings.Repeat("a", size), nil, nil)
		if err == nil {
			t.Fatalf("%d-byte path: no error", size)
		}
		h.srv.record(context.Background(), h.srv.refusals.Flush(true)...)
		for i := before; i < h.srv.audit.Size(); i++ {
			b, _ := h.srv.audit.Entry(i)
			if len(b) > 4096 {
				t.Fatalf("%d-byte path: entry %d is %d bytes", size, i, len(b))
			}
		}
		if size == 60_000 {
			es := logEntries(t, h.srv.audit, "admin.auth")
			if len(es) != 1 || !strings.Contains(es[0].Details["path"], "…[clipped 60012 bytes sha256:") || es[0].Details["clipped"] != "details.path" {
				t.Fatalf("admin.auth entries %+v: want one with the path clipped and marked", es[0].Details)
			}
		}
	}
	if n := testutil.ToFloat64(h.srv.metrics.auditFailures); n != 0 {
		t.Fatalf("audit write failures: %v", n)
	}
}

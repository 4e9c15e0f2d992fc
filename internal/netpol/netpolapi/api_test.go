package netpolapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/fakeclock"
	"github.com/rampartsec/rampart/internal/netpol"
	"github.com/rampartsec/rampart/internal/selector"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/store/storetest"
)

// apiFixture is the API over a real store: agent h1 serves orders, agent
// h2 serves payments; payments' policy lets orders call it.
func apiFixture(t *testing.T) (*API, *fakeclock.Clock, *[]string) {
	ctx := context.Background()
	st := storetest.SQLite(t, t.TempDir())
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	for _, e := range []struct{ id, parent string }{{"orders", "h1"}, {"payments", "h2"}} {
		if err := st.CreateEntry(ctx, store.Entry{ID: e.id, SpiffeID: "spiffe://example.org/" + e.id, ParentID: "spiffe://example.org/rampart/agent/" + e.parent,
			Selectors: []selector.Selector{{Type: selector.UnixUID, Value: "1000"}}, CreatedAt: clock.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	src := []byte("service: spiffe://example.org/payments\nnetwork:\n  app_ports: [8080]\nrules:\n- name: r\n  callers: [spiffe://example.org/orders]\n")
	if _, err := st.PutPolicy(ctx, store.Policy{Service: "spiffe://example.org/payments", Version: "v1", Source: src, CreatedAt: clock.Now()}); err != nil {
		t.Fatal(err)
	}
	ns, _ := store.Netpol(st)
	var refused []string
	a := &API{Placements: ns, Policies: st, Entries: st, Now: clock.Now,
		Caller: func(r *http.Request) spiffeid.ID {
			return spiffeid.RequireFromString("spiffe://example.org/rampart/agent/" + r.Header.Get("X-Test-Agent"))
		},
		Refused: func(_ *http.Request, action, reason string, _ ...any) { refused = append(refused, action+": "+reason) }}
	return a, clock, &refused
}

func report(t *testing.T, a *API, agent, remote, body string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/v1/agent/placements", strings.NewReader(body))
	r.Header.Set("X-Test-Agent", agent)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	a.HandleAgentReport(w, r)
	return w
}

func table(t *testing.T, a *API, remote string) netpol.HostTable {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/v1/agent/netpol", nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	a.HandleAgentTable(w, r)
	var tab netpol.HostTable
	if err := json.Unmarshal(w.Body.Bytes(), &tab); err != nil {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	return tab
}

func TestAPIReportsAndTables(t *testing.T) {
	a, clock, refused := apiFixture(t)
	if w := report(t, a, "h1", "10.0.0.1:5000", `{"services":[{"spiffe_id":"spiffe://example.org/orders","ports":[8443]}]}`); w.Code != http.StatusNoContent {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if w := report(t, a, "h2", "[::ffff:10.0.0.2]:5000", `{"services":[{"spiffe_id":"spiffe://example.org/payments","ports":[8443,8443]}]}`); w.Code != http.StatusNoContent {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	tab := table(t, a, "10.0.0.2:6000")
	if len(tab.Proxy) != 1 || tab.Proxy[0].Port != 8443 || len(tab.Proxy[0].From) != 1 || tab.Proxy[0].From[0].String() != "10.0.0.1" || len(tab.App) != 1 {
		t.Fatalf("payments' host table:\n%s", tab.NFT())
	}
	// The orders host governs its own port, closed to all (no policy).
	if tab := table(t, a, "10.0.0.1:6000"); len(tab.Proxy) != 1 || len(tab.Proxy[0].From) != 0 {
		t.Fatalf("orders' host table:\n%s", tab.NFT())
	}

	// Attacks. A compromised agent cannot place a service it does not
	// serve (to open a callee's port to its own host, say).
	w := report(t, a, "h2", "10.0.0.2:5000", `{"services":[{"spiffe_id":"spiffe://example.org/orders","ports":[8443]}]}`)
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "serves no entry") || len(*refused) != 1 {
		t.Fatalf("foreign service: %d %s %v", w.Code, w.Body, *refused)
	}
	// Nor claim another host's address: the host is where the report came from.
	report(t, a, "h1", "10.0.0.66:5000", `{"services":[{"spiffe_id":"spiffe://example.org/orders","ports":[8443]}]}`)
	clock.Add(viewCacheFor) // placements reach the tables within the view cache's second
	if tab := table(t, a, "10.0.0.2:6000"); tab.Proxy[0].From[0].String() != "10.0.0.66" || len(tab.Proxy[0].From) != 1 {
		t.Fatalf("the report's source address is the host: %v", tab.Proxy[0].From)
	}
	for name, body := range map[string]string{
		"unknown field": `{"services":[],"host":"10.0.0.9"}`,
		"twice":         `{"services":[{"spiffe_id":"spiffe://example.org/orders"},{"spiffe_id":"spiffe://example.org/orders"}]}`,
		"port 70000":    `{"services":[{"spiffe_id":"spiffe://example.org/orders","ports":[70000]}]}`,
		"not json":      `services`,
	} {
		if w := report(t, a, "h1", "10.0.0.1:5000", body); w.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", name, w.Code, w.Body)
		}
	}
	// A service with too many ports is left out, and only it: the rest of
	// the report stands (a refused report would empty the host's table).
	many := `{"services":[{"spiffe_id":"spiffe://example.org/payments","ports":[8443]},{"spiffe_id":"spiffe://example.org/orders","ports":[0]}]}`
	n := len(*refused)
	if w := report(t, a, "h2", "10.0.0.2:5000", many); w.Code != http.StatusForbidden || len(*refused) != n+1 {
		t.Fatalf("h2 does not serve orders: %d %v", w.Code, *refused)
	}
	if err := a.Entries.(store.Store).CreateEntry(context.Background(), store.Entry{ID: "o2", SpiffeID: "spiffe://example.org/orders", ParentID: "spiffe://example.org/rampart/agent/h2",
		Selectors: []selector.Selector{{Type: selector.UnixUID, Value: "1000"}}, CreatedAt: clock.Now()}); err != nil {
		t.Fatal(err)
	}
	if w := report(t, a, "h2", "10.0.0.2:5000", many); w.Code != http.StatusNoContent || len(*refused) != n+2 {
		t.Fatalf("a bad service in a report: %d %v", w.Code, *refused)
	}
	clock.Add(viewCacheFor)
	if tab := table(t, a, "10.0.0.2:6000"); len(tab.Proxy) != 1 || tab.Proxy[0].Port != 8443 {
		t.Fatalf("the report's good service was lost:\n%s", tab.NFT())
	}
	// A host whose agent stopped reporting drops out after the TTL.
	clock.Add(DefaultTTL + time.Second)
	report(t, a, "h2", "10.0.0.2:5000", `{"services":[{"spiffe_id":"spiffe://example.org/payments","ports":[8443]}]}`)
	if tab := table(t, a, "10.0.0.2:6000"); len(tab.Proxy[0].From) != 0 {
		t.Fatalf("a stale caller host is still allowed: %v", tab.Proxy[0].From)
	}
}

func TestAPIWithoutPlacements(t *testing.T) {
	var a *API
	w := httptest.NewRecorder()
	a.HandleView(w, httptest.NewRequest(http.MethodGet, "/v1/netpol/view", nil))
	if w.Code != http.StatusNotImplemented {
		t.Fatalf("%d", w.Code)
	}
}

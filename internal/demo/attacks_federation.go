package demo

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/server"
)

// partnerTD is the trust domain of the partner the demo federates with.
var partnerTD = spiffeid.RequireTrustDomainFromString("partner.example")

// attackPartnerTrustDomain federates with a partner trust domain (a
// second Rampart server, its own CA, started here) and calls in as one of
// its services: orders, whose entry does not federate with the partner,
// refuses it at the handshake; payments, whose entry does, authenticates
// it and its policy, which names no partner caller, refuses the request.
// Ending the federation ends the partner's access to payments too.
func attackPartnerTrustDomain(ctx context.Context, sys *System) (Outcome, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	partner, stop, err := startPartner(ctx, filepath.Join(sys.Dir, "partner"))
	if err != nil {
		return Outcome{}, err
	}
	defer stop()

	// The operator federates with the partner: its bundle, read from its
	// endpoint, bootstraps the relationship; the server refreshes it there.
	var doc json.RawMessage
	if err := partner.client.Do(ctx, http.MethodGet, "/v1/federation/bundle", nil, &doc); err != nil {
		return Outcome{}, fmt.Errorf("reading the partner's bundle: %w", err)
	}
	rel := api.Federation{TrustDomain: partnerTD.Name(), BundleURL: "https://" + partner.addr + "/v1/federation/bundle", Profile: "https_spiffe",
		EndpointID: identity.ServerID(partnerTD).String(), Bundle: doc}
	sys.Admin.Do(ctx, http.MethodDelete, "/v1/federations/"+partnerTD.Name(), nil, nil) // a relationship left by an earlier run
	if err := sys.Admin.Do(ctx, http.MethodPost, "/v1/federations", rel, nil); err != nil {
		return Outcome{}, fmt.Errorf("federating with %s: %w", partnerTD.Name(), err)
	}
	defer sys.Admin.Do(context.WithoutCancel(ctx), http.MethodDelete, "/v1/federations/"+partnerTD.Name(), nil, nil)
	// Payments opts in: its entry federates with the partner; orders' does not.
	if err := federateEntry(ctx, sys, "/payments"); err != nil {
		return Outcome{}, err
	}

	caller := spiffeid.RequireFromPath(partnerTD, "/shop")
	sv, err := partner.svid(caller)
	if err != nil {
		return Outcome{}, err
	}
	ours, err := x509bundle.Load(TrustDomain, sys.BundleFile) // the partner's side trusts us through its own relationship
	if err != nil {
		return Outcome{}, err
	}
	call := func(addr string, service string) (int, error) {
		cfg := tlsconfig.MTLSClientConfig(sv, ours, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(TrustDomain, service)))
		cfg.MinVersion, cfg.NextProtos = tls.VersionTLS13, []string{"http/1.1"}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /payments/1 HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err // TLS 1.3: a refused client certificate shows on the first read
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	// Payments receives the partner's bundle with its next sync.
	var code int
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, err = call(sys.Services.PaymentsInbound, "/payments"); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return Outcome{}, fmt.Errorf("payments (federating with %s) never accepted its SVID: %v", partnerTD.Name(), err)
	}
	if code != http.StatusForbidden {
		return Outcome{}, fmt.Errorf("a partner caller no policy names got %d from payments", code)
	}
	ocode, oerr := call(sys.Services.OrdersInbound, "/orders")
	if oerr == nil {
		return Outcome{}, fmt.Errorf("orders, which does not federate with %s, answered its caller (%d)", partnerTD.Name(), ocode)
	}
	return Outcome{Stopped: true, Audited: "authz.decision",
		Prevent: fmt.Sprintf("orders' entry does not federate with %s: its proxy holds no bundle of it and refused %s at the handshake (%s); "+
			"payments' entry does (federates_with): it verified the caller against %s's own roots and its policy, which names no partner caller, answered %d",
			partnerTD.Name(), caller, lastLine(oerr.Error()), partnerTD.Name(), code)}, nil
}

// federateEntry makes the entry of the service at path federate with the
// partner (entry update: every field kept, federates_with added).
func federateEntry(ctx context.Context, sys *System, path string) error {
	var es []api.Entry
	q := url.Values{"spiffe_id": {spiffeid.RequireFromPath(TrustDomain, path).String()}}
	if err := sys.Admin.Do(ctx, http.MethodGet, "/v1/entries?"+q.Encode(), nil, &es); err != nil || len(es) == 0 {
		return fmt.Errorf("finding the entry of %s: %v (%d entries)", path, err, len(es))
	}
	for _, e := range es {
		if slices.Contains(e.FederatesWith, partnerTD.Name()) {
			continue
		}
		e.FederatesWith = append(e.FederatesWith, partnerTD.Name())
		id := e.ID
		e.ID, e.CreatedAt = "", time.Time{}
		if err := sys.Admin.Do(ctx, http.MethodPut, "/v1/entries/"+id, e, nil); err != nil {
			return fmt.Errorf("federating the entry of %s: %w", path, err)
		}
	}
	return nil
}

// partner is the partner trust domain's server, in this process.
type partner struct {
	srv    *server.Server
	addr   string
	client *api.Client // its public API
}

// svid is an X.509-SVID of id signed by the partner's CA, as the
// partner's agent would hand its service.
func (p *partner) svid(id spiffeid.ID) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	chain, err := p.srv.CA().SignX509SVID(id, key.Public(), 10*time.Minute, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("the partner's CA: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}

func startPartner(ctx context.Context, dir string) (*partner, func(), error) {
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", TrustDomain: partnerTD, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, nil, fmt.Errorf("starting the partner's server: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { srv.Serve(sctx, ln); srv.Close(); close(done) }()
	p := &partner{srv: srv, addr: ln.Addr().String(), client: &api.Client{BaseURL: "https://" + ln.Addr().String(), HTTP: serverClient(srv, 10*time.Second)}}
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}
	return p, stop, nil
}

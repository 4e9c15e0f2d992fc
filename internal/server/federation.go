package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/federation"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/store"
)

// FederationConfig configures federation with other trust domains
// (package federation). Zero: no bundle endpoint is served, and
// relationships are still refreshed.
type FederationConfig struct {
	// Listen is host:port of the bundle endpoint; empty: none.
	Listen string
	// Profile of the bundle endpoint: https_spiffe (the server's own
	// SVID) or https_web (CertFile and KeyFile).
	Profile           federation.Profile
	CertFile, KeyFile string
	// RefreshHint is the spiffe_refresh_hint served (0: 5 min).
	RefreshHint time.Duration
	// WebRootsFile, if set, holds the roots (PEM) that https_web
	// endpoints of other trust domains are verified with instead of the
	// system's (a private PKI, or tests).
	WebRootsFile string
	// MinRefresh and MaxRefresh bound the refresh hints of others (0:
	// federation's defaults).
	MinRefresh, MaxRefresh time.Duration
}

// federationState is the server's part of federation: the refresher, the
// last failure per trust domain (audited once per change, counted always).
type federationState struct {
	store     store.FederationStore
	refresher *federation.Refresher
	refreshes *prometheus.CounterVec
	tlsConfig *tls.Config // the bundle endpoint's; nil: not served

	mu       sync.Mutex
	lastFail map[string]string
}

func (s *Server) newFederation() error {
	fs, ok := store.Federations(s.store)
	if !ok {
		return errors.New("server: the store has no federation table")
	}
	cfg := s.cfg.Federation
	f := &federationState{store: fs, lastFail: map[string]string{},
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rampart_federation_refreshes_total", Help: "Fetches of federated trust domains' bundles, by trust domain and outcome (updated, unchanged, failed).",
		}, []string{"trust_domain", "outcome"})}
	s.reg.MustRegister(f.refreshes)
	var webRoots *x509.CertPool
	if cfg.WebRootsFile != "" {
		b, err := os.ReadFile(cfg.WebRootsFile)
		if err != nil {
			return fmt.Errorf("server: --federation-web-roots: %w", err)
		}
		webRoots = x509.NewCertPool()
		if !webRoots.AppendCertsFromPEM(b) {
			return fmt.Errorf("server: --federation-web-roots %s: no PEM certificate", cfg.WebRootsFile)
		}
	}
	f.refresher = &federation.Refresher{TrustDomain: s.cfg.TrustDomain, Own: s.ca.X509Bundle, Store: fedStore{fs, s.notify},
		WebRoots: webRoots, MinRefresh: cfg.MinRefresh, MaxRefresh: cfg.MaxRefresh, OnRefresh: s.federationRefreshed, Now: s.now, Log: s.log}
	if cfg.Listen != "" {
		switch cfg.Profile {
		case federation.ProfileSPIFFE, "":
			f.tlsConfig = federation.SPIFFEServerTLS(s.cert.GetCertificate)
		case federation.ProfileWeb:
			if cfg.CertFile == "" || cfg.KeyFile == "" {
				return errors.New("server: the https_web bundle endpoint needs --federation-cert and --federation-key")
			}
			c, err := federation.WebServerTLS(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return fmt.Errorf("server: %w", err)
			}
			f.tlsConfig = c
		default:
			return fmt.Errorf("server: --federation-profile %q: want https_spiffe or https_web", cfg.Profile)
		}
	}
	s.fed = f
	s.registrar.Federations = func(ctx context.Context) ([]string, error) {
		rels, err := fs.ListFederations(ctx)
		return api.MapAll(rels, func(r store.Federation) string { return r.TrustDomain }), err
	}
	return nil
}

// bundleEndpoint serves this trust domain's bundle (the public handler,
// on the federation listener and at GET /v1/federation/bundle).
func (s *Server) bundleEndpoint() *federation.Endpoint {
	return &federation.Endpoint{TrustDomain: s.cfg.TrustDomain, RefreshHint: s.cfg.Federation.RefreshHint, Log: s.log,
		Bundle: func() (federation.Authorities, error) {
			return federation.Authorities{X509: s.ca.X509Bundle(), JWT: s.ca.JWTAuthorities(), Sequence: uint64(max(s.feed.current(), 0))}, nil
		}}
}

func (s *Server) handleFederationBundle(w http.ResponseWriter, r *http.Request) {
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/"
	s.bundleEndpoint().ServeHTTP(w, r2)
}

// serveFederation serves the bundle endpoint on cfg.Federation.Listen
// until ctx ends.
func (s *Server) serveFederation(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Federation.Listen)
	if err != nil {
		return fmt.Errorf("server: federation listener: %w", err)
	}
	srv := &http.Server{Handler: s.bundleEndpoint(), TLSConfig: s.fed.tlsConfig, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.log.Info("federation bundle endpoint listening", "addr", ln.Addr().String(), "profile", string(s.cfg.Federation.Profile))
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("server: federation listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// federationRefreshed audits and counts one refresh: every new bundle, and
// a failure when it differs from the last one (a partner's endpoint that
// is down does not write an entry every 30 s; the metric counts each).
func (s *Server) federationRefreshed(res federation.Result) {
	td := res.TrustDomain.Name()
	s.fed.refreshes.WithLabelValues(td, res.Outcome).Inc()
	e := &audit.Entry{V: audit.SchemaVersion, Time: s.now(), Actor: audit.Actor{SpiffeID: identity.ServerID(s.cfg.TrustDomain).String()},
		Target: res.TrustDomain.IDString(), Source: "server", Details: map[string]string{"trust_domain": td}}
	s.fed.mu.Lock()
	last := s.fed.lastFail[td]
	switch res.Outcome {
	case federation.OutcomeFailed:
		s.fed.lastFail[td] = res.Err.Error()
	default:
		delete(s.fed.lastFail, td)
	}
	s.fed.mu.Unlock()
	switch {
	case res.Outcome == federation.OutcomeFailed && res.Err.Error() != last:
		e.Action, e.Outcome, e.Reason = "federation.refresh", audit.OutcomeFailure, res.Err.Error()
		e.Details["next_attempt"] = res.Next.UTC().Format(time.RFC3339)
	case res.Outcome == federation.OutcomeUpdated:
		e.Action, e.Outcome = "federation.bundle_update", audit.OutcomeSuccess
		e.Details["x509_authorities"] = fmt.Sprint(len(res.Bundle.X509Authorities()))
		e.Details["jwt_authorities"] = fmt.Sprint(len(res.Bundle.JWTAuthorities()))
		e.Details["authorities_sha256"] = authoritiesDigest(res.Bundle.X509Authorities())
		if seq, ok := res.Bundle.SequenceNumber(); ok {
			e.Details["spiffe_sequence"] = fmt.Sprint(seq)
		}
	default:
		return
	}
	s.record(context.Background(), e)
}

// authoritiesDigest names a set of roots in an audit entry: the SHA-256
// of their DER, concatenated in order.
func authoritiesDigest(certs []*x509.Certificate) string {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fedStore adapts the store to the refresher; a new bundle wakes agents.
type fedStore struct {
	st     store.FederationStore
	notify func(context.Context)
}

func (f fedStore) Relationships(ctx context.Context) ([]federation.Relationship, error) {
	fs, err := f.st.ListFederations(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]federation.Relationship, 0, len(fs))
	for _, sf := range fs {
		rel, err := relationshipFrom(sf)
		if err != nil {
			return nil, err
		}
		out = append(out, rel)
	}
	return out, nil
}

func (f fedStore) Accept(ctx context.Context, td spiffeid.TrustDomain, doc []byte, at, next time.Time) error {
	if err := f.st.SetFederatedBundle(ctx, td.Name(), doc, at, next); err != nil {
		return err
	}
	f.notify(ctx)
	return nil
}

func (f fedStore) Attempted(ctx context.Context, td spiffeid.TrustDomain, at, next time.Time, errText string) error {
	return f.st.RecordFederationAttempt(ctx, td.Name(), at, next, errText)
}

// relationshipFrom reads a stored relationship (its fields were checked
// when it was stored).
func relationshipFrom(f store.Federation) (federation.Relationship, error) {
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil {
		return federation.Relationship{}, fmt.Errorf("federation %q: %w", f.TrustDomain, err)
	}
	rel := federation.Relationship{TrustDomain: td, URL: f.BundleURL, Profile: federation.Profile(f.Profile), NextRefresh: f.NextRefresh}
	if f.EndpointID != "" {
		if rel.EndpointID, err = spiffeid.FromString(f.EndpointID); err != nil {
			return federation.Relationship{}, fmt.Errorf("federation %s: endpoint ID: %w", td, err)
		}
	}
	if f.Bundle != nil {
		if rel.Bundle, err = federation.ParseBundle(td, f.Bundle); err != nil {
			return federation.Relationship{}, err
		}
	}
	return rel, nil
}

// federatedBundles are the bundles held for the trust domains entries
// federate with, by name, for an agent (their workloads and proxies trust
// them): an agent is given no bundle none of its entries asks for.
func (s *Server) federatedBundles(ctx context.Context, entries []store.Entry) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	wanted := map[string]bool{}
	for _, e := range entries {
		for _, td := range e.FederatesWith {
			wanted[td] = true
		}
	}
	if len(wanted) == 0 {
		return out, nil
	}
	fs, err := s.fed.store.ListFederations(ctx)
	if err != nil {
		return nil, err
	}
	for _, f := range fs {
		if f.Bundle != nil && wanted[f.TrustDomain] {
			out[f.TrustDomain] = json.RawMessage(f.Bundle)
		}
	}
	return out, nil
}

// The admin API.

func federationToAPI(f store.Federation) api.Federation {
	tp := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	out := api.Federation{TrustDomain: f.TrustDomain, BundleURL: f.BundleURL, Profile: f.Profile, EndpointID: f.EndpointID,
		RefreshedAt: tp(f.RefreshedAt), NextRefresh: tp(f.NextRefresh), LastAttempt: tp(f.LastAttempt), LastError: f.LastError,
		CreatedAt: tp(f.CreatedAt), UpdatedAt: tp(f.UpdatedAt)}
	if f.Bundle != nil {
		out.Bundle = json.RawMessage(f.Bundle)
		if td, err := spiffeid.TrustDomainFromString(f.TrustDomain); err == nil {
			if b, err := federation.ParseBundle(td, f.Bundle); err == nil {
				out.X509Authorities = len(b.X509Authorities())
				if seq, ok := b.SequenceNumber(); ok {
					out.Sequence = &seq
				}
			}
		}
	}
	return out
}

// federationFromAPI checks what an operator asked for: the relationship's
// fields (federation.Relationship.Check) and, if given, the first bundle.
func (s *Server) federationFromAPI(req api.Federation) (store.Federation, error) {
	td, err := spiffeid.TrustDomainFromString(req.TrustDomain)
	if err != nil {
		return store.Federation{}, fmt.Errorf("trust_domain %q: %w", req.TrustDomain, err)
	}
	rel := federation.Relationship{TrustDomain: td, URL: req.BundleURL, Profile: federation.Profile(req.Profile)}
	if req.EndpointID != "" {
		if rel.EndpointID, err = spiffeid.FromString(req.EndpointID); err != nil {
			return store.Federation{}, fmt.Errorf("endpoint_spiffe_id %q: %w", req.EndpointID, err)
		}
	}
	if err := rel.Check(s.cfg.TrustDomain); err != nil {
		return store.Federation{}, err
	}
	out := store.Federation{TrustDomain: td.Name(), BundleURL: req.BundleURL, Profile: req.Profile, EndpointID: req.EndpointID}
	if len(req.Bundle) > 0 {
		b, err := federation.ParseBundle(td, req.Bundle)
		if err != nil {
			return store.Federation{}, fmt.Errorf("trust_domain_bundle: %w", err)
		}
		doc, err := b.Marshal()
		if err != nil {
			return store.Federation{}, err
		}
		out.Bundle = doc
	}
	return out, nil
}

func (s *Server) handleCreateFederation(w http.ResponseWriter, r *http.Request) {
	var req api.Federation
	if !api.ReadJSON(w, r, &req) {
		return
	}
	f, err := s.federationFromAPI(req)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "federation: "+err.Error())
		return
	}
	now := s.now()
	f.CreatedAt, f.UpdatedAt, f.NextRefresh = now, now, now
	if f.Bundle != nil {
		f.RefreshedAt = now
	}
	if err := s.fed.store.CreateFederation(r.Context(), f); errors.Is(err, store.ErrConflict) {
		api.WriteProblem(w, http.StatusConflict, "federation: a relationship with "+f.TrustDomain+" exists; update it")
		return
	} else if err != nil {
		s.internalError(w, err)
		return
	}
	s.notify(r.Context())
	s.fed.refresher.Kick()
	s.event(r, "federation.create", federationDetails(f)...)
	api.WriteJSON(w, http.StatusCreated, federationToAPI(f))
}

func federationDetails(f store.Federation) []any {
	kv := []any{"target", "spiffe://" + f.TrustDomain, "trust_domain", f.TrustDomain, "bundle_endpoint_url", f.BundleURL, "profile", f.Profile}
	if f.EndpointID != "" {
		kv = append(kv, "endpoint_spiffe_id", f.EndpointID)
	}
	if f.Bundle != nil {
		sum := sha256.Sum256(f.Bundle)
		kv = append(kv, "bundle_sha256", hex.EncodeToString(sum[:]))
	}
	return kv
}

func (s *Server) handleListFederations(w http.ResponseWriter, r *http.Request) {
	fs, err := s.fed.store.ListFederations(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(fs, federationToAPI))
}

func (s *Server) getFederation(w http.ResponseWriter, r *http.Request) (store.Federation, bool) {
	f, err := s.fed.store.GetFederation(r.Context(), r.PathValue("trust_domain"))
	if errors.Is(err, store.ErrNotFound) {
		api.WriteProblem(w, http.StatusNotFound, "federation: no relationship with "+r.PathValue("trust_domain"))
		return f, false
	}
	if err != nil {
		s.internalError(w, err)
		return f, false
	}
	return f, true
}

func (s *Server) handleGetFederation(w http.ResponseWriter, r *http.Request) {
	if f, ok := s.getFederation(w, r); ok {
		api.WriteJSON(w, http.StatusOK, federationToAPI(f))
	}
}

// handleUpdateFederation replaces the endpoint's URL, profile and ID; a
// bundle in the body replaces the one held (an operator re-bootstrapping
// trust after the other side lost its keys).
func (s *Server) handleUpdateFederation(w http.ResponseWriter, r *http.Request) {
	old, ok := s.getFederation(w, r)
	if !ok {
		return
	}
	var req api.Federation
	if !api.ReadJSON(w, r, &req) {
		return
	}
	if req.TrustDomain == "" {
		req.TrustDomain = old.TrustDomain
	}
	if req.TrustDomain != old.TrustDomain {
		api.WriteProblem(w, http.StatusBadRequest, "federation: the trust domain of a relationship cannot change; delete it and create another")
		return
	}
	f, err := s.federationFromAPI(req)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "federation: "+err.Error())
		return
	}
	now := s.now()
	f.CreatedAt, f.UpdatedAt, f.NextRefresh = old.CreatedAt, now, now
	f.RefreshedAt, f.LastAttempt, f.LastError = old.RefreshedAt, old.LastAttempt, old.LastError
	if f.Bundle == nil {
		f.Bundle = old.Bundle
	} else {
		f.RefreshedAt = now
	}
	if err := s.fed.store.UpdateFederation(r.Context(), f); err != nil {
		s.internalError(w, err)
		return
	}
	s.notify(r.Context())
	s.fed.refresher.Kick()
	s.event(r, "federation.update", federationDetails(f)...)
	api.WriteJSON(w, http.StatusOK, federationToAPI(f))
}

func (s *Server) handleDeleteFederation(w http.ResponseWriter, r *http.Request) {
	td := r.PathValue("trust_domain")
	if err := s.fed.store.DeleteFederation(r.Context(), td); errors.Is(err, store.ErrNotFound) {
		api.WriteProblem(w, http.StatusNotFound, "federation: no relationship with "+td)
		return
	} else if err != nil {
		s.internalError(w, err)
		return
	}
	s.notify(r.Context())
	s.event(r, "federation.delete", "target", "spiffe://"+td, "trust_domain", td)
	w.WriteHeader(http.StatusNoContent)
}

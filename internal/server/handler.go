package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/witness"
)

// maxHeaderBytes bounds a request's line and headers (net/http's default is
// 1 MiB): a request line is audited (clipped) and a megabyte of it bought
// nothing but load. Larger requests get 431 before any handler runs.
const maxHeaderBytes = 64 << 10

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, s.instrument(pattern, h))
	}
	// Public.
	route("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	route("GET /v1/bundle", s.handleBundle)
	route("GET /v1/jwt-bundle", s.handleJWTBundle)
	route("GET "+witness.PathCheckpoint, s.atHolder(s.handleCheckpoint))
	route("GET "+witness.PathConsistency, s.atHolder(s.handleConsistency))
	// Metrics say what runs and how busy it is: not for anyone who can
	// reach the API. Prometheus sends DATA/metrics.token (a scrape-only
	// secret) as a bearer token (authorization.credentials_file).
	mux.Handle("GET /metrics", s.metricsAuth(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})))

	// Admin.
	route("POST /v1/join-tokens", s.admin(s.handleCreateJoinToken))
	route("POST /v1/entries", s.admin(s.handleCreateEntry))
	route("GET /v1/entries", s.admin(s.handleListEntries))
	route("GET /v1/entries/{id}", s.admin(s.handleGetEntry))
	route("DELETE /v1/entries/{id}", s.admin(s.handleDeleteEntry))
	route("GET /v1/agents", s.admin(s.handleListAgents))
	route("GET /v1/agents/{name}", s.admin(s.handleGetAgent))
	route("POST /v1/agents/{name}/evict", s.admin(s.handleEvictAgent))
	route("POST /v1/svids/revoke", s.admin(s.handleRevoke))
	route("GET /v1/ca", s.admin(s.handleCAStatus))
	route("POST /v1/ca/rotate", s.admin(s.handleCARotate))

	// Agents.
	route("POST /v1/agent/attest", s.handleAttest)
	route("POST /v1/agent/renew", s.agent(s.handleRenew))
	route("GET /v1/agent/sync", s.agent(s.handleSync))
	route("POST /v1/agent/svids", s.agent(s.handleSign))
	route("POST /v1/agent/jwt-svids", s.agent(s.handleJWTSVID))

	// Policies: admins manage them; each workload (proxy or SDK) fetches the
	// one that protects it, with the revocation list.
	route("PUT /v1/policies", s.admin(s.handlePutPolicy))
	route("GET /v1/policies", s.admin(s.handleListPolicies))
	route("GET /v1/policy", s.admin(s.handleGetPolicy))
	route("GET /v1/policy/history", s.admin(s.handlePolicyHistory))
	route("DELETE /v1/policy", s.admin(s.handleDeletePolicy))
	route("GET /v1/workload/sync", s.workload(s.handleWorkloadSync))

	// Detection alerts.
	route("GET /v1/alerts", s.admin(s.handleListAlerts))
	route("GET /v1/alerts/{id}", s.admin(s.handleGetAlert))
	route("POST /v1/alerts/{id}/status", s.admin(s.handleSetAlertStatus))

	// OAuth clients and users.
	route("POST /v1/oauth/clients", s.admin(s.handleCreateOAuthClient))
	route("GET /v1/oauth/clients", s.admin(s.handleListOAuthClients))
	route("GET /v1/oauth/clients/{id}", s.admin(s.handleGetOAuthClient))
	route("PATCH /v1/oauth/clients/{id}", s.admin(s.handleUpdateOAuthClient))
	route("DELETE /v1/oauth/clients/{id}", s.admin(s.handleDeleteOAuthClient))
	route("POST /v1/oauth/users", s.admin(s.handleCreateOAuthUser))
	route("GET /v1/oauth/users", s.admin(s.handleListOAuthUsers))
	route("GET /v1/oauth/users/{name}", s.admin(s.handleGetOAuthUser))
	route("PATCH /v1/oauth/users/{name}", s.admin(s.handleUpdateOAuthUser))
	route("DELETE /v1/oauth/users/{name}", s.admin(s.handleDeleteOAuthUser))
	// The authorization server itself (public endpoints; clients
	// authenticate per request).
	if s.oauth != nil {
		s.oauth.Register(mux, func(pattern string, h http.HandlerFunc) http.Handler { return s.instrument(pattern, h) })
	}

	// Key store: admins manage keys; workloads use them, as the key-use
	// policy allows.
	route("POST /v1/kms/keys", s.admin(s.handleCreateKMSKey))
	route("GET /v1/kms/keys", s.admin(s.handleListKMSKeys))
	route("GET /v1/kms/keys/{name}", s.admin(s.handleGetKMSKey))
	route("POST /v1/kms/keys/{name}/rotate", s.admin(s.handleRotateKMSKey))
	route("POST /v1/kms/keys/{name}/versions/{version}/{action}", s.admin(s.handleKMSVersion))
	for op, h := range s.kmsHandlers() {
		route("POST /v1/kms/keys/{name}/"+op, h)
	}

	// Backups and restore drills (backup.go).
	s.backupRoutes(route)

	// ACME (RFC 8555) for certificates that are not workload identities (acmeapi.go).
	s.acmeRoutes(mux, route)

	// Audit entries from agents' and proxies' spools.
	route("POST /v1/audit/ingest", s.atHolder(s.workload(s.handleIngest)))

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (s *Server) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		h.ServeHTTP(sw, r)
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		s.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// admin requires the admin bearer token, compared in constant time.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.adminTokenHash[:]) != 1 {
			s.metrics.adminAuthFailures.Inc()
			s.refused(r, "admin.auth", "missing or wrong admin token", "method", r.Method, "path", r.URL.Path, "token_present", ok)
			w.Header().Set("WWW-Authenticate", `Bearer realm="rampart-admin"`)
			writeProblem(w, http.StatusUnauthorized, "admin calls need the admin token (RAMPART_ADMIN_TOKEN, from DATA/admin.token) as a bearer token")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), adminKey{}, true)))
	}
}

// metricsAuth requires the metrics token (or the admin token), compared in
// constant time.
func (s *Server) metricsAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.metricsTokenHash[:])+subtle.ConstantTimeCompare(sum[:], s.adminTokenHash[:]) == 0 {
			s.refused(r, "metrics.auth", "missing or wrong metrics token", "token_present", ok)
			w.Header().Set("WWW-Authenticate", `Bearer realm="rampart-metrics"`)
			writeProblem(w, http.StatusUnauthorized, "/metrics needs the metrics token (DATA/metrics.token) as a bearer token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// adminKey marks a request whose admin token was checked.
type adminKey struct{}

func isAdmin(r *http.Request) bool {
	ok, _ := r.Context().Value(adminKey{}).(bool)
	return ok
}

// agentKey carries the verified caller's SPIFFE ID (agent or workload).
type agentKey struct{}

// agent requires an agent SVID as the TLS client certificate.
func (s *Server) agent(h http.HandlerFunc) http.HandlerFunc {
	return s.svidAuth("agent calls need the agent's SVID", s.verifyAgentChain, h)
}

// workload requires any SVID of this trust domain (proxies, SDK users).
func (s *Server) workload(h http.HandlerFunc) http.HandlerFunc {
	return s.svidAuth("workload calls need an SVID", s.verifyPeer, h)
}

// svidAuth checks the TLS client certificate with verify. The handshake
// already verified the chain; the checks are repeated here because a
// revocation or eviction may have happened since the connection was opened.
func (s *Server) svidAuth(need string, verify func([][]byte) (spiffeid.ID, error), h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			writeProblem(w, http.StatusUnauthorized, need+" as a TLS client certificate")
			return
		}
		raw := make([][]byte, len(r.TLS.PeerCertificates))
		for i, c := range r.TLS.PeerCertificates {
			raw[i] = c.Raw
		}
		id, err := verify(raw)
		if err != nil {
			// The caller is not known yet: the entry names the
			// certificate's holder (see refusedCertActor), never a
			// fallback.
			e := s.entry(r, "svid.auth", audit.OutcomeDenied, err.Error(), "path", r.URL.Path)
			refusedCertActor(e, r.TLS.PeerCertificates[0], err)
			s.recordRefusal(r.Context(), e, r.RemoteAddr) // a revoked SVID may retry in a loop
			writeProblem(w, http.StatusForbidden, err.Error())
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), agentKey{}, id)))
	}
}

func agentFrom(r *http.Request) spiffeid.ID {
	id, _ := r.Context().Value(agentKey{}).(spiffeid.ID)
	return id
}

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

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
)

// maxHeaderBytes bounds a request's line and headers (net/http's default is
// 1 MiB): a request line is audited (clipped) and a megabyte of it bought
// nothing but load. Larger requests get 431 before any handler runs.
const maxHeaderBytes = 64 << 10

// Handler returns the API's HTTP handler: the route table, each route
// behind the check its Auth names.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		pattern := rt.Method + " " + rt.Path
		h := s.guard(rt)
		if rt.Auth != AuthMetrics { // a scrape is not an API request
			h = s.instrument(pattern, h)
		}
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteProblem(w, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// guard puts rt's handler behind the check its Auth names (join tokens
// and OAuth endpoints check their callers themselves), and on a
// forwarding replica redirects holder routes to the holder.
func (s *Server) guard(rt Route) http.HandlerFunc {
	h := rt.Handler
	switch rt.Auth {
	case AuthAdmin:
		h = s.admin(rt.Permission, h)
	case AuthCaller:
		h = s.admin("", h)
	case AuthAgent:
		h = s.agent(h)
	case AuthWorkload:
		h = s.workload(h)
	case AuthMetrics:
		h = s.metricsAuth(h)
	}
	if rt.Holder {
		h = s.atHolder(h)
	}
	return h
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	api.WriteJSON(w, 200, map[string]string{"status": "ok"})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (s *Server) instrument(route string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		h.ServeHTTP(sw, r)
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		s.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	}
}

// metricsAuth requires the metrics token (or the admin token), compared in
// constant time.
func (s *Server) metricsAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(tok))
		admin := subtle.ConstantTimeCompare(sum[:], s.adminTokenHash[:])
		if s.cfg.AdminTokenOff {
			admin = 0
		}
		if !ok || subtle.ConstantTimeCompare(sum[:], s.metricsTokenHash[:])+admin == 0 {
			s.refused(r, "metrics.auth", "missing or wrong metrics token", "token_present", ok)
			w.Header().Set("WWW-Authenticate", `Bearer realm="rampart-metrics"`)
			api.WriteProblem(w, http.StatusUnauthorized, "/metrics needs the metrics token (DATA/metrics.token) as a bearer token")
			return
		}
		h(w, r)
	}
}

// agentKey carries the verified caller's SPIFFE ID (agent or workload).
type agentKey struct{}

// agent requires an agent SVID as the TLS client certificate.
func (s *Server) agent(h http.HandlerFunc) http.HandlerFunc {
	return s.svidAuth("agent calls need the agent's SVID", s.peers.VerifyAgent, h)
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
			api.WriteProblem(w, http.StatusUnauthorized, need+" as a TLS client certificate")
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
			// The connection was opened with this certificate: the
			// client reconnects, presenting its current SVID if it has
			// a newer one (after a rotation or a burn-down revoked the
			// old one), instead of retrying on this connection forever.
			w.Header().Set("Connection", "close")
			api.WriteProblem(w, http.StatusForbidden, err.Error())
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), agentKey{}, id)))
	}
}

func agentFrom(r *http.Request) spiffeid.ID {
	id, _ := r.Context().Value(agentKey{}).(spiffeid.ID)
	return id
}

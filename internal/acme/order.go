package acme

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/store"
	"github.com/rampartsec/rampart/internal/svid"
)

// Orders, authorizations and challenges (RFC 8555 §7.4, §7.5).

// Challenge types.
const (
	HTTP01    = "http-01"
	TLSALPN01 = "tls-alpn-01"
	DNS01     = "dns-01"
)

type orderJSON struct {
	Status         string       `json:"status"`
	Expires        string       `json:"expires"`
	Identifiers    []identifier `json:"identifiers"`
	Authorizations []string     `json:"authorizations"`
	Finalize       string       `json:"finalize"`
	Certificate    string       `json:"certificate,omitempty"`
	Error          *Problem     `json:"error,omitempty"`
	Profile        string       `json:"profile,omitempty"`
	Replaces       string       `json:"replaces,omitempty"`
}

type authzJSON struct {
	Identifier identifier      `json:"identifier"`
	Status     string          `json:"status"`
	Expires    string          `json:"expires"`
	Challenges []challengeJSON `json:"challenges"`
	Wildcard   bool            `json:"wildcard,omitempty"`
}

type challengeJSON struct {
	Type      string   `json:"type"`
	URL       string   `json:"url"`
	Status    string   `json:"status"`
	Token     string   `json:"token"`
	Validated string   `json:"validated,omitempty"`
	Error     *Problem `json:"error,omitempty"`
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// authzStatus is an authorization's status now (§7.1.6): pending and
// valid ones past their expiry are expired.
func authzStatus(a store.ACMEAuthz, now time.Time) string {
	if (a.Status == store.ACMEPending || a.Status == store.ACMEValid) && !now.Before(a.ExpiresAt) {
		return "expired"
	}
	return a.Status
}

// orderStatus is an order's status now (§7.1.6): a pending order is
// ready when every authorization is valid, invalid when one cannot be
// any more or the order expired.
func orderStatus(o store.ACMEOrder, authzs []store.ACMEAuthz, now time.Time) string {
	if o.Status != store.ACMEPending {
		return o.Status
	}
	if !now.Before(o.ExpiresAt) {
		return store.ACMEInvalid
	}
	ready := len(authzs) > 0
	for _, a := range authzs {
		switch authzStatus(a, now) {
		case store.ACMEValid:
		case store.ACMEPending:
			ready = false
		default:
			return store.ACMEInvalid
		}
	}
	if ready {
		return "ready"
	}
	return store.ACMEPending
}

// challengeTypes are the challenges offered for an identifier: a wildcard
// only by DNS (§7.1.3), an address not by DNS (RFC 8738 §7).
func challengeTypes(a store.ACMEAuthz) []string {
	switch {
	case a.Wildcard:
		return []string{DNS01}
	case a.Identifier.Type == "ip":
		return []string{HTTP01, TLSALPN01}
	}
	return []string{HTTP01, TLSALPN01, DNS01}
}

func (s *Server) orderJSON(r *http.Request, o store.ACMEOrder, authzs []store.ACMEAuthz) orderJSON {
	out := orderJSON{Status: orderStatus(o, authzs, s.cfg.Now()), Expires: rfc3339(o.ExpiresAt), Finalize: s.url(r, "order/"+o.ID+"/finalize"),
		Error: unmarshalProblem(o.Error), Profile: o.Profile, Authorizations: []string{}}
	for _, id := range o.Identifiers {
		out.Identifiers = append(out.Identifiers, identifier(id))
	}
	for _, a := range authzs {
		out.Authorizations = append(out.Authorizations, s.url(r, "authz/"+a.ID))
	}
	if o.CertSerial != "" {
		out.Certificate = s.url(r, "cert/"+o.CertSerial)
	}
	if o.Replaces != "" {
		if c, err := s.st.GetACMECert(r.Context(), o.Replaces); err == nil {
			out.Replaces = certIDOf(c)
		}
	}
	return out
}

func (s *Server) authzJSON(r *http.Request, a store.ACMEAuthz) authzJSON {
	now := s.cfg.Now()
	out := authzJSON{Identifier: identifier(a.Identifier), Status: authzStatus(a, now), Expires: rfc3339(a.ExpiresAt), Wildcard: a.Wildcard}
	if base, ok := identifier(a.Identifier).wildcard(); ok {
		out.Identifier.Value = base // §7.1.4: the identifier without "*."
	}
	for _, t := range challengeTypes(a) {
		out.Challenges = append(out.Challenges, s.challengeJSON(r, a, t))
	}
	return out
}

func (s *Server) challengeJSON(r *http.Request, a store.ACMEAuthz, typ string) challengeJSON {
	c := challengeJSON{Type: typ, URL: s.url(r, "chall/"+a.ID+"/"+typ), Status: store.ACMEPending, Token: a.Token}
	if a.Status == store.ACMEPending && s.validating(a.ID) == typ {
		c.Status = store.ACMEProcessing
	}
	if a.Attempted == typ {
		switch a.Status {
		case store.ACMEValid:
			c.Status, c.Validated = store.ACMEValid, rfc3339(a.ValidatedAt)
		case store.ACMEInvalid:
			c.Status, c.Error = store.ACMEInvalid, unmarshalProblem(a.Error)
		}
	}
	return c
}

type newOrderPayload struct {
	Identifiers []identifier `json:"identifiers"`
	NotBefore   string       `json:"notBefore"`
	NotAfter    string       `json:"notAfter"`
	Profile     string       `json:"profile"`
	Replaces    string       `json:"replaces"`
}

// accountPolicy returns the name policy of an account and the EAB key it
// was bound with, refusing an account whose key was revoked.
func (s *Server) accountPolicy(ctx context.Context, a *store.ACMEAccount) (policy, *store.ACMEEABKey, *Problem) {
	pol := policy{server: s.server, denied: s.denied}
	if a.EABKeyID == "" {
		return pol, nil, nil
	}
	k, err := s.st.GetACMEEABKey(ctx, a.EABKeyID)
	if err != nil {
		return pol, nil, internal("cannot read the account's external account key")
	}
	if !k.RevokedAt.IsZero() {
		return pol, nil, unauthorized("the external account key %q this account was bound with is revoked", k.KeyID)
	}
	if pol.key, err = ParsePatterns(k.AllowedNames); err != nil {
		return pol, nil, internal("the external account key's names do not parse")
	}
	return pol, &k, nil
}

func (s *Server) handleNewOrder(w http.ResponseWriter, r *http.Request) *Problem {
	req, p := s.authenticate(r, byKID)
	if p != nil {
		return p
	}
	a := req.acct
	var pl newOrderPayload
	if p := decodePayload(req.payload, &pl); p != nil {
		return p
	}
	refuse := func(p *Problem, ids []identifier) *Problem {
		names := make([]string, len(ids))
		for i, id := range ids {
			names[i] = id.Value
		}
		s.metrics.orders.WithLabelValues("refused").Inc()
		s.record(r.Context(), s.entry(r, "acme.order_create", audit.OutcomeDenied, p.Detail, a.ID, "target", strings.Join(names, ","), "problem", p.kind()))
		return p
	}
	if pl.NotBefore != "" || pl.NotAfter != "" {
		return refuse(malformed("notBefore and notAfter are not supported: the lifetime is the profile's (%v)", s.cfg.CertTTL), pl.Identifiers)
	}
	if len(pl.Identifiers) == 0 || len(pl.Identifiers) > maxIdentifiers {
		return refuse(malformed("an order has 1 to %d identifiers, not %d", maxIdentifiers, len(pl.Identifiers)), pl.Identifiers)
	}
	var ids []identifier
	for _, raw := range pl.Identifiers {
		id, p := normalize(raw)
		if p != nil {
			return refuse(p, pl.Identifiers)
		}
		if slices.Contains(ids, id) {
			return refuse(malformed("identifier %s appears twice", id.Value), pl.Identifiers)
		}
		ids = append(ids, id)
	}
	pol, key, p := s.accountPolicy(r.Context(), a)
	if p != nil {
		return refuse(p, ids)
	}
	if p := pol.check(ids); p != nil {
		return refuse(p, ids)
	}
	switch pl.Profile {
	case "", ProfileTLSServer:
		pl.Profile = ProfileTLSServer
	case ProfileTLSServerClient:
		if key == nil || !key.ClientAuth {
			return refuse(problem(http.StatusBadRequest, errInvalidProfile, "profile %s needs an external account key that allows client authentication", pl.Profile), ids)
		}
	default:
		return refuse(problem(http.StatusBadRequest, errInvalidProfile, "profile %q: want %s or %s", pl.Profile, ProfileTLSServer, ProfileTLSServerClient), ids)
	}
	now := s.cfg.Now()
	o := store.ACMEOrder{ID: newID(), AccountID: a.ID, Status: store.ACMEPending, Profile: pl.Profile, ExpiresAt: now.Add(orderTTL), CreatedAt: now, UpdatedAt: now}
	if pl.Replaces != "" {
		c, p := s.replaceable(r.Context(), a, pl.Replaces, ids)
		if p != nil {
			return refuse(p, ids)
		}
		o.Replaces = c.Serial
	}
	var authzs []store.ACMEAuthz
	for _, id := range ids {
		o.Identifiers = append(o.Identifiers, store.ACMEIdentifier(id))
		_, wild := id.wildcard()
		authzs = append(authzs, store.ACMEAuthz{ID: newID(), OrderID: o.ID, AccountID: a.ID, Identifier: store.ACMEIdentifier(id), Wildcard: wild,
			Status: store.ACMEPending, Token: newToken(), ExpiresAt: o.ExpiresAt, CreatedAt: now})
	}
	if err := s.st.CreateACMEOrder(r.Context(), o, authzs, now); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return refuse(problem(http.StatusConflict, errAlreadyReplaced, "certificate %s is already being replaced by another order", pl.Replaces), ids)
		}
		s.cfg.Log.Error("acme: create order", "err", err)
		return internal("cannot store the order")
	}
	s.metrics.orders.WithLabelValues("created").Inc()
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = id.Value
	}
	kv := []string{"target", strings.Join(names, ","), "order", o.ID, "profile", o.Profile}
	if o.Replaces != "" {
		kv = append(kv, "replaces", o.Replaces)
	}
	s.record(r.Context(), s.entry(r, "acme.order_create", audit.OutcomeSuccess, "", a.ID, kv...))
	w.Header().Set("Location", s.url(r, "order/"+o.ID))
	return writeJSON(w, http.StatusCreated, s.orderJSON(r, o, authzs))
}

// replaceable checks an order's replaces field (RFC 9773 §5): a
// certificate of this account that shares an identifier with the order.
func (s *Server) replaceable(ctx context.Context, a *store.ACMEAccount, certID string, ids []identifier) (store.ACMECert, *Problem) {
	aki, serial, err := parseCertID(certID)
	if err != nil {
		return store.ACMECert{}, malformed("replaces: %v", err)
	}
	c, err := s.st.GetACMECert(ctx, serial)
	if errors.Is(err, store.ErrNotFound) || err == nil && !bytes.Equal(c.AKI, aki) {
		return store.ACMECert{}, malformed("replaces: no certificate %s was issued here", certID)
	}
	if err != nil {
		return store.ACMECert{}, internal("cannot read the certificate")
	}
	if c.AccountID != a.ID {
		return store.ACMECert{}, unauthorized("replaces: certificate %s belongs to another account", certID)
	}
	shared := false
	for _, id := range ids {
		shared = shared || slices.Contains(c.Names, id.Value)
	}
	if !shared {
		return store.ACMECert{}, malformed("replaces: certificate %s has none of this order's identifiers", certID)
	}
	return c, nil
}

// newToken returns a challenge token: 256 random bits in base64url (§8.3
// asks for at least 128). A whole number of bytes: clients such as
// certbot decode the token and encode it again to build the path.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ownOrder loads an order of the request's account.
func (s *Server) ownOrder(r *http.Request, req *request) (store.ACMEOrder, []store.ACMEAuthz, *Problem) {
	o, authzs, err := s.st.GetACMEOrder(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) || err == nil && o.AccountID != req.acct.ID {
		// Another account's order is not found, as if it did not exist.
		return o, nil, notFound("order")
	}
	if err != nil {
		return o, nil, internal("cannot read the order")
	}
	return o, authzs, nil
}

func (s *Server) handleOrder(w http.ResponseWriter, r *http.Request) *Problem {
	req, p := s.authenticate(r, byKID)
	if p != nil {
		return p
	}
	if !req.postAsGet() {
		return malformed("an order is read with POST-as-GET (an empty payload)")
	}
	o, authzs, p := s.ownOrder(r, req)
	if p != nil {
		return p
	}
	return writeJSON(w, http.StatusOK, s.orderJSON(r, o, authzs))
}

func (s *Server) handleAuthz(w http.ResponseWriter, r *http.Request) *Problem {
	req, p := s.authenticate(r, byKID)
	if p != nil {
		return p
	}
	a, p := s.ownAuthz(r, req, r.PathValue("id"))
	if p != nil {
		return p
	}
	if !req.postAsGet() {
		// §7.5.2: the only change a client may ask for.
		var pl struct {
			Status string `json:"status"`
		}
		if p := decodePayload(req.payload, &pl); p != nil {
			return p
		}
		if pl.Status != store.ACMEDeactivated {
			return malformed("status %q: an authorization can only be deactivated", pl.Status)
		}
		if err := s.st.DeactivateACMEAuthz(r.Context(), a.ID, s.cfg.Now()); err != nil {
			if errors.Is(err, store.ErrStateConflict) {
				return unauthorized("authorization is %s; only pending and valid ones can be deactivated", authzStatus(a, s.cfg.Now()))
			}
			return internal("cannot deactivate the authorization")
		}
		s.record(r.Context(), s.entry(r, "acme.authz_deactivate", audit.OutcomeSuccess, "", req.acct.ID, "target", a.Identifier.Value, "authz", a.ID))
		if a, p = s.ownAuthz(r, req, a.ID); p != nil {
			return p
		}
	}
	if a.Status == store.ACMEPending && s.validating(a.ID) != "" {
		w.Header().Set("Retry-After", "1")
	}
	return writeJSON(w, http.StatusOK, s.authzJSON(r, a))
}

func (s *Server) ownAuthz(r *http.Request, req *request, id string) (store.ACMEAuthz, *Problem) {
	a, err := s.st.GetACMEAuthz(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || err == nil && a.AccountID != req.acct.ID {
		return a, notFound("authorization")
	}
	if err != nil {
		return a, internal("cannot read the authorization")
	}
	return a, nil
}

// handleChallenge reads a challenge or, with a payload of {}, asks for
// its validation (§7.5.1).
func (s *Server) handleChallenge(w http.ResponseWriter, r *http.Request) *Problem {
	req, p := s.authenticate(r, byKID)
	if p != nil {
		return p
	}
	a, p := s.ownAuthz(r, req, r.PathValue("id"))
	if p != nil {
		return p
	}
	typ := r.PathValue("type")
	if !slices.Contains(challengeTypes(a), typ) {
		return notFound("challenge")
	}
	w.Header().Add("Link", link(s.url(r, "authz/"+a.ID), "up"))
	if req.postAsGet() {
		return s.writeChallenge(w, r, a, typ)
	}
	var pl map[string]any
	if p := decodePayload(req.payload, &pl); p != nil {
		return p
	}
	now := s.cfg.Now()
	if authzStatus(a, now) != store.ACMEPending {
		// Already decided (or over): the challenge as it stands.
		return s.writeChallenge(w, r, a, typ)
	}
	// One validation of an authorization at a time on this replica; a
	// second answer while it runs gets "processing". (Replicas may each
	// run one: the first result recorded decides, FinishACMEChallenge.)
	if _, busy := s.attempts.LoadOrStore(a.ID, typ); busy {
		return s.writeChallenge(w, r, a, typ)
	}
	select {
	case s.slots <- struct{}{}:
	default:
		s.attempts.Delete(a.ID)
		return problem(http.StatusTooManyRequests, errRateLimited, "too many challenge validations in progress; retry")
	}
	keyAuth, err := keyAuthorization(a.Token, req.key)
	if err != nil {
		s.attempts.Delete(a.ID)
		<-s.slots
		return internal("cannot compute the key authorization")
	}
	done := make(chan struct{})
	result, recorded := a, false
	s.inflight.Add(1)
	go func() {
		defer s.inflight.Done()
		defer func() { <-s.slots }()
		defer close(done)
		defer s.attempts.Delete(a.ID)
		result, recorded = s.validate(context.WithoutCancel(r.Context()), r.RemoteAddr, req.acct.ID, a, typ, keyAuth, now)
	}()
	// The validation ends within ValidationTimeout: answer with its
	// result, so the client need not poll (§7.5.1 lets the server answer
	// either way). A client that hangs up first polls, and sees
	// "processing" until the result is recorded.
	select {
	case <-done:
		if recorded {
			a = result
		}
	case <-r.Context().Done():
	}
	return s.writeChallenge(w, r, a, typ)
}

// writeChallenge answers with a challenge, and Retry-After while it is
// processing (§7.5.1: "the server SHOULD include a Retry-After").
func (s *Server) writeChallenge(w http.ResponseWriter, r *http.Request, a store.ACMEAuthz, typ string) *Problem {
	c := s.challengeJSON(r, a, typ)
	if c.Status == store.ACMEProcessing {
		w.Header().Set("Retry-After", "1")
	}
	return writeJSON(w, http.StatusOK, c)
}

// keyAuthorization is token || '.' || base64url(thumbprint(accountKey))
// (§8.1).
func keyAuthorization(token string, key *jose.JSONWebKey) (string, error) {
	t, err := thumbprint(key)
	if err != nil {
		return "", err
	}
	return token + "." + t, nil
}

// validating returns the challenge type this replica is validating for
// an authorization, or "".
func (s *Server) validating(authzID string) string {
	if t, ok := s.attempts.Load(authzID); ok {
		return t.(string)
	}
	return ""
}

// validate runs one challenge validation, records its result, and
// returns the authorization as recorded (false: it could not be, or
// another validation's result was recorded first).
func (s *Server) validate(ctx context.Context, remote, acct string, a store.ACMEAuthz, typ, keyAuth string, started time.Time) (store.ACMEAuthz, bool) {
	vctx, cancel := context.WithTimeout(ctx, s.cfg.ValidationTimeout)
	defer cancel()
	s.metrics.challenges.WithLabelValues(typ).Inc()
	p := s.validator.validate(vctx, identifier(a.Identifier), typ, a.Token, keyAuth)
	var problemJSON []byte
	outcome, reason := audit.OutcomeSuccess, ""
	if p != nil {
		problemJSON = p.marshal()
		outcome, reason = audit.OutcomeFailure, p.Detail
		s.metrics.challengeFailures.WithLabelValues(typ, p.kind()).Inc()
	}
	// Recorded with the caller's context, not the validation's: a
	// validation that used its whole deadline is still recorded.
	now := s.cfg.Now()
	if err := s.st.FinishACMEChallenge(ctx, a.ID, typ, p == nil, problemJSON, started, now); err != nil {
		s.cfg.Log.Warn("acme: recording a challenge result failed", "authz", a.ID, "err", err)
		return a, false
	}
	e := s.entry(nil, "acme.challenge", outcome, reason, acct, "target", a.Identifier.Value, "type", typ, "authz", a.ID, "order", a.OrderID, "remote", remote)
	if p != nil {
		e.Details["problem"] = p.kind()
	}
	s.record(ctx, e)
	a.Status, a.Attempted, a.AttemptedAt, a.ValidatedAt, a.Error = store.ACMEValid, typ, started, now, problemJSON
	if p != nil {
		a.Status = store.ACMEInvalid
	}
	return a, true
}

func (s *Server) handleFinalize(w http.ResponseWriter, r *http.Request) *Problem {
	start := time.Now()
	req, p := s.authenticate(r, byKID)
	if p != nil {
		return p
	}
	o, authzs, p := s.ownOrder(r, req)
	if p != nil {
		return p
	}
	a := req.acct
	refuse := func(p *Problem) *Problem {
		s.record(r.Context(), s.entry(r, "acme.certificate_issue", audit.OutcomeDenied, p.Detail, a.ID, "order", o.ID, "problem", p.kind()))
		return p
	}
	if st := orderStatus(o, authzs, s.cfg.Now()); st != "ready" {
		return problem(http.StatusForbidden, errOrderNotReady, "the order is %s, not ready: every authorization must be valid first (and it is finalized once)", st)
	}
	var pl struct {
		CSR string `json:"csr"`
	}
	if p := decodePayload(req.payload, &pl); p != nil {
		return p
	}
	pol, key, p := s.accountPolicy(r.Context(), a)
	if p != nil {
		return refuse(p)
	}
	ids := make([]identifier, len(o.Identifiers))
	for i, id := range o.Identifiers {
		ids[i] = identifier(id)
	}
	// The names were checked at the order; the server's may have changed
	// since (a restart with other --acme-allow).
	if p := pol.check(ids); p != nil {
		return refuse(p)
	}
	csr, p := checkCSR(pl.CSR, ids, req.key)
	if p != nil {
		return refuse(p)
	}
	now := s.cfg.Now()
	if err := s.st.FinalizeACMEOrder(r.Context(), o.ID, now); err != nil {
		if errors.Is(err, store.ErrStateConflict) {
			return problem(http.StatusForbidden, errOrderNotReady, "the order is already being finalized")
		}
		return internal("cannot finalize the order")
	}
	tc := identity.TLSCert{TTL: s.cfg.CertTTL, ClientAuth: o.Profile == ProfileTLSServerClient && key != nil && key.ClientAuth}
	for _, id := range ids {
		if id.Type == "ip" {
			tc.IPs = append(tc.IPs, net.ParseIP(id.Value))
		} else {
			tc.DNSNames = append(tc.DNSNames, id.Value)
		}
	}
	chain, err := s.cfg.CA.SignTLS(csr.PublicKey, tc)
	if err != nil {
		s.cfg.Log.Error("acme: issue", "order", o.ID, "err", err)
		p := internal("the CA could not issue the certificate; order again")
		if ferr := s.st.FailACMEOrder(r.Context(), o.ID, p.marshal(), s.cfg.Now()); ferr != nil {
			s.cfg.Log.Error("acme: fail order", "order", o.ID, "err", ferr)
		}
		s.metrics.orders.WithLabelValues("failed").Inc()
		s.record(r.Context(), s.entry(r, "acme.certificate_issue", audit.OutcomeFailure, err.Error(), a.ID, "order", o.ID))
		return p
	}
	leaf := chain[0]
	var pemChain bytes.Buffer
	for _, c := range chain {
		pem.Encode(&pemChain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = id.Value
	}
	c := store.ACMECert{Serial: svid.SerialString(leaf.SerialNumber), AccountID: a.ID, OrderID: o.ID, Names: names, Chain: pemChain.Bytes(),
		AKI: leaf.AuthorityKeyId, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, IssuedAt: now}
	if err := s.st.CompleteACMEOrder(r.Context(), o.ID, c, s.cfg.Now()); err != nil {
		s.cfg.Log.Error("acme: complete order", "order", o.ID, "err", err)
		return internal("the certificate was issued but could not be stored; order again")
	}
	s.metrics.orders.WithLabelValues("valid").Inc()
	s.metrics.issued.Inc()
	s.metrics.issuance.Observe(time.Since(start).Seconds())
	s.metrics.orderDuration.Observe(s.cfg.Now().Sub(o.CreatedAt).Seconds())
	kv := []string{"target", strings.Join(names, ","), "serial", c.Serial, "order", o.ID, "not_after", rfc3339(c.NotAfter), "profile", o.Profile,
		"cert_id", certIDOf(c)}
	if o.Replaces != "" {
		kv = append(kv, "replaces", o.Replaces)
	}
	s.record(r.Context(), s.entry(r, "acme.certificate_issue", audit.OutcomeSuccess, "", a.ID, kv...))
	o.Status, o.CertSerial = store.ACMEValid, c.Serial
	w.Header().Set("Location", s.url(r, "order/"+o.ID))
	return writeJSON(w, http.StatusOK, s.orderJSON(r, o, authzs))
}

var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// checkCSR parses a finalize CSR and checks it asks for exactly the
// order's identifiers (§7.4: "The CSR MUST indicate the exact same set of
// requested identifiers as the initial newOrder request"), with a key we
// accept that is not the account's. Only its key is used.
func checkCSR(b64 string, ids []identifier, accountKey *jose.JSONWebKey) (*x509.CertificateRequest, *Problem) {
	der, err := decodeB64(b64)
	if err != nil || len(der) == 0 {
		return nil, problem(http.StatusBadRequest, errBadCSR, "csr: not base64url DER")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, problem(http.StatusBadRequest, errBadCSR, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, problem(http.StatusBadRequest, errBadCSR, "csr: the signature does not verify (no proof of possession)")
	}
	if err := identity.CheckTLSKey(csr.PublicKey); err != nil {
		return nil, problem(http.StatusBadRequest, errBadCSR, "csr: %v", err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if k, ok := csr.PublicKey.(equaler); ok && k.Equal(accountKey.Key) {
		return nil, problem(http.StatusBadRequest, errBadCSR, "csr: its key is the account key; use another key for the certificate")
	}
	if len(csr.URIs) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, problem(http.StatusBadRequest, errBadCSR, "csr: asks for URI or e-mail names (%v %v); this CA issues DNS names and IP addresses only", csr.URIs, csr.EmailAddresses)
	}
	for _, ext := range csr.Extensions {
		if ext.Id.Equal(oidBasicConstraints) {
			var bc struct {
				IsCA bool `asn1:"optional"`
			}
			if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil || bc.IsCA {
				return nil, problem(http.StatusBadRequest, errBadCSR, "csr: asks for a CA certificate")
			}
		}
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id.Type+":"+id.Value] = true
	}
	got := map[string]bool{}
	for _, d := range csr.DNSNames {
		got["dns:"+strings.ToLower(d)] = true
	}
	for _, ip := range csr.IPAddresses {
		got["ip:"+ipString(ip)] = true
	}
	if cn := csr.Subject.CommonName; cn != "" {
		k := "dns:" + strings.ToLower(cn)
		if ip := net.ParseIP(cn); ip != nil {
			k = "ip:" + ipString(ip)
		}
		if !want[k] {
			return nil, problem(http.StatusBadRequest, errBadCSR, "csr: common name %q is not one of the order's identifiers", cn)
		}
		got[k] = true
	}
	var extra, missing []string
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	if len(extra)+len(missing) > 0 {
		slices.Sort(extra)
		slices.Sort(missing)
		return nil, problem(http.StatusBadRequest, errBadCSR, "csr: its names differ from the order's (not in the order: %v; missing: %v)", extra, missing)
	}
	return csr, nil
}

func ipString(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.String()
}

package acme

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/mail"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

// Accounts (RFC 8555 §7.3).

type accountJSON struct {
	Status  string   `json:"status"`
	Contact []string `json:"contact,omitempty"`
	Orders  string   `json:"orders"`
}

func (s *Server) accountJSON(r *http.Request, a *store.ACMEAccount) accountJSON {
	return accountJSON{Status: a.Status, Contact: a.Contact, Orders: s.url(r, "acct/"+a.ID+"/orders")}
}

type newAccountPayload struct {
	Contact                []string        `json:"contact"`
	TermsOfServiceAgreed   bool            `json:"termsOfServiceAgreed"`
	OnlyReturnExisting     bool            `json:"onlyReturnExisting"`
	ExternalAccountBinding json.RawMessage `json:"externalAccountBinding"`
}

const maxContacts = 10

func checkContacts(cs []string) *Problem {
	if len(cs) > maxContacts {
		return problem(http.StatusBadRequest, errInvalidContact, "at most %d contacts", maxContacts)
	}
	for _, c := range cs {
		addr, ok := strings.CutPrefix(c, "mailto:")
		if !ok {
			return problem(http.StatusBadRequest, errUnsupportedContact, "contact %q: only mailto: contacts are supported", c)
		}
		if len(c) > 254 || strings.ContainsAny(addr, ",?") {
			return problem(http.StatusBadRequest, errInvalidContact, "contact %q: one plain e-mail address", c)
		}
		if m, err := mail.ParseAddress(addr); err != nil || m.Address != addr {
			return problem(http.StatusBadRequest, errInvalidContact, "contact %q: not an e-mail address", c)
		}
	}
	return nil
}

func (s *Server) handleNewAccount(w http.ResponseWriter, r *http.Request) *Problem {
	req, p := s.authenticate(r, byJWK)
	if p != nil {
		return p
	}
	var pl newAccountPayload
	if p := decodePayload(req.payload, &pl); p != nil {
		return p
	}
	thumb, err := thumbprint(req.key)
	if err != nil {
		return problem(http.StatusBadRequest, errBadPublicKey, "cannot compute the key's thumbprint")
	}
	// A key that already has an account gets it back (§7.3.1).
	if a, err := s.st.GetACMEAccountByThumbprint(r.Context(), thumb); err == nil {
		w.Header().Set("Location", s.url(r, "acct/"+a.ID))
		return writeJSON(w, http.StatusOK, s.accountJSON(r, &a))
	} else if !errors.Is(err, store.ErrNotFound) {
		return internal("cannot read accounts")
	}
	if pl.OnlyReturnExisting {
		return problem(http.StatusBadRequest, errAccountDoesNotExist, "no account holds this key")
	}
	if p := checkContacts(pl.Contact); p != nil {
		return p
	}
	refuse := func(p *Problem, kid string) *Problem {
		s.cfg.Refused(r.Context(), s.entry(r, "acme.account_create", audit.OutcomeDenied, p.Detail, "", "eab_kid", kid, "thumbprint", thumb), r.RemoteAddr)
		return p
	}
	var kid string
	if len(pl.ExternalAccountBinding) > 0 && string(pl.ExternalAccountBinding) != "null" {
		if kid, p = s.checkEAB(r, pl.ExternalAccountBinding, req); p != nil {
			return refuse(p, kid)
		}
	} else if !s.cfg.EABOptional {
		return refuse(problem(http.StatusForbidden, errExternalAccountRequired,
			"this server requires an external account binding: ask an operator for an EAB key (rampart acme eab create) and give its key ID and HMAC key to your client"), "")
	}
	now := s.cfg.Now()
	a := store.ACMEAccount{ID: newID(), Thumbprint: thumb, Status: store.ACMEValid, Contact: pl.Contact, EABKeyID: kid, CreatedAt: now, UpdatedAt: now}
	if a.JWK, err = req.key.MarshalJSON(); err != nil {
		return internal("cannot encode the key")
	}
	switch err := s.st.CreateACMEAccount(r.Context(), a, now); {
	case errors.Is(err, store.ErrConflict):
		// Registered concurrently with the same key: that account.
		if a, err := s.st.GetACMEAccountByThumbprint(r.Context(), thumb); err == nil {
			w.Header().Set("Location", s.url(r, "acct/"+a.ID))
			return writeJSON(w, http.StatusOK, s.accountJSON(r, &a))
		}
		return internal("cannot read accounts")
	case errors.Is(err, store.ErrNotFound):
		return refuse(unauthorized("unknown external account key %q", kid), kid)
	case errors.Is(err, store.ErrRevoked):
		return refuse(unauthorized("external account key %q is revoked", kid), kid)
	case errors.Is(err, store.ErrExpired):
		return refuse(unauthorized("external account key %q expired before it was used", kid), kid)
	case errors.Is(err, store.ErrStateConflict):
		return refuse(unauthorized("external account key %q is already bound to an account (single use)", kid), kid)
	case err != nil:
		s.cfg.Log.Error("acme: create account", "err", err)
		return internal("cannot store the account")
	}
	s.record(r.Context(), s.entry(r, "acme.account_create", audit.OutcomeSuccess, "", a.ID, "target", "acme:"+a.ID, "eab_kid", kid, "thumbprint", thumb))
	w.Header().Set("Location", s.url(r, "acct/"+a.ID))
	return writeJSON(w, http.StatusCreated, s.accountJSON(r, &a))
}

// checkEAB verifies an external account binding (RFC 8555 §7.3.4): a JWS
// over the new account's key, MAC'd with the EAB key, whose url is the
// outer request's. It returns the EAB key ID.
func (s *Server) checkEAB(r *http.Request, raw json.RawMessage, req *request) (string, *Problem) {
	fields, err := objectFields(raw)
	if err != nil {
		return "", malformed("externalAccountBinding: %v", err)
	}
	parts := map[string][]byte{}
	for _, k := range []string{"protected", "payload", "signature"} {
		var v string
		if err := json.Unmarshal(fields[k], &v); err != nil {
			return "", malformed("externalAccountBinding field %q: want a base64url string", k)
		}
		b, err := decodeB64(v)
		if err != nil {
			return "", malformed("externalAccountBinding field %q: not base64url", k)
		}
		parts[k] = b
	}
	if len(fields) != 3 {
		return "", malformed("externalAccountBinding: only protected, payload and signature are allowed")
	}
	inner, p := parseProtected(parts["protected"], eabAlgs)
	if p != nil {
		p.Detail = "externalAccountBinding: " + p.Detail
		return "", p
	}
	switch {
	case inner.kid == "":
		return "", malformed("externalAccountBinding: the protected header needs the EAB key ID as kid")
	case inner.jwk != nil:
		return inner.kid, malformed("externalAccountBinding: no jwk in its protected header")
	case inner.nonce != "":
		return inner.kid, malformed("externalAccountBinding: its protected header must not have a nonce")
	case inner.url != req.j.url:
		return inner.kid, unauthorized("externalAccountBinding: url %q is not the new-account URL %q", inner.url, req.j.url)
	}
	// The payload is the account key (the outer jwk).
	bound := &jose.JSONWebKey{}
	if err := bound.UnmarshalJSON(parts["payload"]); err != nil {
		return inner.kid, malformed("externalAccountBinding: the payload is not a JWK")
	}
	t1, err1 := thumbprint(bound)
	t2, err2 := thumbprint(req.key)
	if err1 != nil || err2 != nil || t1 != t2 {
		return inner.kid, unauthorized("externalAccountBinding: it binds another key than the one this request is signed with")
	}
	k, err := s.st.GetACMEEABKey(r.Context(), inner.kid)
	if errors.Is(err, store.ErrNotFound) {
		return inner.kid, unauthorized("unknown external account key %q", inner.kid)
	}
	if err != nil {
		return inner.kid, internal("cannot read the external account key")
	}
	if !k.RevokedAt.IsZero() {
		return inner.kid, unauthorized("external account key %q is revoked", inner.kid)
	}
	mac, err := s.cfg.Sealer.Open(eabSealID(k.KeyID), k.Sealed)
	if err != nil {
		return inner.kid, internal("cannot open the external account key")
	}
	sig, err := jose.ParseSignedJSON(string(raw), eabAlgs)
	if err != nil || len(sig.Signatures) != 1 {
		return inner.kid, malformed("externalAccountBinding: not a JWS with one signature")
	}
	payload, err := sig.Verify(mac)
	if err != nil || !bytes.Equal(payload, parts["payload"]) {
		return inner.kid, unauthorized("externalAccountBinding: the MAC does not verify with external account key %q (wrong HMAC key?)", inner.kid)
	}
	return k.KeyID, nil
}

// handleAccount reads (POST-as-GET), updates or deactivates an account
// (§7.3.2, §7.3.6).
func (s *Server) handleAccount(w http.ResponseWriter, r *http.Request) *Problem {
	req, p := s.authenticate(r, byKID)
	if p != nil {
		return p
	}
	a := req.acct
	if r.PathValue("id") != a.ID {
		return unauthorized("account %s may not read or change another account", a.ID)
	}
	if !req.postAsGet() {
		var pl struct {
			Status  string    `json:"status"`
			Contact *[]string `json:"contact"`
		}
		if p := decodePayload(req.payload, &pl); p != nil {
			return p
		}
		contact, status := a.Contact, a.Status
		if pl.Contact != nil {
			if p := checkContacts(*pl.Contact); p != nil {
				return p
			}
			contact = *pl.Contact
		}
		switch pl.Status {
		case "", store.ACMEValid:
		case store.ACMEDeactivated:
			status = store.ACMEDeactivated
		default:
			return malformed("status %q: an account can only be deactivated", pl.Status)
		}
		if err := s.st.UpdateACMEAccount(r.Context(), a.ID, contact, status, s.cfg.Now()); err != nil {
			if errors.Is(err, store.ErrStateConflict) {
				return unauthorized("account %s is no longer valid", a.ID)
			}
			return internal("cannot update the account")
		}
		action := "acme.account_update"
		if status == store.ACMEDeactivated {
			action = "acme.account_deactivate"
		}
		s.record(r.Context(), s.entry(r, action, audit.OutcomeSuccess, "", a.ID, "target", "acme:"+a.ID))
		a.Contact, a.Status = contact, status
	}
	w.Header().Set("Location", s.url(r, "acct/"+a.ID))
	return writeJSON(w, http.StatusOK, s.accountJSON(r, a))
}

func (s *Server) handleAccountOrders(w http.ResponseWriter, r *http.Request) *Problem {
	req, p := s.authenticate(r, byKID)
	if p != nil {
		return p
	}
	if r.PathValue("id") != req.acct.ID {
		return unauthorized("account %s may not list another account's orders", req.acct.ID)
	}
	ids, err := s.st.ListACMEOrders(r.Context(), req.acct.ID, 1000)
	if err != nil {
		return internal("cannot list orders")
	}
	out := struct {
		Orders []string `json:"orders"`
	}{Orders: []string{}}
	for _, id := range ids {
		out.Orders = append(out.Orders, s.url(r, "order/"+id))
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleKeyChange rolls an account over to a new key (§7.3.5).
func (s *Server) handleKeyChange(w http.ResponseWriter, r *http.Request) *Problem {
	req, p := s.authenticate(r, byKID)
	if p != nil {
		return p
	}
	a := req.acct
	// The payload is a JWS signed by the new key: "The inner JWS MUST
	// have a 'jwk' header parameter ... the same 'url' header parameter
	// as the outer JWS ... MUST omit the 'nonce' header parameter."
	inner, p := parseInnerJWS(req.payload)
	if p != nil {
		return p
	}
	if inner.url != req.j.url {
		return malformed("key change: the inner JWS url %q is not the outer one %q", inner.url, req.j.url)
	}
	payload, p := inner.verify(inner.jwk)
	if p != nil {
		return malformed("key change: the inner JWS does not verify with the new key")
	}
	var pl struct {
		Account string          `json:"account"`
		OldKey  json.RawMessage `json:"oldKey"`
	}
	if p := decodePayload(payload, &pl); p != nil {
		return p
	}
	if pl.Account != req.j.kid {
		return unauthorized("key change: the inner account %q is not the signing account %q", pl.Account, req.j.kid)
	}
	old := &jose.JSONWebKey{}
	if err := old.UnmarshalJSON(pl.OldKey); err != nil {
		return malformed("key change: oldKey is not a JWK")
	}
	oldThumb, err1 := thumbprint(old)
	newThumb, err2 := thumbprint(inner.jwk)
	if err1 != nil || err2 != nil {
		return problem(http.StatusBadRequest, errBadPublicKey, "key change: cannot compute a key thumbprint")
	}
	if oldThumb != a.Thumbprint {
		return unauthorized("key change: oldKey is not the account's current key")
	}
	if newThumb == oldThumb {
		return malformed("key change: the new key is the account's current key")
	}
	newJWK, err := inner.jwk.MarshalJSON()
	if err != nil {
		return internal("cannot encode the key")
	}
	switch err := s.st.ChangeACMEAccountKey(r.Context(), a.ID, oldThumb, newThumb, newJWK, s.cfg.Now()); {
	case errors.Is(err, store.ErrConflict):
		if other, gerr := s.st.GetACMEAccountByThumbprint(r.Context(), newThumb); gerr == nil {
			w.Header().Set("Location", s.url(r, "acct/"+other.ID))
		}
		return problem(http.StatusConflict, errMalformed, "key change: another account holds the new key")
	case errors.Is(err, store.ErrStateConflict):
		return unauthorized("key change: the account's key changed meanwhile, or it is no longer valid")
	case err != nil:
		return internal("cannot change the key")
	}
	s.record(r.Context(), s.entry(r, "acme.key_change", audit.OutcomeSuccess, "", a.ID, "target", "acme:"+a.ID, "old_thumbprint", oldThumb, "new_thumbprint", newThumb))
	a.Thumbprint = newThumb
	w.Header().Set("Location", s.url(r, "acct/"+a.ID))
	return writeJSON(w, http.StatusOK, s.accountJSON(r, a))
}

// parseInnerJWS parses the inner JWS of a key change: like a request, but
// with jwk and without nonce.
func parseInnerJWS(body []byte) (*jws, *Problem) {
	fields, err := objectFields(body)
	if err != nil {
		return nil, malformed("key change: the payload is not a JWS: %v", err)
	}
	var protected string
	if err := json.Unmarshal(fields["protected"], &protected); err != nil {
		return nil, malformed("key change: the inner JWS has no protected header")
	}
	ph, err := decodeB64(protected)
	if err != nil {
		return nil, malformed("key change: the inner protected header is not base64url")
	}
	hf, err := objectFields(ph)
	if err != nil {
		return nil, malformed("key change: inner protected header: %v", err)
	}
	if _, ok := hf["nonce"]; ok {
		return nil, malformed("key change: the inner JWS must not have a nonce")
	}
	if _, ok := hf["kid"]; ok {
		return nil, malformed("key change: the inner JWS is signed with the new key's jwk, not a kid")
	}
	j, p := parseProtected(ph, requestAlgs)
	if p != nil {
		p.Detail = "key change: inner JWS: " + p.Detail
		return nil, p
	}
	if j.jwk == nil {
		return nil, malformed("key change: the inner JWS needs the new key as jwk")
	}
	if p := checkKeyAlg(j.jwk.Key, j.alg); p != nil {
		return nil, p
	}
	full, p := parseJWSWithProtected(body, fields)
	if p != nil {
		return nil, p
	}
	j.payload, j.sig = full.payload, full.sig
	return j, nil
}

// parseJWSWithProtected checks the outer form of a flattened JWS and
// parses its signature, without the request header rules.
func parseJWSWithProtected(body []byte, fields map[string]json.RawMessage) (*jws, *Problem) {
	for k := range fields {
		if k != "protected" && k != "payload" && k != "signature" {
			return nil, malformed("JWS field %q is not allowed", k)
		}
	}
	var payload string
	if err := json.Unmarshal(fields["payload"], &payload); err != nil {
		return nil, malformed("JWS payload: want a base64url string")
	}
	pb, err := decodeB64(payload)
	if err != nil {
		return nil, malformed("JWS payload: not base64url")
	}
	sig, err := jose.ParseSignedJSON(string(body), requestAlgs)
	if err != nil || len(sig.Signatures) != 1 {
		return nil, malformed("not a JWS with one signature")
	}
	return &jws{payload: pb, sig: sig}, nil
}

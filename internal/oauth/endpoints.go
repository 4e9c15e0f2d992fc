package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/accesstoken"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/store"
)

// revocationGrace is how long a revocation outlives the tokens it names,
// and a grant family the last token it can issue: the most clock skew a
// verifier allows on exp (accesstoken.MaxLeeway). A proxy takes a token
// until exp plus its leeway; were the revocation dropped at exp, a
// revoked token would be good again for that long.
const revocationGrace = accesstoken.MaxLeeway

// revokeFamily revokes every grant of a family, every access token
// carrying its sid, and the families exchanged from it.
func (p *Provider) revokeFamily(r *http.Request, family, reason string) error {
	_, err := p.revokeFamilies(r.Context(), store.FamilySelector{ID: family}, reason)
	return err
}

// revokeFamilies revokes the families sel picks and what descends from
// them, and puts them on this replica's list at once.
func (p *Provider) revokeFamilies(ctx context.Context, sel store.FamilySelector, reason string) ([]string, error) {
	// Access tokens issued until now live at most AccessTokenTTL (an
	// exchanged one never outlives its subject).
	return p.revokeFamiliesUntil(ctx, sel, reason, p.cfg.Now().Add(p.cfg.AccessTokenTTL))
}

// revokeFamiliesUntil is revokeFamilies for tokens that expire by lastExp.
func (p *Provider) revokeFamiliesUntil(ctx context.Context, sel store.FamilySelector, reason string, lastExp time.Time) ([]string, error) {
	now := p.cfg.Now()
	// Verifiers take a token revocationGrace past its exp: the revocation
	// stays that long (the store keeps none past its family's end, which
	// includes the grace). Refresh tokens and codes are revoked in the
	// store itself.
	ids, err := p.cfg.Store.RevokeOAuthFamilies(ctx, sel, store.TokenRevocation{
		Reason: reason, RevokedAt: now, ExpiresAt: lastExp.Add(revocationGrace)})
	if err != nil {
		return nil, err
	}
	p.revokedNow(ctx, ids...)
	return ids, nil
}

// RevokeUser revokes every token and refresh token issued for a user, and
// every token exchanged from them, and returns how many grant families it
// revoked. The admin API calls it when a user is disabled or deleted
// (having set RevokedAt, which voids the user's login sessions).
func (p *Provider) RevokeUser(ctx context.Context, username, reason string) (int, error) {
	ids, err := p.revokeFamilies(ctx, store.FamilySelector{Subject: username}, reason)
	return len(ids), err
}

// RevokeClient revokes every token issued to a client (for users, for
// itself, or obtained by exchange), its refresh tokens and codes, and
// every token exchanged from them. The admin API calls it when a client is
// disabled or deleted.
func (p *Provider) RevokeClient(ctx context.Context, clientID, reason string) (int, error) {
	ids, err := p.revokeFamilies(ctx, store.FamilySelector{ClientID: clientID}, reason)
	return len(ids), err
}

// revokedNow adds ids to this replica's list at once and tells the server.
func (p *Provider) revokedNow(ctx context.Context, ids ...string) {
	p.mu.Lock()
	for _, id := range ids {
		p.revoked[id] = struct{}{}
	}
	p.mu.Unlock()
	p.cfg.Changed(ctx)
}

// clientRequest reads the form of a token, introspection or revocation
// request and authenticates the client; on failure it has answered (and
// audited a refused authentication).
func (p *Provider) clientRequest(w http.ResponseWriter, r *http.Request) (*authedClient, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, errf(http.StatusBadRequest, "invalid_request", "malformed form body"))
		return nil, false
	}
	if r.URL.RawQuery != "" {
		writeOAuthError(w, errf(http.StatusBadRequest, "invalid_request", "parameters go in the body, not the URL"))
		return nil, false
	}
	for k, vs := range r.PostForm {
		if len(vs) > 1 && k != "resource" && k != "audience" {
			writeOAuthError(w, errf(http.StatusBadRequest, "invalid_request", "parameter %s given more than once", k))
			return nil, false
		}
	}
	c, err := p.authenticateClient(r)
	if err != nil {
		var oe *oauthError
		if errors.As(err, &oe) {
			// Nothing the caller sent is proven: its client_id is a
			// claim, recorded as such (quoted, clipped), and the actor
			// is anonymous, so no alert names a client on its word.
			kv := []string{"endpoint", r.URL.Path, "grant_type", claimed(r.PostForm.Get("grant_type"))}
			if id := claimedClientID(r); id != "" {
				kv = append(kv, "claimed_client_id", claimed(id))
			}
			p.record(r, "oauth.client_auth", audit.OutcomeDenied, oe.reason(), kv...)
		}
		writeOAuthError(w, err)
		return nil, false
	}
	return c, true
}

// handleRevoke is RFC 7009. A token that is unknown, invalid or belongs to
// another client gets the same 200 as a revoked one (§2.2), so the
// endpoint tells nothing about tokens.
func (p *Provider) handleRevoke(w http.ResponseWriter, r *http.Request) {
	c, ok := p.clientRequest(w, r)
	if !ok {
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		writeOAuthError(w, errf(http.StatusBadRequest, "invalid_request", "token is required"))
		return
	}
	hint := r.PostForm.Get("token_type_hint")
	if hint != "refresh_token" && strings.Count(tok, ".") == 2 {
		if claims, err := p.VerifyAccessToken(tok, ""); err == nil && claims.ClientID == c.ID {
			// The token's jti is a family of its own once it has been
			// exchanged (tokenExchange), the parent of the families
			// exchanged from it: revoking it by jti revokes them too.
			// Never exchanged, the jti alone goes on the list.
			ids, err := p.revokeFamiliesUntil(r.Context(), store.FamilySelector{ID: claims.ID}, "revoked by client",
				later(claims.Expiry.Time(), p.cfg.Now().Add(p.cfg.AccessTokenTTL)))
			if err != nil {
				writeOAuthError(w, err)
				return
			}
			p.record(r, "oauth.token_revoke", audit.OutcomeSuccess, "", "client_id", c.ID, "jti", claims.ID, "user", userOf(claims),
				"revoked_families", strconv.Itoa(len(ids)))
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	// A refresh token: using it marks it used; revoking its family
	// revokes it, its successors and the access tokens they issued.
	g, err := p.cfg.Store.UseOAuthGrant(r.Context(), store.GrantRefresh, hashToken(tok), p.cfg.Now())
	if (err == nil || errors.Is(err, store.ErrGrantReused)) && g.ClientID == c.ID {
		if err := p.revokeFamily(r, g.Family, "refresh token revoked by client"); err != nil {
			writeOAuthError(w, err)
			return
		}
		p.record(r, "oauth.token_revoke", audit.OutcomeSuccess, "", "client_id", c.ID, "sid", g.Family, "user", g.Subject)
	}
	w.WriteHeader(http.StatusOK)
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// userOf returns the user a token speaks for, "" for a client's own token
// (client credentials, or exchanged from one: sub_type client).
func userOf(c *accesstoken.Claims) string {
	if !c.ForUser() {
		return ""
	}
	return c.Subject
}

// handleIntrospect is RFC 7662. Callers authenticate as clients; a token
// is only described to the client it was issued to or a service in its
// audience, so introspection is no oracle for other clients' tokens.
func (p *Provider) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	c, ok := p.clientRequest(w, r)
	if !ok {
		return
	}
	if c.AuthMethod == "none" {
		writeOAuthError(w, errf(http.StatusUnauthorized, "invalid_client", "public clients may not introspect"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	claims, err := p.VerifyAccessToken(r.PostForm.Get("token"), "")
	if err != nil || !(claims.ClientID == c.ID || claims.Audience.Contains(c.ID) || (c.SPIFFEID != "" && claims.Audience.Contains(c.SPIFFEID))) {
		writeJSON(w, http.StatusOK, map[string]bool{"active": false})
		return
	}
	resp := map[string]any{
		"active": true, "token_type": "Bearer", "iss": claims.Issuer, "sub": claims.Subject, "aud": []string(claims.Audience),
		"client_id": claims.ClientID, "scope": claims.Scope, "jti": claims.ID,
		"exp": claims.Expiry.Time().Unix(), "iat": claims.IssuedAt.Time().Unix(),
	}
	if claims.NotBefore != nil {
		resp["nbf"] = claims.NotBefore.Time().Unix()
	}
	if u := userOf(claims); u != "" {
		resp["username"] = u
	}
	if claims.Act != nil {
		resp["act"] = claims.Act
	}
	if claims.Cnf != nil {
		resp["cnf"] = claims.Cnf
	}
	if claims.SessionID != "" {
		resp["sid"] = claims.SessionID
	}
	if len(claims.Groups) > 0 {
		resp["groups"] = claims.Groups
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleUserinfo is OIDC Core §5.3: the user's claims for an access token
// carrying the openid scope.
func (p *Provider) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	scheme, raw, ok := dpop.Authorization(r.Header)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rampart", DPoP realm="rampart"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": "an access token is required (Bearer or DPoP)"})
		return
	}
	jkt := ""
	var err error
	var proof *dpop.Proof
	if scheme == dpop.SchemeDPoP {
		w.Header().Set(dpop.NonceHeader, p.dpopNonce())
		if proof, err = p.dpop.VerifyRequest(r, raw); err == nil {
			jkt = proof.JKT
		}
	}
	if errors.Is(err, dpop.ErrUseNonce) {
		// RFC 9449 §9: a resource asks for a nonce with a 401 challenge.
		w.Header().Set("WWW-Authenticate", `DPoP realm="rampart", error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "use_dpop_nonce", "error_description": err.Error()})
		return
	}
	var claims *accesstoken.Claims
	if err == nil {
		claims, err = p.VerifyAccessToken(raw, "")
	}
	if err == nil {
		// Sender-constrained tokens stay useless to a thief here too.
		err = claims.CheckBinding(p.cfg.PeerCertificate(r), jkt)
	}
	if err == nil && proof != nil {
		// Recorded only now: a proof for a token that is not bound to
		// its key (or no valid token at all) takes no room in the store.
		err = p.dpop.Use(r.Context(), proof)
	}
	if err == nil && !claims.HasScope("openid") {
		err = errors.New("token lacks the openid scope")
	}
	if err == nil && !claims.Audience.Contains(p.cfg.Issuer+PathUserinfo) {
		// OIDC Core §5.3: userinfo is a protected resource, and a token a
		// service received for itself (or exchanged onwards) is not
		// addressed to it.
		err = fmt.Errorf("token audience %v does not include the userinfo endpoint", []string(claims.Audience))
	}
	if err == nil && userOf(claims) == "" {
		// A client's own token: its subject is no user, even if a user
		// of that name exists.
		err = errors.New("the token speaks for no user")
	}
	var u store.OAuthUser
	if err == nil {
		if u, err = p.cfg.Store.GetOAuthUser(r.Context(), claims.Subject); err != nil || u.Disabled {
			err = errors.New("the user is no longer active")
		}
	}
	if err != nil {
		code := "invalid_token"
		if errors.Is(err, dpop.ErrInvalid) {
			code = "invalid_dpop_proof"
		}
		kv := []string{"scheme", scheme}
		if errors.Is(err, accesstoken.ErrRevoked) {
			kv = append(kv, "revoked_credential", "access_token")
		}
		if claims != nil {
			kv = append(kv, "client_id", claims.ClientID, "user", claims.Subject, "jti", claims.ID)
		}
		p.record(r, "oauth.userinfo", audit.OutcomeDenied, err.Error(), kv...)
		w.Header().Set("WWW-Authenticate", scheme+` realm="rampart", error="`+code+`"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": err.Error()})
		return
	}
	out := map[string]any{"sub": u.Username}
	if claims.HasScope("profile") {
		out["name"] = u.Name
		out["preferred_username"] = u.Username
	}
	if claims.HasScope("email") && u.Email != "" {
		out["email"] = u.Email
	}
	if claims.HasScope("groups") && len(u.Groups) > 0 {
		out["groups"] = slices.Clone(u.Groups)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}

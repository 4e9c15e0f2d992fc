package oauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rampartsec/rampart/internal/accesstoken"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/dpop"
	"github.com/rampartsec/rampart/internal/store"
)

// Token type identifiers (RFC 8693 §3).
const (
	tokenTypeAccess  = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT     = "urn:ietf:params:oauth:token-type:jwt"
	tokenTypeRefresh = "urn:ietf:params:oauth:token-type:refresh_token"
)

// tokenResponse is RFC 6749 §5.1 (plus RFC 8693's issued_token_type).
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	RefreshToken    string `json:"refresh_token,omitempty"`
	IDToken         string `json:"id_token,omitempty"`
	Scope           string `json:"scope,omitempty"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
}

// grantKind describes codes and refresh tokens for useGrant.
type grantKind struct {
	kind        string // store.GrantCode or store.GrantRefresh
	name        string
	credential  string // details.revoked_credential when a revoked one is used
	reuseAction string // audit action of a reuse
	reuseReason string // and its reason
}

var (
	// RFC 6749 §4.1.2: a code used twice was intercepted; what the first
	// use issued is revoked.
	codeKind = grantKind{store.GrantCode, "authorization code", "code", "oauth.code_reuse", "authorization code reused; its tokens are revoked"}
	// RFC 9700 §4.14.2: a rotated refresh token that comes back was
	// stolen; nobody can tell the thief from the client, so the whole
	// family goes.
	refreshKind = grantKind{store.GrantRefresh, "refresh token", "refresh_token", "oauth.refresh_reuse", "refresh token reused; its family is revoked"}
)

// useGrant consumes a code or refresh token presented by c. A second use,
// or a use by a client other than the one it was issued to, revokes every
// token of its family and is audited; a token already revoked is refused
// and marked revoked (details.revoked_credential, what the
// revoked-credential-use rule looks for; handleToken audits the refusal).
func (p *Provider) useGrant(r *http.Request, c *authedClient, k grantKind, value string) (store.OAuthGrant, error) {
	g, err := p.cfg.Store.UseOAuthGrant(r.Context(), k.kind, hashToken(value), p.cfg.Now())
	reason := ""
	switch {
	case errors.Is(err, store.ErrGrantReused) && g.Revoked:
		return g, errf(http.StatusBadRequest, "invalid_grant", "%s revoked", k.name).withRevoked(k.credential)
	case errors.Is(err, store.ErrGrantReused):
		reason = k.reuseReason
	case errors.Is(err, store.ErrNotFound):
		return g, errf(http.StatusBadRequest, "invalid_grant", "%s unknown or expired", k.name)
	case err != nil:
		return g, err
	case g.ClientID != c.ID:
		reason = k.name + " of client " + g.ClientID + " presented by " + c.ID + "; its family is revoked"
	default:
		return g, nil
	}
	if err := p.revokeFamily(r, g.Family, reason); err != nil {
		return g, err
	}
	p.record(r, k.reuseAction, audit.OutcomeDenied, reason, "client_id", c.ID, "user", g.Subject, "sid", g.Family)
	if g.ClientID != c.ID {
		return g, errf(http.StatusBadRequest, "invalid_grant", "%s was issued to another client", k.name)
	}
	return g, errf(http.StatusBadRequest, "invalid_grant", "%s already used; every token of this grant is revoked", k.name)
}

// refreshData is what a refresh token grants, stored with it.
type refreshData struct {
	Scope    []string `json:"scope"`
	AuthTime int64    `json:"auth_time"`
	Audience []string `json:"audience,omitempty"`
	// FamilyExpires is when the family ends: rotation does not extend it.
	FamilyExpires int64 `json:"family_expires"`
	// JKT binds a public client's refresh tokens to its DPoP key.
	JKT string `json:"jkt,omitempty"`
	// AMR is how the login was proven; refreshed tokens keep it.
	AMR []string `json:"amr,omitempty"`
	// No certificate binding here: a refresh token is already bound to its
	// client by client authentication (RFC 8705 §4), and an SVID rotates
	// hourly while the family lives a day. Each access token is bound to
	// the certificate of the call that obtained it.
}

func (p *Provider) handleToken(w http.ResponseWriter, r *http.Request) {
	c, ok := p.clientRequest(w, r)
	if !ok {
		return
	}
	grant := r.PostForm.Get("grant_type")
	if vals := r.Header.Values("DPoP"); len(vals) > 0 {
		// RFC 9449 §5: the proof names this endpoint; tokens issued are
		// bound to its key. §8: every answer carries the nonce the next
		// proof must have.
		w.Header().Set(dpop.NonceHeader, p.dpopNonce())
		var proof *dpop.Proof
		err := errors.New("more than one DPoP header")
		if len(vals) == 1 {
			proof, err = p.dpop.Check(r.Context(), vals[0], http.MethodPost, p.cfg.Issuer+PathToken, "")
		}
		if errors.Is(err, dpop.ErrUseNonce) {
			useDPoPNonce(w, err)
			return
		}
		if err != nil {
			p.record(r, "oauth.token", audit.OutcomeDenied, err.Error(), "client_id", c.ID, "grant_type", grant)
			writeOAuthError(w, errf(http.StatusBadRequest, "invalid_dpop_proof", "%v", err))
			return
		}
		c.dpopJKT = proof.JKT
	}
	if !slices.Contains(c.GrantTypes, grant) {
		if !slices.Contains(grantTypes, grant) {
			writeOAuthError(w, errf(http.StatusBadRequest, "unsupported_grant_type", "grant_type %q is not supported", grant))
			return
		}
		writeOAuthError(w, errf(http.StatusBadRequest, "unauthorized_client", "client %s may not use grant %s", c.ID, grant))
		return
	}
	var resp *tokenResponse
	var err error
	switch grant {
	case "authorization_code":
		resp, err = p.codeGrant(r, c)
	case "client_credentials":
		resp, err = p.clientCredentials(r, c)
	case "refresh_token":
		resp, err = p.refreshGrant(r, c)
	case GrantTokenExchange:
		resp, err = p.tokenExchange(r, c)
	case GrantDeviceCode:
		resp, err = p.deviceGrant(r, c)
	}
	if err != nil {
		var oe *oauthError
		if errors.As(err, &oe) {
			p.record(r, "oauth.token", audit.OutcomeDenied, oe.reason(), "client_id", c.ID, "grant_type", grant,
				"revoked_credential", oe.revoked)
		} else {
			p.cfg.Log.Error("token endpoint failed", "grant_type", grant, "err", err)
		}
		writeOAuthError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// pkceOK checks an RFC 7636 S256 code verifier against its challenge.
func pkceOK(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	for _, c := range verifier {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("-._~", c)) {
			return false
		}
	}
	sum := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}

func (p *Provider) codeGrant(r *http.Request, c *authedClient) (*tokenResponse, error) {
	code := r.PostForm.Get("code")
	if code == "" {
		return nil, errf(http.StatusBadRequest, "invalid_request", "code is required")
	}
	now := p.cfg.Now()
	g, err := p.useGrant(r, c, codeKind, code)
	if err != nil {
		return nil, err
	}
	var d codeData
	if err := json.Unmarshal(g.Data, &d); err != nil {
		return nil, fmt.Errorf("oauth: code data: %w", err)
	}
	if r.PostForm.Get("redirect_uri") != d.RedirectURI {
		return nil, errf(http.StatusBadRequest, "invalid_grant", "redirect_uri differs from the authorization request's")
	}
	if d.DPoPJKT != "" && c.dpopJKT != d.DPoPJKT {
		return nil, errf(http.StatusBadRequest, "invalid_grant", "the code is bound to a DPoP key (dpop_jkt); redeem it with a proof made with that key")
	}
	// Every code carries a challenge (parseAuthz requires one); a code
	// without one (from before PKCE was required) is refused too.
	if !pkceOK(r.PostForm.Get("code_verifier"), d.Challenge) {
		return nil, errf(http.StatusBadRequest, "invalid_grant", "PKCE code_verifier does not match the code_challenge")
	}
	u, err := p.cfg.Store.GetOAuthUser(r.Context(), g.Subject)
	if err != nil || u.Disabled {
		return nil, errf(http.StatusBadRequest, "invalid_grant", "the user is no longer active")
	}
	aud := d.Audience
	if len(aud) == 0 {
		aud = defaultAudience(c)
	}
	resp, err := p.issue(r, c, issueParams{subject: u.Username, groups: u.Groups, scope: d.Scope, audience: aud,
		sid: g.Family, authTime: d.AuthTime, amr: d.AMR, grant: "authorization_code", ttl: p.cfg.AccessTokenTTL})
	if err != nil {
		return nil, err
	}
	if slices.Contains(d.Scope, "openid") {
		if resp.IDToken, err = p.idToken(c, u, d.Scope, d.Nonce, d.AuthTime, g.Family, resp.AccessToken); err != nil {
			return nil, err
		}
	}
	if slices.Contains(c.GrantTypes, "refresh_token") {
		fam := refreshData{Scope: d.Scope, AuthTime: d.AuthTime, AMR: d.AMR, Audience: d.Audience, FamilyExpires: now.Add(p.cfg.RefreshTokenTTL).Unix()}
		if c.AuthMethod == "none" {
			// RFC 9449 §5: a public client's refresh token is bound to
			// its DPoP key, having no other credential.
			fam.JKT = c.dpopJKT
		}
		if resp.RefreshToken, err = p.newRefresh(r, c.ID, u.Username, g.Family, fam); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// defaultAudience is the audience of tokens a client did not ask a resource
// for: the services it was registered for, or itself.
func defaultAudience(c *authedClient) []string {
	if len(c.Audience) > 0 {
		return c.Audience
	}
	return []string{c.ID}
}

func (p *Provider) newRefresh(r *http.Request, clientID, subject, family string, d refreshData) (string, error) {
	tok := randomToken()
	data, _ := json.Marshal(d)
	err := p.cfg.Store.PutOAuthGrant(r.Context(), store.OAuthGrant{Hash: hashToken(tok), Kind: store.GrantRefresh, Family: family,
		ClientID: clientID, Subject: subject, Data: data, ExpiresAt: time.Unix(d.FamilyExpires, 0), CreatedAt: p.cfg.Now()})
	if err != nil {
		return "", err
	}
	return tok, nil
}

// requestedScope parses the scope parameter, allowing only what allowed
// holds; empty means all of allowed.
func requestedScope(r *http.Request, allowed []string) ([]string, error) {
	req := strings.Fields(r.PostForm.Get("scope"))
	if len(req) == 0 {
		return allowed, nil
	}
	for _, s := range req {
		if !slices.Contains(allowed, s) {
			return nil, errf(http.StatusBadRequest, "invalid_scope", "scope %q is not allowed here", s)
		}
	}
	return req, nil
}

// requestedAudience reads RFC 8707 resource and RFC 8693 audience
// parameters.
func requestedAudience(r *http.Request) []string {
	var out []string
	for _, k := range []string{"resource", "audience"} {
		for _, v := range r.PostForm[k] {
			if v != "" && !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out
}

func (p *Provider) clientCredentials(r *http.Request, c *authedClient) (*tokenResponse, error) {
	if c.AuthMethod == "none" {
		return nil, errf(http.StatusBadRequest, "unauthorized_client", "a public client cannot use client credentials")
	}
	scope, err := requestedScope(r, c.Scopes)
	if err != nil {
		return nil, err
	}
	aud := requestedAudience(r)
	if err := checkAudience(c.OAuthClient, aud); err != nil {
		return nil, err
	}
	if len(aud) == 0 {
		aud = defaultAudience(c)
	}
	// Each token is a family of its own (sid), so disabling the client
	// revokes it and whatever is exchanged from it.
	now := p.cfg.Now()
	family := randomToken()[:22]
	if err := p.cfg.Store.PutOAuthFamily(r.Context(), store.OAuthFamily{ID: family, ClientID: c.ID,
		ExpiresAt: now.Add(p.cfg.AccessTokenTTL + revocationGrace), CreatedAt: now}); err != nil {
		return nil, err
	}
	return p.issue(r, c, issueParams{subject: c.actor(), subjectType: accesstoken.SubjectClient, scope: scope, audience: aud, grant: "client_credentials",
		ttl: p.cfg.AccessTokenTTL, sid: family})
}

func (p *Provider) refreshGrant(r *http.Request, c *authedClient) (*tokenResponse, error) {
	rt := r.PostForm.Get("refresh_token")
	if rt == "" {
		return nil, errf(http.StatusBadRequest, "invalid_request", "refresh_token is required")
	}
	g, err := p.useGrant(r, c, refreshKind, rt)
	if err != nil {
		return nil, err
	}
	var d refreshData
	if err := json.Unmarshal(g.Data, &d); err != nil {
		return nil, fmt.Errorf("oauth: refresh data: %w", err)
	}
	if d.JKT != "" && c.dpopJKT != d.JKT {
		// The token is spent: whoever holds the key and comes next is
		// treated as a reuse and the family revoked.
		return nil, errf(http.StatusBadRequest, "invalid_grant", "the refresh token is bound to a DPoP key; present a proof made with that key")
	}
	scope, err := requestedScope(r, d.Scope)
	if err != nil {
		return nil, err
	}
	u, err := p.cfg.Store.GetOAuthUser(r.Context(), g.Subject)
	if err != nil || u.Disabled {
		return nil, errf(http.StatusBadRequest, "invalid_grant", "the user is no longer active")
	}
	aud := d.Audience
	if len(aud) == 0 {
		aud = defaultAudience(c)
	}
	resp, err := p.issue(r, c, issueParams{subject: u.Username, groups: u.Groups, scope: scope, audience: aud,
		sid: g.Family, authTime: d.AuthTime, amr: d.AMR, grant: "refresh_token", ttl: p.cfg.AccessTokenTTL})
	if err != nil {
		return nil, err
	}
	if slices.Contains(scope, "openid") {
		if resp.IDToken, err = p.idToken(c, u, scope, "", d.AuthTime, g.Family, resp.AccessToken); err != nil {
			return nil, err
		}
	}
	if resp.RefreshToken, err = p.newRefresh(r, c.ID, u.Username, g.Family, d); err != nil {
		return nil, err
	}
	return resp, nil
}

func (p *Provider) tokenExchange(r *http.Request, c *authedClient) (*tokenResponse, error) {
	f := r.PostForm
	if t := f.Get("subject_token_type"); t != tokenTypeAccess && t != tokenTypeJWT {
		return nil, errf(http.StatusBadRequest, "invalid_request", "subject_token_type must be %s", tokenTypeAccess)
	}
	if t := f.Get("requested_token_type"); t != "" && t != tokenTypeAccess && t != tokenTypeJWT {
		return nil, errf(http.StatusBadRequest, "invalid_request", "requested_token_type %q is not supported (access tokens only)", t)
	}
	if f.Has("actor_token") {
		return nil, errf(http.StatusBadRequest, "invalid_request", "actor_token is not supported: the authenticated client is the actor")
	}
	// The subject token must be addressed to the client exchanging it: a
	// service can only pass on the rights of users who called it.
	sub, err := p.VerifyAccessToken(f.Get("subject_token"), "")
	if err != nil {
		oe := errf(http.StatusBadRequest, "invalid_grant", "subject_token: %v", err)
		if errors.Is(err, accesstoken.ErrRevoked) {
			oe.revoked = "access_token"
		}
		return nil, oe
	}
	if !sub.Audience.Contains(c.ID) && (c.SPIFFEID == "" || !sub.Audience.Contains(c.SPIFFEID)) {
		return nil, errf(http.StatusBadRequest, "invalid_grant", "subject_token is addressed to %v, not to the client %s exchanging it", []string(sub.Audience), c.actor())
	}
	// A token bound to a DPoP key (cnf.jkt, RFC 9449) is only worth
	// something with a proof by that key; exchanging it without one would
	// make it a bearer token again. So the exchange needs a proof by the
	// same key (this request's DPoP header), and the new token is bound to
	// it in turn (issue binds to c.dpopJKT).
	if sub.Cnf != nil && sub.Cnf.JKT != "" && c.dpopJKT != sub.Cnf.JKT {
		if c.dpopJKT == "" {
			return nil, errf(http.StatusBadRequest, "invalid_grant", "subject_token is bound to a DPoP key (cnf.jkt): exchange it with a DPoP proof made with that key")
		}
		return nil, errf(http.StatusBadRequest, "invalid_grant", "the DPoP proof is made with another key than the subject_token is bound to (cnf.jkt)")
	}
	// The new token never outlives the one it was exchanged for: its
	// lifetime is what the subject has left (the verifier, allowing no
	// leeway, has refused one with nothing left), so exchanging again
	// before each expiry cannot keep a stolen token alive.
	left := sub.Expiry.Time().Sub(p.cfg.Now())
	if left <= 0 {
		return nil, errf(http.StatusBadRequest, "invalid_grant", "subject_token expired at %s", sub.Expiry.Time().UTC().Format(time.RFC3339))
	}
	if err := p.checkActChain(c, sub.Act); err != nil {
		return nil, err
	}
	// The user must still be active: a replica that has not yet learnt
	// of a revocation still refuses a disabled user's token.
	if user := userOf(sub); user != "" {
		if u, err := p.cfg.Store.GetOAuthUser(r.Context(), user); err != nil || u.Disabled {
			return nil, errf(http.StatusBadRequest, "invalid_grant", "the user is no longer active")
		}
	}
	aud := requestedAudience(r)
	if len(aud) == 0 {
		return nil, errf(http.StatusBadRequest, "invalid_target", "audience (or resource) naming the next service is required")
	}
	if err := checkAudience(c.OAuthClient, aud); err != nil {
		return nil, err
	}
	scope, err := requestedScope(r, sub.Scopes())
	if err != nil {
		return nil, err
	}
	// The new token starts a family of its own, descended from the
	// subject's: revoking the subject's family (a reused refresh token,
	// the user or its client disabled) revokes it, and disabling this
	// client revokes it without touching the user's other tokens.
	ttl := min(left, p.cfg.AccessTokenTTL)
	now := p.cfg.Now()
	// The subject token itself becomes a family (its jti), a child of its
	// own family and the parent of the new one, so that revoking just
	// that token (RFC 7009, by jti) revokes what was exchanged from it.
	// Recorded once; a second exchange of the same token finds it.
	err = p.cfg.Store.PutOAuthFamily(r.Context(), store.OAuthFamily{ID: sub.ID, Parent: sub.SessionID, ClientID: sub.ClientID,
		Subject: userOf(sub), ExpiresAt: sub.Expiry.Time().Add(revocationGrace), CreatedAt: now})
	if errors.Is(err, store.ErrConflict) {
		err = nil
	}
	family := randomToken()[:22]
	if err == nil {
		err = p.cfg.Store.PutOAuthFamily(r.Context(), store.OAuthFamily{ID: family, Parent: sub.ID, ClientID: c.ID,
			Subject: userOf(sub), ExpiresAt: now.Add(ttl + revocationGrace), CreatedAt: now})
	}
	if errors.Is(err, store.ErrRevoked) {
		return nil, errf(http.StatusBadRequest, "invalid_grant", "subject_token: %v", accesstoken.ErrRevoked).withRevoked("access_token")
	}
	if err != nil {
		return nil, err
	}
	// The new token speaks for whom the subject spoke: a user, or the
	// client that obtained it for itself, whose token never becomes a
	// user's by passing through another client (sub_type).
	subType := accesstoken.SubjectClient
	if sub.ForUser() {
		subType = accesstoken.SubjectUser
	}
	resp, err := p.issue(r, c, issueParams{subject: sub.Subject, subjectType: subType, groups: sub.Groups, scope: scope, audience: aud,
		sid: family, authTime: sub.AuthTime, act: &accesstoken.Actor{Subject: c.actor(), Act: sub.Act},
		ttl: ttl, grant: GrantTokenExchange, from: sub.ID})
	if err != nil {
		return nil, err
	}
	resp.IssuedTokenType = tokenTypeAccess
	return resp, nil
}

type issueParams struct {
	subject  string
	groups   []string
	scope    []string
	audience []string
	sid      string
	authTime int64
	amr      []string
	act      *accesstoken.Actor
	ttl      time.Duration // required: issue refuses zero or less
	grant    string
	from     string // jti of the token exchanged

	// subjectType is sub_type: accesstoken.SubjectUser or SubjectClient.
	// Unset, the subject is the client itself (SubjectClient) or a user
	// (code, refresh, device grants), which is right for every grant but
	// an exchange, which sets it.
	subjectType string
}

// checkActChain refuses an exchange that would nest act deeper than
// MaxActDepth, or name an actor already in the chain (a loop: a service
// calling itself back through others, each hop adding a layer).
func (p *Provider) checkActChain(c *authedClient, act *accesstoken.Actor) error {
	depth := 0
	for a := act; a != nil; a = a.Act {
		depth++
		if a.Subject == c.actor() {
			return errf(http.StatusBadRequest, "invalid_request", "%s is already in the act chain of the subject_token: a loop", c.actor())
		}
		if depth >= p.cfg.MaxActDepth {
			// Counted as it is walked, so a forged chain thousands
			// deep costs no more than the limit.
			return errf(http.StatusBadRequest, "invalid_request", "the act chain of the subject_token already has %d hops, the most allowed (max act depth %d)", depth, p.cfg.MaxActDepth)
		}
	}
	return nil
}

// issue signs an access token and records it.
func (p *Provider) issue(r *http.Request, c *authedClient, ip issueParams) (*tokenResponse, error) {
	signer, _, err := p.keys.current()
	if err != nil {
		return nil, err
	}
	if slices.Contains(ip.scope, "openid") && (ip.grant == "authorization_code" || ip.grant == "refresh_token") {
		// A user's openid login: the token is also for the userinfo
		// endpoint, which takes no token addressed only to others.
		ip.audience = append(slices.Clip(ip.audience), p.cfg.Issuer+PathUserinfo)
	}
	now := p.cfg.Now()
	// A lifetime of zero or less is a bug in the caller (an exchange of a
	// token with nothing left, say), never a request for the default.
	ttl := ip.ttl
	if ttl <= 0 {
		return nil, fmt.Errorf("oauth: access token lifetime %v for %s: must be positive", ttl, ip.grant)
	}
	if ip.subjectType == "" {
		ip.subjectType = accesstoken.SubjectUser
		if ip.subject == c.actor() {
			ip.subjectType = accesstoken.SubjectClient
		}
	}
	claims := accesstoken.Claims{
		Issuer: p.cfg.Issuer, Subject: ip.subject, Audience: jwt.Audience(ip.audience),
		Expiry: jwt.NewNumericDate(now.Add(ttl)), NotBefore: jwt.NewNumericDate(now), IssuedAt: jwt.NewNumericDate(now),
		ID: randomToken()[:22], ClientID: c.ID, Scope: strings.Join(ip.scope, " "), SessionID: ip.sid,
		AuthTime: ip.authTime, AMR: ip.amr, Groups: ip.groups, Act: ip.act,
	}
	claims.SubjectType = ip.subjectType
	if c.cert != nil || c.dpopJKT != "" {
		claims.Cnf = &accesstoken.Confirmation{JKT: c.dpopJKT}
		if c.cert != nil {
			claims.Cnf.X5tS256 = accesstoken.Thumbprint(c.cert)
		}
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return nil, fmt.Errorf("oauth: sign access token: %w", err)
	}
	kv := []string{"client_id", c.ID, "grant_type", ip.grant, "jti", claims.ID, "sid", ip.sid,
		"aud", strings.Join(ip.audience, " "), "scope", claims.Scope, "target", strings.Join(ip.audience, " "),
		"exchanged_jti", ip.from}
	switch {
	case ip.subjectType == accesstoken.SubjectUser:
		kv = append(kv, "user", ip.subject)
	case ip.subject != c.actor():
		kv = append(kv, "subject_client", ip.subject) // a machine's token exchanged: no user
	}
	if c.SPIFFEID != "" {
		kv = append(kv, "spiffe_id", c.SPIFFEID)
	}
	if ip.act != nil {
		kv = append(kv, "act", ip.act.Subject)
	}
	tokenType := "Bearer"
	if claims.Cnf != nil && claims.Cnf.X5tS256 != "" {
		kv = append(kv, "cnf", "x5t#S256")
	}
	if c.dpopJKT != "" {
		kv = append(kv, "cnf_jkt", c.dpopJKT)
		tokenType = "DPoP"
	}
	action := "oauth.token_issue"
	switch ip.grant {
	case "refresh_token":
		action = "oauth.token_refresh"
	case GrantTokenExchange:
		action = "oauth.token_exchange"
	}
	p.record(r, action, audit.OutcomeSuccess, "", kv...)
	return &tokenResponse{AccessToken: raw, TokenType: tokenType, ExpiresIn: int64(ttl / time.Second), Scope: claims.Scope}, nil
}

// idClaims are an OIDC ID token's claims.
type idClaims struct {
	jwt.Claims
	AuthTime int64    `json:"auth_time,omitempty"`
	Nonce    string   `json:"nonce,omitempty"`
	AZP      string   `json:"azp,omitempty"`
	AtHash   string   `json:"at_hash,omitempty"`
	SID      string   `json:"sid,omitempty"`
	Name     string   `json:"name,omitempty"`
	Email    string   `json:"email,omitempty"`
	Groups   []string `json:"groups,omitempty"`
}

func (p *Provider) idToken(c *authedClient, u store.OAuthUser, scope []string, nonce string, authTime int64, sid, accessToken string) (string, error) {
	signer, alg, err := p.keys.idSigner()
	if err != nil {
		return "", err
	}
	now := p.cfg.Now()
	claims := idClaims{
		Claims: jwt.Claims{Issuer: p.cfg.Issuer, Subject: u.Username, Audience: jwt.Audience{c.ID},
			Expiry: jwt.NewNumericDate(now.Add(p.cfg.IDTokenTTL)), IssuedAt: jwt.NewNumericDate(now)},
		AuthTime: authTime, Nonce: nonce, AZP: c.ID, SID: sid,
	}
	if alg == jose.ES256 { // at_hash: left half of the hash the alg uses
		sum := sha256.Sum256([]byte(accessToken))
		claims.AtHash = base64.RawURLEncoding.EncodeToString(sum[:16])
	}
	if slices.Contains(scope, "profile") {
		claims.Name = u.Name
	}
	if slices.Contains(scope, "email") {
		claims.Email = u.Email
	}
	if slices.Contains(scope, "groups") {
		claims.Groups = u.Groups
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("oauth: sign ID token: %w", err)
	}
	return raw, nil
}

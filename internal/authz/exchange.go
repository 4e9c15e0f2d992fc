package authz

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/dpop"
)

// Token exchange defaults.
const (
	exchangeTimeout  = 10 * time.Second
	exchangeMargin   = 30 * time.Second // an exchanged token is reused until this long before it expires
	maxExchangeCache = 10000
)

// Exchanger swaps the user's token that a service passes on when it calls
// another for one addressed to that service (RFC 8693 token exchange): the
// server checks the token was addressed to this service, keeps the user,
// and names this service in act. It authenticates to the token endpoint
// with the service's SVID (tls_client_auth), so the new token is bound to
// the certificate the call is then made with. Exchanged tokens are reused
// until shortly before they expire. The proxy and the SDK share it.
type Exchanger struct {
	tokenURL string
	clientID string
	hc       *http.Client // mTLS with the service's SVID, to the server
	now      func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]exchanged
}

// NewExchanger returns an Exchanger for the service registered as OAuth
// client clientID (tls_client_auth, its SPIFFE ID), using the server at
// serverAddr and presenting the SVID from svid.
func NewExchanger(serverAddr, clientID string, td spiffeid.TrustDomain, svid x509svid.Source, bundles x509bundle.Source) *Exchanger {
	sc := ServerClient(serverAddr, td, svid, bundles)
	return &Exchanger{tokenURL: sc.BaseURL + "/oauth2/token", clientID: clientID, hc: sc.HTTP, now: time.Now, cache: map[[32]byte]exchanged{}}
}

// ExchangeResult says how an exchange went, for metrics.
type ExchangeResult string

// Results.
const (
	Exchanged      ExchangeResult = "exchanged"
	ExchangeCached ExchangeResult = "cached"
	ExchangeDenied ExchangeResult = "refused"
	ExchangeFailed ExchangeResult = "error"
)

type exchanged struct {
	token string
	until time.Time
}

// exchangeError is a refusal by the authorization server.
type exchangeError struct {
	status int
	code   string
	desc   string
}

func (e *exchangeError) Error() string { return e.code + ": " + e.desc }

// errDPoPBound refuses to exchange a token sent with the DPoP scheme.
var errDPoPBound = &exchangeError{status: http.StatusBadRequest, code: "invalid_grant",
	desc: "the token is bound to a DPoP key (sent with the DPoP scheme): this service cannot prove possession of that key, so it cannot exchange it"}

// Exchange returns a token for audience standing for the same user as
// subject.
func (x *Exchanger) Exchange(ctx context.Context, subject, audience string) (token string, cached bool, err error) {
	key := sha256.Sum256([]byte(subject + "\x00" + audience))
	now := x.now()
	x.mu.Lock()
	if e, ok := x.cache[key]; ok && now.Before(e.until) {
		x.mu.Unlock()
		return e.token, true, nil
	}
	x.mu.Unlock()
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {subject},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "audience": {audience}, "client_id": {x.clientID}}
	ctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := x.hc.Do(req)
	if err != nil {
		return "", false, fmt.Errorf("token endpoint: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil {
		return "", false, fmt.Errorf("token endpoint answered %d without JSON", resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK || out.AccessToken == "" {
		return "", false, &exchangeError{status: resp.StatusCode, code: out.Error, desc: out.Description}
	}
	if life := time.Duration(out.ExpiresIn)*time.Second - exchangeMargin; life > 0 {
		x.mu.Lock()
		if len(x.cache) >= maxExchangeCache {
			for k, e := range x.cache {
				if !now.Before(e.until) {
					delete(x.cache, k)
				}
			}
			if len(x.cache) >= maxExchangeCache {
				clear(x.cache)
			}
		}
		x.cache[key] = exchanged{token: out.AccessToken, until: now.Add(life)}
		x.mu.Unlock()
	}
	return out.AccessToken, false, nil
}

// Handler replaces the user's token on requests to the service audience
// with one exchanged for it; requests without a token pass unchanged. A
// refusal is answered here (401 for the user's token, 502 for our own
// registration or the server); count observes each result.
func (x *Exchanger) Handler(audience string, count func(ExchangeResult), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := x.swap(r, audience, count); err != nil {
			var ee *exchangeError
			status := http.StatusBadGateway
			if errors.As(err, &ee) && ee.status < 500 && ee.code != "invalid_client" && ee.code != "unauthorized_client" && ee.code != "invalid_target" {
				status = http.StatusUnauthorized
			}
			WriteProblem(w, status, err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// RoundTripper exchanges the user's token on requests it carries to the
// service audience, then sends them with next.
func (x *Exchanger) RoundTripper(audience string, next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if _, _, ok := dpop.Authorization(r.Header); ok {
			r = r.Clone(r.Context()) // a RoundTripper must not modify the caller's request
		}
		if err := x.swap(r, audience, nil); err != nil {
			return nil, err
		}
		return next.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// swap replaces r's token in place.
func (x *Exchanger) swap(r *http.Request, audience string, count func(ExchangeResult)) error {
	if count == nil {
		count = func(ExchangeResult) {}
	}
	scheme, tok, ok := dpop.Authorization(r.Header)
	if !ok {
		return nil
	}
	if scheme == dpop.SchemeDPoP {
		// A DPoP-bound token is only good with a proof by its holder's
		// key, which this service does not have: swapping it for a
		// token bound to our certificate would make anyone who holds
		// the token (without the key) able to call on through us. The
		// server refuses such an exchange too; say so here, first.
		count(ExchangeDenied)
		return fmt.Errorf("token exchange for %s refused: %w", audience, errDPoPBound)
	}
	nt, cached, err := x.Exchange(r.Context(), tok, audience)
	var ee *exchangeError
	switch {
	case errors.As(err, &ee):
		count(ExchangeDenied)
		return fmt.Errorf("token exchange for %s refused: %w", audience, err)
	case err != nil:
		count(ExchangeFailed)
		return fmt.Errorf("token exchange for %s failed: %w", audience, err)
	case cached:
		count(ExchangeCached)
	default:
		count(Exchanged)
	}
	r.Header.Set("Authorization", "Bearer "+nt)
	r.Header.Del("DPoP") // the exchanged token is bound to our certificate instead
	return nil
}

package oidcdiscovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// PathDiscovery and PathKeys are relative to the issuer's path.
const (
	PathDiscovery = "/.well-known/openid-configuration"
	PathKeys      = "/keys"
)

// Keys returns the JWT-SVID signing keys as a JWK set; identity.CA's
// JWTBundle is one.
type Keys func() ([]byte, error)

// Provider serves discovery for one issuer.
type Provider struct {
	issuer *url.URL
	keys   Keys
}

// New checks issuer and returns its provider.
func New(issuer string, keys Keys) (*Provider, error) {
	u, err := ParseIssuer(issuer)
	if err != nil {
		return nil, err
	}
	return &Provider{issuer: u, keys: keys}, nil
}

// ParseIssuer checks an issuer URL: https, a host, a path other than "/"
// (the root's discovery document is the OAuth server's), no query or
// fragment (OIDC Discovery 1.0 section 3: "a case sensitive URL using the
// https scheme that contains scheme, host, and optionally, port number and
// path components and no query or fragment components").
func ParseIssuer(issuer string) (*url.URL, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, fmt.Errorf("oidcdiscovery: JWT issuer %q: %w", issuer, err)
	}
	switch {
	case u.Scheme != "https":
		return nil, fmt.Errorf("oidcdiscovery: JWT issuer %q: the scheme must be https", issuer)
	case u.Host == "" || u.User != nil:
		return nil, fmt.Errorf("oidcdiscovery: JWT issuer %q: needs a host and no user information", issuer)
	case u.RawQuery != "" || u.Fragment != "" || strings.Contains(issuer, "#") || strings.Contains(issuer, "?"):
		return nil, fmt.Errorf("oidcdiscovery: JWT issuer %q: no query or fragment allowed", issuer)
	case strings.Trim(u.Path, "/") == "":
		return nil, fmt.Errorf("oidcdiscovery: JWT issuer %q: needs a path (for example https://HOST:PORT/spiffe): the root's discovery document is the OAuth server's", issuer)
	case strings.HasSuffix(u.Path, "/"):
		return nil, fmt.Errorf("oidcdiscovery: JWT issuer %q: no trailing slash (clients compare the issuer byte for byte)", issuer)
	case u.EscapedPath() != u.Path || strings.ContainsAny(u.Path, "{}"):
		return nil, fmt.Errorf("oidcdiscovery: JWT issuer %q: the path may hold only unreserved characters", issuer)
	case strings.HasPrefix(u.Path, "/v1/") || u.Path == "/v1" || strings.HasPrefix(u.Path, "/oauth2") || strings.HasPrefix(u.Path, "/.well-known") || strings.HasPrefix(u.Path, "/acme"):
		return nil, fmt.Errorf("oidcdiscovery: JWT issuer %q: the path %s is the API's own; choose another, such as /spiffe", issuer, u.Path)
	}
	return u, nil
}

// Issuer is the issuer URL, the iss of every JWT-SVID.
func (p *Provider) Issuer() string { return p.issuer.String() }

// Route is one endpoint for the server's route table.
type Route struct {
	Pattern string
	Handler http.HandlerFunc
	Doc     string
}

// Routes are the discovery document and the key set, under the issuer's path.
func (p *Provider) Routes() []Route {
	return []Route{
		{"GET " + p.issuer.Path + PathDiscovery, p.handleDiscovery, "OpenID Connect discovery for JWT-SVIDs (issuer: --jwt-issuer)"},
		{"GET " + p.issuer.Path + PathKeys, p.handleKeys, "the JWT-SVID signing keys as a JWK set with use \"sig\", for OIDC relying parties"},
	}
}

// Document is the discovery document: the fields OpenID Connect Discovery
// 1.0 section 3 marks REQUIRED for what a relying party of JWT-SVIDs
// does (it verifies tokens; nobody signs in here, so there is no
// authorization endpoint to name).
type Document struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
}

func (p *Provider) document() Document {
	return Document{
		Issuer:                           p.Issuer(),
		JWKSURI:                          p.Issuer() + PathKeys,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{string(jose.ES256)},
		ClaimsSupported:                  []string{"sub", "aud", "exp", "iat", "iss"},
	}
}

func (p *Provider) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	json.NewEncoder(w).Encode(p.document())
}

func (p *Provider) handleKeys(w http.ResponseWriter, r *http.Request) {
	b, err := p.keys()
	if err == nil {
		b, err = Relabel(b)
	}
	if err != nil {
		http.Error(w, "the signing keys are unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	// Short: a relying party learns a new key within minutes; keys are
	// published a rotation ahead of their use (package identity).
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(b)
}

// Relabel turns a SPIFFE JWT bundle into the JWK set relying parties
// expect: every key public, "use": "sig", its algorithm named.
func Relabel(bundle []byte) ([]byte, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(bundle, &set); err != nil {
		return nil, fmt.Errorf("oidcdiscovery: JWT bundle: %w", err)
	}
	out := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(set.Keys))}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return nil, errors.New("oidcdiscovery: JWT bundle holds a private key")
		}
		if k.KeyID == "" {
			return nil, errors.New("oidcdiscovery: JWT bundle holds a key without kid")
		}
		k.Use = "sig"
		if k.Algorithm == "" {
			k.Algorithm = string(jose.ES256)
		}
		k.Certificates = nil
		out.Keys = append(out.Keys, k)
	}
	return json.Marshal(out)
}

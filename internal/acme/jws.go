package acme

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// Requests (RFC 8555 §6.2): "JWS objects sent in ACME requests MUST meet
// the following additional criteria: The JWS MUST be in the Flattened
// JSON Serialization; The JWS MUST NOT have multiple signatures; The JWS
// Unencoded Payload Option MUST NOT be used; The JWS Unprotected Header
// MUST NOT be used; The JWS Payload MUST NOT be detached; The JWS
// Protected Header MUST include the following fields: alg, jwk or kid,
// nonce, url". And "the server MUST NOT accept ... 'none' ... [or] a MAC
// algorithm". parseJWS enforces all of it before go-jose sees the body,
// and refuses any other header parameter (crit and b64 would change what
// the signature covers).

// requestAlgs are the signature algorithms accepted on requests.
var requestAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256, jose.PS256, jose.EdDSA}

// eabAlgs are the MAC algorithms of an external account binding (RFC 8555
// §7.3.4), the one place a MAC is allowed.
var eabAlgs = []jose.SignatureAlgorithm{jose.HS256, jose.HS384, jose.HS512}

// maxRequestBody bounds a request body: a CSR for an 8192-bit RSA key
// with 100 names is well under it.
const maxRequestBody = 64 << 10

// jws is a parsed ACME request whose signature is not yet verified.
type jws struct {
	alg     jose.SignatureAlgorithm
	jwk     *jose.JSONWebKey // exactly one of jwk and kid is set
	kid     string
	nonce   string
	url     string
	payload []byte // empty for POST-as-GET
	sig     *jose.JSONWebSignature
}

// readBody reads a POST body of type application/jose+json, at most
// maxRequestBody bytes.
func readBody(r *http.Request) ([]byte, *Problem) {
	if ct := r.Header.Get("Content-Type"); !strings.EqualFold(strings.TrimSpace(strings.Split(ct, ";")[0]), "application/jose+json") {
		// RFC 8555 §6.2: 415 for any other content type.
		return nil, problem(http.StatusUnsupportedMediaType, errMalformed, "Content-Type %q: want application/jose+json", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxRequestBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, problem(http.StatusRequestEntityTooLarge, errMalformed, "request body larger than %d bytes", maxRequestBody)
		}
		return nil, malformed("cannot read the request body: %v", err)
	}
	return body, nil
}

// parseJWS parses body as an ACME request JWS, strictly; it verifies
// nothing.
func parseJWS(body []byte) (*jws, *Problem) {
	outer, err := objectFields(body)
	if err != nil {
		return nil, malformed("request body: %v; want a JWS in the flattened JSON serialization", err)
	}
	for k := range outer {
		if k != "protected" && k != "payload" && k != "signature" {
			return nil, malformed("JWS field %q is not allowed: ACME requests have only protected, payload and signature (no unprotected header, no signatures array)", k)
		}
	}
	parts := map[string][]byte{}
	for _, k := range []string{"protected", "payload", "signature"} {
		raw, ok := outer[k]
		if !ok {
			return nil, malformed("JWS field %q is missing", k)
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, malformed("JWS field %q: want a base64url string", k)
		}
		b, err := decodeB64(s)
		if err != nil {
			return nil, malformed("JWS field %q: not base64url without padding", k)
		}
		parts[k] = b
	}
	if len(parts["signature"]) == 0 {
		return nil, malformed("JWS signature is empty")
	}
	j, p := parseProtected(parts["protected"], requestAlgs)
	if p != nil {
		return nil, p
	}
	if (j.jwk == nil) == (j.kid == "") {
		return nil, malformed("the protected header must have exactly one of jwk and kid")
	}
	if j.nonce == "" {
		return nil, problem(http.StatusBadRequest, errBadNonce, "the protected header has no nonce")
	}
	if j.url == "" {
		return nil, malformed("the protected header has no url")
	}
	if j.jwk != nil {
		if p := checkKeyAlg(j.jwk.Key, j.alg); p != nil {
			return nil, p
		}
	}
	sig, err := jose.ParseSignedJSON(string(body), requestAlgs)
	if err != nil {
		return nil, malformed("JWS: %v", err)
	}
	if len(sig.Signatures) != 1 {
		return nil, malformed("JWS has %d signatures, want 1", len(sig.Signatures))
	}
	j.payload, j.sig = parts["payload"], sig
	return j, nil
}

// parseProtected parses a protected header whose alg must be one of algs.
func parseProtected(b []byte, algs []jose.SignatureAlgorithm) (*jws, *Problem) {
	fields, err := objectFields(b)
	if err != nil {
		return nil, malformed("protected header: %v", err)
	}
	j := &jws{}
	str := func(name string, dst *string) *Problem {
		raw, ok := fields[name]
		if !ok {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return malformed("protected header %q: want a string", name)
		}
		return nil
	}
	var alg string
	for name, raw := range fields {
		var p *Problem
		switch name {
		case "alg":
			p = str(name, &alg)
		case "kid":
			p = str(name, &j.kid)
		case "nonce":
			p = str(name, &j.nonce)
		case "url":
			p = str(name, &j.url)
		case "jwk":
			k := &jose.JSONWebKey{}
			if err := k.UnmarshalJSON(raw); err != nil {
				return nil, problem(http.StatusBadRequest, errBadPublicKey, "protected header jwk: %v", err)
			}
			if !k.IsPublic() || !k.Valid() {
				return nil, problem(http.StatusBadRequest, errBadPublicKey, "protected header jwk: not a valid public key")
			}
			j.jwk = k
		default:
			return nil, malformed("protected header parameter %q is not allowed (only alg, jwk, kid, nonce and url)", name)
		}
		if p != nil {
			return nil, p
		}
	}
	j.alg = jose.SignatureAlgorithm(alg)
	if !slices.Contains(algs, j.alg) {
		names := make([]string, len(algs))
		for i, a := range algs {
			names[i] = string(a)
		}
		p := problem(http.StatusBadRequest, errBadSignatureAlgorithm, "signature algorithm %q is not accepted; use one of %s", alg, strings.Join(names, ", "))
		p.Algorithms = names
		return nil, p
	}
	return j, nil
}

// objectFields splits a JSON object into its fields, refusing duplicate
// names (two parsers could otherwise read two different headers) and
// anything after the object.
func objectFields(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("not JSON: %v", err)
		}
		name, _ := tok.(string)
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("field %q appears twice", name)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("field %q: %v", name, err)
		}
		out[name] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return out, nil
}

// checkKeyAlg checks that key is one we accept for account keys and that
// alg is its algorithm.
func checkKeyAlg(key crypto.PublicKey, alg jose.SignatureAlgorithm) *Problem {
	var want []jose.SignatureAlgorithm
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			want = []jose.SignatureAlgorithm{jose.ES256}
		case elliptic.P384():
			want = []jose.SignatureAlgorithm{jose.ES384}
		default:
			return problem(http.StatusBadRequest, errBadPublicKey, "ECDSA curve %s is not accepted (P-256 or P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return problem(http.StatusBadRequest, errBadPublicKey, "RSA key of %d bits is not accepted (2048 to 8192)", n)
		}
		if k.E < 3 || k.E%2 == 0 {
			return problem(http.StatusBadRequest, errBadPublicKey, "RSA public exponent %d is not accepted", k.E)
		}
		want = []jose.SignatureAlgorithm{jose.RS256, jose.PS256}
	case ed25519.PublicKey:
		want = []jose.SignatureAlgorithm{jose.EdDSA}
	default:
		return problem(http.StatusBadRequest, errBadPublicKey, "key type %T is not accepted (ECDSA P-256 or P-384, RSA, Ed25519)", key)
	}
	if !slices.Contains(want, alg) {
		return problem(http.StatusBadRequest, errBadSignatureAlgorithm, "algorithm %s does not go with this %s key", alg, want[0])
	}
	return nil
}

// verify checks the signature with key (which must go with the header's
// alg) and returns the payload.
func (j *jws) verify(key *jose.JSONWebKey) ([]byte, *Problem) {
	if p := checkKeyAlg(key.Key, j.alg); p != nil {
		return nil, p
	}
	payload, err := j.sig.Verify(key)
	if err != nil || !bytes.Equal(payload, j.payload) {
		return nil, unauthorized("the JWS signature does not verify with the account's key")
	}
	return payload, nil
}

// thumbprint is the RFC 7638 SHA-256 thumbprint of key, base64url.
func thumbprint(key *jose.JSONWebKey) (string, error) {
	t, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(t), nil
}

// decodePayload decodes a JSON request payload into v: unknown fields are
// ignored (RFC 8555 leaves room for extensions), wrong types are named.
func decodePayload(payload []byte, v any) *Problem {
	if len(payload) == 0 {
		return malformed("empty payload; this request needs a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return malformed("payload field %q: want %s, got JSON %s", ute.Field, ute.Type, ute.Value)
		}
		return malformed("payload: invalid JSON: %v", err)
	}
	if dec.More() {
		return malformed("payload: data after the JSON object")
	}
	return nil
}

// decodeB64 decodes base64url without padding, strictly (RFC 7515 §2).
func decodeB64(s string) ([]byte, error) {
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"slices"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// seedJWS returns well-formed request bodies to start the fuzzer from.
func seedJWS(f *testing.F) [][]byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var out [][]byte
	for _, opts := range []*jose.SignerOptions{
		{EmbedJWK: true, NonceSource: nonceSource("bm9uY2U"), ExtraHeaders: map[jose.HeaderKey]any{"url": "https://a.test/acme/new-account"}},
		{NonceSource: nonceSource("bm9uY2U"), ExtraHeaders: map[jose.HeaderKey]any{"url": "https://a.test/acme/new-order"}},
	} {
		key := jose.JSONWebKey{Key: k}
		if !opts.EmbedJWK {
			key.KeyID = "https://a.test/acme/acct/x"
		}
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
		if err != nil {
			f.Fatal(err)
		}
		for _, pl := range []string{`{"identifiers":[{"type":"dns","value":"a.test"}]}`, ``} {
			j, err := s.Sign([]byte(pl))
			if err != nil {
				f.Fatal(err)
			}
			out = append(out, []byte(j.FullSerialize()))
		}
	}
	return append(out, []byte(`{"protected":"eyJhbGciOiJub25lIn0","payload":"","signature":""}`), []byte(`{}`), []byte(`[]`))
}

// FuzzParseJWS: no body makes the request parser panic, and whatever it
// accepts meets RFC 8555 §6.2.
func FuzzParseJWS(f *testing.F) {
	for _, s := range seedJWS(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		j, p := parseJWS(body)
		if p != nil {
			if j != nil || p.Status == 0 || p.Type == "" {
				t.Fatalf("refusal without a proper problem: %+v", p)
			}
			return
		}
		if (j.jwk == nil) == (j.kid == "") || j.nonce == "" || j.url == "" || !slices.Contains(requestAlgs, j.alg) || j.sig == nil {
			t.Fatalf("accepted a request that breaks §6.2: %+v", j)
		}
		if j.jwk != nil && !j.jwk.IsPublic() {
			t.Fatal("accepted a private jwk")
		}
	})
}

// FuzzPayloads: the payload decoders, identifiers, CertIDs and name
// patterns take any input without panicking.
func FuzzPayloads(f *testing.F) {
	f.Add([]byte(`{"identifiers":[{"type":"dns","value":"*.a.test"},{"type":"ip","value":"::1"}],"replaces":"AAAA.AQ"}`))
	f.Add([]byte(`{"csr":"MIIB"}`))
	f.Add([]byte(`{"status":"deactivated","contact":["mailto:a@b.test"]}`))
	f.Add([]byte(`{"externalAccountBinding":{"protected":"e30","payload":"e30","signature":"AA"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var o newOrderPayload
		if decodePayload(b, &o) == nil {
			for _, id := range o.Identifiers {
				if n, p := normalize(id); p == nil {
					if n2, p2 := normalize(n); p2 != nil || n2 != n {
						t.Fatalf("normalize is not idempotent: %+v -> %+v -> %+v %v", id, n, n2, p2)
					}
				}
				ParsePatterns([]string{id.Value})
			}
			if aki, serial, err := parseCertID(o.Replaces); err == nil && (len(aki) == 0 || serial == "") {
				t.Fatalf("CertID %q parsed to nothing", o.Replaces)
			}
		}
		var a newAccountPayload
		if decodePayload(b, &a) == nil {
			checkContacts(a.Contact)
			objectFields(a.ExternalAccountBinding)
		}
		parseInnerJWS(b)
		checkCSR(string(b), nil, &jose.JSONWebKey{Key: nil})
		var v any
		_ = json.Unmarshal(b, &v)
	})
}

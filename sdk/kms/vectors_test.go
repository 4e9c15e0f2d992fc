package kms

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"time"
)

// TestEnvelopeVectors opens an envelope ciphertext made by an independent
// implementation of the format in the package doc, so a change to the
// layout or the key derivation fails here before it strands stored data.
func TestEnvelopeVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		DataKey   string `json:"data_key_hex"`
		Wrapped   string `json:"wrapped_data_key_hex"`
		AAD       string `json:"aad"`
		Plaintext string `json:"plaintext"`
		Envelope  string `json:"envelope_hex"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	dk, _ := hex.DecodeString(v.DataKey)
	wrapped, _ := hex.DecodeString(v.Wrapped)
	env, _ := hex.DecodeString(v.Envelope)

	gotWrapped, body, err := Split(env)
	if err != nil || !bytes.Equal(gotWrapped, wrapped) {
		t.Fatalf("Split = %x, %v; want the wrapped key %x", gotWrapped, err, wrapped)
	}
	if name, version, err := KeyOf(env); err != nil || name != "orders-pii" || version != 3 {
		t.Fatalf("KeyOf = %q, %d, %v", name, version, err)
	}
	k, err := newDataKey(dk, wrapped, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(env, k.prefix) {
		t.Fatalf("envelope does not start with the prefix this package writes")
	}
	pt, err := k.aead.Open(nil, nil, body, []byte(v.AAD))
	if err != nil || string(pt) != v.Plaintext {
		t.Fatalf("Open = %q, %v; want %q", pt, err, v.Plaintext)
	}
	if _, err := k.aead.Open(nil, nil, body, []byte("customers/43/card")); err == nil {
		t.Fatal("opened with other associated data")
	}
}

package kms

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

type kmsVectors struct {
	KeyHex     string `json:"key_hex"`
	AAD        string `json:"aad"`
	Plaintext  string `json:"plaintext"`
	Ciphertext string `json:"ciphertext_hex"`
	DataKey    string `json:"data_key_hex"`
	Wrapped    string `json:"wrapped_data_key_hex"`
}

// TestVectors opens ciphertexts made by an independent implementation of
// the format: a change to how the key store seals (header, nonce place,
// associated data) fails here before it strands data written earlier.
func TestVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v kmsVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	key, _ := hex.DecodeString(v.KeyHex)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	open1 := func(what, hexCT string, aad []byte, kind byte) []byte {
		ct, _ := hex.DecodeString(hexCT)
		h, raw, body, err := ParseHeader(ct)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if h.Kind != kind || h.Name != "orders-pii" || h.Version != 3 {
			t.Fatalf("%s: header %+v", what, h)
		}
		pt, err := open(aead, raw, body, aad)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		// The header is bound: the same body under another version does not open.
		h.Version = 4
		if _, err := open(aead, h.Append(nil), body, aad); err != ErrDecrypt {
			t.Fatalf("%s under another header: %v, want ErrDecrypt", what, err)
		}
		return pt
	}
	if pt := open1("ciphertext", v.Ciphertext, []byte(v.AAD), KindCiphertext); string(pt) != v.Plaintext {
		t.Fatalf("ciphertext opened to %q", pt)
	}
	if dk := open1("wrapped data key", v.Wrapped, nil, KindDataKey); hex.EncodeToString(dk) != v.DataKey {
		t.Fatalf("data key opened to %x", dk)
	}
}

package envelope

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
)

type headerVector struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Key     string `json:"key"`
	Version int    `json:"version"`
	Hex     string `json:"hex"`
	Error   string `json:"error"`
}

func loadVectors(t testing.TB) []headerVector {
	b, err := os.ReadFile("testdata/headers.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Headers []headerVector `json:"headers"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Headers) == 0 {
		t.Fatal("no vectors")
	}
	return f.Headers
}

// TestHeaderVectors pins the format: every vector parses to its fields and
// re-encodes byte for byte; every malformed one is refused.
func TestHeaderVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			b, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			body := []byte("body")
			if v.Error != "" {
				// Parsed alone: a body would complete a truncated header.
				h, _, _, err := Parse(b)
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse = %+v, %v; want ErrMalformed", h, err)
				}
				return
			}
			h, raw, rest, err := Parse(append(b, body...))
			if err != nil {
				t.Fatal(err)
			}
			want := Header{Kind: v.Kind[0], Name: v.Key, Version: v.Version}
			if h != want {
				t.Fatalf("Parse = %+v, want %+v", h, want)
			}
			if !bytes.Equal(raw, b) || !bytes.Equal(rest, body) {
				t.Fatalf("split %x | %q, want %x | %q", raw, rest, b, body)
			}
			if got := want.Append(nil); !bytes.Equal(got, b) || want.Size() != len(b) {
				t.Fatalf("Append = %x (size %d), want %x", got, want.Size(), b)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, v := range loadVectors(f) {
		b, _ := hex.DecodeString(v.Hex)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, raw, body, err := Parse(b)
		if err != nil {
			return
		}
		// What parses re-encodes to the same bytes.
		if !bytes.Equal(h.Append(nil), raw) || len(raw)+len(body) != len(b) {
			t.Fatalf("%+v does not re-encode to %x", h, raw)
		}
	})
}

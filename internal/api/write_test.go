package api

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// Decode refuses what a strict JSON API must, naming what was wrong.
func TestDecode(t *testing.T) {
	type req struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	for _, c := range []struct{ body, want string }{
		{``, "empty request body"},
		{`{"name":"a","pth":1}`, `unknown field "pth"`},
		{`{"n":"x"}`, `field "n": want int`},
		{`{"name":"a"} {"name":"b"}`, "data after the object"},
		{`{"name":` + strings.Repeat(" ", MaxBody) + `"a"}`, "larger than"},
		{`{"name":`, "invalid JSON body"},
	} {
		var v req
		err := Decode(httptest.NewRequest("POST", "/", strings.NewReader(c.body)), &v)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.40q: %v, want %q", c.body, err, c.want)
		}
	}
	var v req
	if err := Decode(httptest.NewRequest("POST", "/", strings.NewReader(`{"name":"a","n":2}`)), &v); err != nil || v.Name != "a" || v.N != 2 {
		t.Fatalf("%v %+v", err, v)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"name":"a","n":1}`))
	f.Add([]byte(`{"name":"a"} x`))
	f.Add([]byte(`{"n":1e309}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var v struct {
			Name string `json:"name"`
			N    int    `json:"n"`
		}
		if err := Decode(httptest.NewRequest("POST", "/", strings.NewReader(string(b))), &v); err == nil && len(b) > MaxBody {
			t.Fatalf("accepted a body of %d bytes", len(b))
		}
	})
}

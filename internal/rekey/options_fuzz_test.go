package rekey

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzOptions: the request body of POST /v1/rekey decodes into Options or
// fails cleanly; what decodes and passes the bounds encodes and decodes to
// the same options.
func FuzzOptions(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"dry_run":true}`, `{"revoke_tokens":true,"propagation":"10s","deadline":"1h","kms_grace":"168h"}`,
		`{"propagation":"-1s"}`, `{"deadline":"1ms"}`, `{"kms_grace":"x"}`, `{"propagation":10}`, `{"deadline":"9999999999h"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var o Options
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if dec.Decode(&o) != nil {
			return
		}
		d, err := o.withDefaults()
		if err != nil {
			return
		}
		if d.Propagation < 0 || d.Deadline <= 0 || d.KMSGrace <= 0 {
			t.Fatalf("out of bounds options accepted: %+v", d)
		}
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var back Options
		if err := json.Unmarshal(out, &back); err != nil || back != d {
			t.Fatalf("round trip: %s → %+v (%v), want %+v", out, back, err, d)
		}
	})
}

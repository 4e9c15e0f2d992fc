package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit/auditentry"
)

func canonical(t testing.TB, n int) [][]byte {
	var out [][]byte
	for i := range n {
		e := entry(i)
		e.Stream, e.Seq = "0123456789abcdef0123456789abcdef", uint64(i+1)
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestBatchRoundTrip(t *testing.T) {
	in := canonical(t, 300)
	body := EncodeBatch(in)
	out, err := DecodeBatch(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("%d entries back, sent %d", len(out), len(in))
	}
	for i := range in {
		if !bytes.Equal(in[i], out[i]) {
			t.Fatalf("entry %d changed", i)
		}
	}
	if raw := len(bytes.Join(in, nil)); len(body)*4 > raw {
		t.Fatalf("%d bytes of entries encoded to %d: want them compressed", raw, len(body))
	}
}

// raw frames content as version 2 without checking it.
func raw(content []byte) []byte {
	enc, _ := zstd.NewWriter(nil)
	return enc.EncodeAll(content, nil)
}

func TestBatchRefusesMalformed(t *testing.T) {
	one := canonical(t, 1)[0]
	frame := func(count uint64, entries ...[]byte) []byte {
		b := binary.AppendUvarint([]byte(batchMagic), count)
		for _, e := range entries {
			b = binary.AppendUvarint(b, uint64(len(e)))
			b = append(b, e...)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"not zstd", []byte(`{"entries":[]}`), "spool: batch:"},
		{"bad magic", raw([]byte("RAB1\x01\x01x")), "bad magic"},
		{"no entries", raw(frame(0)), "0 entries"},
		{"too many", raw(frame(MaxBatchEntries + 1)), "10001 entries"},
		{"count above what follows", raw(frame(2, one)), "entry 1: bad length"},
		{"length past the end", raw(append(frame(1), 0x80, 0x01, 'x')), "128 bytes, 1 left"},
		{"empty entry", raw(append(frame(1), 0)), "0 bytes"},
		{"oversized entry", raw(binary.AppendUvarint(frame(1), auditentry.MaxSize+1)), "65536 bytes"},
		{"trailing bytes", raw(append(frame(1, one), 'x')), "1 bytes after the last entry"},
		{"bomb", raw(append(frame(1, one), make([]byte, MaxBatchBytes)...)), "more than"},
	} {
		_, err := DecodeBatch(bytes.NewReader(tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// FuzzDecodeBatch: the server's parser of untrusted batches never panics,
// never returns an entry that is not a slice of the body's content, and
// what it accepts re-encodes to the same entries.
func FuzzDecodeBatch(f *testing.F) {
	in := canonical(f, 3)
	f.Add(EncodeBatch(in))
	f.Add(EncodeBatch(in[:1]))
	f.Add(raw([]byte("RAB2\x01\x05hello")))
	f.Add(raw([]byte("RAB2\x00")))
	f.Add([]byte("RAB2"))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := DecodeBatch(bytes.NewReader(body))
		if err != nil {
			return
		}
		if len(out) == 0 || len(out) > MaxBatchEntries {
			t.Fatalf("accepted %d entries", len(out))
		}
		back, err := DecodeBatch(bytes.NewReader(EncodeBatch(out)))
		if err != nil || len(back) != len(out) {
			t.Fatalf("re-encoding what was accepted: %v", err)
		}
		for i := range out {
			if len(out[i]) == 0 || len(out[i]) > auditentry.MaxSize || !bytes.Equal(out[i], back[i]) {
				t.Fatalf("entry %d", i)
			}
		}
	})
}

// FuzzParseBatch fuzzes the framing without compression in the way.
func FuzzParseBatch(f *testing.F) {
	f.Add([]byte("RAB2\x01\x05hello"))
	f.Add([]byte("RAB2\x02\x01a\x01b"))
	f.Add([]byte("RAB2\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := parseBatch(b)
		if err != nil {
			return
		}
		total := 0
		for _, e := range out {
			total += len(e)
		}
		if total > len(b) || len(out) == 0 {
			t.Fatalf("%d entries of %d bytes from %d bytes", len(out), total, len(b))
		}
	})
}

// A server of the previous version answers a version 2 batch with 400; the
// sender sends it again as JSON.
func TestSenderFallsBackToVersion1(t *testing.T) {
	var formats []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		formats = append(formats, r.Header.Get("Content-Type"))
		if r.Header.Get("Content-Type") != "application/json" {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"status":400,"detail":"audit batch: invalid character"}`))
			return
		}
		var req api.AuditIngestRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Entries) != 1 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(api.AuditIngestResponse{Stream: "0123456789abcdef0123456789abcdef", AckedThrough: 1})
	}))
	defer srv.Close()
	e := entry(0)
	e.Stream, e.Seq = "0123456789abcdef0123456789abcdef", 1
	ack, err := APISender{Client: &api.Client{BaseURL: srv.URL, HTTP: srv.Client()}}.Send(context.Background(), []*auditentry.Entry{e})
	if err != nil || ack != 1 {
		t.Fatalf("ack %d, %v", ack, err)
	}
	if len(formats) != 2 || formats[0] != BatchContentType || formats[1] != "application/json" {
		t.Fatalf("formats sent: %v", formats)
	}
}

package objstore

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A store that sends more than it should (compromised, or not S3 at all)
// cannot make a reader hold more than the reader's limit: Get stops after
// max+1 bytes, or before reading when Content-Length announces more.
func TestGetRefusesObjectsOverTheLimit(t *testing.T) {
	var sent atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/announced"):
			w.Header().Set("Content-Length", "10000000000")
			w.Write([]byte("x"))
		case strings.HasSuffix(r.URL.Path, "/endless"):
			chunk := make([]byte, 64<<10)
			for {
				n, err := w.Write(chunk)
				sent.Add(int64(n))
				if err != nil || sent.Load() > 1<<30 {
					return
				}
			}
		default:
			w.Write([]byte("0123456789"))
		}
	}))
	defer srv.Close()
	b, err := New(Config{Bucket: "b", Endpoint: srv.URL, AccessKeyID: "ak", SecretAccessKey: "sk", HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got, err := b.Get(ctx, "ten", 10); err != nil || string(got) != "0123456789" {
		t.Fatalf("Get at the limit: %q %v", got, err)
	}
	if _, err := b.Get(ctx, "ten", 9); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "at most 9 bytes accepted") {
		t.Fatalf("Get over the limit: %v", err)
	}
	if _, err := b.Get(ctx, "announced", 1<<20); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "10000000000 bytes announced") {
		t.Fatalf("Get of an announced 10 GB object: %v", err)
	}
	if _, err := b.Get(ctx, "endless", 1<<20); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "more sent") {
		t.Fatalf("Get of an endless body: %v", err)
	}
	if _, err := b.Get(ctx, "ten", -1); err == nil {
		t.Fatal("a negative limit was accepted")
	}
}

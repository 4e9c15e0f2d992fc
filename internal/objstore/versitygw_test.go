package objstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/rampartsec/rampart/internal/s3test"
)

// Against a real S3-compatible server that checks signatures.
func TestAgainstVersityGateway(t *testing.T) {
	srv := s3test.Start(t, "rampart")
	ctx := context.Background()
	b, err := New(Config{Bucket: srv.Bucket, Prefix: "p/q", Endpoint: srv.Endpoint, AccessKeyID: srv.AccessKeyID, SecretAccessKey: srv.SecretAccessKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "dir/a b$.txt", []byte("one"), true); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, "dir/a b$.txt", 1<<10); err != nil || string(got) != "one" {
		t.Fatalf("Get: %q %v", got, err)
	}
	// Conditional write: never overwrites.
	if err := b.Put(ctx, "dir/a b$.txt", []byte("two"), true); !errors.Is(err, ErrExists) {
		t.Fatalf("second conditional Put: %v, want ErrExists", err)
	}
	if got, _ := b.Get(ctx, "dir/a b$.txt", 1<<10); string(got) != "one" {
		t.Fatalf("object overwritten: %q", got)
	}
	if err := b.Put(ctx, "dir/a b$.txt", []byte("three"), false); err != nil {
		t.Fatal(err)
	}
	// The caller bounds what a GET may read.
	if _, err := b.Get(ctx, "dir/a b$.txt", 4); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "at most 4 bytes accepted") {
		t.Fatalf("Get of a 5-byte object with a limit of 4: %v", err)
	}
	if got, err := b.Get(ctx, "dir/a b$.txt", 5); err != nil || string(got) != "three" {
		t.Fatalf("Get at exactly the limit: %q %v", got, err)
	}
	if _, err := b.Get(ctx, "missing", 1<<10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing key: %v", err)
	}
	// Listing pages past 1,000 keys.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range 1050 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := b.Put(ctx, fmt.Sprintf("many/%05d", i), []byte{byte(i)}, true); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	objs, err := b.List(ctx, "many/")
	if err != nil || len(objs) != 1050 || objs[0].Key != "many/00000" || objs[1049].Key != "many/01049" || objs[5].Size != 1 {
		t.Fatalf("List: %d objects, %v", len(objs), err)
	}
	// Wrong credentials are refused by the server.
	bad, _ := New(Config{Bucket: srv.Bucket, Endpoint: srv.Endpoint, AccessKeyID: srv.AccessKeyID, SecretAccessKey: "wrong"})
	if err := bad.Put(ctx, "x", []byte("1"), false); err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") {
		t.Fatalf("Put with a wrong secret: %v", err)
	}
}

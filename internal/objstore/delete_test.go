package objstore

import (
	"context"
	"errors"
	"testing"

	"github.com/rampartsec/rampart/internal/s3test"
)

// Delete against the real gateway: gone afterwards, a missing key is not
// an error, and a neighbour with a common prefix stays.
func TestDeleteAgainstVersityGateway(t *testing.T) {
	srv := s3test.Start(t, "rampart")
	ctx := context.Background()
	b, err := New(Config{Bucket: srv.Bucket, Prefix: "backups", Endpoint: srv.Endpoint, AccessKeyID: srv.AccessKeyID, SecretAccessKey: srv.SecretAccessKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"objects/ab/abc", "objects/ab/abcd"} {
		if err := b.Put(ctx, k, []byte(k), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete(ctx, "objects/ab/abc"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "objects/ab/abc", 100); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Delete: %v", err)
	}
	if err := b.Delete(ctx, "objects/ab/abc"); err != nil {
		t.Fatalf("deleting a missing object: %v", err)
	}
	objs, err := b.List(ctx, "objects/")
	if err != nil || len(objs) != 1 || objs[0].Key != "objects/ab/abcd" {
		t.Fatalf("left: %+v, %v", objs, err)
	}
}

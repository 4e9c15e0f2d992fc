package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/objstore"
	"github.com/rampartsec/rampart/internal/s3test"
)

func bucket(t *testing.T, srv *s3test.Server, prefix string) *objstore.Bucket {
	t.Helper()
	b, err := objstore.New(objstore.Config{Bucket: srv.Bucket, Prefix: prefix, Endpoint: srv.Endpoint,
		AccessKeyID: srv.AccessKeyID, SecretAccessKey: srv.SecretAccessKey})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The archive in a real S3-compatible server verifies on another machine
// from the segments and checkpoints alone, and is never overwritten.
func TestArchiveToS3(t *testing.T) {
	srv := s3test.Start(t, "audit")
	ctx := context.Background()
	dir := t.TempDir()
	l, err := OpenWith(dir, origin, Options{SegmentEntries: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	signer, verifier := keys(t)
	fill(t, l, 0, 1024)
	l.Checkpoint(signer)
	fill(t, l, 1024, 76)
	l.Checkpoint(signer)
	if n, err := l.Seal(); err != nil || n != 2 {
		t.Fatalf("Seal: %d %v", n, err)
	}
	b := bucket(t, srv, "prod/audit")
	a := NewArchiver(dir, b)
	res, err := a.Sync(ctx)
	if err != nil || len(res.Segments) != 2 || res.Checkpoints != 2 {
		t.Fatalf("first Sync: %+v %v", res, err)
	}
	if res, err := a.Sync(ctx); err != nil || len(res.Segments)+res.Checkpoints != 0 {
		t.Fatalf("second Sync copied again: %+v %v", res, err)
	}
	// A new archiver (a restarted server) finds what is there.
	if res, err := NewArchiver(dir, b).Sync(ctx); err != nil || len(res.Segments)+res.Checkpoints != 0 {
		t.Fatalf("Sync after restart copied again: %+v %v", res, err)
	}

	// Later Syncs copy what is new: the next segment and checkpoint.
	fill(t, l, 1100, 500)
	l.Checkpoint(signer)
	if n, err := l.Seal(); err != nil || n != 1 {
		t.Fatalf("Seal: %d %v", n, err)
	}
	if res, err := a.Sync(ctx); err != nil || len(res.Segments) != 1 || res.Segments[0] != "segments/"+segmentName(1024) || res.Checkpoints != 1 {
		t.Fatalf("Sync after a new segment: %+v %v", res, err)
	}

	// Elsewhere: fetch and verify.
	got := t.TempDir()
	n, err := Fetch(ctx, b, got)
	if err != nil || n != 1536 {
		t.Fatalf("Fetch: %d %v", n, err)
	}
	rep, err := Verify(got, verifier)
	if err != nil || !rep.OK() || !rep.Archive || rep.Entries != 1536 || rep.Checkpoints != 2 || rep.Beyond != 1 {
		t.Fatalf("Verify of the fetched archive: %v %+v", err, rep)
	}
	var seen int64
	if err := Scan(got, 0, func(i int64, e []byte) error {
		if want, _ := l.Entry(i); !bytes.Equal(e, want) {
			t.Fatalf("archived entry %d differs", i)
		}
		seen++
		return nil
	}); err != nil || seen != 1536 {
		t.Fatalf("Scan of the archive: %d %v", seen, err)
	}

	// Another log writing to the same prefix is refused, not overwriting.
	dir2 := t.TempDir()
	l2, _ := OpenWith(dir2, origin, Options{SegmentEntries: 512})
	defer l2.Close()
	for i := range 600 {
		if _, err := l2.AppendEntries(ctx, entry(5000+i)); err != nil {
			t.Fatal(err)
		}
	}
	l2.Checkpoint(signer)
	if n, err := l2.Seal(); n != 1 || err != nil {
		t.Fatalf("Seal: %d %v", n, err)
	}
	if _, err := NewArchiver(dir2, b).Sync(ctx); err == nil || !strings.Contains(err.Error(), "already holds a different segments/") {
		t.Fatalf("a different log's segment over the archive: %v", err)
	}

	// An archived entry edited in the bucket: the checkpoint no longer
	// verifies.
	obj := filepath.Join(srv.Root, "audit", "prod", "audit", "segments", segmentName(0))
	rewriteSegmentEntry(t, obj, 10, `"n":"10"`, `"n":"11"`)
	got2 := t.TempDir()
	if _, err := Fetch(ctx, b, got2); err != nil {
		t.Fatal(err)
	}
	rep, err = Verify(got2, verifier)
	if err != nil || rep.OK() || rep.Problems[0].Kind != "checkpoint" || rep.Problems[0].Index != 1024 {
		t.Fatalf("Verify of an edited archive: %v %+v", err, rep)
	}
}

// A log directory that lost hashes.bin is damaged, not an archive.
func TestVerifyMissingHashesIsNotAnArchive(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	signer, verifier := keys(t)
	fill(t, l, 0, 50)
	l.Checkpoint(signer)
	l.Close()
	os.Remove(filepath.Join(dir, "hashes.bin"))
	rep, err := Verify(dir, verifier)
	if err != nil || rep.OK() || rep.Archive || rep.Problems[0].Kind != "missing" {
		t.Fatalf("%v %+v", err, rep)
	}
}

// lyingStore is an archive that holds more than its listing says (a
// compromised bucket, or a gateway that is not S3): it honours Get's limit
// as objstore.Bucket does, and records the limits it was asked for.
type lyingStore struct {
	objects map[string][]byte
	listed  map[string]int64
	asked   map[string]int64
}

func (s *lyingStore) Put(context.Context, string, []byte, bool) error { return nil }

func (s *lyingStore) Get(_ context.Context, key string, max int64) ([]byte, error) {
	s.asked[key] = max
	b, ok := s.objects[key]
	if !ok {
		return nil, objstore.ErrNotFound
	}
	if int64(len(b)) > max {
		return nil, objstore.ErrTooLarge
	}
	return b, nil
}

func (s *lyingStore) List(_ context.Context, prefix string) ([]objstore.Object, error) {
	var out []objstore.Object
	for k := range s.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, objstore.Object{Key: k, Size: s.listed[k]})
		}
	}
	return out, nil
}

// Fetch reads no more of an object than the listing announced, and
// refuses a listing that announces more than an archived file can be.
func TestFetchBoundsWhatItReads(t *testing.T) {
	cp := []byte("rampart.test/audit\n1\nAAAA\n\n— rampart.test/audit AAAA\n")
	s := &lyingStore{objects: map[string][]byte{"checkpoints/1": bytes.Repeat(cp, 100)}, listed: map[string]int64{"checkpoints/1": int64(len(cp))}, asked: map[string]int64{}}
	_, err := Fetch(context.Background(), s, t.TempDir())
	if !errors.Is(err, objstore.ErrTooLarge) || s.asked["checkpoints/1"] != int64(len(cp)) {
		t.Fatalf("Fetch of an object larger than listed: %v (asked for at most %d bytes)", err, s.asked["checkpoints/1"])
	}
	s.listed["checkpoints/1"] = 1 << 40
	if _, err := Fetch(context.Background(), s, t.TempDir()); err == nil || !strings.Contains(err.Error(), "more than the 65536 an archived checkpoint can be") {
		t.Fatalf("Fetch of a listing announcing 1 TiB: %v", err)
	}
	if _, ok := s.asked["checkpoint"]; ok && s.asked["checkpoint"] > maxArchivedCheckpoint {
		t.Fatalf("the latest checkpoint was read with a limit of %d", s.asked["checkpoint"])
	}
}

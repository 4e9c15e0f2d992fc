package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

var updateVectors = flag.Bool("update", false, "rewrite testdata/vectors.txt")

// vectorEntries are 300 fixed entries: one full tile of 256 and a partial
// one, so both shapes of hash tile and entry bundle are pinned.
func vectorEntries() []*Entry {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	es := make([]*Entry, 300)
	for i := range es {
		es[i] = &Entry{V: SchemaVersion, Time: t0.Add(time.Duration(i) * time.Second),
			Actor:  Actor{SpiffeID: "spiffe://example.org/orders", User: fmt.Sprintf("user-%d", i%7)},
			Action: "authz.decision", Target: "spiffe://example.org/payments", Outcome: []string{OutcomeSuccess, OutcomeDenied}[i%2],
			Reason: "vector", Source: "server", Details: map[string]string{"method": "GET", "path": fmt.Sprintf("/payments/%d", i)}}
	}
	return es
}

// vectorSigner is a fixed Ed25519 note key (the seed is 32 bytes of 0x42).
func vectorSigner(t *testing.T) note.Signer {
	t.Helper()
	skey, _, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{0x42}, 32)), "example.org/audit")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFormatVectors pins every format the log writes: the canonical entry,
// entries.log, the stored hashes, the C2SP checkpoint and its Ed25519
// signature, hash tiles and entry bundles, full and partial. A change to
// any byte fails here (regenerate with -update only when the format is
// meant to change, and say so in the commit). The tree's root is also
// checked against an independent computation with golang.org/x/mod's tlog.
func TestFormatVectors(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, "example.org/audit")
	if err != nil {
		t.Fatal(err)
	}
	es := vectorEntries()
	if _, err := l.AppendEntries(context.Background(), es...); err != nil {
		t.Fatal(err)
	}
	cp, err := l.Checkpoint(vectorSigner(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Independent root: RFC 6962 leaf hashes of the canonical encodings.
	var hashes [][32]byte
	for i, e := range es {
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, sha256.Sum256(append([]byte{0x00}, b...)))
		if i == 0 && !strings.HasPrefix(string(b), `{"v":1,"time":"2026-01-02T03:04:05.000000006Z","actor":{"spiffe_id":"spiffe://example.org/orders","user":"user-0"},"action":"authz.decision"`) {
			t.Fatalf("entry 0 encodes as %s", b)
		}
	}
	root := mth(hashes)
	if !strings.Contains(string(cp), checkpointText("example.org/audit", 300, tlog.Hash(root))) {
		t.Fatalf("checkpoint %q does not carry the independently computed root %x", cp, root)
	}

	got := vectorDigests(t, dir, cp)
	path := filepath.Join("testdata", "vectors.txt")
	if *updateVectors {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("the log's formats changed (run with -update only if that is intended):\n--- got\n%s--- want\n%s", got, want)
	}
}

// vectorDigests lists the signed checkpoint in full and the SHA-256 of
// every file the log wrote except the lock and the derived time index.
func vectorDigests(t *testing.T, dir string, cp []byte) string {
	t.Helper()
	var files []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "lock" || strings.HasPrefix(rel, "index"+string(filepath.Separator)) {
			return nil
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	var b strings.Builder
	fmt.Fprintf(&b, "# The audit log's formats, for 300 fixed entries (TestFormatVectors).\n# checkpoint (C2SP signed note, Ed25519 key seeded with 32 bytes of 0x42):\n")
	for _, line := range strings.Split(strings.TrimRight(string(cp), "\n"), "\n") {
		fmt.Fprintf(&b, "| %s\n", line)
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&b, "%s %d %s\n", hex.EncodeToString(sum[:]), len(data), filepath.ToSlash(f))
	}
	return b.String()
}

// mth is RFC 6962's Merkle Tree Hash (section 2.1), written out from the
// RFC rather than taken from a library: MTH(D[n]) = SHA-256(0x01 ||
// MTH(D[0:k]) || MTH(D[k:n])), k the largest power of two below n.
func mth(leaves [][32]byte) [32]byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := mth(leaves[:k]), mth(leaves[k:])
	return sha256.Sum256(append(append([]byte{0x01}, l[:]...), r[:]...))
}

package witness

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rampartsec/rampart/internal/audit"
)

// logSource serves a real audit log's checkpoint and proofs, as the
// server does.
type logSource struct {
	l      *audit.Log
	dir    string
	signer note.Signer
}

func (s *logSource) Checkpoint(context.Context) ([]byte, error) { return s.l.Checkpoint(s.signer) }
func (s *logSource) Consistency(_ context.Context, older, newer int64) (tlog.TreeProof, error) {
	return s.l.ProveConsistency(older, newer)
}

func newLog(t *testing.T, signer note.Signer, prefix string, n int) *logSource {
	t.Helper()
	dir := t.TempDir()
	l, err := audit.Open(dir, "example.org/audit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s := &logSource{l: l, dir: dir, signer: signer}
	s.add(t, prefix, n)
	return s
}

func (s *logSource) add(t *testing.T, prefix string, n int) {
	t.Helper()
	for i := range n {
		if _, err := s.l.Append(context.Background(), fmt.Appendf(nil, `{"entry":"%s-%d"}`, prefix, i)); err != nil {
			t.Fatal(err)
		}
	}
}

func keys(t *testing.T) (note.Signer, note.Verifier) {
	sk, vk, err := note.GenerateKey(rand.Reader, "example.org/audit")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(sk)
	v, _ := note.NewVerifier(vk)
	return s, v
}

func TestWitness(t *testing.T) {
	signer, verifier := keys(t)
	src := newLog(t, signer, "real", 10)
	w := &Witness{Dir: t.TempDir(), Verifier: verifier, Source: src}
	ctx := context.Background()
	if out, err := w.Observe(ctx); err != nil || out.New != 10 {
		t.Fatalf("first observation: %+v %v", out, err)
	}
	if out, err := w.Observe(ctx); err != nil || out.Grew {
		t.Fatalf("unchanged log: %+v %v", out, err)
	}
	src.add(t, "real-more", 7)
	if out, err := w.Observe(ctx); err != nil || !out.Grew || out.Old != 10 || out.New != 17 {
		t.Fatalf("grown log: %+v %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(w.Dir, "checkpoints", "17")); err != nil {
		t.Fatalf("checkpoint 17 not kept: %v", err)
	}

	// The administrator rewrites the whole log with the server's own key:
	// same origin, valid signatures, more entries than before.
	for _, tc := range []struct {
		name string
		src  *logSource
		want string
	}{
		{"rewritten and grown", newLog(t, signer, "forged", 25), "does not extend"},
		{"rewritten, same size", newLog(t, signer, "forged", 17), "same size"},
		{"rolled back", newLog(t, signer, "real", 12), "shrank"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.Source = tc.src
			_, err := w.Observe(ctx)
			if !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInconsistent naming %q", err, tc.want)
			}
		})
	}
	// The reference stays the last good checkpoint, and the forgeries are
	// kept as evidence.
	raw, _ := os.ReadFile(filepath.Join(w.Dir, "checkpoint"))
	if c, err := audit.ParseCheckpoint(raw, verifier); err != nil || c.Size != 17 {
		t.Fatalf("reference checkpoint after the attacks: %+v %v", c, err)
	}
	ev, _ := os.ReadDir(filepath.Join(w.Dir, "evidence"))
	if len(ev) != 3 {
		t.Fatalf("%d evidence files, want 3", len(ev))
	}
	// Later, verify of the forged log with the witness's checkpoint finds
	// it, though every checkpoint the forger published verifies.
	forged := newLog(t, signer, "forged", 25)
	if _, err := forged.l.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	if rep, err := audit.Verify(forged.dir, verifier); err != nil || !rep.OK() {
		t.Fatalf("the forged log on its own: %+v %v", rep, err)
	}
	rep, err := audit.Verify(forged.dir, verifier, raw)
	if err != nil || rep.OK() || rep.Problems[0].Kind != "checkpoint" || rep.Problems[0].Index != 17 {
		t.Fatalf("verify with the witnessed checkpoint: %+v %v", rep, err)
	}

	// A checkpoint signed by another key is refused outright.
	other, _ := keys(t)
	w.Source = newLog(t, other, "real", 20)
	if _, err := w.Observe(ctx); err == nil || errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("checkpoint by another key: %v", err)
	}
}

// A witness whose reference checkpoint file is lost (or left unreadable by
// a crash) used to start over, taking whatever log it was shown next as
// the truth: a rewritten log then passed. It continues from the newest
// checkpoint it kept instead.
func TestWitnessDoesNotStartOverWhenItsReferenceIsLost(t *testing.T) {
	signer, verifier := keys(t)
	src := newLog(t, signer, "real", 10)
	w := &Witness{Dir: t.TempDir(), Verifier: verifier, Source: src}
	ctx := context.Background()
	w.Observe(ctx)
	src.add(t, "real-more", 7)
	if out, err := w.Observe(ctx); err != nil || out.New != 17 {
		t.Fatalf("%+v %v", out, err)
	}
	ref := filepath.Join(w.Dir, "checkpoint")
	for name, lose := range map[string]func(){
		"deleted": func() { os.Remove(ref) },
		"zeroed":  func() { os.WriteFile(ref, make([]byte, 180), 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			lose()
			w.Source = newLog(t, signer, "forged", 25)
			out, err := w.Observe(ctx)
			if !errors.Is(err, ErrInconsistent) || out.Old != 17 || !out.Restored {
				t.Fatalf("a rewritten log after the reference was %s: %+v %v", name, out, err)
			}
		})
	}
	// Nothing readable kept at all: refuse, do not start over.
	w.Source = src
	os.Remove(ref)
	ents, _ := os.ReadDir(filepath.Join(w.Dir, "checkpoints"))
	for _, e := range ents {
		os.WriteFile(filepath.Join(w.Dir, "checkpoints", e.Name()), []byte("garbage"), 0o644)
	}
	if _, err := w.Observe(ctx); err == nil || !strings.Contains(err.Error(), "not starting over") {
		t.Fatalf("with every kept checkpoint unreadable: %v", err)
	}
}

// A witness directory another local user controls (made first in /tmp, or
// under one of theirs): they could empty it, and the witness would start
// over from whatever log it is shown next. Observe refuses it.
func TestWitnessRefusesADirectoryOfAnotherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to act as a second local user (uid 65534)")
	}
	tmp, err := os.MkdirTemp("", "rampart-witness-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, os.ModeSticky|0o777) // like /tmp
	theirs := filepath.Join(tmp, "witness")
	mk := exec.Command("/bin/mkdir", "-m", "0777", theirs)
	mk.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkdir as uid 65534: %v %s", err, out)
	}
	signer, verifier := keys(t)
	src := newLog(t, signer, "real", 10)
	for dir, want := range map[string]string{
		theirs:                           "the witness directory " + theirs + " is owned by uid 65534",
		filepath.Join(theirs, "witness"): theirs + ", a parent of",
	} {
		w := &Witness{Dir: dir, Verifier: verifier, Source: src}
		if _, err := w.Observe(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Observe with Dir %s: %v, want an error saying %q", dir, err, want)
		}
	}
	if ents, _ := os.ReadDir(theirs); len(ents) != 0 {
		t.Fatalf("the witness kept %v in another user's directory", ents)
	}
}

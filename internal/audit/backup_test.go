package audit

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyView copies what a backup takes from a view into dir, as a restore
// writes it back.
func copyView(t *testing.T, v *BackupView, dir string) {
	t.Helper()
	cp := func(src, rel string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range v.Segments {
		cp(s, filepath.Join("segments", filepath.Base(s)))
	}
	for _, c := range v.Checkpoints {
		cp(c, filepath.Join("checkpoints", filepath.Base(c)))
	}
	for _, q := range v.Quarantine {
		cp(filepath.Join(v.Dir, q), q)
	}
	if err := os.WriteFile(filepath.Join(dir, "checkpoint"), v.Checkpoint, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(filepath.Join(v.Dir, "entries.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(dir, "entries.log"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Truncate(v.TailStart); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Seek(v.TailStart, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, io.NewSectionReader(src, v.TailStart, v.TailEnd-v.TailStart)); err != nil {
		t.Fatal(err)
	}
}

func TestBackupAndRebuild(t *testing.T) {
	l, _, signer, verifier := sealedLogKeys(t, t.TempDir(), 1024+300)
	fill(t, l, 1024+300, 100)
	restored := t.TempDir()
	var view BackupView
	err := l.Backup(signer, func(v *BackupView) error {
		view = *v
		// The log goes on while the backup copies: entries appended now
		// are past the view and must not leak into it.
		fill(t, l, 1424, 50)
		copyView(t, v, restored)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if view.Size != 1424 || view.Sealed != 1024 || len(view.Segments) != 2 || view.TailStart == 0 || view.TailEnd <= view.TailStart {
		t.Fatalf("view = %+v", view)
	}
	root, err := l.TreeHash(1424)
	if err != nil || root != view.Root {
		t.Fatalf("view root %x, log root %x (%v)", view.Root, root, err)
	}

	n, got, err := Rebuild(restored)
	if err != nil {
		t.Fatal(err)
	}
	if n != view.Size || got != view.Root {
		t.Fatalf("rebuilt %d entries, root %x; want %d, %x", n, got, view.Size, view.Root)
	}
	rep, err := Verify(restored, verifier)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || rep.Entries != 1424 || rep.Covered != 1424 {
		t.Fatalf("verify of the restored log: %+v", rep)
	}
	// The restored directory is a log that continues.
	r, err := OpenWith(restored, origin, Options{SegmentEntries: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fill(t, r, 1424, 200)
	if _, err := r.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	if k, err := r.Seal(); err != nil || k != 1 {
		t.Fatalf("seal after restore: %d, %v", k, err)
	}
	if rep, err := Verify(restored, verifier); err != nil || !rep.Clean() {
		t.Fatalf("verify after continuing: %+v, %v", rep, err)
	}
}

func TestRebuildRefusesADamagedTail(t *testing.T) {
	l, _, signer, _ := sealedLogKeys(t, t.TempDir(), 600)
	restored := t.TempDir()
	var view BackupView
	if err := l.Backup(signer, func(v *BackupView) error { view = *v; copyView(t, v, restored); return nil }); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(restored, "entries.log"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// An edited entry: the tree differs (the caller compares roots).
	b := make([]byte, 1)
	f.ReadAt(b, view.TailEnd-5)
	b[0] ^= 1
	f.WriteAt(b, view.TailEnd-5)
	f.Close()
	_, root, err := Rebuild(restored)
	if err != nil {
		t.Fatal(err)
	}
	if root == view.Root {
		t.Fatal("an edited entry rebuilt the same root")
	}
	// A cut tail: refused, naming the offset.
	restored2 := t.TempDir()
	copyView(t, &view, restored2)
	os.Truncate(filepath.Join(restored2, "entries.log"), view.TailEnd-3)
	if _, _, err := Rebuild(restored2); err == nil {
		t.Fatal("a cut tail rebuilt")
	}
}

func TestCheckCheckpointsAfterRebuild(t *testing.T) {
	l, _, signer, verifier := sealedLogKeys(t, t.TempDir(), 600)
	restored := t.TempDir()
	if err := l.Backup(signer, func(v *BackupView) error { copyView(t, v, restored); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Rebuild(restored); err != nil {
		t.Fatal(err)
	}
	n, err := CheckCheckpoints(restored, verifier)
	if err != nil || n < 2 {
		t.Fatalf("checked %d checkpoints: %v", n, err)
	}
	// A checkpoint of another tree, signed by the log's key: refused.
	other := t.TempDir()
	lo := openLog(t, other)
	e := entry(7)
	e.Action = "forged.entry"
	for range 10 {
		if _, err := lo.AppendEntries(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	forged, err := lo.Checkpoint(signer)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(restored, "checkpoints", "10"), forged, 0o644)
	if _, err := CheckCheckpoints(restored, verifier); err == nil || !strings.Contains(err.Error(), "do not produce the root it signed") {
		t.Fatalf("a checkpoint of another tree: %v", err)
	}
	// One signed by another key: refused.
	s2, _ := keys(t)
	forged, _ = lo.Checkpoint(s2)
	os.WriteFile(filepath.Join(restored, "checkpoints", "10"), forged, 0o644)
	if _, err := CheckCheckpoints(restored, verifier); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("a checkpoint signed by another key: %v", err)
	}
}

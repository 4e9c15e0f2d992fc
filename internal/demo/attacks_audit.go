package demo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/audit"
)

// attackTamperAudit edits the newest audit entry on disk, as an intruder
// covering their tracks would, shows that verification finds it at its
// index, and puts the byte back.
func attackTamperAudit(ctx context.Context, sys *System) (Outcome, error) {
	dir := filepath.Join(sys.Dir, "server", "audit")
	vkey, err := os.ReadFile(filepath.Join(sys.Dir, "server", "audit.pub"))
	if err != nil {
		return Outcome{}, err
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		return Outcome{}, err
	}
	// The server keeps appending while we work; pick the newest entry the
	// tree already covers, found through the offsets file.
	pre, err := audit.Verify(dir, verifier)
	if err != nil {
		return Outcome{}, err
	}
	index := pre.Leaves - 1
	if index < 0 {
		return Outcome{}, errors.New("the audit log is empty")
	}
	ob := make([]byte, 8)
	of, err := os.Open(filepath.Join(dir, "offsets.bin"))
	if err != nil {
		return Outcome{}, err
	}
	_, err = of.ReadAt(ob, 8*index)
	of.Close()
	if err != nil {
		return Outcome{}, err
	}
	path := filepath.Join(dir, "entries.log")
	b, err := os.ReadFile(path)
	if err != nil {
		return Outcome{}, err
	}
	start := int64(binary.BigEndian.Uint64(ob))
	_, k := binary.Uvarint(b[start:])
	last := start + int64(k)
	pos := last + 10 // inside the JSON, past `{"v":1,"ti`
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return Outcome{}, err
	}
	defer f.Close()
	orig := b[pos]
	if _, err := f.WriteAt([]byte{orig ^ 0x01}, pos); err != nil {
		return Outcome{}, err
	}
	rep, verr := audit.Verify(dir, verifier)
	f.WriteAt([]byte{orig}, pos) // restore, whatever happened
	if verr != nil {
		return Outcome{}, verr
	}
	for _, p := range rep.Problems {
		if p.Kind == "edited" && p.Index == index {
			after, err := audit.Verify(dir, verifier)
			if err != nil {
				return Outcome{}, err
			}
			for _, q := range after.Problems {
				if q.Kind != "extra" { // "extra": entries appended while we verified
					return Outcome{}, fmt.Errorf("the log does not verify after restoring the byte: %v", after.Problems)
				}
			}
			return Outcome{Stopped: true, Prevent: "the audit log is append-only on disk and out of the services' reach",
				Detect: fmt.Sprintf("rampart audit verify: entry %d of %d no longer hashes to its Merkle leaf (the byte was then restored; the log verifies again)", index, rep.Entries)}, nil
		}
	}
	return Outcome{}, fmt.Errorf("the edit at entry %d was not detected: %v", index, rep.Problems)
}

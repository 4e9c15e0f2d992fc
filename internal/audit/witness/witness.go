// Package witness keeps an independent copy of the audit log's signed
// checkpoints on another machine and checks that each new one extends the
// last it saw. An administrator who rewrites the log, even from the first
// entry and re-signing every checkpoint with the server's key, cannot make
// the new tree consistent with the witness's old checkpoint: the witness
// reports it at once, and `rampart audit verify --witness` reports it later
// from the witness's files.
//
// A witness that loses its reference (Dir/checkpoint deleted, or left
// unreadable by a crash) continues from the newest checkpoint it kept under
// Dir/checkpoints/; it starts over only with nothing kept at all, and
// refuses to when what it kept cannot be read.
//
// The witness needs only what transparency logs publish: the latest signed
// checkpoint and consistency proofs between two sizes (RFC 6962 §2.1.2),
// both served by the server without authentication since they carry only
// sizes and hashes.
package witness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/safedir"
)

// Source is where the witness reads the log's public state.
type Source interface {
	// Checkpoint returns the latest signed checkpoint.
	Checkpoint(ctx context.Context) ([]byte, error)
	// Consistency proves that the tree of size older is a prefix of the
	// tree of size newer.
	Consistency(ctx context.Context, older, newer int64) (tlog.TreeProof, error)
}

// Witness keeps checkpoints in Dir: Dir/checkpoint (the latest verified)
// and Dir/checkpoints/SIZE (each one seen). Dir must be a directory only
// this process's user (and root) can change (package safedir): whoever
// else controls it could empty it, and the witness would start over from
// a rewritten log.
type Witness struct {
	Dir      string
	Verifier note.Verifier // the log's checkpoint key (DATA/audit.pub)
	Source   Source
}

// Outcome of one observation.
type Outcome struct {
	Old, New int64 // tree sizes: last kept, and now
	Grew     bool  // New > Old and proven consistent
	// Restored is set when Dir/checkpoint was missing or unreadable and
	// the newest of Dir/checkpoints/ was the reference instead.
	Restored bool
}

// ErrInconsistent means the log is not an extension of what the witness
// saw before: entries were rewritten, removed or the log was rolled back.
var ErrInconsistent = errors.New("audit log inconsistent with the witnessed checkpoint")

// Observe fetches the latest checkpoint, checks its signature and that it
// extends the last one kept, and keeps it. On ErrInconsistent the new
// checkpoint is kept as evidence in Dir/evidence/ and the last good one
// is left as the reference.
func (w *Witness) Observe(ctx context.Context) (Outcome, error) {
	if _, err := safedir.Make(w.Dir, "the witness directory", os.Geteuid(), 0o700); err != nil {
		return Outcome{}, fmt.Errorf("witness: %w", err)
	}
	raw, err := w.Source.Checkpoint(ctx)
	if err != nil {
		return Outcome{}, fmt.Errorf("witness: fetch checkpoint: %w", err)
	}
	cur, err := audit.ParseCheckpoint(raw, w.Verifier)
	if err != nil {
		return Outcome{}, fmt.Errorf("witness: %w", err)
	}
	prev, restored, err := w.reference()
	if err != nil {
		return Outcome{}, err
	}
	if prev == nil {
		return Outcome{New: cur.Size, Grew: cur.Size > 0}, w.keep(cur)
	}
	out := Outcome{Old: prev.Size, New: cur.Size, Restored: restored}
	if cur.Origin != prev.Origin {
		return out, w.evidence(cur, fmt.Errorf("%w: origin %q, was %q", ErrInconsistent, cur.Origin, prev.Origin))
	}
	switch {
	case cur.Size < prev.Size:
		return out, w.evidence(cur, fmt.Errorf("%w: the log shrank from %d to %d entries (rolled back or truncated)", ErrInconsistent, prev.Size, cur.Size))
	case cur.Size == prev.Size:
		if cur.Hash != prev.Hash {
			return out, w.evidence(cur, fmt.Errorf("%w: a different tree at the same size %d (entries rewritten)", ErrInconsistent, cur.Size))
		}
		if restored {
			return out, w.keep(cur) // the reference file again
		}
		return out, nil
	}
	if prev.Size > 0 {
		proof, err := w.Source.Consistency(ctx, prev.Size, cur.Size)
		if err != nil {
			return out, fmt.Errorf("witness: consistency proof %d -> %d: %w", prev.Size, cur.Size, err)
		}
		if err := tlog.CheckTree(proof, cur.Size, cur.Hash, prev.Size, prev.Hash); err != nil {
			return out, w.evidence(cur, fmt.Errorf("%w: the tree of %d entries does not extend the witnessed tree of %d (entries before %d rewritten): %v",
				ErrInconsistent, cur.Size, prev.Size, prev.Size, err))
		}
	}
	out.Grew = true
	return out, w.keep(cur)
}

// reference is the checkpoint new ones must extend: Dir/checkpoint, or
// when that is missing or unreadable (a crash, a slip of the hand), the
// newest valid one under Dir/checkpoints/ (restored true). A witness
// that lost its reference must not start over and accept whatever log it
// is shown next; only one that never kept a checkpoint does (nil).
func (w *Witness) reference() (*audit.Checkpoint, bool, error) {
	raw, err := os.ReadFile(filepath.Join(w.Dir, "checkpoint"))
	if err == nil {
		if c, perr := audit.ParseCheckpoint(raw, w.Verifier); perr == nil {
			return c, false, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("witness: %w", err)
	}
	ents, derr := os.ReadDir(filepath.Join(w.Dir, "checkpoints"))
	if derr != nil && !errors.Is(derr, os.ErrNotExist) {
		return nil, false, fmt.Errorf("witness: %w", derr)
	}
	var best *audit.Checkpoint
	for _, e := range ents {
		b, rerr := os.ReadFile(filepath.Join(w.Dir, "checkpoints", e.Name()))
		if rerr != nil {
			continue
		}
		if c, perr := audit.ParseCheckpoint(b, w.Verifier); perr == nil && (best == nil || c.Size > best.Size) {
			best = c
		}
	}
	switch {
	case best != nil:
		return best, true, nil
	case err == nil || len(ents) > 0:
		// Something was kept, and none of it can be read: refuse rather
		// than start over.
		return nil, false, fmt.Errorf("witness: no kept checkpoint in %s can be read; not starting over (move the directory aside to start afresh)", w.Dir)
	}
	return nil, false, nil
}

func (w *Witness) keep(c *audit.Checkpoint) error {
	if err := os.MkdirAll(filepath.Join(w.Dir, "checkpoints"), 0o700); err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(w.Dir, "checkpoints", strconv.FormatInt(c.Size, 10)), c.Raw, 0o644); err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(w.Dir, "checkpoint"), c.Raw, 0o644); err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	return nil
}

// evidence keeps the offending checkpoint and returns cause.
func (w *Witness) evidence(c *audit.Checkpoint, cause error) error {
	if err := os.MkdirAll(filepath.Join(w.Dir, "evidence"), 0o700); err == nil {
		atomicfile.Write(filepath.Join(w.Dir, "evidence", strconv.FormatInt(c.Size, 10)+"-"+shortHash(c.Hash)), c.Raw, 0o644)
	}
	return cause
}

func shortHash(h tlog.Hash) string { return fmt.Sprintf("%x", h[:6]) }

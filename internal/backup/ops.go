package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Entry is one backup as List shows it.
type Entry struct {
	Seq       int64            `json:"seq"`
	Created   time.Time        `json:"created,omitzero"`
	Hash      string           `json:"manifest_sha256,omitempty"`
	Prev      string           `json:"prev,omitempty"`
	Files     int              `json:"files"`
	Bytes     int64            `json:"bytes"`
	AuditSize int64            `json:"audit_size"`
	Tables    map[string]int64 `json:"tables,omitempty"`
	Held      []string         `json:"held_by"` // destinations holding the manifest
	// Problem says why the manifest cannot be trusted (bad signature,
	// broken chain); empty when it verified.
	Problem string `json:"problem,omitempty"`
}

// List lists the backups the destinations hold, oldest first, each
// manifest checked with the key, and the chain between them.
func List(ctx context.Context, src Source) ([]Entry, error) {
	if src.Verifier == nil {
		return nil, errors.New("backup: the backup public key is required")
	}
	bySeq := map[int64]*Entry{}
	for _, d := range src.Destinations {
		seqs, err := listSeqs(ctx, d)
		if err != nil {
			return nil, err
		}
		for _, seq := range seqs {
			e := bySeq[seq]
			if e == nil {
				e = &Entry{Seq: seq}
				bySeq[seq] = e
			}
			e.Held = append(e.Held, d.String())
			if e.Hash != "" {
				continue
			}
			signed, err := d.Get(ctx, ManifestKey(seq), MaxManifest)
			if err != nil {
				e.Problem = err.Error()
				continue
			}
			m, err := ParseManifest(signed, src.Verifier)
			if err != nil {
				e.Problem = err.Error()
				continue
			}
			e.Problem = ""
			e.Created, e.Hash, e.Prev, e.Files, e.AuditSize, e.Tables = m.Created, Hash(signed), m.Prev, len(m.Files), m.Audit.Size, m.Store.Tables
			for _, f := range m.Files {
				e.Bytes += f.Size
			}
		}
	}
	var out []Entry
	for _, e := range bySeq {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return int(a.Seq - b.Seq) })
	for i := 1; i < len(out); i++ {
		a, b := out[i-1], &out[i]
		if b.Problem == "" && a.Problem == "" && a.Seq == b.Seq-1 && b.Prev != a.Hash {
			b.Problem = fmt.Sprintf("its prev names manifest %.12s..., but backup %d's is %.12s...: the chain is broken", b.Prev, a.Seq, a.Hash)
		}
	}
	return out, nil
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Seq     int64  `json:"seq"`
	Hash    string `json:"manifest_sha256"`
	From    string `json:"from"`
	Files   int    `json:"files"`
	Objects int    `json:"objects"`
	// Decrypted: every file was decrypted and checked against its size
	// and SHA-256 (false: objects only, no identity given).
	Decrypted bool  `json:"decrypted"`
	Bytes     int64 `json:"bytes"`
}

// Verify checks backup seq (0: the newest) in every destination that
// holds it: the manifest's signature, every object's presence, size and
// SHA-256, and, with an identity, every file decrypted against its size
// and SHA-256. It reads everything and writes nothing.
func Verify(ctx context.Context, src Source, seq int64, progress io.Writer) ([]VerifyReport, error) {
	c, err := src.Choose(ctx, seq)
	if err != nil {
		return nil, err
	}
	var out []VerifyReport
	for _, d := range src.Destinations {
		signed, err := d.Get(ctx, ManifestKey(c.Manifest.Seq), MaxManifest)
		if err != nil {
			return out, fmt.Errorf("backup: %s does not hold backup %d: %w", d, c.Manifest.Seq, err)
		}
		m, err := ParseManifest(signed, src.Verifier)
		if err != nil {
			return out, fmt.Errorf("%w (%s in %s)", err, ManifestKey(c.Manifest.Seq), d)
		}
		if Hash(signed) != Hash(c.Signed) {
			return out, fmt.Errorf("backup: %s holds another manifest for backup %d than %s", d, m.Seq, c.From)
		}
		rep := VerifyReport{Seq: m.Seq, Hash: Hash(signed), From: d.String(), Files: len(m.Files)}
		if err := checkObjects(ctx, d, m); err != nil {
			return out, err
		}
		ids, err := src.identities(ctx, d)
		if err != nil {
			return out, err
		}
		prog := newProgress(progress, "verify "+d.String(), time.Now)
		for _, f := range m.Files {
			rep.Objects += len(f.Parts)
			if len(ids) == 0 {
				for _, p := range f.Parts {
					if _, err := fetchPart(ctx, d, p, f.Path); err != nil {
						return out, err
					}
				}
				continue
			}
			fr, err := openFile(ctx, d, f, ids)
			if err != nil {
				return out, err
			}
			n, err := io.Copy(prog, fr)
			fr.Close()
			if err != nil {
				return out, err
			}
			rep.Bytes += n
		}
		prog.finish()
		rep.Decrypted = len(ids) > 0
		out = append(out, rep)
	}
	return out, nil
}

// Retention keeps the newest backup of each of the last Daily days and of
// each of the last Weekly ISO weeks that have backups (and always the
// newest backup).
type Retention struct {
	Daily  int `json:"daily"`
	Weekly int `json:"weekly"`
}

// keep returns the seqs to keep of the backups given (seq -> created).
func (r Retention) keep(backups map[int64]time.Time) map[int64]bool {
	seqs := make([]int64, 0, len(backups))
	for s := range backups {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	slices.Reverse(seqs) // newest first
	keep := map[int64]bool{}
	if len(seqs) > 0 {
		keep[seqs[0]] = true
	}
	days, weeks := map[string]bool{}, map[string]bool{}
	for _, s := range seqs {
		t := backups[s].UTC()
		day := t.Format("2006-01-02")
		y, w := t.ISOWeek()
		week := fmt.Sprintf("%d-%02d", y, w)
		if !days[day] && len(days) < r.Daily {
			days[day] = true
			keep[s] = true
		}
		if !weeks[week] && len(weeks) < r.Weekly {
			weeks[week] = true
			keep[s] = true
		}
	}
	return keep
}

// PruneResult says what Prune removed.
type PruneResult struct {
	Deleted []int64 `json:"deleted"`
	Objects int     `json:"objects"`
}

// Prune applies the retention to every destination: it deletes the
// manifests of the backups not kept, then the objects no kept backup
// lists. An object is deleted only when the previous prune already found
// it unlisted (the state remembers them), which leaves a backup another
// process is writing one schedule interval to list its objects.
func (b *Backuper) Prune(ctx context.Context, r Retention) (*PruneResult, error) {
	st, err := loadState(b.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	res := &PruneResult{}
	pending := map[string][]string{}
	for _, d := range b.cfg.Destinations {
		seqs, err := listSeqs(ctx, d)
		if err != nil {
			return nil, err
		}
		created := map[int64]time.Time{}
		manifests := map[int64]*Manifest{}
		for _, seq := range seqs {
			signed, err := d.Get(ctx, ManifestKey(seq), MaxManifest)
			if err != nil {
				return nil, fmt.Errorf("backup: prune %s: %w", d, err)
			}
			m, err := ParseManifest(signed, b.verify)
			if err != nil {
				// Not ours (or damaged): not deleted, and its objects
				// are not counted as used either.
				b.cfg.Log.Warn("backup: prune: a manifest that does not verify is left alone", "destination", d.String(), "seq", seq, "err", err)
				continue
			}
			created[seq], manifests[seq] = m.Created, m
		}
		keep := r.keep(created)
		used := map[string]bool{}
		for seq, m := range manifests {
			if !keep[seq] {
				if err := d.Delete(ctx, ManifestKey(seq)); err != nil {
					return nil, fmt.Errorf("backup: prune %s: %w", d, err)
				}
				if !slices.Contains(res.Deleted, seq) {
					res.Deleted = append(res.Deleted, seq)
				}
				continue
			}
			for _, f := range m.Files {
				for _, p := range f.Parts {
					used[p.Key()] = true
				}
			}
		}
		objs, err := d.List(ctx, "objects/")
		if err != nil {
			return nil, fmt.Errorf("backup: prune %s: %w", d, err)
		}
		before := map[string]bool{}
		for _, k := range st.Unreferenced[d.String()] {
			before[k] = true
		}
		for _, o := range objs {
			if used[o.Key] {
				continue
			}
			if before[o.Key] {
				if err := d.Delete(ctx, o.Key); err != nil {
					return nil, fmt.Errorf("backup: prune %s: %w", d, err)
				}
				res.Objects++
				continue
			}
			pending[d.String()] = append(pending[d.String()], o.Key)
		}
	}
	slices.Sort(res.Deleted)
	st, err = loadState(b.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	st.Unreferenced = pending
	return res, saveState(b.cfg.DataDir, st)
}

package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/objstore"
)

// ObjectStore is where an archive copy of the log is kept (an S3 bucket,
// see package objstore). Put with ifAbsent must fail with an error
// wrapping objstore.ErrExists when the key is taken.
// Get must refuse (objstore.ErrTooLarge) an object larger than max bytes
// without reading more: the store is trusted with copies, not with how
// much memory a reader spends.
type ObjectStore interface {
	Put(ctx context.Context, key string, data []byte, ifAbsent bool) error
	Get(ctx context.Context, key string, max int64) ([]byte, error)
	List(ctx context.Context, prefix string) ([]objstore.Object, error)
}

// Limits on what is read back from an archive. A segment of 65,536
// realistic entries is a few MB; 1 GiB allows segments of millions of
// large entries. A checkpoint is a signed note of a few hundred bytes,
// with room for cosignatures.
const (
	maxArchivedSegment    = 1 << 30
	maxArchivedCheckpoint = 1 << 16
)

// Archive layout in the object store (under its prefix):
//
//	segments/FIRST.zst   sealed segments, byte for byte as on disk
//	checkpoints/SIZE     every signed checkpoint
//	checkpoint           the latest
//
// Objects are written once (conditional writes): an archive that already
// holds a different object under a key is reported, never overwritten.

// Archiver copies sealed segments and checkpoints of the log in dir to an
// object store. It is not safe for concurrent use.
type Archiver struct {
	dir    string
	store  ObjectStore
	have   map[string]int64 // keys known to be in the store, and their sizes
	latest []byte           // last "checkpoint" written
	// After a full pass that succeeded, a Sync looks only for what
	// follows: the segment after segEnd and the latest checkpoint (one is
	// written per checkpoint interval, and Sync runs after each). Years
	// of segments and checkpoints are not listed every 10 s.
	synced bool
	segEnd int64
}

// NewArchiver returns an Archiver for the log in dir.
func NewArchiver(dir string, store ObjectStore) *Archiver {
	return &Archiver{dir: dir, store: store}
}

// ArchiveResult says what one Sync copied.
type ArchiveResult struct {
	Segments    []string // keys of the segments copied
	Checkpoints int
}

// Sync copies what the store does not hold yet: everything the first time
// and after a failure, what is new since the last Sync otherwise.
func (a *Archiver) Sync(ctx context.Context) (ArchiveResult, error) {
	var res ArchiveResult
	var err error
	if a.synced {
		err = a.syncNew(ctx, &res)
	} else {
		err = a.syncAll(ctx, &res)
	}
	a.synced = err == nil
	return res, err
}

// syncNew copies the segments sealed and the checkpoint published since
// the last Sync.
func (a *Archiver) syncNew(ctx context.Context, res *ArchiveResult) error {
	for {
		path := filepath.Join(a.dir, segDir, segmentName(a.segEnd))
		sg, err := readSegment(path)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return err
		}
		if err := a.copySegment(ctx, res, path); err != nil {
			return err
		}
		a.segEnd = sg.last()
	}
	if n := checkpointSize(a.dir); n > 0 {
		if err := a.copyCheckpoint(ctx, res, strconv.FormatInt(n, 10)); err != nil {
			return err
		}
	}
	return a.putLatest(ctx)
}

// syncAll lists what the store holds, checks it is this log's, and copies
// every segment and checkpoint it lacks.
func (a *Archiver) syncAll(ctx context.Context, res *ArchiveResult) error {
	segs, err := listSegments(a.dir)
	if err != nil {
		return err
	}
	if a.have == nil {
		have := map[string]int64{}
		for _, p := range []string{"segments/", "checkpoints/"} {
			objs, err := a.store.List(ctx, p)
			if err != nil {
				return fmt.Errorf("audit: archive: %w", err)
			}
			for _, o := range objs {
				have[o.Key] = o.Size
			}
		}
		// What the store holds must be this log's: sizes must match, and
		// the first segment byte for byte (another log sharing the
		// prefix differs from its first entry on).
		for i, sg := range segs {
			key := "segments/" + filepath.Base(sg.path)
			size, ok := have[key]
			if !ok {
				continue
			}
			fi, err := os.Stat(sg.path)
			if err != nil {
				return fmt.Errorf("audit: archive: %w", err)
			}
			if fi.Size() != size {
				return a.conflict(key)
			}
			if i == 0 {
				if err := a.same(ctx, key, sg.path); err != nil {
					return err
				}
			}
		}
		a.have = have
	}
	for _, sg := range segs {
		if err := a.copySegment(ctx, res, sg.path); err != nil {
			return err
		}
	}
	a.segEnd = sealedCount(segs)
	ents, err := os.ReadDir(filepath.Join(a.dir, "checkpoints"))
	if err != nil {
		return fmt.Errorf("audit: archive: %w", err)
	}
	for _, e := range ents {
		if _, err := strconv.ParseInt(e.Name(), 10, 64); err != nil {
			continue
		}
		if err := a.copyCheckpoint(ctx, res, e.Name()); err != nil {
			return err
		}
	}
	return a.putLatest(ctx)
}

func (a *Archiver) copySegment(ctx context.Context, res *ArchiveResult, path string) error {
	key := "segments/" + filepath.Base(path)
	copied, err := a.copyOnce(ctx, key, path)
	if copied {
		res.Segments = append(res.Segments, key)
	}
	return err
}

func (a *Archiver) copyCheckpoint(ctx context.Context, res *ArchiveResult, name string) error {
	copied, err := a.copyOnce(ctx, "checkpoints/"+name, filepath.Join(a.dir, "checkpoints", name))
	if copied {
		res.Checkpoints++
	}
	return err
}

// putLatest writes "checkpoint" when it changed (the one key that is
// replaced: it names the newest tree, every tree is under checkpoints/).
func (a *Archiver) putLatest(ctx context.Context) error {
	latest, err := os.ReadFile(filepath.Join(a.dir, "checkpoint"))
	if err != nil || bytes.Equal(latest, a.latest) {
		return nil
	}
	if err := a.store.Put(ctx, "checkpoint", latest, false); err != nil {
		return fmt.Errorf("audit: archive: %w", err)
	}
	a.latest = latest
	return nil
}

// copyOnce writes the file at path under key unless the store has it; a
// different object already there is an error.
func (a *Archiver) copyOnce(ctx context.Context, key, path string) (bool, error) {
	if _, ok := a.have[key]; ok {
		return false, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("audit: archive: %w", err)
	}
	err = a.store.Put(ctx, key, data, true)
	if errors.Is(err, objstore.ErrExists) {
		err = a.same(ctx, key, path)
	}
	if err != nil {
		return false, fmt.Errorf("audit: archive: %w", err)
	}
	a.have[key] = int64(len(data))
	return true, nil
}

// same checks that the store's object under key is the file at path.
func (a *Archiver) same(ctx context.Context, key, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("audit: archive: %w", err)
	}
	// Larger than the file is different from it: read no more.
	old, err := a.store.Get(ctx, key, int64(len(data)))
	if errors.Is(err, objstore.ErrTooLarge) {
		return a.conflict(key)
	}
	if err != nil {
		return fmt.Errorf("audit: archive: %w", err)
	}
	if !bytes.Equal(old, data) {
		return a.conflict(key)
	}
	return nil
}

func (a *Archiver) conflict(key string) error {
	return fmt.Errorf("audit: archive: the store already holds a different %s; not overwritten (was the log rewritten, or does another log share this prefix?)", key)
}

// Fetch copies an archive from the store into dir, which then holds the
// sealed segments and checkpoints, and which Verify, Scan and the query
// and export commands read like a log directory. It returns how many
// entries the segments hold.
func Fetch(ctx context.Context, store ObjectStore, dir string) (int64, error) {
	for _, sub := range []string{segDir, "checkpoints"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return 0, fmt.Errorf("audit: fetch: %w", err)
		}
		objs, err := store.List(ctx, sub+"/")
		if err != nil {
			return 0, fmt.Errorf("audit: fetch: %w", err)
		}
		for _, o := range objs {
			k := o.Key
			name := strings.TrimPrefix(k, sub+"/")
			if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
				return 0, fmt.Errorf("audit: fetch: unexpected key %q in the archive", k)
			}
			limit := int64(maxArchivedCheckpoint)
			if sub == segDir {
				limit = maxArchivedSegment
			}
			if o.Size > limit {
				return 0, fmt.Errorf("audit: fetch: %s is %d bytes, more than the %d an archived %s can be", k, o.Size, limit, strings.TrimSuffix(sub, "s"))
			}
			// What the listing said, no more.
			data, err := store.Get(ctx, k, o.Size)
			if err != nil {
				return 0, fmt.Errorf("audit: fetch: %w", err)
			}
			if err := atomicfile.Write(filepath.Join(dir, sub, name), data, 0o600); err != nil {
				return 0, err
			}
		}
	}
	if data, err := store.Get(ctx, "checkpoint", maxArchivedCheckpoint); err == nil {
		if err := atomicfile.Write(filepath.Join(dir, "checkpoint"), data, 0o600); err != nil {
			return 0, err
		}
	} else if !errors.Is(err, objstore.ErrNotFound) {
		return 0, fmt.Errorf("audit: fetch: %w", err)
	}
	segs, err := listSegments(dir)
	if err != nil {
		return 0, err
	}
	return sealedCount(segs), nil
}

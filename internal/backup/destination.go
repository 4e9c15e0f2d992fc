package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/objstore"
)

// Destination is where backups are kept: a local directory or an
// S3-compatible bucket. Keys are slash-separated. Objects are written
// whole and never modified; Get refuses (objstore.ErrTooLarge) an object
// larger than max without reading it all, and gives objstore.ErrNotFound
// for a missing one.
type Destination interface {
	Put(ctx context.Context, key string, data []byte) error
	Get(ctx context.Context, key string, max int64) ([]byte, error)
	List(ctx context.Context, prefix string) ([]objstore.Object, error)
	Delete(ctx context.Context, key string) error
	String() string
}

var (
	_ Destination = (*Dir)(nil)
	_ Destination = (*Bucket)(nil)
)

// Opener opens a destination from its URL.
type Opener func(u *url.URL) (Destination, error)

// Registry maps URL schemes to destination kinds.
type Registry map[string]Opener

// DefaultRegistry knows file:// (and plain paths) and s3://.
func DefaultRegistry() Registry {
	return Registry{
		"file": func(u *url.URL) (Destination, error) { return NewDir(u.Path) },
		"s3": func(u *url.URL) (Destination, error) {
			cfg, err := objstore.ParseURL(u.String())
			if err != nil {
				return nil, err
			}
			b, err := objstore.New(cfg)
			if err != nil {
				return nil, err
			}
			return &Bucket{B: b}, nil
		},
	}
}

// Open opens the destination named by raw: SCHEME://... or a local path.
func (r Registry) Open(raw string) (Destination, error) {
	if !strings.Contains(raw, "://") {
		return NewDir(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("backup: destination %q: %w", raw, err)
	}
	open, ok := r[u.Scheme]
	if !ok {
		var known []string
		for k := range r {
			known = append(known, k+"://")
		}
		slices.Sort(known)
		return nil, fmt.Errorf("backup: destination %q: unknown scheme (known: %s, or a directory path)", raw, strings.Join(known, ", "))
	}
	d, err := open(u)
	if err != nil {
		return nil, fmt.Errorf("backup: destination %q: %w", raw, err)
	}
	return d, nil
}

// Dir is a destination in a local directory (another disk, a mounted
// network share).
type Dir struct{ root string }

// NewDir returns the destination in directory root, creating it (0700).
func NewDir(root string) (*Dir, error) {
	if root == "" {
		return nil, errors.New("backup: an empty directory path")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return &Dir{root: abs}, nil
}

func (d *Dir) String() string { return d.root }

func (d *Dir) path(key string) (string, error) {
	if checkPath(key) != nil {
		return "", fmt.Errorf("backup: %s: bad key %q", d, key)
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

// Put writes the object atomically and durably (file and directory
// synced).
func (d *Dir) Put(_ context.Context, key string, data []byte) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return atomicfile.Write(p, data, 0o600)
}

func (d *Dir) Get(_ context.Context, key string, max int64) ([]byte, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s in %s", objstore.ErrNotFound, key, d)
	}
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%w: %s in %s is %d bytes, at most %d accepted", objstore.ErrTooLarge, key, d, fi.Size(), max)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("backup: read %s: %w", p, err)
	}
	return b, nil
}

// List returns the objects whose keys start with prefix, sorted.
func (d *Dir) List(_ context.Context, prefix string) ([]objstore.Object, error) {
	var out []objstore.Object
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		out = append(out, objstore.Object{Key: key, Size: fi.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup: list %s: %w", d, err)
	}
	slices.SortFunc(out, func(a, b objstore.Object) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

func (d *Dir) Delete(_ context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// Bucket is a destination in S3-compatible storage.
type Bucket struct{ B *objstore.Bucket }

func (b *Bucket) String() string { return b.B.String() }

func (b *Bucket) Put(ctx context.Context, key string, data []byte) error {
	return b.B.Put(ctx, key, data, false)
}

func (b *Bucket) Get(ctx context.Context, key string, max int64) ([]byte, error) {
	return b.B.Get(ctx, key, max)
}

func (b *Bucket) List(ctx context.Context, prefix string) ([]objstore.Object, error) {
	return b.B.List(ctx, prefix)
}

func (b *Bucket) Delete(ctx context.Context, key string) error { return b.B.Delete(ctx, key) }

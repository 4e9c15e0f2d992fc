package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// DefaultPartSize is how large the objects a file is cut into are: small
// enough to hold a few in memory and to PUT in one request, large enough
// that a gigabyte is a few dozen objects.
const DefaultPartSize = 16 << 20

// maxPart bounds a part read back from a destination.
const maxPart = 1 << 30

// objectWriter encrypts files to the recipients and stores them, cut into
// parts, in every destination. Uploads run beside the encryption (two at a
// time); Close waits for them.
type objectWriter struct {
	ctx        context.Context
	dests      []Destination
	recipients []age.Recipient
	partSize   int
	progress   *progress

	jobs chan []byte
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
	sent int64 // bytes stored (per destination)
}

func newObjectWriter(ctx context.Context, dests []Destination, recipients []age.Recipient, partSize int, p *progress) *objectWriter {
	w := &objectWriter{ctx: ctx, dests: dests, recipients: recipients, partSize: partSize, progress: p, jobs: make(chan []byte, 1)}
	for range 2 {
		w.wg.Go(func() {
			for data := range w.jobs {
				if err := w.put(data); err != nil {
					w.fail(err)
				}
			}
		})
	}
	return w
}

func (w *objectWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

func (w *objectWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *objectWriter) put(data []byte) error {
	sum := sha256.Sum256(data)
	p := Part{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))}
	for _, d := range w.dests {
		if err := d.Put(w.ctx, p.Key(), data); err != nil {
			return fmt.Errorf("backup: %s: %w", d, err)
		}
	}
	w.mu.Lock()
	w.sent += int64(len(data))
	w.mu.Unlock()
	return nil
}

// close waits for the uploads.
func (w *objectWriter) close() error {
	close(w.jobs)
	w.wg.Wait()
	return w.failed()
}

// partSink cuts what is written into parts and queues each for upload.
type partSink struct {
	w     *objectWriter
	buf   []byte
	parts []Part
}

func (s *partSink) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if s.buf == nil {
			s.buf = make([]byte, 0, s.w.partSize)
		}
		k := min(len(p), s.w.partSize-len(s.buf))
		s.buf = append(s.buf, p[:k]...)
		p = p[k:]
		if len(s.buf) == s.w.partSize {
			if err := s.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (s *partSink) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	if err := s.w.failed(); err != nil {
		return err
	}
	sum := sha256.Sum256(s.buf)
	s.parts = append(s.parts, Part{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(s.buf))})
	select {
	case s.w.jobs <- s.buf:
	case <-s.w.ctx.Done():
		return s.w.ctx.Err()
	}
	s.buf = nil
	return nil
}

// file encrypts (after compressing, with compress) what r holds and
// stores it; it returns the manifest entry's size, hash and parts.
func (w *objectWriter) file(r io.Reader, compress bool) (File, error) {
	sink := &partSink{w: w}
	enc, err := age.Encrypt(sink, w.recipients...)
	if err != nil {
		return File{}, fmt.Errorf("backup: encrypt: %w", err)
	}
	var dst io.Writer = enc
	var zw *zstd.Encoder
	f := File{Compression: "none"}
	if compress {
		zw, err = zstd.NewWriter(enc, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(2))
		if err != nil {
			return File{}, err
		}
		dst, f.Compression = zw, "zstd"
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(dst, h, w.progress), r)
	if err != nil {
		return File{}, err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return File{}, err
		}
	}
	if err := enc.Close(); err != nil {
		return File{}, err
	}
	if err := sink.flush(); err != nil {
		return File{}, err
	}
	f.Size, f.SHA256, f.Parts = n, hex.EncodeToString(h.Sum(nil)), sink.parts
	return f, nil
}

// fileReader reads back one file of a backup: it fetches the parts in
// order from d, checks each against the manifest before anything reads
// it, decrypts and decompresses, and checks the size and hash at the end.
type fileReader struct {
	f    File
	dec  io.Reader
	zr   *zstd.Decoder
	h    hash.Hash
	n    int64
	done bool
}

// errNoIdentity: verify was asked to check objects only.
var errNoIdentity = errors.New("backup: no identity to decrypt with")

func openFile(ctx context.Context, d Destination, f File, ids []age.Identity) (*fileReader, error) {
	parts := &partReader{ctx: ctx, d: d, parts: f.Parts, path: f.Path}
	if len(ids) == 0 {
		return nil, errNoIdentity
	}
	dec, err := age.Decrypt(parts, ids...)
	if err != nil {
		var perr *PartError
		if errors.As(err, &perr) {
			return nil, perr
		}
		return nil, fmt.Errorf("backup: %s: decrypt: %w", f.Path, err)
	}
	fr := &fileReader{f: f, dec: dec, h: sha256.New()}
	if f.Compression == "zstd" {
		zr, err := zstd.NewReader(dec, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return nil, err
		}
		fr.zr, fr.dec = zr, zr
	}
	return fr, nil
}

func (r *fileReader) Read(p []byte) (int, error) {
	if r.n+int64(len(p)) > r.f.Size+1 {
		p = p[:max(0, min(int64(len(p)), r.f.Size+1-r.n))]
		if len(p) == 0 {
			return 0, fmt.Errorf("backup: %s: longer than the %d bytes the manifest says", r.f.Path, r.f.Size)
		}
	}
	n, err := r.dec.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if r.n > r.f.Size {
		return n, fmt.Errorf("backup: %s: longer than the %d bytes the manifest says", r.f.Path, r.f.Size)
	}
	if err == io.EOF {
		if r.n != r.f.Size {
			return n, fmt.Errorf("backup: %s: %d bytes, the manifest says %d", r.f.Path, r.n, r.f.Size)
		}
		if got := hex.EncodeToString(r.h.Sum(nil)); got != r.f.SHA256 {
			return n, fmt.Errorf("backup: %s: SHA-256 %s, the manifest says %s", r.f.Path, got, r.f.SHA256)
		}
		r.done = true
	} else if err != nil {
		var perr *PartError
		if !errors.As(err, &perr) {
			err = fmt.Errorf("backup: %s: %w", r.f.Path, err)
		}
	}
	return n, err
}

func (r *fileReader) Close() {
	if r.zr != nil {
		r.zr.Close()
	}
}

// PartError says which object of a backup is missing or not what the
// manifest says.
type PartError struct {
	Path   string // the file it belongs to
	Key    string
	Reason string
}

func (e *PartError) Error() string {
	return fmt.Sprintf("backup: %s: object %s %s", e.Path, e.Key, e.Reason)
}

// partReader concatenates a file's parts, checking each.
type partReader struct {
	ctx   context.Context
	d     Destination
	parts []Part
	path  string
	cur   *bytes.Reader
}

func (r *partReader) Read(p []byte) (int, error) {
	for r.cur == nil || r.cur.Len() == 0 {
		if len(r.parts) == 0 {
			return 0, io.EOF
		}
		part := r.parts[0]
		r.parts = r.parts[1:]
		data, err := fetchPart(r.ctx, r.d, part, r.path)
		if err != nil {
			return 0, err
		}
		r.cur = bytes.NewReader(data)
	}
	return r.cur.Read(p)
}

func fetchPart(ctx context.Context, d Destination, p Part, path string) ([]byte, error) {
	if p.Size > maxPart {
		return nil, &PartError{path, p.Key(), fmt.Sprintf("is listed at %d bytes, more than a part can be", p.Size)}
	}
	data, err := d.Get(ctx, p.Key(), p.Size)
	if err != nil {
		return nil, &PartError{path, p.Key(), fmt.Sprintf("cannot be read from %s: %v", d, err)}
	}
	if int64(len(data)) != p.Size {
		return nil, &PartError{path, p.Key(), fmt.Sprintf("in %s is %d bytes, the manifest says %d", d, len(data), p.Size)}
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != p.SHA256 {
		return nil, &PartError{path, p.Key(), fmt.Sprintf("in %s does not match its SHA-256 in the manifest (changed or corrupted)", d)}
	}
	return data, nil
}

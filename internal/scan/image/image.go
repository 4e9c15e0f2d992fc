package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Limits on an image.
const (
	MaxLayers      = 512
	MaxEntries     = 2 << 20
	MaxLayerBytes  = 32 << 30 // decompressed
	MaxMetaFile    = 64 << 20 // manifests, package databases
	MaxBinaryBytes = 2 << 30
)

// File is a file of the image's final file system.
type File struct {
	Path string // absolute, cleaned
	Mode int64
	Size int64
}

// Image is what Open found.
type Image struct {
	Tags   []string
	Layers int
	// Meta holds the contents of the package databases and os-release
	// files present, by path.
	Meta map[string][]byte
	// Executables lists regular files with an execute bit that begin
	// with an ELF, Mach-O or PE header, for the caller to read with
	// OpenExecutable.
	Executables []File

	src   io.ReaderAt
	size  int64
	tmp   string
	execs map[string]string // path -> temp file holding it
}

// metaPaths are read into Meta wherever they are.
var metaPaths = []string{"/etc/os-release", "/usr/lib/os-release", "/etc/alpine-release", "/var/lib/dpkg/status", "/lib/apk/db/installed"}

func isMeta(p string) bool {
	return slices.Contains(metaPaths, p) || strings.HasPrefix(p, "/var/lib/dpkg/status.d/")
}

type member struct{ off, size int64 }

// Open reads an image tarball. r must read the whole tarball at any
// offset (a file). tmpDir holds the Go binaries copied out (os.TempDir
// when empty); Close removes them.
func Open(r io.ReaderAt, size int64, tmpDir string) (*Image, error) {
	members, err := index(r, size)
	if err != nil {
		return nil, err
	}
	layers, tags, err := layerList(r, members)
	if err != nil {
		return nil, err
	}
	img := &Image{Tags: tags, Layers: len(layers), Meta: map[string][]byte{}, src: r, size: size, execs: map[string]string{}}
	// Pass 1: the final file system, whiteouts applied.
	final := map[string]ref{}
	for i, l := range layers {
		if err := applyLayer(r, members, l, i, final); err != nil {
			return nil, err
		}
	}
	// Pass 2: read what is wanted from the layer that has its final copy.
	want := map[int]map[string]bool{}
	for p, f := range final {
		if f.dir || !(isMeta(p) || f.mode&0o111 != 0 && f.size > 4) {
			continue
		}
		if want[f.layer] == nil {
			want[f.layer] = map[string]bool{}
		}
		want[f.layer][p] = true
	}
	if tmpDir == "" {
		tmpDir = os.TempDir()
	}
	if img.tmp, err = os.MkdirTemp(tmpDir, "rampart-image-"); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	for i, l := range layers {
		if len(want[i]) == 0 {
			continue
		}
		if err := img.extract(r, members, l, i, want[i], final); err != nil {
			img.Close()
			return nil, err
		}
	}
	img.resolveMeta(final)
	slices.SortFunc(img.Executables, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return img, nil
}

// Close removes the temporary copies.
func (img *Image) Close() error {
	if img.tmp == "" {
		return nil
	}
	return os.RemoveAll(img.tmp)
}

// OpenExecutable opens the copy of an executable listed in Executables.
func (img *Image) OpenExecutable(p string) (*os.File, error) {
	t, ok := img.execs[p]
	if !ok {
		return nil, fmt.Errorf("image: %s is not an executable of the image", p)
	}
	return os.Open(t)
}

// index lists the outer tarball's members with their data offsets.
func index(r io.ReaderAt, size int64) (map[string]member, error) {
	cr := &countingReader{r: io.NewSectionReader(r, 0, size)}
	tr := tar.NewReader(cr)
	out := map[string]member{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("image: not an image tarball: %w", err)
		}
		if len(out) > MaxEntries {
			return nil, errors.New("image: too many members in the tarball")
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		out[name] = member{off: cr.n, size: h.Size}
	}
	if len(out) == 0 {
		return nil, errors.New("image: not an image tarball: no files")
	}
	return out, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func readMember(r io.ReaderAt, members map[string]member, name string) ([]byte, error) {
	m, ok := members[name]
	if !ok {
		return nil, fmt.Errorf("image: the tarball has no %s", name)
	}
	if m.size > MaxMetaFile {
		return nil, fmt.Errorf("image: %s is larger than %d bytes", name, MaxMetaFile)
	}
	b := make([]byte, m.size)
	if _, err := r.ReadAt(b, m.off); err != nil {
		return nil, fmt.Errorf("image: read %s: %w", name, err)
	}
	return b, nil
}

// layer is one layer blob in the tarball, with the digest it must have
// (OCI; docker save names layers by path only).
type layer struct {
	name   string
	digest string
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

func layerList(r io.ReaderAt, members map[string]member) ([]layer, []string, error) {
	if _, ok := members["manifest.json"]; ok {
		b, err := readMember(r, members, "manifest.json")
		if err != nil {
			return nil, nil, err
		}
		var ms []struct {
			RepoTags []string `json:"RepoTags"`
			Layers   []string `json:"Layers"`
		}
		if err := json.Unmarshal(b, &ms); err != nil {
			return nil, nil, fmt.Errorf("image: manifest.json: %w", err)
		}
		if len(ms) != 1 {
			return nil, nil, fmt.Errorf("image: manifest.json lists %d images; save one image per tarball", len(ms))
		}
		var ls []layer
		for _, l := range ms[0].Layers {
			n := strings.TrimPrefix(path.Clean("/"+l), "/")
			d := ""
			if rest, ok := strings.CutPrefix(n, "blobs/sha256/"); ok {
				d = "sha256:" + rest
			}
			ls = append(ls, layer{name: n, digest: d})
		}
		return checkLayers(ls, members, ms[0].RepoTags)
	}
	if _, ok := members["index.json"]; !ok {
		return nil, nil, errors.New("image: not an image tarball: neither manifest.json (docker save) nor index.json (OCI layout)")
	}
	b, err := readMember(r, members, "index.json")
	if err != nil {
		return nil, nil, err
	}
	// An index may point at another index (multi-platform); follow the
	// first manifest, a few levels at most.
	for depth := 0; depth < 4; depth++ {
		var doc struct {
			MediaType string       `json:"mediaType"`
			Manifests []descriptor `json:"manifests"`
			Layers    []descriptor `json:"layers"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, nil, fmt.Errorf("image: OCI index or manifest: %w", err)
		}
		if len(doc.Layers) > 0 || (len(doc.Manifests) == 0 && strings.Contains(doc.MediaType, "manifest")) {
			var ls []layer
			for _, d := range doc.Layers {
				n, err := blobPath(d.Digest)
				if err != nil {
					return nil, nil, err
				}
				ls = append(ls, layer{name: n, digest: d.Digest})
			}
			return checkLayers(ls, members, nil)
		}
		if len(doc.Manifests) == 0 {
			return nil, nil, errors.New("image: OCI index lists no manifest")
		}
		n, err := blobPath(doc.Manifests[0].Digest)
		if err != nil {
			return nil, nil, err
		}
		if b, err = readMember(r, members, n); err != nil {
			return nil, nil, err
		}
		if err := checkDigest(bytes.NewReader(b), doc.Manifests[0].Digest, n); err != nil {
			return nil, nil, err
		}
	}
	return nil, nil, errors.New("image: OCI indexes nested too deep")
}

func blobPath(digest string) (string, error) {
	alg, hexd, ok := strings.Cut(digest, ":")
	if !ok || alg != "sha256" || len(hexd) != 64 {
		return "", fmt.Errorf("image: unsupported digest %q", digest)
	}
	if _, err := hex.DecodeString(hexd); err != nil {
		return "", fmt.Errorf("image: digest %q is not hex", digest)
	}
	return "blobs/sha256/" + hexd, nil
}

func checkLayers(ls []layer, members map[string]member, tags []string) ([]layer, []string, error) {
	if len(ls) == 0 {
		return nil, nil, errors.New("image: the manifest lists no layers")
	}
	if len(ls) > MaxLayers {
		return nil, nil, fmt.Errorf("image: %d layers, more than %d", len(ls), MaxLayers)
	}
	for _, l := range ls {
		if _, ok := members[l.name]; !ok {
			return nil, nil, fmt.Errorf("image: layer %s is missing from the tarball", l.name)
		}
	}
	return ls, tags, nil
}

func checkDigest(r io.Reader, digest, name string) error {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("image: %s: %w", name, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("image: %s has digest %s, the manifest says %s", name, got, digest)
	}
	return nil
}

// openLayer returns the layer's tar stream, decompressed, with its digest
// checked at the end (digestErr, once the stream is read through).
func openLayer(r io.ReaderAt, members map[string]member, l layer) (*tar.Reader, func() error, error) {
	m := members[l.name]
	raw := io.NewSectionReader(r, m.off, m.size)
	h := sha256.New()
	br := bufio.NewReader(io.TeeReader(raw, h))
	magic, _ := br.Peek(4)
	var rd io.Reader = br
	var closeFn func()
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("image: layer %s: %w", l.name, err)
		}
		rd = gz
	case len(magic) == 4 && bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return nil, nil, fmt.Errorf("image: layer %s: %w", l.name, err)
		}
		rd, closeFn = zr, zr.Close
	}
	lim := &io.LimitedReader{R: rd, N: MaxLayerBytes + 1}
	done := func() error {
		if closeFn != nil {
			defer closeFn()
		}
		if lim.N <= 0 {
			return fmt.Errorf("image: layer %s is larger than %d bytes decompressed", l.name, int64(MaxLayerBytes))
		}
		if l.digest == "" {
			return nil
		}
		// Read what the tar reader left (padding, compression trailer)
		// so the digest covers the whole blob.
		if _, err := io.Copy(io.Discard, rd); err != nil {
			return fmt.Errorf("image: layer %s: %w", l.name, err)
		}
		if _, err := io.Copy(h, raw); err != nil {
			return fmt.Errorf("image: layer %s: %w", l.name, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != l.digest {
			return fmt.Errorf("image: layer %s has digest %s, the manifest says %s", l.name, got, l.digest)
		}
		return nil
	}
	return tar.NewReader(lim), done, nil
}

// ref is where a path of the final file system comes from.
type ref struct {
	layer int
	mode  int64
	size  int64
	dir   bool
	link  string // symlink target
}

func clean(name string) string { return path.Clean("/" + name) }

func applyLayer(r io.ReaderAt, members map[string]member, l layer, li int, final map[string]ref) error {
	tr, done, err := openLayer(r, members, l)
	if err != nil {
		return err
	}
	type add struct {
		p string
		f ref
	}
	var adds []add
	var deletes, opaque []string
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("image: layer %s: %w", l.name, err)
		}
		if n > MaxEntries {
			return fmt.Errorf("image: layer %s has more than %d entries", l.name, MaxEntries)
		}
		p := clean(h.Name)
		dir, base := path.Split(p)
		if base == ".wh..wh..opq" {
			opaque = append(opaque, path.Clean(dir))
			continue
		}
		if victim, ok := strings.CutPrefix(base, ".wh."); ok {
			deletes = append(deletes, path.Join(dir, victim))
			continue
		}
		f := ref{layer: li, mode: h.Mode, size: h.Size}
		switch h.Typeflag {
		case tar.TypeDir:
			f.dir = true
		case tar.TypeReg:
		case tar.TypeSymlink:
			f.link = h.Linkname
		default:
			continue // hard links, devices, fifos: nothing a scanner reads
		}
		adds = append(adds, add{p, f})
	}
	if err := done(); err != nil {
		return err
	}
	// Whiteouts hide what the layers below put there, not this layer's own.
	// One pass over the file system, each path checked against its
	// ancestors: many whiteouts in a large image cost no more than one.
	if len(deletes) > 0 || len(opaque) > 0 {
		del, opq := map[string]bool{}, map[string]bool{}
		for _, d := range deletes {
			del[d] = true
		}
		for _, d := range opaque {
			opq[d] = true
		}
		for p := range final {
			if del[p] {
				delete(final, p)
				continue
			}
			for dir := path.Dir(p); ; dir = path.Dir(dir) {
				if del[dir] || opq[dir] {
					delete(final, p)
					break
				}
				if dir == "/" {
					break
				}
			}
		}
	}
	for _, a := range adds {
		if old, ok := final[a.p]; ok && old.dir && !a.f.dir {
			for p := range final { // a file replaces a directory and all in it
				if strings.HasPrefix(p, a.p+"/") {
					delete(final, p)
				}
			}
		}
		final[a.p] = a.f
	}
	return nil
}

// resolve follows symbolic links among the meta paths (os-release is
// usually a link to /usr/lib/os-release).
func resolve(final map[string]ref, p string) string {
	for range 8 {
		f, ok := final[p]
		if !ok || f.link == "" {
			return p
		}
		t := f.link
		if !strings.HasPrefix(t, "/") {
			t = path.Join(path.Dir(p), t)
		}
		p = path.Clean(t)
	}
	return p
}

var execMagics = [][]byte{{0x7f, 'E', 'L', 'F'}, {0xfe, 0xed, 0xfa, 0xce}, {0xfe, 0xed, 0xfa, 0xcf}, {0xce, 0xfa, 0xed, 0xfe}, {0xcf, 0xfa, 0xed, 0xfe}, {'M', 'Z'}}

func (img *Image) extract(r io.ReaderAt, members map[string]member, l layer, li int, want map[string]bool, final map[string]ref) error {
	tr, done, err := openLayer(r, members, l)
	if err != nil {
		return err
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("image: layer %s: %w", l.name, err)
		}
		p := clean(h.Name)
		if h.Typeflag != tar.TypeReg || !want[p] {
			continue
		}
		if isMeta(p) {
			if h.Size > MaxMetaFile {
				return fmt.Errorf("image: %s is larger than %d bytes", p, MaxMetaFile)
			}
			b, err := io.ReadAll(io.LimitReader(tr, MaxMetaFile))
			if err != nil {
				return fmt.Errorf("image: %s: %w", p, err)
			}
			img.Meta[p] = b
			continue
		}
		br := bufio.NewReader(tr)
		head, _ := br.Peek(4)
		if !slices.ContainsFunc(execMagics, func(m []byte) bool { return bytes.HasPrefix(head, m) }) {
			continue
		}
		if h.Size > MaxBinaryBytes {
			return fmt.Errorf("image: %s is larger than %d bytes", p, int64(MaxBinaryBytes))
		}
		t, err := os.CreateTemp(img.tmp, "exe-")
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		_, err = io.Copy(t, br)
		if cerr := t.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("image: copy %s: %w", p, err)
		}
		img.execs[p] = t.Name()
		img.Executables = append(img.Executables, File{Path: p, Mode: h.Mode, Size: h.Size})
	}
	if err := done(); err != nil {
		return err
	}
	return nil
}

func (img *Image) resolveMeta(final map[string]ref) {
	// Meta files reached through symbolic links.
	for _, mp := range metaPaths {
		if _, ok := img.Meta[mp]; ok {
			continue
		}
		if t := resolve(final, mp); t != mp {
			if b, ok := img.Meta[t]; ok {
				img.Meta[mp] = b
			}
		}
	}
}

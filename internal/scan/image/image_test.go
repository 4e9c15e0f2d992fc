package image_test

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/scan/image"
	"github.com/rampartsec/rampart/internal/scan/scantest"
)

func tarOf(t testing.TB, files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, b := range files {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write([]byte(b))
	}
	tw.Close()
	return buf.Bytes()
}

func validImage(t testing.TB) []byte {
	var buf bytes.Buffer
	err := scantest.WriteOCI(&buf, []scantest.Layer{{Compress: "gzip", Entries: []scantest.Entry{
		{Name: "etc/os-release", Body: []byte("ID=debian\nVERSION_ID=12\n")},
		{Name: "var/lib/dpkg/status", Body: []byte("Package: a\nVersion: 1.0-1\n")},
	}}, {Entries: []scantest.Entry{{Name: "etc/.wh.os-release"}, {Name: "etc/motd", Body: []byte("hello world")}}}})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(b []byte, tmp string) (*image.Image, error) {
	return image.Open(bytes.NewReader(b), int64(len(b)), tmp)
}

func TestOpenOCI(t *testing.T) {
	img, err := open(validImage(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if _, ok := img.Meta["/etc/os-release"]; ok {
		t.Error("os-release was whited out by the second layer, but is still read")
	}
	if string(img.Meta["/var/lib/dpkg/status"]) != "Package: a\nVersion: 1.0-1\n" {
		t.Errorf("dpkg status: %q", img.Meta["/var/lib/dpkg/status"])
	}
}

// TestOpenRefuses: malformed tarballs are refused with an error naming
// what is wrong.
func TestOpenRefuses(t *testing.T) {
	valid := validImage(t)
	// A layer whose bytes do not match the manifest's digest.
	tampered := bytes.Clone(valid)
	tampered[bytes.Index(tampered, []byte("hello world"))] ^= 1
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"not a tar", []byte("hello, this is not a tarball at all"), "not an image tarball"},
		{"empty tar", tarOf(t, nil), "not an image tarball"},
		{"no manifest", tarOf(t, map[string]string{"a.txt": "x"}), "neither manifest.json"},
		{"bad manifest", tarOf(t, map[string]string{"manifest.json": "{"}), "manifest.json"},
		{"two images", tarOf(t, map[string]string{"manifest.json": `[{"Layers":["a"]},{"Layers":["b"]}]`}), "2 images"},
		{"missing layer", tarOf(t, map[string]string{"manifest.json": `[{"Layers":["layer.tar"]}]`}), "layer.tar is missing"},
		{"no layers", tarOf(t, map[string]string{"manifest.json": `[{"Layers":[]}]`}), "no layers"},
		{"bad layer", tarOf(t, map[string]string{"manifest.json": `[{"Layers":["l"]}]`, "l": "\x1f\x8bgarbage"}), "layer l"},
		{"bad digest", tarOf(t, map[string]string{"index.json": `{"manifests":[{"digest":"md5:abc"}]}`}), "unsupported digest"},
		{"tampered layer", tampered, "digest"},
	} {
		img, err := open(tc.b, t.TempDir())
		if err == nil {
			img.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(validImage(f))
	f.Add(tarOf(f, map[string]string{"manifest.json": `[{"Layers":["l"]}]`, "l": string(tarOf(f, map[string]string{"var/lib/dpkg/status": "Package: a\n", "a/.wh..wh..opq": ""}))}))
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := open(b, t.TempDir())
		if err == nil {
			img.Close()
		}
	})
}

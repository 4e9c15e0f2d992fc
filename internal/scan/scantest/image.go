package scantest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Entry is one member of a layer: a file (Body), a directory (Dir), a
// symbolic link (Link) or a whiteout (a name starting ".wh.").
type Entry struct {
	Name string
	Body []byte
	Mode int64
	Dir  bool
	Link string
}

// Layer is a list of entries and how the blob is compressed: "", "gzip"
// or "zstd".
type Layer struct {
	Entries  []Entry
	Compress string
}

// LayerBlob writes a layer's tar, compressed.
func LayerBlob(l Layer) ([]byte, error) {
	b, _, err := layerBlob(l)
	return b, err
}

// layerBlob returns the blob and its diff ID (the digest of the
// uncompressed tar, which an image config lists in rootfs.diff_ids).
func layerBlob(l Layer) ([]byte, string, error) {
	b, raw, err := layerBytes(l)
	return b, "sha256:" + digest(raw), err
}

func layerBytes(l Layer) ([]byte, []byte, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range l.Entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, Size: int64(len(e.Body)), Typeflag: tar.TypeReg}
		switch {
		case e.Dir:
			h.Typeflag, h.Size = tar.TypeDir, 0
		case e.Link != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.Link, 0
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.Body); err != nil {
				return nil, nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	switch l.Compress {
	case "gzip":
		var out bytes.Buffer
		zw := gzip.NewWriter(&out)
		zw.Write(raw.Bytes())
		zw.Close()
		return out.Bytes(), raw.Bytes(), nil
	case "zstd":
		var out bytes.Buffer
		zw, err := zstd.NewWriter(&out)
		if err != nil {
			return nil, nil, err
		}
		zw.Write(raw.Bytes())
		zw.Close()
		return out.Bytes(), raw.Bytes(), nil
	}
	return raw.Bytes(), raw.Bytes(), nil
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type outer struct {
	tw *tar.Writer
}

func (o outer) put(name string, b []byte) error {
	if err := o.tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := o.tw.Write(b)
	return err
}

// WriteDockerSave writes an image as `docker save` does: each layer at
// blobs/sha256/DIGEST (as Docker 25 and later write it), manifest.json
// naming them.
func WriteDockerSave(w io.Writer, tag string, layers []Layer) error {
	o := outer{tar.NewWriter(w)}
	var names, diffIDs []string
	for _, l := range layers {
		b, diffID, err := layerBlob(l)
		if err != nil {
			return err
		}
		diffIDs = append(diffIDs, diffID)
		n := "blobs/sha256/" + digest(b)
		names = append(names, n)
		if err := o.put(n, b); err != nil {
			return err
		}
	}
	cfg := imageConfig(diffIDs)
	cn := "blobs/sha256/" + digest(cfg)
	if err := o.put(cn, cfg); err != nil {
		return err
	}
	m, _ := json.Marshal([]map[string]any{{"Config": cn, "RepoTags": []string{tag}, "Layers": names}})
	if err := o.put("manifest.json", m); err != nil {
		return err
	}
	return o.tw.Close()
}

// WriteOCI writes an image as an OCI image layout in a tar: oci-layout,
// index.json, the manifest and the layers under blobs/sha256.
func WriteOCI(w io.Writer, layers []Layer) error {
	o := outer{tar.NewWriter(w)}
	if err := o.put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	var descs []map[string]any
	var diffIDs []string
	for _, l := range layers {
		b, diffID, err := layerBlob(l)
		if err != nil {
			return err
		}
		diffIDs = append(diffIDs, diffID)
		mt := "application/vnd.oci.image.layer.v1.tar"
		if l.Compress != "" {
			mt += "+" + l.Compress
		}
		d := digest(b)
		descs = append(descs, map[string]any{"mediaType": mt, "digest": "sha256:" + d, "size": len(b)})
		if err := o.put("blobs/sha256/"+d, b); err != nil {
			return err
		}
	}
	cfg := imageConfig(diffIDs)
	if err := o.put("blobs/sha256/"+digest(cfg), cfg); err != nil {
		return err
	}
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + digest(cfg), "size": len(cfg)},
		"layers": descs})
	if err := o.put("blobs/sha256/"+digest(man), man); err != nil {
		return err
	}
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []map[string]any{
		{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + digest(man), "size": len(man)}}})
	if err := o.put("index.json", idx); err != nil {
		return err
	}
	return o.tw.Close()
}

// Record returns a minimal OSV record for a distribution package.
func Record(id, ecosystem, name, fixed string) []byte {
	b, _ := json.Marshal(map[string]any{
		"schema_version": "1.6.0", "id": id, "modified": "2026-01-01T00:00:00Z", "summary": fmt.Sprintf("a flaw in %s", name),
		"severity": []map[string]string{{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}},
		"affected": []map[string]any{{"package": map[string]string{"ecosystem": ecosystem, "name": name},
			"ranges": []map[string]any{{"type": "ECOSYSTEM", "events": []map[string]string{{"introduced": "0"}, {"fixed": fixed}}}}}},
	})
	return b
}

// imageConfig is a minimal OCI image configuration naming the layers'
// diff IDs, as tools that rebuild the file system require.
func imageConfig(diffIDs []string) []byte {
	b, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{}, "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	return b
}

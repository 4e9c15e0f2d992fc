// Package image reads a container image from a tarball: the output of
// `docker save` (manifest.json and layer tars) or an OCI image layout in a
// tar (oci-layout, index.json, blobs/). It applies the layers in order,
// with their whiteouts (".wh.NAME" deletes NAME from the layers below,
// ".wh..wh..opq" empties a directory of them), and hands back the files a
// scanner needs from the final file system: os-release, the dpkg status
// database (and distroless status.d files), the apk installed database,
// and every executable that is a Go binary.
//
// The tarball is untrusted. Paths are cleaned so nothing escapes the
// image root; layers may be plain, gzip or zstd tars, each bounded in
// size once decompressed; counts of layers and entries are bounded; a
// missing blob, a digest that does not match, or a manifest that is not
// JSON is refused with an error naming it. Go binaries are copied to a
// temporary file to be read, so memory does not grow with their size.
package image

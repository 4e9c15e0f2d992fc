// Package objstore stores objects in S3-compatible object storage (AWS S3,
// MinIO, Ceph RGW, Versity, Garage, ...) for what Rampart keeps off the
// machine: sealed audit segments and checkpoints, and later backups.
//
// It speaks the S3 REST API directly with AWS Signature Version 4
// (header-signed, signed payloads), path-style addressing when an endpoint
// is given and virtual-hosted AWS addressing otherwise. Writes that must
// never replace what is stored use If-None-Match: * (S3 conditional
// writes), so a second writer, or a compromised one, cannot overwrite an
// archived object silently: it gets ErrExists.
//
// The store is trusted with copies, not with the reader's memory: Get
// takes the largest object the caller accepts and gives ErrTooLarge for a
// larger one, having read at most one byte past the limit; List reads at
// most 64 MiB a page, error bodies at most 64 KiB.
package objstore

package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/rampartsec/rampart/internal/audit/auditentry"
)

// Batch wire formats for POST /v1/audit/ingest.
//
// Version 1 (Content-Type application/json) is {"entries": [ENTRY, ...]}
// with each entry in canonical JSON. The server keeps accepting it from
// senders of the previous version.
//
// Version 2 (Content-Type BatchContentType) is a zstd frame whose content
// is:
//
//	"RAB2"                     magic
//	uvarint N                  1 to MaxBatchEntries entries
//	N times:
//	  uvarint L                1 to auditentry.MaxSize
//	  L bytes                  the entry, canonical JSON
//
// and nothing after. Entries of one stream repeat most of their bytes
// (actor, action, target, policy version), so the batch compresses about
// tenfold; the server reads one body instead of a JSON array of escaped
// strings. Decoded size is bounded by MaxBatchBytes whatever the
// compressed size (a zstd bomb stops there).
const (
	BatchContentType = "application/vnd.rampart.audit-batch.v2+zstd"
	MaxBatchEntries  = 10000
	MaxBatchBytes    = 16 << 20
	batchMagic       = "RAB2"
)

var (
	encoders = sync.Pool{New: func() any {
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithLowerEncoderMem(true))
		return e
	}}
	decoders = sync.Pool{New: func() any {
		d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxBatchBytes+1), zstd.WithDecoderMaxWindow(8<<20))
		return d
	}}
)

// EncodeBatch encodes canonical entries in the version 2 format.
func EncodeBatch(entries [][]byte) []byte {
	n := len(batchMagic) + binary.MaxVarintLen64
	for _, e := range entries {
		n += binary.MaxVarintLen64 + len(e)
	}
	raw := make([]byte, 0, n)
	raw = append(raw, batchMagic...)
	raw = binary.AppendUvarint(raw, uint64(len(entries)))
	for _, e := range entries {
		raw = binary.AppendUvarint(raw, uint64(len(e)))
		raw = append(raw, e...)
	}
	enc := encoders.Get().(*zstd.Encoder)
	defer encoders.Put(enc)
	return enc.EncodeAll(raw, make([]byte, 0, len(raw)/4))
}

// DecodeBatch reads a version 2 body (at most MaxBatchBytes once
// decompressed) and returns its entries, each a slice of one buffer. It
// checks the framing only: the caller parses the entries.
func DecodeBatch(r io.Reader) ([][]byte, error) {
	dec := decoders.Get().(*zstd.Decoder)
	defer decoders.Put(dec)
	if err := dec.Reset(r); err != nil {
		return nil, fmt.Errorf("spool: batch: %w", err)
	}
	defer dec.Reset(nil)
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(dec, MaxBatchBytes+1))
	if err != nil {
		return nil, fmt.Errorf("spool: batch: %w", err)
	}
	if n > MaxBatchBytes {
		return nil, fmt.Errorf("spool: batch: more than %d bytes decompressed", MaxBatchBytes)
	}
	return parseBatch(buf.Bytes())
}

// parseBatch parses decompressed version 2 content strictly.
func parseBatch(b []byte) ([][]byte, error) {
	rest, ok := bytes.CutPrefix(b, []byte(batchMagic))
	if !ok {
		return nil, errors.New("spool: batch: not a version 2 batch (bad magic)")
	}
	count, k := binary.Uvarint(rest)
	if k <= 0 {
		return nil, errors.New("spool: batch: bad entry count")
	}
	rest = rest[k:]
	if count == 0 || count > MaxBatchEntries {
		return nil, fmt.Errorf("spool: batch: %d entries, want 1 to %d", count, MaxBatchEntries)
	}
	out := make([][]byte, 0, count)
	for i := range count {
		l, k := binary.Uvarint(rest)
		if k <= 0 {
			return nil, fmt.Errorf("spool: batch: entry %d: bad length", i)
		}
		rest = rest[k:]
		if l == 0 || l > auditentry.MaxSize {
			return nil, fmt.Errorf("spool: batch: entry %d: %d bytes, want 1 to %d", i, l, auditentry.MaxSize)
		}
		if l > uint64(len(rest)) {
			return nil, fmt.Errorf("spool: batch: entry %d: %d bytes, %d left", i, l, len(rest))
		}
		out = append(out, rest[:l:l])
		rest = rest[l:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("spool: batch: %d bytes after the last entry", len(rest))
	}
	return out, nil
}

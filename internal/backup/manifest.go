package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Manifest format "rampart-backup" version 1.
//
// A manifest is a C2SP signed note (the format of the audit log's
// checkpoints) whose text is a first line naming the format and then the
// manifest as indented JSON:
//
//	rampart-backup v1
//	{
//	  "format": "rampart-backup",
//	  ...
//	}
//
//	— example.org/backup Az3...
//
// It is stored in the clear (manifests/SEQ in each destination), so that
// anyone holding the backup public key can check a backup is whole and
// untouched without the key that decrypts it; what it reveals is listed in
// docs/backup.md. The encoding is canonical (struct field order, sorted
// map keys, two-space indentation, times in UTC): ParseManifest refuses any
// other spelling, so a manifest has one byte form and one hash.

// Format names.
const (
	ManifestFormat  = "rampart-backup"
	ManifestVersion = 1
	manifestHeader  = "rampart-backup v1\n"
	// MaxManifest bounds a manifest read back from a destination: a
	// backup of years of audit log lists thousands of segments, a few
	// hundred bytes each.
	MaxManifest = 64 << 20
)

// Manifest describes one backup.
type Manifest struct {
	Format      string `json:"format"`
	Version     int    `json:"version"`
	TrustDomain string `json:"trust_domain"`
	// Seq numbers the backups of a deployment: 1, 2, ... Never reused.
	Seq int64 `json:"seq"`
	// Prev is the SHA-256 (hex) of the manifest of the backup made before
	// this one ("" for the first): the manifests form a chain.
	Prev    string    `json:"prev"`
	Created time.Time `json:"created"`
	// Recipients are the age recipients every object is encrypted to.
	Recipients []string  `json:"recipients"`
	Store      StoreInfo `json:"store"`
	Audit      AuditInfo `json:"audit"`
	KEK        KEKInfo   `json:"kek"`
	Files      []File    `json:"files"`
}

// StoreInfo says what the store snapshot holds.
type StoreInfo struct {
	Backend       string           `json:"backend"` // sqlite or postgres
	SchemaVersion int              `json:"schema_version"`
	Tables        map[string]int64 `json:"tables"` // rows per table
}

// AuditInfo is the audit log's tree in the backup.
type AuditInfo struct {
	Origin string `json:"origin"`
	Size   int64  `json:"size"`
	Root   string `json:"root"`   // hex SHA-256 root hash of the tree of Size entries
	Sealed int64  `json:"sealed"` // entries in sealed segments
}

// KEKInfo says how the key-encryption key relates to the backup.
type KEKInfo struct {
	// Source is the master key source (file, passphrase, pkcs11).
	Source string `json:"source"`
	// Included: the KEK file itself is in the backup (file source, and
	// only when asked for). Otherwise restoring needs it from outside
	// (file), or the passphrase or the HSM that opens keys/kek.sealed.
	Included bool `json:"included"`
	// InDataDir: the file source's KEK lived at DATA/keys/kek, where a
	// restore puts the one it is given.
	InDataDir bool `json:"in_data_dir"`
}

// File kinds.
const (
	KindStore   = "store"   // the store snapshot: rampart.db or store.dump
	KindFile    = "file"    // a data directory file, as it is
	KindSealed  = "sealed"  // a secret, sealed by the KEK (keywrap) inside the backup
	KindSegment = "segment" // a sealed audit segment
	KindTail    = "tail"    // the unsealed entries of audit/entries.log, at Offset
	// KindArchive is a tar of small files (the audit checkpoints and
	// quarantine); member names are paths relative to the data directory.
	KindArchive = "archive"
)

// File is one file of the backup.
type File struct {
	// Path is where the file goes, relative to the data directory,
	// slash-separated.
	Path string `json:"path"`
	Kind string `json:"kind"`
	Mode string `json:"mode"` // octal permission bits, e.g. "0600"
	// Offset is where the bytes start in the file (the audit tail;
	// everything before it is in the segments).
	Offset int64  `json:"offset,omitempty"`
	Size   int64  `json:"size"`   // bytes, before compression and encryption
	SHA256 string `json:"sha256"` // hex, of those bytes
	// Compression is "zstd" or "none": what was applied before age.
	Compression string `json:"compression"`
	// Parts are the object holding the encrypted file, cut in pieces:
	// concatenated, they are one age file.
	Parts []Part `json:"parts"`
}

// Part is one object: objects/HH/SHA256 in a destination.
type Part struct {
	SHA256 string `json:"sha256"` // hex, of the object
	Size   int64  `json:"size"`
}

// Key is the part's object key in a destination.
func (p Part) Key() string { return "objects/" + p.SHA256[:2] + "/" + p.SHA256 }

// ManifestKey is the key of backup seq's manifest in a destination.
func ManifestKey(seq int64) string { return fmt.Sprintf("manifests/%020d", seq) }

var (
	hexSHA   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	modeRE   = regexp.MustCompile(`^0[0-7]{3}$`)
	tableRE  = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	kindsSet = map[string]bool{KindStore: true, KindFile: true, KindSealed: true, KindSegment: true, KindTail: true, KindArchive: true}
)

// Validate checks what a manifest says before anything acts on it.
func (m *Manifest) Validate() error {
	bad := func(format string, a ...any) error { return fmt.Errorf("backup: manifest: "+format, a...) }
	switch {
	case m.Format != ManifestFormat || m.Version != ManifestVersion:
		return bad("format %q version %d, want %q version %d", m.Format, m.Version, ManifestFormat, ManifestVersion)
	case m.TrustDomain == "":
		return bad("no trust domain")
	case m.Seq < 1:
		return bad("seq %d, want 1 or more", m.Seq)
	case m.Prev != "" && !hexSHA.MatchString(m.Prev):
		return bad("prev %q is not a hex SHA-256", m.Prev)
	case m.Seq == 1 && m.Prev != "":
		return bad("the first backup names a previous one")
	case m.Created.IsZero():
		return bad("no creation time")
	case len(m.Recipients) == 0:
		return bad("no recipients")
	case m.Store.Backend != "sqlite" && m.Store.Backend != "postgres":
		return bad("store backend %q, want sqlite or postgres", m.Store.Backend)
	case m.Audit.Size < 0 || m.Audit.Sealed < 0 || m.Audit.Sealed > m.Audit.Size:
		return bad("audit sizes %d (sealed %d) impossible", m.Audit.Size, m.Audit.Sealed)
	case !hexSHA.MatchString(m.Audit.Root):
		return bad("audit root %q is not a hex SHA-256", m.Audit.Root)
	}
	for t, n := range m.Store.Tables {
		if !tableRE.MatchString(t) || n < 0 {
			return bad("store table %q with %d rows", t, n)
		}
	}
	seen := map[string]bool{}
	stores := 0
	for i, f := range m.Files {
		where := fmt.Sprintf("files[%d] (%s)", i, f.Path)
		if err := checkPath(f.Path); err != nil {
			return bad("%s: %v", where, err)
		}
		if seen[f.Path] {
			return bad("%s: listed twice", where)
		}
		seen[f.Path] = true
		switch {
		case !kindsSet[f.Kind]:
			return bad("%s: kind %q", where, f.Kind)
		case !modeRE.MatchString(f.Mode):
			return bad("%s: mode %q, want four octal digits", where, f.Mode)
		case f.Size < 0 || f.Offset < 0 || (f.Offset != 0 && f.Kind != KindTail):
			return bad("%s: size %d, offset %d", where, f.Size, f.Offset)
		case !hexSHA.MatchString(f.SHA256):
			return bad("%s: sha256 %q is not a hex SHA-256", where, f.SHA256)
		case f.Compression != "zstd" && f.Compression != "none":
			return bad("%s: compression %q, want zstd or none", where, f.Compression)
		case len(f.Parts) == 0:
			return bad("%s: no parts", where)
		}
		for j, p := range f.Parts {
			if !hexSHA.MatchString(p.SHA256) || p.Size <= 0 {
				return bad("%s: parts[%d]: %q of %d bytes", where, j, p.SHA256, p.Size)
			}
		}
		if f.Kind == KindStore {
			stores++
		}
	}
	if stores != 1 {
		return bad("%d store snapshots, want 1", stores)
	}
	return nil
}

// checkPath accepts clean relative slash paths that stay inside the data
// directory.
func checkPath(p string) error {
	switch {
	case p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, `\`) || strings.ContainsRune(p, 0):
		return errors.New("not a relative path")
	case path.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../"):
		return errors.New("not a clean path inside the data directory")
	}
	return nil
}

// Encode returns the manifest's canonical text (the note text, unsigned).
func (m *Manifest) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	c := *m
	c.Created = c.Created.UTC()
	var buf bytes.Buffer
	buf.WriteString(manifestHeader)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&c); err != nil {
		return nil, fmt.Errorf("backup: manifest: %w", err)
	}
	return buf.Bytes(), nil
}

// Sign encodes and signs the manifest.
func (m *Manifest) Sign(signer note.Signer) ([]byte, error) {
	text, err := m.Encode()
	if err != nil {
		return nil, err
	}
	signed, err := note.Sign(&note.Note{Text: string(text)}, signer)
	if err != nil {
		return nil, fmt.Errorf("backup: sign manifest: %w", err)
	}
	return signed, nil
}

// Hash is the SHA-256 (hex) of a signed manifest: what the next one names
// as Prev.
func Hash(signed []byte) string {
	h := sha256.Sum256(signed)
	return hex.EncodeToString(h[:])
}

// ErrSignature means a manifest's signature does not verify with the key
// the restore was given.
var ErrSignature = errors.New("backup: the manifest is not signed by the backup key given")

// ParseManifest verifies a signed manifest with verifier (the backup
// public key, which must come from outside the destination) and decodes
// it strictly: unknown fields, a non-canonical encoding or an invalid
// value are errors.
func ParseManifest(signed []byte, verifier note.Verifier) (*Manifest, error) {
	if len(signed) > MaxManifest {
		return nil, fmt.Errorf("backup: manifest: %d bytes, at most %d", len(signed), MaxManifest)
	}
	n, err := note.Open(signed, note.VerifierList(verifier))
	if err != nil {
		var unknown *note.UnverifiedNoteError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("%w (it is signed by %s)", ErrSignature, signerNames(unknown.Note))
		}
		var invalid *note.InvalidSignatureError
		if errors.As(err, &invalid) {
			return nil, fmt.Errorf("%w: %v (the manifest was changed after it was signed)", ErrSignature, err)
		}
		return nil, fmt.Errorf("backup: manifest: %w", err)
	}
	if len(n.Sigs) != 1 || len(n.UnverifiedSigs) != 0 {
		return nil, fmt.Errorf("backup: manifest: %d signatures, want the backup key's only", len(n.Sigs)+len(n.UnverifiedSigs))
	}
	return decodeManifest([]byte(n.Text))
}

func signerNames(n *note.Note) string {
	var names []string
	for _, s := range n.UnverifiedSigs {
		names = append(names, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	if len(names) == 0 {
		return "nobody"
	}
	return strings.Join(names, ", ")
}

func decodeManifest(text []byte) (*Manifest, error) {
	body, ok := bytes.CutPrefix(text, []byte(manifestHeader))
	if !ok {
		return nil, fmt.Errorf("backup: manifest: the text does not start %q", strings.TrimSpace(manifestHeader))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("backup: manifest: %w", err)
	}
	if dec.More() {
		return nil, errors.New("backup: manifest: data after the object")
	}
	canon, err := m.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, text) {
		return nil, errors.New("backup: manifest: not in canonical form")
	}
	return &m, nil
}

// Package kms encrypts data in a Go service with keys from Rampart's key
// store, in-process, with envelope encryption.
//
//	src, _ := sdk.New(ctx)                               // the service's SVID
//	keys, _ := kms.New(src, kms.WithServer("rampart:8443"))
//	ct, _ := keys.Encrypt(ctx, "orders-pii", []byte(card), []byte("customer:42"))
//	pt, _ := keys.Decrypt(ctx, "orders-pii", ct, []byte("customer:42"))
//
// Encrypt asks the server for a data key (one call), then seals fields
// locally with AES-256-GCM under it; the data key is cached for a bounded
// time (WithDataKeyTTL) and number of uses (WithDataKeyUses), so most
// encryptions make no network call. Each ciphertext carries the data key
// wrapped by the named key's current version; Decrypt unwraps it with one
// server call and caches the result, so data written under an old version
// stays readable after a rotation and later fields under the same data key
// cost no call. The server decides, by its key-use policy, whether this
// service may do each (datakey to encrypt, decrypt to read), and audits
// every call.
//
// The ciphertext format is:
//
//	"rke\x01" | len(wrapped) (uint16, big endian) | wrapped data key | nonce (12) | AES-256-GCM ciphertext and tag
//
// sealed with the caller's associated data under a key derived (HKDF-SHA256)
// from the data key and everything before the nonce: a ciphertext moved to
// another record (other associated data), given another wrapped key,
// truncated or edited, does not decrypt.
//
// The other operations (Sign, Verify, MAC, VerifyMAC, and the server-side
// Encrypt and Decrypt of small values) call the server each time.
package kms

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/kms/envelope"
	"github.com/rampartsec/rampart/sdk"
)

// Defaults for the data key cache.
const (
	DefaultDataKeyTTL  = 5 * time.Minute
	DefaultDataKeyUses = 1 << 24 // far below GCM's 2^32 random-nonce limit
	maxDecryptCache    = 4096
	maxResponse        = 4 << 20
)

var magic = []byte("rke\x01")

// ErrDecrypt is returned for a ciphertext that does not open: damaged,
// truncated, or other associated data.
var ErrDecrypt = errors.New("kms: ciphertext does not decrypt (damaged, truncated, or other associated data)")

// ErrMalformed is returned for input that is not an envelope ciphertext.
var ErrMalformed = errors.New("kms: not a Rampart envelope ciphertext")

// Error is an error answer from the server.
type Error struct {
	Status int
	Detail string
}

func (e *Error) Error() string { return fmt.Sprintf("kms: server answered %d: %s", e.Status, e.Detail) }

// Option configures a Client.
type Option func(*Client)

// WithServer sets the server address (default RAMPART_SERVER).
func WithServer(addr string) Option {
	return func(c *Client) { c.base = "https://" + trimScheme(addr) }
}

// WithDataKeyTTL bounds how long a data key is used for encryption and kept
// for decryption.
func WithDataKeyTTL(d time.Duration) Option { return func(c *Client) { c.ttl = d } }

// WithDataKeyUses bounds how many encryptions one data key does.
func WithDataKeyUses(n int64) Option { return func(c *Client) { c.maxUses = n } }

// WithHTTPClient replaces the HTTP client (its transport must present the
// service's SVID and verify the server's).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithClock sets the time source of the cache (for tests).
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// Client uses the key store. It is safe for concurrent use.
type Client struct {
	http    *http.Client
	base    string
	ttl     time.Duration
	maxUses int64
	now     func() time.Time

	mu    sync.Mutex                          // guards fetch and replacing enc
	enc   atomic.Pointer[map[string]*dataKey] // key name -> current data key; immutable maps
	fetch map[string]*sync.Mutex              // one fetch at a time per key
	decMu sync.RWMutex
	dec   map[string]*dataKey // wrapped key -> its data key
	calls atomic.Int64
}

type dataKey struct {
	aead    cipher.AEAD // random nonces, prepended
	prefix  []byte      // magic | len | wrapped
	expires time.Time
	uses    atomic.Int64
}

func trimScheme(s string) string {
	return strings.TrimSuffix(strings.TrimPrefix(s, "https://"), "/")
}

// New returns a Client that authenticates to the server with src's SVID
// and accepts only the server's SVID (spiffe://TD/rampart/server).
func New(src *sdk.Source, opts ...Option) (*Client, error) {
	c := &Client{ttl: DefaultDataKeyTTL, maxUses: DefaultDataKeyUses, now: time.Now,
		fetch: map[string]*sync.Mutex{}, dec: map[string]*dataKey{}}
	c.enc.Store(&map[string]*dataKey{})
	if s := os.Getenv("RAMPART_SERVER"); s != "" {
		c.base = "https://" + trimScheme(s)
	}
	for _, o := range opts {
		o(c)
	}
	if c.base == "" {
		return nil, errors.New("kms: no server address: use WithServer or set RAMPART_SERVER")
	}
	if c.http == nil {
		if src == nil {
			return nil, errors.New("kms: a source (the service's SVID) is required")
		}
		server := spiffeid.RequireFromSegments(src.ID().TrustDomain(), "rampart", "server")
		c.http = src.HTTPClient(server)
	}
	if c.ttl <= 0 || c.maxUses <= 0 {
		return nil, errors.New("kms: data key TTL and uses must be positive")
	}
	return c, nil
}

// Calls reports how many calls the client made to the server, for
// metrics and tests.
func (c *Client) Calls() int64 { return c.calls.Load() }

// call posts a key operation.
func (c *Client) call(ctx context.Context, key, op string, req, resp any) error {
	c.calls.Add(1)
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/kms/keys/"+url.PathEscape(key)+"/"+op, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("kms: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	res, err := c.http.Do(hr)
	if err != nil {
		return fmt.Errorf("kms: %s %s: %w", op, key, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("kms: %s %s: %w", op, key, err)
	}
	if res.StatusCode != http.StatusOK {
		var p struct {
			Detail string `json:"detail"`
		}
		json.Unmarshal(b, &p)
		if p.Detail == "" {
			p.Detail = http.StatusText(res.StatusCode)
		}
		return &Error{Status: res.StatusCode, Detail: p.Detail}
	}
	if err := json.Unmarshal(b, resp); err != nil {
		return fmt.Errorf("kms: %s %s: bad answer: %w", op, key, err)
	}
	return nil
}

type request struct {
	Plaintext  []byte `json:"plaintext,omitempty"`
	Ciphertext []byte `json:"ciphertext,omitempty"`
	AAD        []byte `json:"aad,omitempty"`
	Message    []byte `json:"message,omitempty"`
	Signature  []byte `json:"signature,omitempty"`
	MAC        []byte `json:"mac,omitempty"`
}

type response struct {
	Version    int    `json:"version"`
	Plaintext  []byte `json:"plaintext"`
	Ciphertext []byte `json:"ciphertext"`
	Signature  []byte `json:"signature"`
	MAC        []byte `json:"mac"`
	Valid      *bool  `json:"valid"`
}

// envelopeInfo labels the derivation of the sealing key: the data key and
// the header bytes before the body.
const envelopeInfo = "rampart sdk/kms envelope v1"

// newDataKey prepares a data key for sealing. The AES key is derived with
// HKDF-SHA256 from the data key and the header (magic, length, wrapped
// key), so a body under another header does not open; deriving once per
// data key keeps the header out of every message's associated data.
func newDataKey(plaintext, wrapped []byte, expires time.Time) (*dataKey, error) {
	if len(plaintext) != 32 || len(wrapped) == 0 || len(wrapped) > 0xffff {
		return nil, errors.New("kms: the server sent a malformed data key")
	}
	prefix := make([]byte, 0, len(magic)+2+len(wrapped))
	prefix = append(prefix, magic...)
	prefix = binary.BigEndian.AppendUint16(prefix, uint16(len(wrapped)))
	prefix = append(prefix, wrapped...)
	k, err := hkdf.Key(sha256.New, plaintext, nil, envelopeInfo+string(prefix), 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	clear(k)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, err
	}
	return &dataKey{aead: aead, prefix: prefix, expires: expires}, nil
}

// usable takes one use of dk if it has not expired or run out.
func (c *Client) usable(dk *dataKey, now time.Time) bool {
	return dk != nil && now.Before(dk.expires) && dk.uses.Add(1) <= c.maxUses
}

// current returns a data key for key that may do one more encryption,
// fetching a new one (one call, others waiting) when needed. The common
// case reads an immutable map without locking.
func (c *Client) current(ctx context.Context, key string) (*dataKey, error) {
	now := c.now()
	if dk := (*c.enc.Load())[key]; c.usable(dk, now) {
		return dk, nil
	}
	c.mu.Lock()
	f := c.fetch[key]
	if f == nil {
		f = &sync.Mutex{}
		c.fetch[key] = f
	}
	c.mu.Unlock()
	f.Lock()
	defer f.Unlock()
	if dk := (*c.enc.Load())[key]; c.usable(dk, now) {
		return dk, nil // fetched while we waited
	}
	var resp response
	if err := c.call(ctx, key, "datakey", request{}, &resp); err != nil {
		return nil, err
	}
	dk, err := newDataKey(resp.Plaintext, resp.Ciphertext, now.Add(c.ttl))
	clear(resp.Plaintext)
	if err != nil {
		return nil, err
	}
	dk.uses.Store(1)
	c.mu.Lock()
	old := *c.enc.Load()
	next := make(map[string]*dataKey, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[key] = dk
	c.enc.Store(&next)
	c.mu.Unlock()
	c.remember(string(resp.Ciphertext), dk)
	return dk, nil
}

// remember caches a data key for decryption.
func (c *Client) remember(wrapped string, dk *dataKey) {
	c.decMu.Lock()
	defer c.decMu.Unlock()
	if len(c.dec) >= maxDecryptCache {
		now := c.now()
		for k, v := range c.dec {
			if !now.Before(v.expires) {
				delete(c.dec, k)
			}
		}
		if len(c.dec) >= maxDecryptCache {
			clear(c.dec)
		}
	}
	c.dec[wrapped] = dk
}

// Encrypt seals plaintext under a data key of key, bound to aad (a record
// ID, say: the ciphertext then opens only with the same aad).
func (c *Client) Encrypt(ctx context.Context, key string, plaintext, aad []byte) ([]byte, error) {
	return c.AppendEncrypt(ctx, nil, key, plaintext, aad)
}

// AppendEncrypt is Encrypt appending to dst (reuse a buffer to encrypt
// without allocating).
func (c *Client) AppendEncrypt(ctx context.Context, dst []byte, key string, plaintext, aad []byte) ([]byte, error) {
	dk, err := c.current(ctx, key)
	if err != nil {
		return nil, err
	}
	need := len(dk.prefix) + len(plaintext) + dk.aead.Overhead()
	if cap(dst)-len(dst) < need {
		dst = append(make([]byte, 0, len(dst)+need), dst...)
	}
	return dk.aead.Seal(append(dst, dk.prefix...), nil, plaintext, aad), nil
}

// Split parses an envelope ciphertext into its wrapped data key and body.
func Split(ciphertext []byte) (wrapped, body []byte, err error) {
	if len(ciphertext) < len(magic)+2 || !bytes.Equal(ciphertext[:len(magic)], magic) {
		return nil, nil, ErrMalformed
	}
	n := int(binary.BigEndian.Uint16(ciphertext[len(magic):]))
	if n == 0 || len(ciphertext) < len(magic)+2+n {
		return nil, nil, ErrMalformed
	}
	return ciphertext[len(magic)+2 : len(magic)+2+n], ciphertext[len(magic)+2+n:], nil
}

// KeyOf returns the key name and version an envelope ciphertext's data key
// is wrapped with.
func KeyOf(ciphertext []byte) (name string, version int, err error) {
	wrapped, _, err := Split(ciphertext)
	if err != nil {
		return "", 0, err
	}
	h, _, _, err := envelope.Parse(wrapped)
	if err != nil || h.Kind != envelope.KindDataKey {
		return "", 0, ErrMalformed
	}
	return h.Name, h.Version, nil
}

// Decrypt opens a ciphertext made by Encrypt with the same key and aad.
// The data key is unwrapped by the server once and then cached.
func (c *Client) Decrypt(ctx context.Context, key string, ciphertext, aad []byte) ([]byte, error) {
	return c.AppendDecrypt(ctx, nil, key, ciphertext, aad)
}

// AppendDecrypt is Decrypt appending the plaintext to dst.
func (c *Client) AppendDecrypt(ctx context.Context, dst []byte, key string, ciphertext, aad []byte) ([]byte, error) {
	wrapped, body, err := Split(ciphertext)
	if err != nil {
		return nil, err
	}
	name, _, err := KeyOf(ciphertext)
	if err != nil {
		return nil, err
	}
	if name != key {
		return nil, fmt.Errorf("kms: the ciphertext is for key %q, not %q", name, key)
	}
	now := c.now()
	c.decMu.RLock()
	dk := c.dec[string(wrapped)] // no allocation: the compiler looks up without copying
	c.decMu.RUnlock()
	if dk == nil || !now.Before(dk.expires) {
		var resp response
		if err := c.call(ctx, key, "decrypt", request{Ciphertext: wrapped}, &resp); err != nil {
			return nil, err
		}
		dk, err = newDataKey(resp.Plaintext, wrapped, now.Add(c.ttl))
		clear(resp.Plaintext)
		if err != nil {
			return nil, err
		}
		c.remember(string(wrapped), dk)
	}
	pt, err := dk.aead.Open(dst, nil, body, aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// Reencrypt decrypts a ciphertext and encrypts it again under the current
// data key (after a rotation: the latest version).
func (c *Client) Reencrypt(ctx context.Context, key string, ciphertext, aad []byte) ([]byte, error) {
	pt, err := c.Decrypt(ctx, key, ciphertext, aad)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	return c.Encrypt(ctx, key, pt, aad)
}

// Flush forgets every cached data key (after a rotation, to use the new
// version at once).
func (c *Client) Flush() {
	c.mu.Lock()
	c.enc.Store(&map[string]*dataKey{})
	c.mu.Unlock()
	c.decMu.Lock()
	clear(c.dec)
	c.decMu.Unlock()
}

// ServerEncrypt encrypts a small value on the server (no data key).
func (c *Client) ServerEncrypt(ctx context.Context, key string, plaintext, aad []byte) ([]byte, error) {
	var resp response
	err := c.call(ctx, key, "encrypt", request{Plaintext: plaintext, AAD: aad}, &resp)
	return resp.Ciphertext, err
}

// ServerDecrypt decrypts a value made by ServerEncrypt.
func (c *Client) ServerDecrypt(ctx context.Context, key string, ciphertext, aad []byte) ([]byte, error) {
	var resp response
	err := c.call(ctx, key, "decrypt", request{Ciphertext: ciphertext, AAD: aad}, &resp)
	return resp.Plaintext, err
}

// Rewrap moves a ServerEncrypt ciphertext to the key's latest version on
// the server, without the plaintext leaving it.
func (c *Client) Rewrap(ctx context.Context, key string, ciphertext, aad []byte) ([]byte, error) {
	var resp response
	err := c.call(ctx, key, "rewrap", request{Ciphertext: ciphertext, AAD: aad}, &resp)
	return resp.Ciphertext, err
}

// Sign signs message with a signing key (ecdsa-p256 or ed25519).
func (c *Client) Sign(ctx context.Context, key string, message []byte) ([]byte, error) {
	var resp response
	err := c.call(ctx, key, "sign", request{Message: message}, &resp)
	return resp.Signature, err
}

// Verify checks a signature made by Sign.
func (c *Client) Verify(ctx context.Context, key string, message, signature []byte) (bool, error) {
	var resp response
	if err := c.call(ctx, key, "verify", request{Message: message, Signature: signature}, &resp); err != nil {
		return false, err
	}
	return resp.Valid != nil && *resp.Valid, nil
}

// MAC computes an HMAC-SHA256 tag with an hmac-sha256 key.
func (c *Client) MAC(ctx context.Context, key string, message []byte) ([]byte, error) {
	var resp response
	err := c.call(ctx, key, "hmac", request{Message: message}, &resp)
	return resp.MAC, err
}

// VerifyMAC checks a tag made by MAC.
func (c *Client) VerifyMAC(ctx context.Context, key string, message, tag []byte) (bool, error) {
	var resp response
	if err := c.call(ctx, key, "verify-hmac", request{Message: message, MAC: tag}, &resp); err != nil {
		return false, err
	}
	return resp.Valid != nil && *resp.Valid, nil
}

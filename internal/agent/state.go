package agent

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/atomicfile"
)

// held is an SVID the agent holds, with its key and when to renew it.
type held struct {
	ID       spiffeid.ID
	Chain    []*x509.Certificate
	Key      crypto.Signer
	RenewAt  time.Time
	Entry    api.Entry // the entry as it was when this SVID was minted
	Received time.Time
}

func (h *held) serial() string { return h.Chain[0].SerialNumber.Text(16) }

// renewTime picks when to renew an SVID received at received: between 40%
// and 50% of its remaining life, at a random point, so renewals spread out.
func renewTime(received, notAfter time.Time) time.Time {
	life := notAfter.Sub(received)
	var b [8]byte
	rand.Read(b[:])
	u := float64(binary.BigEndian.Uint64(b[:])>>11) / (1 << 53) // [0,1)
	return received.Add(time.Duration(float64(life) * (0.5 - 0.1*u)))
}

// cacheFile is the on-disk form of the agent's state, but for its
// "entries" (cachedEntry, api.Entry's names), which are written and read
// one at a time (entrySet.writeEntries, decodeStreamed).
type cacheFile struct {
	Version     int                    `json:"version"`
	TrustDomain string                 `json:"trust_domain"`
	Agent       *cachedSVID            `json:"agent,omitempty"`
	Bundle      [][]byte               `json:"bundle"`
	JWTBundle   json.RawMessage        `json:"jwt_bundle,omitempty"`
	Revision    int64                  `json:"revision"`
	Revoked     []string               `json:"revoked"`
	Workloads   map[string]*cachedSVID `json:"workloads"`
}

// cacheState is the state to write: taken under a.mu
// (cacheStateLocked), written outside it (writeCache). The entries are
// never modified once built, so they are not copied.
type cacheState struct {
	head    cacheFile
	entries *entrySet
	gen     uint64
}

type cachedSVID struct {
	SpiffeID string    `json:"spiffe_id"`
	Chain    [][]byte  `json:"chain"`
	Key      []byte    `json:"key"` // PKCS#8 DER
	RenewAt  time.Time `json:"renew_at"`
	Received time.Time `json:"received"`
	Entry    api.Entry `json:"entry"`
}

const cacheVersion = 1

func toCached(h *held) (*cachedSVID, error) {
	if h == nil {
		return nil, nil
	}
	key, err := x509.MarshalPKCS8PrivateKey(h.Key)
	if err != nil {
		return nil, err
	}
	c := &cachedSVID{SpiffeID: h.ID.String(), Key: key, RenewAt: h.RenewAt, Received: h.Received, Entry: h.Entry}
	for _, cert := range h.Chain {
		c.Chain = append(c.Chain, cert.Raw)
	}
	return c, nil
}

func fromCached(c *cachedSVID) (*held, error) {
	if c == nil {
		return nil, nil
	}
	id, err := spiffeid.FromString(c.SpiffeID)
	if err != nil {
		return nil, err
	}
	chain, err := parseChain(c.Chain)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(c.Key)
	if err != nil {
		return nil, err
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T", k)
	}
	return &held{ID: id, Chain: chain, Key: key, RenewAt: c.RenewAt, Received: c.Received, Entry: c.Entry}, nil
}

func parseChain(ders [][]byte) ([]*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// saveCache writes the state; the caller holds a.mu.
func (a *Agent) saveCache() error {
	st, err := a.cacheStateLocked()
	if err != nil {
		return err
	}
	return a.writeCache(st)
}

// saveSoon asks the saver to write the state; the caller may hold a.mu.
func (a *Agent) saveSoon() {
	select {
	case a.save <- struct{}{}:
	default: // a write is already due; it will take this state too
	}
}

// saver writes the cache when asked (saveSoon), outside a.mu, and once
// more when ctx ends.
func (a *Agent) saver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			select {
			case <-a.save:
			default:
				return
			}
		case <-a.save:
		}
		a.mu.Lock()
		st, err := a.cacheStateLocked()
		a.mu.Unlock()
		if err == nil {
			err = a.writeCache(st)
		}
		if err != nil {
			a.log.Warn("saving the cache failed", "err", err)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// writeCache writes st unless a newer state is on disk already. The
// entries are streamed to the file, not encoded in memory first (with
// 10,000 entries the cache is 2 MB, and was encoded on every sync).
func (a *Agent) writeCache(st *cacheState) error {
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	if st.gen <= a.genOnDisk {
		return nil
	}
	head, err := json.Marshal(st.head)
	if err != nil {
		return fmt.Errorf("agent: cache: %w", err)
	}
	err = atomicfile.WriteFunc(a.cachePath(), 0o600, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 64<<10)
		bw.Write(head[:len(head)-1]) // without its closing brace
		bw.WriteString(`,"entries":`)
		if err := st.entries.writeEntries(bw); err != nil {
			return err
		}
		bw.WriteString("}\n")
		return bw.Flush()
	})
	if err != nil {
		return fmt.Errorf("agent: cache: %w", err)
	}
	a.genOnDisk = st.gen
	return nil
}

// cacheStateLocked takes the state to write and numbers it; the caller
// holds a.mu.
func (a *Agent) cacheStateLocked() (*cacheState, error) {
	cf := cacheFile{Version: cacheVersion, TrustDomain: a.td.Name(), JWTBundle: a.jwtBundle, Revision: a.revision,
		Workloads: map[string]*cachedSVID{}}
	var err error
	if cf.Agent, err = toCached(a.svid); err != nil {
		return nil, fmt.Errorf("agent: cache: %w", err)
	}
	for _, c := range a.bundle {
		cf.Bundle = append(cf.Bundle, c.Raw)
	}
	for s := range a.revoked {
		cf.Revoked = append(cf.Revoked, s)
	}
	slices.Sort(cf.Revoked)
	for id, h := range a.workloads {
		if cf.Workloads[id], err = toCached(h); err != nil {
			return nil, fmt.Errorf("agent: cache: %w", err)
		}
	}
	a.gen++
	return &cacheState{head: cf, entries: a.entries, gen: a.gen}, nil
}

// loadCache restores the state from disk; a missing cache is not an
// error. The entries are read one at a time, into the same form a sync
// builds (an older cache, with every field of each entry, loads the same).
func (a *Agent) loadCache() error {
	f, err := os.Open(a.cachePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("agent: cache: %w", err)
	}
	defer f.Close()
	var cf cacheFile
	eb := entryBuilder{unservable: a.warnUnservable}
	if err := decodeStreamed(bufio.NewReader(f), &cf, &eb); err != nil {
		return fmt.Errorf("agent: cache %s is damaged (%v); delete it and re-attest", a.cachePath(), err)
	}
	if cf.Version != cacheVersion {
		return fmt.Errorf("agent: cache %s has version %d, want %d", a.cachePath(), cf.Version, cacheVersion)
	}
	td, err := spiffeid.TrustDomainFromString(cf.TrustDomain)
	if err != nil {
		return fmt.Errorf("agent: cache: %w", err)
	}
	if !a.td.IsZero() && td != a.td {
		return fmt.Errorf("agent: cache is for trust domain %q, not %q", td.Name(), a.td.Name())
	}
	a.td = td
	if a.svid, err = fromCached(cf.Agent); err != nil {
		return fmt.Errorf("agent: cache: agent svid: %w", err)
	}
	if a.bundle, err = parseChain(cf.Bundle); err != nil {
		return fmt.Errorf("agent: cache: bundle: %w", err)
	}
	a.jwtBundle, a.revision, a.entries = cf.JWTBundle, cf.Revision, eb.done()
	a.revoked = map[string]struct{}{}
	for _, s := range cf.Revoked {
		a.revoked[s] = struct{}{}
	}
	a.workloads = map[string]*held{}
	for id, c := range cf.Workloads {
		h, err := fromCached(c)
		if err != nil {
			return fmt.Errorf("agent: cache: workload %s: %w", id, err)
		}
		a.workloads[id] = h
	}
	return nil
}

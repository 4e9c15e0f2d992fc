package authz

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/identity/ids"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/policy"
	"github.com/rampartsec/rampart/internal/safedir"
)

// Syncer keeps a Guard's policy and a revocation list in step with the
// server, authenticating with the workload's own SVID.
type Syncer struct {
	ServerAddr  string
	SVID        x509svid.Source
	Bundles     x509bundle.Source
	Guard       *Guard
	Revocations *mtls.Revocations
	// Quarantine receives the quarantined identities (nil: ignored).
	Quarantine *mtls.Quarantine
	// CacheDir keeps the last policy for a start while the server is
	// down ("" disables the cache). It must be a directory only this
	// process's user (and root) can change (package safedir): Start
	// refuses any other, since whoever controls it could put a policy of
	// their own there.
	CacheDir string
	Log      *slog.Logger

	client   *api.Client
	revision int64
	version  string
}

const cacheFile = "policy-cache.json"

// Start loads the cache, tries one sync (briefly: a server that is down
// must not keep the proxy from serving with its cached policy), then keeps
// syncing in the background until ctx is done.
func (s *Syncer) Start(ctx context.Context) error {
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if s.CacheDir != "" {
		// A policy cached there is enforced after a restart while the
		// server is down: whoever else can write the directory could
		// forge one that lets them in (issue 26).
		dir, err := safedir.Make(s.CacheDir, "the policy cache directory", os.Geteuid(), 0o700)
		if err != nil {
			return fmt.Errorf("authz: %w", err)
		}
		s.CacheDir = dir
	}
	sv, err := s.SVID.GetX509SVID()
	if err != nil {
		return fmt.Errorf("authz: %w", err)
	}
	s.client = ServerClient(s.ServerAddr, sv.ID.TrustDomain(), s.SVID, s.Bundles)
	if s.CacheDir != "" {
		if b, err := os.ReadFile(filepath.Join(s.CacheDir, cacheFile)); err == nil {
			var resp api.WorkloadSyncResponse
			if err := json.Unmarshal(b, &resp); err == nil {
				s.apply(resp, false)
				s.revision = -1 // cached: ask for the current state at once
			}
		}
	}
	first, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = s.syncOnce(first, false)
	cancel()
	if err != nil {
		s.Log.Warn("first policy sync failed; using the cached policy if any (none means deny all) and retrying", "err", err)
	}
	go s.loop(ctx)
	return nil
}

// ServerClient returns an API client for the server at addr that presents
// the workload's SVID and accepts only the server's own identity.
func ServerClient(addr string, td spiffeid.TrustDomain, svid x509svid.Source, bundles x509bundle.Source) *api.Client {
	cfg := tlsconfig.MTLSClientConfig(svid, bundles, ids.AuthorizeServer(td))
	cfg.MinVersion = tls.VersionTLS13
	return &api.Client{BaseURL: "https://" + addr, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}}
}

func (s *Syncer) loop(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		if err := s.syncOnce(ctx, true); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.Log.Warn("policy sync failed; retrying", "err", err, "in", backoff.String())
			sleep(ctx, jitter(backoff))
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
	}
}

func (s *Syncer) syncOnce(ctx context.Context, wait bool) error {
	path := "/v1/workload/sync"
	if wait && s.revision > 0 {
		path += "?revision=" + strconv.FormatInt(s.revision, 10) + "&wait=25"
	}
	var resp api.WorkloadSyncResponse
	if err := s.client.Do(ctx, http.MethodGet, path, nil, &resp); err != nil {
		return err
	}
	s.apply(resp, true)
	return nil
}

// apply installs a sync answer. A policy that does not compile (it should
// not: the server compiled it on upload) leaves the previous one in force.
func (s *Syncer) apply(resp api.WorkloadSyncResponse, save bool) {
	s.revision = resp.Revision
	if s.Revocations != nil {
		s.Revocations.Set(resp.Revoked)
	}
	if s.Quarantine != nil && !slices.Equal(s.Quarantine.Patterns(), resp.Quarantined) {
		// Set ends the open connections of whoever it newly holds.
		s.Quarantine.Set(resp.Quarantined)
		s.Log.Warn("quarantine changed", "quarantined", resp.Quarantined)
	}
	if err := s.Guard.Tokens().Update(resp.TokenIssuer, resp.TokenKeys, resp.RevokedTokens); err != nil {
		s.Log.Error("token keys from the server are malformed; user tokens will be refused", "err", err)
	}
	switch {
	case resp.Policy == nil:
		if s.version != "" {
			s.Log.Info("policy removed; denying all calls", "service", resp.Service)
		}
		s.Guard.SetPolicy(nil)
		s.version = ""
	case resp.Policy.Version != s.version:
		p, err := policy.Parse([]byte(resp.Policy.Source))
		var eng *policy.Engine
		if err == nil {
			eng, err = policy.Compile(p)
		}
		if err != nil {
			s.Log.Error("policy from the server does not compile; keeping the previous one", "version", resp.Policy.Version, "err", err)
			return
		}
		s.Guard.SetPolicy(eng)
		s.version = resp.Policy.Version
		s.Log.Info("policy installed", "service", resp.Service, "seq", resp.Policy.Seq, "version", resp.Policy.Version)
	}
	if save && s.CacheDir != "" {
		if b, err := json.Marshal(resp); err == nil {
			if err := os.MkdirAll(s.CacheDir, 0o700); err == nil {
				atomicfile.Write(filepath.Join(s.CacheDir, cacheFile), b, 0o600)
			}
		}
	}
}

func jitter(d time.Duration) time.Duration {
	var b [2]byte
	rand.Read(b[:])
	return time.Duration(float64(d) * (0.8 + 0.4*float64(binary.BigEndian.Uint16(b[:]))/65536))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/inventory/verdict"
	"github.com/rampartsec/rampart/internal/scan/gobin"
	"github.com/rampartsec/rampart/internal/workload"
)

// The inventory: every executable that asks for an identity is hashed
// once (cached by device, inode, modification time and size, read through
// the handle pinned at accept), read for its Go build info, and reported to
// the server in batches with the services it ran as. The server answers
// with the scan gates, the exceptions and a verdict for each executable;
// the agent applies the gate (package inventory) before it hands out an
// SVID. The gates and verdicts are kept in DATA/scan-state.json, so a
// restart without the server keeps refusing what it refused.

// Default inventory timing.
const (
	defaultInventoryInterval = 10 * time.Second
	verdictWait              = 10 * time.Second // a gated caller waits at most this for a verdict
	maxExeCache              = 4096
)

type exeKey struct {
	dev, ino    uint64
	mtime, size int64
}

type exeInfo struct {
	sha    string
	binary api.InventoryBinary
}

// scanState is what the agent keeps of the server's answers.
type scanState struct {
	Generation int64                         `json:"generation"`
	Policy     verdict.Policy                `json:"policy"`
	Verdicts   map[string]*api.BinaryVerdict `json:"verdicts"`
	Known      bool                          `json:"known"` // the server answered at least once
	_          struct{}                      `json:"-"`
}

type inventoryReporter struct {
	client   *api.Client
	log      *slog.Logger
	now      func() time.Time
	interval time.Duration
	file     string
	onChange func() // the gate's inputs changed: re-check open streams

	flushMu sync.Mutex // one report at a time

	mu        sync.Mutex
	cache     map[exeKey]*exeInfo
	pending   map[string]api.InventoryBinary       // reported at the next flush
	reported  map[string]bool                      // the server has this host's report of it
	sightings map[[2]string]*api.InventorySighting // (service, sha)
	sent      map[[2]string]time.Time              // last seen as last sent
	state     scanState
	wake      chan struct{}
}

func newInventoryReporter(c *api.Client, log *slog.Logger, now func() time.Time, interval time.Duration, file string, onChange func()) *inventoryReporter {
	if interval <= 0 {
		interval = defaultInventoryInterval
	}
	r := &inventoryReporter{client: c, log: log, now: now, interval: interval, file: file, onChange: onChange,
		cache: map[exeKey]*exeInfo{}, pending: map[string]api.InventoryBinary{}, reported: map[string]bool{},
		sightings: map[[2]string]*api.InventorySighting{}, sent: map[[2]string]time.Time{},
		state: scanState{Verdicts: map[string]*api.BinaryVerdict{}}, wake: make(chan struct{}, 1)}
	if b, err := os.ReadFile(file); err == nil {
		var st scanState
		if err := json.Unmarshal(b, &st); err != nil {
			log.Warn("ignoring a damaged scan state file; waiting for the server", "file", file, "err", err)
		} else {
			if st.Verdicts == nil {
				st.Verdicts = map[string]*api.BinaryVerdict{}
			}
			r.state = st
		}
	}
	return r
}

var _ workload.Inspector = (*inventoryReporter)(nil)

// identify hashes and reads an executable once per file version.
func (r *inventoryReporter) identify(exe workload.Executable) (*exeInfo, error) {
	k := exeKey{exe.Dev, exe.Ino, exe.Mtime, exe.Size}
	r.mu.Lock()
	if info, ok := r.cache[k]; ok {
		r.mu.Unlock()
		return info, nil
	}
	r.mu.Unlock()
	f, err := exe.Open()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("agent: hash %s: %w", exe.Path, err)
	}
	sha := hex.EncodeToString(h.Sum(nil))
	b := api.InventoryBinary{SHA256: sha, Size: n}
	if g, err := gobin.Read(f); err == nil {
		b = verdict.FromGobin(sha, n, g)
	} else if !errors.Is(err, gobin.ErrNotGo) {
		r.log.Warn("reading a Go binary's build info failed", "exe", exe.Path, "err", err)
	}
	info := &exeInfo{sha: sha, binary: b}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= maxExeCache {
		clear(r.cache)
	}
	r.cache[k] = info
	if !r.reported[sha] {
		r.pending[sha] = b
	}
	return info, nil
}

// Inspect implements workload.Inspector.
func (r *inventoryReporter) Inspect(ctx context.Context, exe workload.Executable, ids []workload.Identity) ([]workload.Identity, []workload.Refusal) {
	info, err := r.identify(exe)
	if err != nil {
		// Not even hashed: the inventory misses it, and a gated entry is
		// refused below for want of a verdict.
		r.log.Warn("the caller's executable could not be hashed", "pid", exe.PID, "exe", exe.Path, "err", err)
		info = &exeInfo{}
	}
	now := r.now().UTC()
	r.mu.Lock()
	if info.sha != "" {
		for _, id := range ids {
			k := [2]string{id.SpiffeID.String(), info.sha}
			if s, ok := r.sightings[k]; ok {
				s.LastSeen, s.Exe = now, exe.Path
			} else {
				r.sightings[k] = &api.InventorySighting{SHA256: info.sha, Service: k[0], Exe: exe.Path, FirstSeen: now, LastSeen: now}
			}
		}
	}
	if len(r.sightings) > 4*maxExeCache {
		clear(r.sightings)
		clear(r.sent)
	}
	gated := !r.state.Known
	for _, id := range ids {
		if d := r.state.Policy.Decide(id.EntryID, id.SpiffeID.String(), info.sha, &api.BinaryVerdict{Known: true}, now); d.Gated {
			gated = true
		}
	}
	_, haveVerdict := r.state.Verdicts[info.sha]
	r.mu.Unlock()
	if gated && !haveVerdict && info.sha != "" {
		// A gated caller with a new binary waits for the server's verdict.
		wctx, cancel := context.WithTimeout(ctx, verdictWait)
		if err := r.flush(wctx); err != nil {
			r.log.Warn("no vulnerability verdict from the server", "exe", exe.Path, "sha256", info.sha, "err", err)
		}
		cancel()
	} else {
		r.kick()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var allowed []workload.Identity
	var refused []workload.Refusal
	for _, id := range ids {
		d := r.state.Policy.Decide(id.EntryID, id.SpiffeID.String(), info.sha, r.state.Verdicts[info.sha], now)
		if !r.state.Known && !d.Gated {
			// The server never answered: whether a gate applies is unknown.
			// Refusing would take every identity down with the server, so
			// the first start serves, and says so once the gate is known.
			allowed = append(allowed, id)
			continue
		}
		if d.Reason != "" {
			refused = append(refused, workload.Refusal{EntryID: id.EntryID, SpiffeID: id.SpiffeID.String(), Reason: d.Reason, DryRun: !d.Refuse})
		}
		if !d.Refuse {
			allowed = append(allowed, id)
		}
	}
	return allowed, refused
}

func (r *inventoryReporter) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run reports every interval (or when kicked) until ctx is done.
func (r *inventoryReporter) run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		if err := r.flush(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("inventory report failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
			// Batch: a burst of new callers is one report.
			select {
			case <-ctx.Done():
				return
			case <-time.After(r.interval / 10):
			}
		}
	}
}

// flush sends what is pending and applies the answer.
func (r *inventoryReporter) flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	rep := api.InventoryReport{Generation: r.state.Generation}
	for _, b := range r.pending {
		rep.Binaries = append(rep.Binaries, b)
		if len(rep.Binaries) >= verdict.MaxBinaries {
			break
		}
	}
	for k, s := range r.sightings {
		// Last-seen is refreshed once per interval, not per call.
		if last, ok := r.sent[k]; !ok || s.LastSeen.Sub(last) >= r.interval {
			rep.Sightings = append(rep.Sightings, *s)
			if len(rep.Sightings) >= verdict.MaxSightings {
				break
			}
		}
	}
	seen := map[string]bool{}
	for _, info := range r.cache {
		if !seen[info.sha] && r.reported[info.sha] {
			seen[info.sha] = true
			rep.Want = append(rep.Want, info.sha)
		}
	}
	if len(rep.Want) > verdict.MaxWant {
		rep.Want = rep.Want[:verdict.MaxWant]
	}
	r.mu.Unlock()
	var resp api.InventoryResponse
	if err := r.client.Do(ctx, http.MethodPost, "/v1/agent/inventory", rep, &resp); err != nil {
		return err
	}
	r.mu.Lock()
	for _, b := range rep.Binaries {
		r.reported[b.SHA256] = true
		delete(r.pending, b.SHA256)
	}
	for _, s := range rep.Sightings {
		r.sent[[2]string{s.Service, s.SHA256}] = s.LastSeen
	}
	changed := !r.state.Known || resp.Generation != r.state.Generation
	if changed {
		r.state.Verdicts = map[string]*api.BinaryVerdict{}
	}
	for i := range resp.Verdicts {
		v := resp.Verdicts[i]
		r.state.Verdicts[v.SHA256] = &v
	}
	r.state.Generation, r.state.Known = resp.Generation, true
	r.state.Policy = verdict.Policy{Gates: resp.Gates, Exceptions: resp.Exceptions}
	b, err := json.Marshal(r.state)
	r.mu.Unlock()
	if err == nil {
		if err := atomicfile.Write(r.file, b, 0o600); err != nil {
			r.log.Warn("cannot save the scan state", "err", err)
		}
	}
	if changed && r.onChange != nil {
		r.onChange()
	}
	return nil
}

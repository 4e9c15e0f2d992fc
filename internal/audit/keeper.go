package audit

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartsec/rampart/internal/atomicfile"
)

// DefaultCheckpointInterval is how often a Keeper publishes a signed
// checkpoint when the log has grown.
const DefaultCheckpointInterval = 10 * time.Second

// Keeper is the upkeep of a log by the process that writes it: every
// Interval it records the refusals still being counted, signs a
// checkpoint if the log grew, seals the segments that checkpoint
// completed and copies them (and every checkpoint) to the archive,
// recording the seals and copies in the log itself. Close makes a final
// checkpoint the log's last write.
type Keeper struct {
	Log    *Log
	Signer note.Signer
	// Archiver copies sealed segments and checkpoints off the machine
	// (nil: none); ArchiveName is how the entries name the archive.
	Archiver    *Archiver
	ArchiveName string
	// Refusals still being counted are recorded before each checkpoint,
	// so the last checkpoint covers them (nil: none).
	Refusals *Refusals
	// AfterCheckpoint saves state derived from the log with each
	// checkpoint of size entries (the intake's stream table); nil: none.
	AfterCheckpoint func(size int64) error
	// Record appends entries (and logs them): the seal and archive
	// entries, and the refusals.
	Record func(ctx context.Context, es ...*Entry)
	// Actor and Source name the writer in the keeper's own entries.
	Actor  Actor
	Source string

	Interval time.Duration // default DefaultCheckpointInterval
	Now      func() time.Time
	Logger   *slog.Logger
	Registry prometheus.Registerer

	once    sync.Once
	metrics struct{ sealed, archived, archiveFailures prometheus.Counter }
	// mu guards the failure flags: Run and Close both retain.
	mu                          sync.Mutex
	sealFailing, archiveFailing bool
}

func (k *Keeper) init() {
	k.once.Do(func() {
		if k.Interval <= 0 {
			k.Interval = DefaultCheckpointInterval
		}
		if k.Now == nil {
			k.Now = time.Now
		}
		if k.Logger == nil {
			k.Logger = slog.New(slog.DiscardHandler)
		}
		c := func(name, help string) prometheus.Counter {
			return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		}
		m := &k.metrics
		m.sealed = c("rampart_server_audit_segments_sealed_total", "Audit log segments sealed (compressed, checked, removed from the open log).")
		m.archived = c("rampart_server_audit_segments_archived_total", "Sealed audit segments copied to the archive (S3).")
		m.archiveFailures = c("rampart_server_audit_archive_failures_total", "Failed copies to the audit archive (retried every 10 s).")
		if k.Registry != nil {
			k.Registry.MustRegister(m.sealed, m.archived, m.archiveFailures)
		}
	})
}

// Run publishes a signed checkpoint whenever the log grew, until ctx ends;
// then a last one.
func (k *Keeper) Run(ctx context.Context) error {
	k.init()
	t := time.NewTicker(k.Interval)
	defer t.Stop()
	var last int64 = -1
	for {
		select {
		case <-ctx.Done():
			// A last checkpoint, seal and archive copy on the way out,
			// bounded so an unreachable archive does not hold up a stop.
			k.checkpoint(&last, 15*time.Second)
			return nil
		case <-t.C:
			k.checkpoint(&last, 5*time.Minute)
		}
	}
}

// Close publishes a last checkpoint and closes the log. The final
// checkpoint is the last write: it covers the seal and archive records,
// and the log takes nothing after it. Copied to the archive, it vouches
// for the log from off the machine while its writer is down.
func (k *Keeper) Close() error {
	k.init()
	last := int64(-1)
	k.checkpoint(&last, 15*time.Second) // may seal and archive, and record both
	_, err := k.Log.CloseWithCheckpoint(k.Signer)
	k.archiveLastCheckpoint()
	return err
}

func (k *Keeper) checkpoint(last *int64, archiveTimeout time.Duration) {
	// Refusals still being counted go in before the checkpoint covers
	// the log (at shutdown, this is the last chance).
	if k.Refusals != nil {
		if es := k.Refusals.Flush(true); len(es) > 0 {
			k.Record(context.Background(), es...)
		}
	}
	if n := k.Log.Size(); n != *last {
		if _, err := k.Log.Checkpoint(k.Signer); err != nil {
			k.Logger.Error("audit checkpoint failed", "err", err)
			return
		}
		if k.AfterCheckpoint != nil {
			if err := k.AfterCheckpoint(n); err != nil {
				k.Logger.Error("audit stream table snapshot failed", "err", err)
			}
		}
		*last = n
	}
	k.retain(archiveTimeout)
}

// retain seals the segments the last checkpoint completed and copies them
// to the archive, recording both in the log itself.
func (k *Keeper) retain(archiveTimeout time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ctx := context.Background()
	n, err := k.Log.Seal()
	if n > 0 {
		k.metrics.sealed.Add(float64(n))
		k.Record(ctx, k.entry("audit.seal", OutcomeSuccess, "", "segments", strconv.Itoa(n), "entries_sealed", strconv.FormatInt(k.Log.Sealed(), 10)))
	}
	if err != nil {
		k.Logger.Error("AUDIT SEAL FAILED (run rampart audit verify)", "err", err)
		if !k.sealFailing {
			k.Record(ctx, k.entry("audit.seal", OutcomeFailure, err.Error()))
		}
	}
	k.sealFailing = err != nil
	// What is sealed is archived even when the next seal fails: the
	// archiver copies each checkpoint as it comes, and none may be skipped.
	if k.Archiver == nil {
		return
	}
	actx, cancel := context.WithTimeout(ctx, archiveTimeout)
	defer cancel()
	res, err := k.Archiver.Sync(actx)
	for _, key := range res.Segments {
		k.metrics.archived.Inc()
		k.Record(ctx, k.entry("audit.archive", OutcomeSuccess, "", "object", key, "archive", k.ArchiveName))
	}
	if err != nil {
		k.metrics.archiveFailures.Inc()
		k.Logger.Error("audit archive copy failed; retrying in 10 s", "err", err)
		if !k.archiveFailing {
			k.Record(ctx, k.entry("audit.archive", OutcomeFailure, err.Error(), "archive", k.ArchiveName))
		}
		k.archiveFailing = true
		return
	}
	k.archiveFailing = false
}

// archiveLastCheckpoint copies the final checkpoint to the archive when
// the last copy succeeded (so that only the checkpoint is new there: a
// segment copied now could no longer be recorded in the closed log).
func (k *Keeper) archiveLastCheckpoint() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.Archiver == nil || k.archiveFailing {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := k.Archiver.Sync(ctx); err != nil {
		k.Logger.Error("copying the final audit checkpoint to the archive failed; it is copied at the next start", "err", err)
	}
}

// entry is an entry for an action the keeper took by itself.
func (k *Keeper) entry(action, outcome, reason string, kv ...string) *Entry {
	e := &Entry{V: SchemaVersion, Time: k.Now(), Action: action, Outcome: outcome, Reason: reason,
		Source: k.Source, Actor: k.Actor, Target: "audit", Details: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		e.Details[kv[i]] = kv[i+1]
	}
	return e
}

// LoadSigner loads the checkpoint signing key from keyPath or, on first
// start, creates it (0600) for origin and writes its verifier key to
// pubPath (0644), for "rampart audit verify" and for witnesses.
func LoadSigner(keyPath, pubPath, origin string) (note.Signer, error) {
	skey, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		s, v, err := note.GenerateKey(rand.Reader, origin)
		if err != nil {
			return nil, fmt.Errorf("audit: checkpoint key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
			return nil, fmt.Errorf("audit: checkpoint key: %w", err)
		}
		if err := atomicfile.Write(keyPath, []byte(s+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("audit: checkpoint key: %w", err)
		}
		if err := atomicfile.Write(pubPath, []byte(v+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("audit: checkpoint key: %w", err)
		}
		skey = []byte(s)
	} else if err != nil {
		return nil, fmt.Errorf("audit: checkpoint key: %w", err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint key %s: %w", keyPath, err)
	}
	return signer, nil
}

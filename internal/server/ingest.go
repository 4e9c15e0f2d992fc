package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/atomicfile"
	"github.com/rampartsec/rampart/internal/audit"
)

// Limits on one ingested batch.
const (
	maxIngestBody    = 16 << 20
	maxIngestEntries = 10000
)

// ingest tracks, per spool stream, who owns it and the highest sequence
// number the audit log holds, so retried batches are not stored twice and
// lost entries show. It is rebuilt at start from a snapshot (written with
// every checkpoint) plus the entries appended after it.
type ingest struct {
	mu      sync.Mutex
	streams map[string]*streamState
}

type streamState struct {
	mu    sync.Mutex // held while a batch of the stream is appended
	Owner string     `json:"owner"` // the SPIFFE ID that ships it
	Last  uint64     `json:"last"`
}

type ingestSnapshot struct {
	Size    int64                   `json:"size"`
	Streams map[string]*streamState `json:"streams"`
}

func ingestStatePath(dataDir string) string { return filepath.Join(dataDir, "audit-streams.json") }

// loadIngest rebuilds the stream table.
func loadIngest(dataDir string, l *audit.Log) (*ingest, error) {
	in := &ingest{streams: map[string]*streamState{}}
	var from int64
	b, err := os.ReadFile(ingestStatePath(dataDir))
	switch {
	case err == nil:
		var snap ingestSnapshot
		if err := json.Unmarshal(b, &snap); err != nil {
			return nil, fmt.Errorf("server: %s: %w", ingestStatePath(dataDir), err)
		}
		if snap.Size <= l.Size() {
			from = snap.Size
			for id, st := range snap.Streams {
				in.streams[id] = &streamState{Owner: st.Owner, Last: st.Last}
			}
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("server: %w", err)
	}
	for i, n := from, l.Size(); i < n; i++ {
		data, err := l.Entry(i)
		if err != nil {
			return nil, fmt.Errorf("server: audit entry %d: %w", i, err)
		}
		e, err := audit.ParseEntry(data)
		if err != nil {
			continue // audit verify reports it; ingestion keeps going
		}
		if e.Stream == "" {
			continue
		}
		st := in.streams[e.Stream]
		if st == nil {
			st = &streamState{Owner: e.Source}
			in.streams[e.Stream] = st
		}
		st.Last = max(st.Last, e.Seq)
	}
	return in, nil
}

// snapshot saves the stream table; size must be read before the table.
func (in *ingest) snapshot(dataDir string, size int64) error {
	in.mu.Lock()
	snap := ingestSnapshot{Size: size, Streams: make(map[string]*streamState, len(in.streams))}
	states := make(map[string]*streamState, len(in.streams))
	for id, st := range in.streams {
		states[id] = st
	}
	in.mu.Unlock()
	for id, st := range states {
		st.mu.Lock()
		snap.Streams[id] = &streamState{Owner: st.Owner, Last: st.Last}
		st.mu.Unlock()
	}
	b, err := json.Marshal(snap)
	if err != nil {
		return err
	}
	return atomicfile.Write(ingestStatePath(dataDir), b, 0o600)
}

// handleIngest appends a batch from an agent's or proxy's spool. The answer
// comes only after the entries are durable.
func (s *Server) handleIngest(w http.ResponseWriter, r *http.Request) {
	caller := agentFrom(r).String()
	var req api.AuditIngestRequest
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxIngestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeProblem(w, http.StatusBadRequest, "audit batch: "+err.Error())
		return
	}
	if len(req.Entries) == 0 || len(req.Entries) > maxIngestEntries {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("audit batch: %d entries, want 1 to %d", len(req.Entries), maxIngestEntries))
		return
	}
	es := make([]*audit.Entry, len(req.Entries))
	for i, raw := range req.Entries {
		e, err := audit.ParseEntry(raw)
		if err == nil && e.Stream == "" {
			err = errors.New("no stream")
		}
		if err == nil && i > 0 && (e.Stream != es[0].Stream || e.Seq != es[i-1].Seq+1) {
			err = fmt.Errorf("stream %s seq %d does not follow stream %s seq %d", e.Stream, e.Seq, es[i-1].Stream, es[i-1].Seq)
		}
		if err == nil && e.Seq == 0 {
			err = errors.New("seq 0; sequence numbers start at 1")
		}
		if err != nil {
			s.metrics.ingestRefused.Inc()
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("audit batch: entry %d: %v", i, err))
			return
		}
		// The server names who shipped the entry; a workload cannot
		// claim to be another source.
		e.Source = caller
		es[i] = e
	}
	stream := es[0].Stream
	s.ingest.mu.Lock()
	st := s.ingest.streams[stream]
	if st == nil {
		st = &streamState{Owner: caller}
		s.ingest.streams[stream] = st
	}
	s.ingest.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.Owner != caller {
		s.metrics.ingestRefused.Inc()
		s.refused(r, "audit.ingest", "stream "+stream+" belongs to "+st.Owner, "stream", stream)
		writeProblem(w, http.StatusForbidden, "audit stream "+stream+" belongs to another identity")
		return
	}
	fresh := es
	for len(fresh) > 0 && fresh[0].Seq <= st.Last {
		fresh = fresh[1:]
	}
	s.metrics.ingestDuplicates.Add(float64(len(es) - len(fresh)))
	if len(fresh) > 0 {
		s.metrics.ingested.Add(float64(len(fresh)))
		if first := fresh[0].Seq; first != st.Last+1 {
			// Entries between were lost on the way (a spool deleted or
			// damaged by hand). Say so in the log itself.
			gap := &audit.Entry{V: audit.SchemaVersion, Time: s.now(), Actor: audit.Actor{SpiffeID: caller},
				Action: "audit.ingest.gap", Target: stream, Outcome: audit.OutcomeFailure, Source: "server",
				Reason:  fmt.Sprintf("entries %d to %d of the stream never arrived", st.Last+1, first-1),
				Details: map[string]string{"stream": stream, "from": strconv.FormatUint(st.Last+1, 10), "to": strconv.FormatUint(first-1, 10)}}
			s.log.Warn("audit stream gap", "stream", stream, "source", caller, "from", st.Last+1, "to", first-1)
			fresh = append([]*audit.Entry{gap}, fresh...)
		}
		if err := s.appendAudit(r.Context(), fresh...); err != nil {
			writeProblem(w, http.StatusServiceUnavailable, "the audit log cannot be written; retry later")
			return
		}
		st.Last = fresh[len(fresh)-1].Seq
	}
	writeJSON(w, http.StatusOK, api.AuditIngestResponse{Stream: stream, AckedThrough: st.Last})
}

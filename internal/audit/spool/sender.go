package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit/auditentry"
)

// APISender delivers batches to the server's POST /v1/audit/ingest, over a
// client that authenticates with the workload's or agent's SVID, in the
// version 2 wire format (see BatchContentType); a server of the previous
// version refuses it (400 or 415) and gets the batch again in version 1.
type APISender struct {
	Client  *api.Client
	Timeout time.Duration // per batch; default 30 s
	// JSON sends version 1 only (for tests and old servers).
	JSON bool
}

var errUnsupported = errors.New("version 1 only")

// Send implements Sender.
func (a APISender) Send(ctx context.Context, batch []*auditentry.Entry) (uint64, error) {
	if a.Timeout <= 0 {
		a.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	raw := make([][]byte, len(batch))
	for i, e := range batch {
		b, err := e.Marshal()
		if err != nil {
			return 0, err
		}
		raw[i] = b
	}
	var resp api.AuditIngestResponse
	err := errUnsupported
	if !a.JSON {
		err = a.Client.DoRaw(ctx, http.MethodPost, "/v1/audit/ingest", BatchContentType, EncodeBatch(raw), &resp)
	}
	var p *api.Problem
	if errors.Is(err, errUnsupported) || errors.As(err, &p) && (p.Status == http.StatusUnsupportedMediaType || p.Status == http.StatusBadRequest) {
		req := api.AuditIngestRequest{Entries: make([]json.RawMessage, len(raw))}
		for i, b := range raw {
			req.Entries[i] = b
		}
		err = a.Client.Do(ctx, http.MethodPost, "/v1/audit/ingest", req, &resp)
	}
	if err != nil {
		return 0, err
	}
	if resp.Stream != batch[0].Stream {
		return 0, fmt.Errorf("server acknowledged stream %q, sent %q", resp.Stream, batch[0].Stream)
	}
	return resp.AckedThrough, nil
}

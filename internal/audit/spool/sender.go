package spool

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
)

// APISender delivers batches to the server's POST /v1/audit/ingest, over a
// client that authenticates with the workload's or agent's SVID.
type APISender struct {
	Client  *api.Client
	Timeout time.Duration // per batch; default 30 s
}

// Send implements Sender.
func (a APISender) Send(ctx context.Context, batch []*audit.Entry) (uint64, error) {
	if a.Timeout <= 0 {
		a.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	req := api.AuditIngestRequest{Entries: make([]json.RawMessage, len(batch))}
	for i, e := range batch {
		b, err := e.Marshal()
		if err != nil {
			return 0, err
		}
		req.Entries[i] = b
	}
	var resp api.AuditIngestResponse
	if err := a.Client.Do(ctx, http.MethodPost, "/v1/audit/ingest", req, &resp); err != nil {
		return 0, err
	}
	if resp.Stream != batch[0].Stream {
		return 0, fmt.Errorf("server acknowledged stream %q, sent %q", resp.Stream, batch[0].Stream)
	}
	return resp.AckedThrough, nil
}

package witness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"
)

// Paths the server serves (public: sizes and hashes only).
const (
	PathCheckpoint  = "/v1/audit/checkpoint"
	PathConsistency = "/v1/audit/consistency"
)

// ConsistencyResponse is the JSON answer of PathConsistency?old=N&new=M.
type ConsistencyResponse struct {
	Old   int64    `json:"old"`
	New   int64    `json:"new"`
	Proof [][]byte `json:"proof"` // hashes, base64
}

// HTTPSource reads a rampart server's public audit state.
type HTTPSource struct {
	BaseURL string // https://host:port
	Client  *http.Client
}

func (s *HTTPSource) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.BaseURL+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
	}
	return b, nil
}

// Checkpoint implements Source.
func (s *HTTPSource) Checkpoint(ctx context.Context) ([]byte, error) {
	return s.get(ctx, PathCheckpoint)
}

// Consistency implements Source.
func (s *HTTPSource) Consistency(ctx context.Context, older, newer int64) (tlog.TreeProof, error) {
	b, err := s.get(ctx, PathConsistency+"?"+url.Values{"old": {strconv.FormatInt(older, 10)}, "new": {strconv.FormatInt(newer, 10)}}.Encode())
	if err != nil {
		return nil, err
	}
	var r ConsistencyResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("consistency proof: %w", err)
	}
	if r.Old != older || r.New != newer {
		return nil, fmt.Errorf("consistency proof for %d -> %d, asked %d -> %d", r.Old, r.New, older, newer)
	}
	proof := make(tlog.TreeProof, len(r.Proof))
	for i, h := range r.Proof {
		if len(h) != tlog.HashSize {
			return nil, fmt.Errorf("consistency proof: hash %d has %d bytes", i, len(h))
		}
		copy(proof[i][:], h)
	}
	return proof, nil
}

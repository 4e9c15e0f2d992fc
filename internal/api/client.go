package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// maxResponse bounds what the client reads from a server.
const maxResponse = 64 << 20

// Client calls the server's API.
type Client struct {
	BaseURL    string       // https://host:port
	HTTP       *http.Client // with the TLS configuration for this server
	AdminToken string       // sent as a bearer token when not empty
	// Authorize, if set, authenticates each request instead (an
	// operator's DPoP-bound token and its proof: package signin).
	Authorize func(*http.Request) error
}

// Do sends in (if not nil) as JSON and decodes the answer into out (if not
// nil). Error answers become *Problem.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	if in == nil {
		return c.DoRaw(ctx, method, path, "", nil, out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return c.DoRaw(ctx, method, path, "application/json", b, out)
}

// DoRaw sends body as is, with contentType (for documents such as YAML
// policies), and decodes a JSON answer into out (if not nil).
func (c *Client) DoRaw(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	return c.do(ctx, method, path, contentType, body, func(r io.Reader) error {
		data, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("api: %s %s: read answer: %w", method, path, err)
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("api: %s %s: decode answer: %w", method, path, err)
		}
		return nil
	})
}

// Stream sends a request without a body and hands a successful answer to
// read as it arrives (bounded like every answer), for answers too large
// to hold whole: an agent's sync with thousands of entries. Error answers
// become *Problem.
func (c *Client) Stream(ctx context.Context, method, path string, read func(io.Reader) error) error {
	return c.do(ctx, method, path, "", nil, func(r io.Reader) error {
		if err := read(r); err != nil {
			return fmt.Errorf("api: %s %s: decode answer: %w", method, path, err)
		}
		return nil
	})
}

func (c *Client) do(ctx context.Context, method, path, contentType string, body []byte, read func(io.Reader) error) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	switch {
	case c.Authorize != nil:
		if err := c.Authorize(req); err != nil {
			return err
		}
	case c.AdminToken != "":
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	answer := io.LimitReader(resp.Body, maxResponse)
	if resp.StatusCode >= 300 {
		data, err := io.ReadAll(answer)
		if err != nil {
			return fmt.Errorf("api: %s %s: read answer: %w", method, path, err)
		}
		p := &Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/problem+json" {
			_ = json.Unmarshal(data, p)
		}
		return p
	}
	return read(answer)
}

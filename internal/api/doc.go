// Package api holds the JSON types of the server's HTTP API (/v1/...) and a
// small client for them, shared by the server, the agent and the CLI so the
// three cannot drift apart.
//
// Errors travel as RFC 9457 problem details (application/problem+json). The
// client turns them into *Problem, which callers can inspect with errors.As.
//
// Durations are integer seconds in fields named *_seconds; times are RFC 3339;
// certificates are base64 DER (encoding/json's []byte), leaf first.
package api

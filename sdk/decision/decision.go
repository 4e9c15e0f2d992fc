// Package decision describes the authorisation decisions Rampart's guard
// makes, for the code that watches them: an Event per request (or raw TCP
// connection) that the guard admitted or refused, handed to a Sink.
//
// The guard is the same code in rampart proxy and in the SDK's Middleware,
// so an Event means the same in both. A Sink is called on the request's
// path, after the decision and before the handler runs or the refusal is
// written: it must not block (hand the event to a channel or a buffer, as
// the SDK's audit spool does), and it must not keep ctx beyond the call.
//
//	src, err := sdk.New(ctx, sdk.WithDecisionSink(decision.SinkFunc(func(ctx context.Context, e decision.Event) {
//		if !e.Allowed {
//			denied.Add(1) // a metric, say
//		}
//	})))
//
// The package imports only the standard library, so that it costs nothing
// to name in a program that uses only part of the SDK.
package decision

import (
	"context"
	"time"
)

// Event is one authorisation decision.
type Event struct {
	Time    time.Time     // when the decision started
	Caller  string        // the verified SPIFFE ID of the caller; "" without a client certificate
	Target  string        // the protected service's SPIFFE ID
	Method  string        // HTTP method; "" for a raw TCP connection
	Path    string        // the normalised path the policy judged; "" for TCP
	Rule    string        // the deciding rule; "" for a default deny or a refusal before the policy
	Version string        // the policy's version; "" when there is no policy
	Allowed bool          // the effective outcome: the request reached the service
	DryRun  bool          // a dry-run policy would have denied (Allowed is then true)
	Reason  string        // why, when refused before the policy (no certificate, revoked, ambiguous path...)
	User    string        // the end user ("sub") of a verified access token; "" without one
	Act     string        // the service that exchanged the user's token, if any
	Remote  string        // the caller's network address
	Latency time.Duration // the time spent deciding
}

// Sink receives every decision. Decision must not block the request that
// made it (see the package documentation).
type Sink interface {
	Decision(ctx context.Context, e Event)
}

// SinkFunc is a function used as a Sink.
type SinkFunc func(ctx context.Context, e Event)

// Decision calls f(ctx, e).
func (f SinkFunc) Decision(ctx context.Context, e Event) { f(ctx, e) }

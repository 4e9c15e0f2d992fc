// Package upstream bounds how a data-plane client uses one upstream: how
// many connections it keeps open, how fast it opens new ones, and how long
// a request may wait for one. The proxy's HTTP/1.1 pool, the net/http
// Transports of its HTTP/2 and gRPC paths, and the SDK's HTTP client all
// take their bounds from Limits.
//
// Why: when an upstream slows down, a client that opens a connection for
// every request that finds none idle turns a slowdown into a collapse: the
// handshakes (a full mTLS handshake costs both ends signatures and chain
// verifications) take the CPU the requests needed, latency rises further,
// and more requests find no idle connection. With Limits:
//
//   - at most MaxConns connections are open (in use, idle or being dialled);
//   - a request that finds none free waits, first in first out, and takes
//     the next connection that any request gives back (never a new one for
//     itself); at most MaxPending wait, each at most QueueTimeout, after
//     which it is refused at once with an OverloadError (the proxy answers
//     503 with Retry-After, the SDK returns the error);
//   - at most MaxDialing connections are being opened at once, and at most
//     DialRate a second after a burst of MaxDialing (a token bucket);
//   - idle connections are kept for IdleTimeout, at most MaxIdle of them,
//     and the pool keeps MinIdle of them open (warm) once it has been used.
//
// Overload is then answered in at most QueueTimeout, the connections in use
// keep serving at the upstream's capacity, and throughput returns as soon as
// the load drops: nothing has piled up that must drain first.
package upstream

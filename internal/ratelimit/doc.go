// Package ratelimit bounds how fast an endpoint is called: one token
// bucket per source address and one for everyone, so that neither a single
// address nor a crowd of them can make an endpoint do unbounded work
// (hash passwords, sign tokens, write to the store).
//
// A Limiter is built from a Config (rules, a clock, a name) and asked
// Allow(source) for each request; Wrap does that for an http.Handler and
// answers a refusal with 429 Too Many Requests and Retry-After. The source
// is the connection's peer address (Source): IPv4 addresses one by one,
// IPv6 addresses by /64, since one host commonly holds a whole /64. Headers
// such as X-Forwarded-For are never read: a caller sets them freely.
//
// A per-source refusal does not spend the global bucket, so one busy
// address cannot use up everyone's share. The per-source buckets are kept
// in a bounded table (MaxSources); when it is full, idle buckets go first
// and then an arbitrary eighth, which only makes the limiter more lenient
// for the sources dropped, never stricter for anyone.
//
// Refusals are counted, not logged one by one: every Interval (and on
// Flush) OnRefusals receives one Refusal per source and scope with its
// count, which the caller records in the audit log. Metrics counts every
// decision by limiter and result for Prometheus.
//
// Everything takes its time from Config.Now, so tests drive the buckets
// with a fake clock.
package ratelimit

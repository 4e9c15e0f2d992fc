// Package admission decides, as each request arrives, whether a listener
// takes it on or refuses it at once (the proxy answers 503 with
// Retry-After), so that a CPU-starved proxy spends its CPU on requests that
// can still be answered in time rather than on requests whose callers will
// have given up.
//
// Why: past capacity, when the CPU itself is the bottleneck, no queue the
// proxy owns fills up (the upstream pools stay within their bounds): the
// requests wait instead for the CPU, in the kernel's accept queue, in the
// TLS handshakes and in Go's run queue. Each is then served late, after its
// caller's timeout, and the work is wasted; goodput falls towards zero
// while the proxy is at 100% CPU (issue 27's overload curve).
//
// What is measured: the delay a goroutine waits, runnable, before it runs
// (runtime/metrics "/sched/latencies:seconds", read by Sampler every
// 10 ms, and how late the sampler's own timer wakes it, toobusy-style). A request's goroutine waits that long at each of its
// wake-ups (reading the request, the upstream's answer), so it is the
// proxy's queueing delay, whatever queue the work piles up in.
//
// The decision (Controller), CoDel's (RFC 8289) as adapted for requests by
// folly's Codel and Facebook's "Fail at Scale": bursts are let through;
// only a delay above Target for a whole Interval means overload. Then a
// fraction of the arriving requests is refused, raised while the delay
// stays above Target and lowered once it falls below, spread evenly over
// the arrivals (error diffusion: no randomness, the fraction is exact). It
// ends once the fraction is back to zero. A listener with few requests in
// flight never sheds for delay (CoDel's "do not drop the last packet"): a
// machine busy with other work is not this proxy's overload.
//
// Besides, Limiter caps the requests one listener has in flight: beyond
// it, a request is refused at once, whatever the delay.
package admission

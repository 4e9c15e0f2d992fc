package upstream

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Limits bound the connections to one upstream. The zero value of a field
// means its default (DefaultLimits), except DialRate and MinIdle, whose
// zero is meaningful (no rate bound; no warm connections).
type Limits struct {
	// MaxConns bounds the open connections: in use, idle, being dialled.
	MaxConns int
	// MaxIdle bounds the idle connections kept for reuse.
	MaxIdle int
	// MinIdle connections are kept open and warm once the upstream has
	// been used (replaced when they age out), so a burst after a quiet
	// period finds them ready.
	MinIdle int
	// MaxPending bounds the requests waiting for a connection; beyond it a
	// request is refused at once.
	MaxPending int
	// QueueTimeout is how long a request waits for a connection before it
	// is refused.
	QueueTimeout time.Duration
	// QueueTarget is how long a request waits instead once the queue has
	// stood (not once emptied) for QueueInterval: a queue that does not
	// drain is overload, not a burst, and its waiters would mostly be
	// answered after their callers gave up (controlled delay, as in
	// "Fail at Scale", ACM Queue 2015). Only the proxy's HTTP/1.1 pool,
	// which sees its connections, applies it; Bound (net/http's Transport:
	// HTTP/2, gRPC, the SDK) applies QueueTimeout alone.
	QueueTarget time.Duration
	// QueueInterval is how long the queue must stand before QueueTarget
	// applies.
	QueueInterval time.Duration
	// MaxDialing bounds the connections being opened at once.
	MaxDialing int
	// DialRate bounds new connections a second, after a burst of
	// MaxDialing; 0: no bound but MaxDialing.
	DialRate float64
	// IdleTimeout closes connections idle this long.
	IdleTimeout time.Duration
}

// Defaults. MaxConns and MaxPending are Envoy's circuit-breaker defaults;
// an HTTP/1.1 connection carries one request at a time, so MaxConns is
// also the bound on requests in flight to one upstream.
const (
	DefaultMaxConns     = 1024
	DefaultMaxIdle      = 256
	DefaultMaxPending   = 1024
	DefaultQueueTimeout = time.Second
	// DefaultQueueTarget and DefaultQueueInterval are CoDel's, as the
	// admission controller's (internal/admission).
	DefaultQueueTarget   = 10 * time.Millisecond
	DefaultQueueInterval = 100 * time.Millisecond
	DefaultMaxDialing    = 16
	DefaultIdleTimeout   = 90 * time.Second
	// DefaultDialRate is the rate of new mTLS connections to a peer proxy
	// (resumed handshakes cost about a tenth of a full one; see mtls).
	DefaultDialRate = 64
	// DefaultMinIdle warm connections to a peer proxy.
	DefaultMinIdle = 2
)

// DefaultLimits are the limits towards a peer proxy (mTLS). Towards the
// local app, the proxy drops the dial rate and the warm connections:
// loopback TCP connections are cheap, and an app that closes every
// connection after its answer must not be held to DialRate requests a
// second.
func DefaultLimits() Limits {
	return Limits{MaxConns: DefaultMaxConns, MaxIdle: DefaultMaxIdle, MinIdle: DefaultMinIdle, MaxPending: DefaultMaxPending,
		QueueTimeout: DefaultQueueTimeout, QueueTarget: DefaultQueueTarget, QueueInterval: DefaultQueueInterval, MaxDialing: DefaultMaxDialing, DialRate: DefaultDialRate, IdleTimeout: DefaultIdleTimeout}
}

// WithDefaults fills the zero fields that have a default.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.MaxConns == 0 {
		l.MaxConns = d.MaxConns
	}
	if l.MaxIdle == 0 {
		l.MaxIdle = min(d.MaxIdle, l.MaxConns)
	}
	if l.MaxPending == 0 {
		l.MaxPending = d.MaxPending
	}
	if l.QueueTimeout == 0 {
		l.QueueTimeout = d.QueueTimeout
	}
	if l.QueueTarget == 0 {
		l.QueueTarget = min(d.QueueTarget, l.QueueTimeout)
	}
	if l.QueueInterval == 0 {
		l.QueueInterval = d.QueueInterval
	}
	if l.MaxDialing == 0 {
		l.MaxDialing = min(d.MaxDialing, l.MaxConns)
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	return l
}

// Validate reports the first limit that cannot work, naming it as the
// proxy's flag does.
func (l Limits) Validate() error {
	switch {
	case l.MaxConns < 1:
		return fmt.Errorf("upstream: max-conns %d: must be at least 1", l.MaxConns)
	case l.MaxIdle < 0 || l.MaxIdle > l.MaxConns:
		return fmt.Errorf("upstream: max-idle %d: must be between 0 and max-conns (%d)", l.MaxIdle, l.MaxConns)
	case l.MinIdle < 0 || l.MinIdle > l.MaxIdle:
		return fmt.Errorf("upstream: min-idle %d: must be between 0 and max-idle (%d)", l.MinIdle, l.MaxIdle)
	case l.MaxPending < 0:
		return fmt.Errorf("upstream: max-pending %d: must not be negative", l.MaxPending)
	case l.QueueTimeout <= 0:
		return fmt.Errorf("upstream: queue-timeout %v: must be positive", l.QueueTimeout)
	case l.QueueTarget <= 0 || l.QueueTarget > l.QueueTimeout:
		return fmt.Errorf("upstream: queue-target %v: must be positive and at most queue-timeout (%v)", l.QueueTarget, l.QueueTimeout)
	case l.QueueInterval <= 0:
		return fmt.Errorf("upstream: queue-interval %v: must be positive", l.QueueInterval)
	case l.MaxDialing < 1 || l.MaxDialing > l.MaxConns:
		return fmt.Errorf("upstream: max-dialing %d: must be between 1 and max-conns (%d)", l.MaxDialing, l.MaxConns)
	case l.DialRate < 0 || math.IsNaN(l.DialRate) || math.IsInf(l.DialRate, 0):
		return fmt.Errorf("upstream: dial-rate %v: must be a non-negative number (0: no bound)", l.DialRate)
	case l.IdleTimeout <= 0:
		return fmt.Errorf("upstream: idle-timeout %v: must be positive", l.IdleTimeout)
	}
	return nil
}

// RetryAfter is the Retry-After a refusal for overload suggests: the queue
// timeout rounded up to whole seconds (RFC 9110 10.2.3), at least 1.
func (l Limits) RetryAfter() string {
	return strconv.Itoa(max(1, int(math.Ceil(l.QueueTimeout.Seconds()))))
}

// ErrOverloaded is matched (errors.Is) by every OverloadError.
var ErrOverloaded = errors.New("upstream: overloaded")

// Overload reasons.
const (
	ReasonQueueFull    = "queue_full"    // MaxPending requests were already waiting
	ReasonQueueTimeout = "queue_timeout" // no connection came free within QueueTimeout
)

// OverloadError is a request refused because the upstream's connections
// were all busy: nothing was sent, so it may be retried after RetryAfter.
type OverloadError struct {
	Reason   string // ReasonQueueFull or ReasonQueueTimeout
	MaxConns int
	Waited   time.Duration
}

func (e *OverloadError) Error() string {
	if e.Reason == ReasonQueueFull {
		return fmt.Sprintf("upstream: all %d connections busy and the queue full", e.MaxConns)
	}
	return fmt.Sprintf("upstream: all %d connections busy for %v", e.MaxConns, e.Waited)
}

// Is makes errors.Is(err, ErrOverloaded) hold.
func (e *OverloadError) Is(target error) bool { return target == ErrOverloaded }

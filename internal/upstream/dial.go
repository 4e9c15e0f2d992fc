package upstream

import (
	"context"
	"net"
	"sync"
	"time"
)

// Bucket is a token bucket: burst tokens at most, refilled at rate a
// second. A zero rate never runs out. It is not safe for concurrent use;
// the caller holds its lock.
type Bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

// NewBucket returns a full bucket.
func NewBucket(rate float64, burst int, now time.Time) *Bucket {
	return &Bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// Take takes a token if there is one; if not, it says how long until there
// will be.
func (b *Bucket) Take(now time.Time) (ok bool, wait time.Duration) {
	if b.rate == 0 {
		return true, 0
	}
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// DialFunc opens a connection (net.Dialer.DialContext's shape).
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Gate bounds the dials of a client that dials on demand (a net/http
// Transport): at most MaxDialing at once and DialRate a second. A dial
// waits for its turn as long as its context allows.
type Gate struct {
	sem    chan struct{}
	onDial func(error)
	now    func() time.Time

	mu     sync.Mutex
	bucket *Bucket
}

// NewGate returns a gate for l (with defaults filled in). onDial, if set,
// is told of every dial's outcome; now may be nil (time.Now).
func NewGate(l Limits, now func() time.Time, onDial func(error)) *Gate {
	l = l.WithDefaults()
	if now == nil {
		now = time.Now
	}
	return &Gate{sem: make(chan struct{}, l.MaxDialing), onDial: onDial, now: now, bucket: NewBucket(l.DialRate, l.MaxDialing, now())}
}

// Dial wraps dial with the gate.
func (g *Gate) Dial(dial DialFunc) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		select {
		case g.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		defer func() { <-g.sem }()
		for {
			g.mu.Lock()
			ok, wait := g.bucket.Take(g.now())
			g.mu.Unlock()
			if ok {
				break
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		c, err := dial(ctx, network, addr)
		if g.onDial != nil {
			g.onDial(err)
		}
		return c, err
	}
}

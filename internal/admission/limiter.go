package admission

import "sync/atomic"

// Reason says why a request was refused.
type Reason string

const (
	// ReasonInFlight: the listener had its cap of requests in flight.
	ReasonInFlight Reason = "in_flight"
	// ReasonQueueDelay: the process is overloaded (Controller) and this
	// arrival fell in the fraction refused.
	ReasonQueueDelay Reason = "queue_delay"
)

// Gate admits one listener's requests: at most MaxInFlight at once, and
// those the process's Controller does not shed. A nil *Gate admits all.
type Gate struct {
	c           *Controller // shared; nil: no shedding for delay
	maxInFlight int64       // 0: no cap
	minInFlight int64       // at most this many in flight: never shed for delay
	inFlight    atomic.Int64
}

// NewGate returns a gate with a cap of maxInFlight requests (0: none) that
// sheds for c's delay once more than minInFlight are in flight.
func NewGate(c *Controller, maxInFlight, minInFlight int) *Gate {
	return &Gate{c: c, maxInFlight: int64(maxInFlight), minInFlight: int64(minInFlight)}
}

// Admit decides for a request arriving now. ok: it is admitted and the
// caller must call Done when it is over; else reason says why not.
func (g *Gate) Admit() (ok bool, reason Reason) {
	if g == nil {
		return true, ""
	}
	n := g.inFlight.Add(1)
	if g.maxInFlight > 0 && n > g.maxInFlight {
		g.inFlight.Add(-1)
		return false, ReasonInFlight
	}
	if n > g.minInFlight && g.c.Shed() {
		g.inFlight.Add(-1)
		return false, ReasonQueueDelay
	}
	return true, ""
}

// Done ends an admitted request.
func (g *Gate) Done() {
	if g != nil {
		g.inFlight.Add(-1)
	}
}

// InFlight is how many admitted requests are not done.
func (g *Gate) InFlight() int {
	if g == nil {
		return 0
	}
	return int(g.inFlight.Load())
}

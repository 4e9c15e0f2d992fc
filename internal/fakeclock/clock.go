// Package fakeclock is the one test clock of the project: a time that moves
// only when a test moves it, so rotation, expiry, lockout back-off and
// detection windows are tested without sleeping.
//
//	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
//	cfg.Now = clk.Now
//	clk.Add(time.Hour)
//
// It is safe for concurrent use. Production code never imports it: every
// component takes a Now func() time.Time in its configuration.
package fakeclock

import (
	"sync"
	"time"
)

// Clock is a settable time source.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a clock reading t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time; pass the method value as a Now function.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d (which may be negative).
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

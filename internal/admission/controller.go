package admission

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults, within CoDel's recommendations (target 5-10% of the interval,
// interval about a worst-case round trip).
const (
	DefaultTarget   = 10 * time.Millisecond
	DefaultInterval = 100 * time.Millisecond
	// DefaultMaxShed is the largest fraction of arrivals refused: some
	// requests always pass, so the delay they meet keeps being measured
	// and no caller is shut out entirely.
	DefaultMaxShed = 0.95
	// DefaultMinInFlight: a listener with this many requests in flight or
	// fewer never sheds for delay.
	DefaultMinInFlight = 16
)

// The shed fraction's steps, per observation (one every Sampler tick).
const (
	stepUpFar   = 0.10 // delay above twice the target
	stepUp      = 0.03 // delay above the target
	stepDown    = 0.05 // delay under half the target
	stepDownFew = 0.01 // delay between half the target and the target
	startShed   = 0.10 // on entering overload
	// standing: the fraction follows the least of this many recent
	// observations, the standing delay (CoDel's minimum), so a lone late
	// wake-up does not raise it; a low one lowers it at once.
	standing = 4
)

// Config configures a Controller. Zero fields take the defaults; a
// negative Target disables shedding for delay.
type Config struct {
	Target   time.Duration // the delay tolerated (DefaultTarget)
	Interval time.Duration // how long the delay must stay above Target to count as overload (DefaultInterval)
	MaxShed  float64       // the largest fraction refused, in (0, 1] (DefaultMaxShed)
	Now      func() time.Time
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.Target == 0 {
		c.Target = DefaultTarget
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.MaxShed == 0 {
		c.MaxShed = DefaultMaxShed
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate says which field is unusable.
func (c Config) Validate() error {
	switch {
	case c.Target > 0 && c.Interval <= 0:
		return errors.New("admission: the interval must be positive")
	case c.Target > 0 && c.Target >= c.Interval:
		return fmt.Errorf("admission: target %v must be below the interval %v (CoDel: about a tenth of it)", c.Target, c.Interval)
	case c.MaxShed < 0 || c.MaxShed > 1:
		return fmt.Errorf("admission: max shed %v is not a fraction in (0, 1]", c.MaxShed)
	}
	return nil
}

// Controller holds one process's overload state: fed the queueing delay by
// Observe, it tells each arriving request whether to shed it (Shed). It is
// shared by every listener of the process: the CPU is.
type Controller struct {
	cfg Config

	mu         sync.Mutex
	firstAbove time.Time // when the delay rose above the target; zero: it is not above
	overloaded bool
	shed       float64 // the fraction refused while overloaded
	last       time.Duration
	recent     [standing]time.Duration // ring of the last observations
	next       int

	permille atomic.Uint64 // shed*1000 while overloaded, else 0: read per request
	acc      atomic.Uint64 // error diffusion: the sum of permille over arrivals
}

// NewController returns a controller for cfg (see Config.WithDefaults).
func NewController(cfg Config) *Controller {
	return &Controller{cfg: cfg.WithDefaults()}
}

// Enabled reports whether the controller sheds for delay at all.
func (c *Controller) Enabled() bool { return c != nil && c.cfg.Target > 0 }

// Observe takes the queueing delay measured now. It enters overload once
// the delay has stayed above the target for an interval; while overloaded,
// it raises the shed fraction while the standing delay (the least of the
// last few observations) is above the target (faster above twice the
// target) and lowers it while below; overload ends when the fraction is
// back to zero.
func (c *Controller) Observe(delay time.Duration) {
	if !c.Enabled() {
		return
	}
	now := c.cfg.Now()
	t := c.cfg.Target
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = delay
	c.recent[c.next] = delay
	c.next = (c.next + 1) % standing
	if delay > t {
		if c.firstAbove.IsZero() {
			c.firstAbove = now
		}
	} else {
		c.firstAbove = time.Time{}
	}
	if !c.overloaded {
		if c.firstAbove.IsZero() || now.Sub(c.firstAbove) < c.cfg.Interval {
			return
		}
		c.overloaded = true
		c.shed = max(c.shed, startShed)
	} else {
		delay = c.standingDelay()
		switch {
		case delay > 2*t:
			c.shed += stepUpFar
		case delay > t:
			c.shed += stepUp
		case delay < t/2:
			c.shed -= stepDown
		default:
			c.shed -= stepDownFew
		}
		c.shed = min(c.shed, c.cfg.MaxShed)
		if c.shed <= 0 {
			c.shed, c.overloaded = 0, false
		}
	}
	if c.overloaded {
		c.permille.Store(uint64(c.shed*1000 + 0.5))
	} else {
		c.permille.Store(0)
	}
}

// standingDelay is the least of the recent observations.
func (c *Controller) standingDelay() time.Duration {
	m := c.recent[0]
	for _, d := range c.recent[1:] {
		m = min(m, d)
	}
	return m
}

// Shed reports whether to refuse the request arriving now. Over any run
// of arrivals, the fraction refused is the shed fraction, spread evenly.
func (c *Controller) Shed() bool {
	if c == nil {
		return false
	}
	p := c.permille.Load()
	if p == 0 {
		return false
	}
	n := c.acc.Add(p)
	return n/1000 != (n-p)/1000
}

// State is a snapshot, for metrics and logs.
type State struct {
	Overloaded bool
	Shed       float64       // the fraction of arrivals refused now
	Delay      time.Duration // the last delay observed
}

// State returns the controller's current state.
func (c *Controller) State() State {
	if c == nil {
		return State{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := State{Overloaded: c.overloaded, Delay: c.last}
	if c.overloaded {
		s.Shed = c.shed
	}
	return s
}

// Overloaded reports whether the controller is shedding now.
func (c *Controller) Overloaded() bool { return c != nil && c.permille.Load() > 0 }

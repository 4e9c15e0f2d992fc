package admission

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// clock is a manual clock: tests advance it, nothing sleeps.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Unix(1_700_000_000, 0)} }
func ms(n int) time.Duration         { return time.Duration(n) * time.Millisecond }
func feed(c *Controller, k *clock, d time.Duration, n int) {
	for range n {
		k.add(ms(10))
		c.Observe(d)
	}
}

// shedOf counts how many of n arrivals c sheds.
func shedOf(c *Controller, n int) int {
	s := 0
	for range n {
		if c.Shed() {
			s++
		}
	}
	return s
}

// A burst shorter than the interval is let through (CoDel): a delay above
// the target sheds nothing until it has lasted a whole interval.
func TestBurstShorterThanIntervalShedsNothing(t *testing.T) {
	k := newClock()
	c := NewController(Config{Target: ms(10), Interval: ms(100), Now: k.now})
	c.Observe(ms(50)) // above from now
	feed(c, k, ms(50), 9)
	if c.Overloaded() || shedOf(c, 1000) != 0 {
		t.Fatalf("shed during a 90 ms burst: %+v", c.State())
	}
	// Back under the target: the count starts again.
	feed(c, k, ms(1), 1)
	feed(c, k, ms(50), 9)
	if c.Overloaded() {
		t.Fatalf("overloaded after two bursts of 90 ms: %+v", c.State())
	}
	// Above for a whole interval: overload.
	feed(c, k, ms(50), 2)
	if !c.Overloaded() {
		t.Fatalf("not overloaded after 110 ms above the target: %+v", c.State())
	}
}

// Overload sheds a fraction that rises while the delay stays high, spread
// evenly over the arrivals, never beyond MaxShed; once the delay falls,
// the fraction falls back to zero and overload ends.
func TestShedFractionRisesThenRecovers(t *testing.T) {
	k := newClock()
	c := NewController(Config{Target: ms(10), Interval: ms(100), MaxShed: 0.9, Now: k.now})
	c.Observe(ms(30))
	feed(c, k, ms(30), 10)
	s := c.State()
	if !s.Overloaded || s.Shed < startShed || s.Shed > 0.15 {
		t.Fatalf("on entering overload: %+v, want shed %.2f", s, startShed)
	}
	if n := shedOf(c, 1000); n < 95 || n > 155 {
		t.Fatalf("shed %d of 1000 arrivals at fraction %.2f", n, s.Shed)
	}
	// Evenly: of any 10 consecutive arrivals at 10%, one or two are shed.
	for range 20 {
		if n := shedOf(c, 10); n < 1 || n > 2 {
			t.Fatalf("%d of 10 consecutive arrivals shed at fraction %.2f", n, c.State().Shed)
		}
	}
	feed(c, k, ms(30), 50) // far above for 500 ms
	if s := c.State(); s.Shed != 0.9 {
		t.Fatalf("after 500 ms at 3x the target: %+v, want the max 0.9", s)
	}
	if n := shedOf(c, 1000); n != 900 {
		t.Fatalf("shed %d of 1000 at 0.9", n)
	}
	// Recovery: under half the target the fraction falls 0.05 a tick.
	feed(c, k, ms(1), 10)
	if s := c.State(); !s.Overloaded || s.Shed > 0.41 || s.Shed < 0.39 {
		t.Fatalf("after 100 ms of low delay: %+v, want overloaded at 0.40", s)
	}
	feed(c, k, ms(1), 8)
	if c.Overloaded() || shedOf(c, 1000) != 0 {
		t.Fatalf("still shedding 180 ms after the delay fell: %+v", c.State())
	}
	// Overload must again last an interval before shedding resumes.
	feed(c, k, ms(30), 5)
	if c.Overloaded() {
		t.Fatalf("shedding resumed after 50 ms: %+v", c.State())
	}
}

// At the target's edge the fraction moves slowly: between half the target
// and the target it falls by 0.01 a tick, above it rises by 0.03.
func TestShedFractionNearTarget(t *testing.T) {
	k := newClock()
	c := NewController(Config{Target: ms(10), Interval: ms(100), Now: k.now})
	c.Observe(ms(15))
	feed(c, k, ms(15), 10) // enters at 0.10
	feed(c, k, ms(15), 10) // +0.03 x 10
	if s := c.State(); s.Shed < 0.39 || s.Shed > 0.41 {
		t.Fatalf("after 10 ticks just above the target: %+v, want 0.40", s)
	}
	feed(c, k, ms(7), 10) // -0.01 x 10
	if s := c.State(); s.Shed < 0.29 || s.Shed > 0.31 {
		t.Fatalf("after 10 ticks just under the target: %+v, want 0.30", s)
	}
}

// A negative target disables shedding for delay; nil controllers and
// gates admit everything.
func TestDisabled(t *testing.T) {
	k := newClock()
	c := NewController(Config{Target: -1, Now: k.now})
	feed(c, k, time.Second, 100)
	if c.Enabled() || c.Overloaded() || shedOf(c, 100) != 0 {
		t.Fatalf("a disabled controller shed: %+v", c.State())
	}
	var nc *Controller
	if nc.Shed() || nc.Overloaded() {
		t.Fatal("a nil controller shed")
	}
	var g *Gate
	if ok, _ := g.Admit(); !ok {
		t.Fatal("a nil gate refused")
	}
	g.Done()
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Target: ms(100), Interval: ms(100)},
		{Target: ms(10), Interval: -1},
		{MaxShed: 1.5},
		{MaxShed: -0.1},
	} {
		if c.WithDefaults().Validate() == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if err := (Config{Target: -1}).WithDefaults().Validate(); err != nil {
		t.Fatalf("disabled: %v", err)
	}
}

// The attack: a caller holds requests open (a slow upload, a slow app) to
// take every slot. The cap refuses the one beyond it at once, and frees
// the slot when a request ends.
func TestGateCapsInFlight(t *testing.T) {
	g := NewGate(nil, 3, 0)
	for i := range 3 {
		if ok, r := g.Admit(); !ok {
			t.Fatalf("request %d refused (%s) under the cap", i, r)
		}
	}
	if ok, r := g.Admit(); ok || r != ReasonInFlight {
		t.Fatalf("4th of a cap of 3: ok=%v reason=%q", ok, r)
	}
	if g.InFlight() != 3 {
		t.Fatalf("in flight %d after a refusal, want 3", g.InFlight())
	}
	g.Done()
	if ok, _ := g.Admit(); !ok {
		t.Fatal("refused after a request ended")
	}
}

// A listener with few requests in flight never sheds for delay: the
// machine's load from other work is not this proxy's overload.
func TestGateShedsOnlyAboveMinInFlight(t *testing.T) {
	k := newClock()
	c := NewController(Config{Target: ms(10), Interval: ms(100), MaxShed: 1, Now: k.now})
	c.Observe(ms(50))
	feed(c, k, ms(50), 40)
	if s := c.State(); s.Shed != 1 {
		t.Fatalf("%+v, want shedding all", s)
	}
	g := NewGate(c, 0, 2)
	for i := range 2 {
		if ok, r := g.Admit(); !ok {
			t.Fatalf("request %d refused (%s) with at most 2 in flight", i, r)
		}
	}
	if ok, r := g.Admit(); ok || r != ReasonQueueDelay {
		t.Fatalf("3rd in flight under overload: ok=%v reason=%q", ok, r)
	}
	g.Done()
	if ok, _ := g.Admit(); !ok {
		t.Fatal("refused at 2 in flight")
	}
}

// Shed is safe for concurrent arrivals and exact in total.
func TestShedConcurrent(t *testing.T) {
	k := newClock()
	c := NewController(Config{Target: ms(10), Interval: ms(100), Now: k.now})
	c.Observe(ms(30))
	feed(c, k, ms(30), 10)
	p := c.permille.Load()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for range 8 {
		wg.Go(func() {
			n := shedOf(c, 1000)
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if want := int(p) * 8; total < want-1 || total > want+1 {
		t.Fatalf("shed %d of 8000 at %d permille, want %d", total, p, want)
	}
}

// The sampler reports the window's median, from the delta of a cumulative
// histogram, and zero for a window with too few wake-ups.
func TestSamplerWindowMedian(t *testing.T) {
	buckets := []float64{0, 0.001, 0.005, 0.02, 0.1, 1}
	cur := Histogram{Counts: make([]uint64, 5), Buckets: buckets}
	s := &Sampler{Read: func() Histogram { return Histogram{Counts: append([]uint64(nil), cur.Counts...), Buckets: buckets} }}
	if d := s.Sample(); d != 0 {
		t.Fatalf("first sample %v, want 0", d)
	}
	cur.Counts[0] += 100 // a past that must not count
	s.Sample()
	cur.Counts[0] += 10
	cur.Counts[3] += 30 // 20-100 ms
	if d := s.Sample(); d != 20*time.Millisecond {
		t.Fatalf("median of 10 fast and 30 at 20 ms: %v", d)
	}
	cur.Counts[3] += 3 // too few
	if d := s.Sample(); d != 0 {
		t.Fatalf("a window of 3 wake-ups: %v, want 0", d)
	}
	cur.Counts[1] += 40
	if d := s.Sample(); d != time.Millisecond {
		t.Fatalf("40 wake-ups at 1-5 ms: %v", d)
	}
}

// The real signal: goroutines that keep every P busy make a waking
// goroutine wait, and Run's samples (the runtime's histogram, its own
// timer's lateness) say so, enough for a controller to enter overload.
func TestSamplerSeesCPUStarvation(t *testing.T) {
	if testing.Short() {
		t.Skip("spins the CPU")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for ctx.Err() == nil {
				for i := 0; i < 1e6; i++ {
				}
			}
		})
	}
	c := NewController(Config{Target: ms(5), Interval: ms(50)})
	var mu sync.Mutex
	var peak time.Duration
	var entered bool
	rctx, stop := context.WithTimeout(ctx, 5*time.Second)
	wg.Go(func() {
		NewSampler().Run(rctx, c, 0, func(d time.Duration) {
			mu.Lock()
			peak = max(peak, d)
			mu.Unlock()
			if c.Overloaded() {
				entered = true
				stop()
			}
		})
	})
	<-rctx.Done()
	cancel()
	wg.Wait()
	if !entered {
		t.Fatalf("no overload under %d spinning goroutines on %d Ps (largest sample %v)", 4*runtime.GOMAXPROCS(0), runtime.GOMAXPROCS(0), peak)
	}
	t.Logf("largest sample under starvation: %v", peak)
}

// A lone late wake-up among low delays (a GC pause, another process taking
// the CPU for a moment) does not raise the fraction: it follows the
// standing delay.
func TestShedFractionIgnoresLoneSpikes(t *testing.T) {
	k := newClock()
	c := NewController(Config{Target: ms(10), Interval: ms(100), Now: k.now})
	c.Observe(ms(30))
	feed(c, k, ms(30), 10) // overloaded at 0.10
	feed(c, k, ms(30), 10) // +0.10 x 10: 1.0, capped at 0.95
	for range 10 {         // spikes every other tick: the fraction falls
		feed(c, k, ms(200), 1)
		feed(c, k, ms(2), 1)
	}
	if s := c.State(); s.Shed > 0.95-0.05*9 {
		t.Fatalf("alternating spikes and low delays held the fraction at %.2f", s.Shed)
	}
}

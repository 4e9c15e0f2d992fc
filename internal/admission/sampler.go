package admission

import (
	"context"
	"math"
	"runtime/metrics"
	"time"
)

// schedLatencies is the runtime's histogram of the time goroutines spent
// runnable before running (sampled by the runtime).
const schedLatencies = "/sched/latencies:seconds"

// DefaultTick is how often Sampler measures.
const DefaultTick = 10 * time.Millisecond

// Histogram is a cumulative histogram: Counts[i] counts the values in
// [Buckets[i], Buckets[i+1]), as runtime/metrics reports them.
type Histogram struct {
	Counts  []uint64
	Buckets []float64 // len(Counts)+1 boundaries, in seconds
}

// Sampler measures the process's queueing delay: the median time
// goroutines waited, runnable, since the previous sample. A window with
// too few wake-ups to tell says zero (an idle process is not overloaded);
// Run adds its own timer's lateness.
type Sampler struct {
	// Read returns the cumulative histogram (default: the runtime's
	// scheduler latencies); tests give their own.
	Read func() Histogram
	// Quantile of the window's delays reported (default 0.5).
	Quantile float64
	// MinSamples: a window with fewer wake-ups says zero (default 8).
	MinSamples uint64

	prev []uint64
}

// NewSampler returns a sampler of the runtime's scheduler latencies.
func NewSampler() *Sampler {
	s := []metrics.Sample{{Name: schedLatencies}}
	return &Sampler{Read: func() Histogram {
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindFloat64Histogram {
			return Histogram{}
		}
		h := s[0].Value.Float64Histogram()
		return Histogram{Counts: h.Counts, Buckets: h.Buckets}
	}}
}

// Sample returns the delay of the window since the previous call (the
// first call starts the window and returns zero).
func (s *Sampler) Sample() time.Duration {
	h := s.Read()
	q, minN := s.Quantile, s.MinSamples
	if q <= 0 || q > 1 {
		q = 0.5
	}
	if minN == 0 {
		minN = 8
	}
	if len(s.prev) != len(h.Counts) {
		s.prev = append(s.prev[:0], h.Counts...)
		return 0
	}
	var total uint64
	for i, c := range h.Counts {
		total += c - s.prev[i]
	}
	var d time.Duration
	if total >= minN {
		rank := uint64(math.Ceil(q * float64(total)))
		var seen uint64
		for i, c := range h.Counts {
			seen += c - s.prev[i]
			if seen >= rank {
				d = bucketDelay(h.Buckets, i)
				break
			}
		}
	}
	copy(s.prev, h.Counts)
	return d
}

// bucketDelay is a value of bucket i: its lower bound (the runtime's
// buckets are narrow; the lower bound never overstates the delay), or the
// upper one for the first bucket that starts at -Inf.
func bucketDelay(b []float64, i int) time.Duration {
	v := b[i]
	if math.IsInf(v, -1) {
		v = b[i+1]
	}
	if math.IsInf(v, 0) || v < 0 {
		return 0
	}
	return time.Duration(v * float64(time.Second))
}

// Run feeds c a sample every tick (DefaultTick if zero) until ctx ends;
// observe, if set, is given each sample too (metrics). A sample is the
// larger of the window's scheduler latency (Sample) and how late Run's own
// timer woke it: that wake-up is one more goroutine made runnable and left
// waiting, measured every tick, when the runtime's histogram (which
// records one wake-up in eight) has too few in the window to tell.
func (s *Sampler) Run(ctx context.Context, c *Controller, tick time.Duration, observe func(time.Duration)) {
	if tick <= 0 {
		tick = DefaultTick
	}
	t := time.NewTimer(tick)
	defer t.Stop()
	s.Sample()
	for {
		armed := time.Now()
		t.Reset(tick)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			late := max(time.Since(armed)-tick, 0)
			d := max(s.Sample(), late)
			c.Observe(d)
			if observe != nil {
				observe(d)
			}
		}
	}
}

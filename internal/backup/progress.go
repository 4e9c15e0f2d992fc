package backup

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress prints how far long work has come, at most twice a second, to
// a terminal; a nil *progress says nothing.
type progress struct {
	w     io.Writer
	label string
	now   func() time.Time
	mu    sync.Mutex
	done  int64
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, label string, now func() time.Time) *progress {
	if w == nil {
		return nil
	}
	t := now()
	return &progress{w: w, label: label, now: now, start: t, last: t}
}

// Write counts p (it is an io.Writer so it can sit in a MultiWriter).
func (p *progress) Write(b []byte) (int, error) {
	if p == nil {
		return len(b), nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += int64(len(b))
	if t := p.now(); t.Sub(p.last) >= 500*time.Millisecond {
		p.last = t
		p.print(t)
	}
	return len(b), nil
}

func (p *progress) print(t time.Time) {
	secs := t.Sub(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(p.done) / secs / 1e6
	}
	fmt.Fprintf(p.w, "\r%s: %.1f MB, %.0f MB/s   ", p.label, float64(p.done)/1e6, rate)
}

// finish prints the last line.
func (p *progress) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.print(p.now())
	fmt.Fprintln(p.w)
}

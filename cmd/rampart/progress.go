package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"
)

// progressTo is stderr when it is a terminal (long work shows progress),
// nothing otherwise: scripts and CI logs get no carriage returns.
func progressTo(env *cliEnv) io.Writer {
	if f, ok := env.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return f
	}
	return nil
}

// counter shows a count on one terminal line, at most every 200 ms.
type counter struct {
	w    io.Writer // nil: quiet
	what string
	n    int64
	last time.Time
}

func newCounter(w io.Writer, what string) *counter { return &counter{w: w, what: what} }

func (c *counter) add(n int64) {
	c.n += n
	if c.w == nil {
		return
	}
	if now := time.Now(); now.Sub(c.last) >= 200*time.Millisecond {
		c.last = now
		fmt.Fprintf(c.w, "\r%s: %d", c.what, c.n)
	}
}

// done ends the line with the final count.
func (c *counter) done() {
	if c.w != nil {
		fmt.Fprintf(c.w, "\r%s: %d\n", c.what, c.n)
	}
}

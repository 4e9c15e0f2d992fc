package main

import (
	"bytes"
	"testing"
)

func TestCounter(t *testing.T) {
	var b bytes.Buffer
	c := newCounter(&b, "entries read")
	c.add(1) // shown: the first call is never throttled
	c.add(41)
	c.done()
	if got := b.String(); got != "\rentries read: 1\rentries read: 42\n" {
		t.Fatalf("counter wrote %q", got)
	}
	quiet := newCounter(nil, "x")
	quiet.add(5)
	quiet.done() // nothing to write to: no panic, no output
	if quiet.n != 5 {
		t.Fatalf("quiet counter counted %d", quiet.n)
	}
	// Not a terminal (a buffer): no progress writer.
	if w := progressTo(&cliEnv{stderr: &b}); w != nil {
		t.Fatal("progress to a non-terminal")
	}
}

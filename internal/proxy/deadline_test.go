package proxy

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// deadlineConn records the read deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

func TestReadDeadlineMovesOnlyWhenItMust(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name  string
		steps func(d *readDeadline)
		want  []time.Time // deadlines actually set, in order
	}{
		{"first set", func(d *readDeadline) { d.after(t0, time.Minute) }, []time.Time{t0.Add(time.Minute)}},
		{"kept when under a second earlier than asked", func(d *readDeadline) {
			d.after(t0, time.Minute)
			d.after(t0.Add(999*time.Millisecond), time.Minute)
		}, []time.Time{t0.Add(time.Minute)}},
		{"moved when a second or more earlier", func(d *readDeadline) {
			d.after(t0, time.Minute)
			d.after(t0.Add(time.Second), time.Minute)
		}, []time.Time{t0.Add(time.Minute), t0.Add(time.Minute + time.Second)}},
		{"never kept when later than asked (a stricter timeout)", func(d *readDeadline) {
			d.after(t0, 2*time.Minute)
			d.after(t0, 10*time.Second)
		}, []time.Time{t0.Add(2 * time.Minute), t0.Add(10 * time.Second)}},
		{"none clears once", func(d *readDeadline) {
			d.after(t0, time.Minute)
			d.none()
			d.none()
		}, []time.Time{t0.Add(time.Minute), {}}},
		{"set again after none", func(d *readDeadline) {
			d.after(t0, time.Minute)
			d.none()
			d.after(t0, time.Minute)
		}, []time.Time{t0.Add(time.Minute), {}, t0.Add(time.Minute)}},
		{"forget forces the next set", func(d *readDeadline) {
			d.after(t0, time.Minute)
			d.forget()
			d.after(t0, time.Minute)
		}, []time.Time{t0.Add(time.Minute), t0.Add(time.Minute)}},
		{"forget forces the next clear", func(d *readDeadline) {
			d.forget()
			d.none()
		}, []time.Time{{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &deadlineConn{}
			d := &readDeadline{c: c}
			tc.steps(d)
			if len(c.set) != len(tc.want) {
				t.Fatalf("set %v, want %v", c.set, tc.want)
			}
			for i := range c.set {
				if !c.set[i].Equal(tc.want[i]) {
					t.Fatalf("set %v, want %v", c.set, tc.want)
				}
			}
		})
	}
}

// Slowloris: a client that starts a request head and never finishes it
// (or trickles it) is cut off at the header timeout, however long the idle
// timeout, and even after earlier requests on the connection left their
// deadlines in place.
func TestH1SlowHeadIsCutOff(t *testing.T) {
	x := newFwd(t, echoApp())
	x.f.headerTimeout, x.f.idleTimeout = 300*time.Millisecond, time.Minute
	for _, tc := range []struct {
		name    string
		before  int  // complete requests sent first on the connection
		trickle bool // send a byte every 50 ms instead of stalling
	}{{"stalled", 0, false}, {"stalled after requests", 3, false}, {"trickled", 0, true}, {"trickled after requests", 3, true}} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := x.raw()
			c.SetDeadline(time.Now().Add(30 * time.Second)) // far beyond the header timeout, far below the idle one
			for range tc.before {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
				readResp(t, br, "GET")
			}
			io.WriteString(c, "GET / HTTP/1.1\r\nHo")
			stop := make(chan struct{})
			defer close(stop)
			if tc.trickle {
				go func() {
					tick := time.NewTicker(50 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tick.C:
							if _, err := io.WriteString(c, "x"); err != nil {
								return
							}
						}
					}
				}()
			}
			started := time.Now()
			resp, err := http.ReadResponse(br, nil)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("still open after %v: the header timeout did not apply", time.Since(started))
			}
			if err != nil {
				t.Fatalf("no answer before the close: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestTimeout || !resp.Close || !strings.Contains(string(body), "not received within 300ms") {
				t.Fatalf("got %d close=%v %s, want 408 naming the timeout and a close", resp.StatusCode, resp.Close, body)
			}
		})
	}
}

package acme

import "testing"

// BenchmarkOrderHTTP01 runs whole orders (new order, authorization,
// http-01 answered by a responder on loopback, finalize, download) with
// the test client against a server on a real SQLite store, over TLS on
// loopback. The end-to-end figure against step-ca is bench/acme.
func BenchmarkOrderHTTP01(b *testing.B) {
	h := newHarness(b, nil)
	c := h.newClient()
	c.account("*.acme.test")
	for b.Loop() {
		c.issue(HTTP01, "web.acme.test")
	}
}

package mtls

import (
	"crypto/x509"
	"math/big"
	"testing"
	"time"
)

// FuzzTicketGuard: whatever a ticket's Extra holds, reading it never
// panics, and a guard we wrote reads back as written.
func FuzzTicketGuard(f *testing.F) {
	leaf := &x509.Certificate{SerialNumber: big.NewInt(0xabcdef), NotBefore: time.Unix(1000, 0), NotAfter: time.Unix(5000, 0)}
	f.Add(encodeTicketGuard(leaf))
	f.Add([]byte(ticketGuardTag))
	f.Add([]byte("other-layer"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, ok := findTicketGuard([][]byte{b})
		if !ok {
			return
		}
		again, ok := findTicketGuard([][]byte{b, encodeTicketGuard(leaf)})
		if !ok || again != g {
			t.Fatalf("the first entry of ours is not the one read: %+v vs %+v", again, g)
		}
	})
}

// Package acmetest holds what tests and benchmarks of the ACME server need
// beside real clients: a small authoritative DNS server on loopback that
// answers A, AAAA and TXT queries from tables the test fills, so that
// validations resolve realistic names (web.acme.test) to loopback
// addresses and dns-01 finds the records a client published.
package acmetest

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
)

// DNS is a DNS server on 127.0.0.1 (UDP and TCP, the same port).
type DNS struct {
	Addr string // host:port

	udp net.PacketConn
	tcp net.Listener
	wg  sync.WaitGroup

	mu   sync.Mutex
	a    map[string][]netip.Addr
	txt  map[string][]string
	dflt []netip.Addr
}

// StartDNS starts a DNS server on a free loopback port.
func StartDNS() (*DNS, error) {
	var udp net.PacketConn
	var tcp net.Listener
	var err error
	// The UDP port may be taken for TCP: try a few.
	for range 20 {
		if udp, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		if tcp, err = net.Listen("tcp", udp.LocalAddr().String()); err == nil {
			break
		}
		udp.Close()
	}
	if err != nil {
		return nil, err
	}
	d := &DNS{Addr: udp.LocalAddr().String(), udp: udp, tcp: tcp, a: map[string][]netip.Addr{}, txt: map[string][]string{}}
	d.wg.Go(d.serveUDP)
	d.wg.Go(d.serveTCP)
	return d, nil
}

func key(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

// SetA sets the addresses (A and AAAA) of name.
func (d *DNS) SetA(name string, addrs ...netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.a[key(name)] = addrs
}

// SetDefault sets the addresses of every name without its own.
func (d *DNS) SetDefault(addrs ...netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dflt = addrs
}

// SetTXT sets the TXT records of name (none: delete them).
func (d *DNS) SetTXT(name string, values ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(values) == 0 {
		delete(d.txt, key(name))
		return
	}
	d.txt[key(name)] = values
}

// Close stops the server.
func (d *DNS) Close() {
	d.udp.Close()
	d.tcp.Close()
	d.wg.Wait()
}

func (d *DNS) serveUDP() {
	buf := make([]byte, 4096)
	for {
		n, from, err := d.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp, ok := d.answer(buf[:n]); ok {
			d.udp.WriteTo(resp, from)
		}
	}
}

func (d *DNS) serveTCP() {
	for {
		c, err := d.tcp.Accept()
		if err != nil {
			return
		}
		d.wg.Go(func() {
			defer c.Close()
			for {
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				msg := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, msg); err != nil {
					return
				}
				resp, ok := d.answer(msg)
				if !ok {
					return
				}
				binary.BigEndian.PutUint16(l[:], uint16(len(resp)))
				if _, err := c.Write(append(l[:], resp...)); err != nil {
					return
				}
			}
		})
	}
}

// answer builds the response to one query.
func (d *DNS) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	name := key(q.Name.String())
	d.mu.Lock()
	addrs, known := d.a[name]
	if !known && d.dflt != nil {
		addrs, known = d.dflt, true
	}
	txts, hasTXT := d.txt[name]
	d.mu.Unlock()

	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	if !known && !hasTXT {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, false
	}
	if err := b.Question(q); err != nil {
		return nil, false
	}
	if err := b.StartAnswers(); err != nil {
		return nil, false
	}
	rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
	switch q.Type {
	case dnsmessage.TypeA:
		for _, a := range addrs {
			if a.Is4() {
				if err := b.AResource(rr, dnsmessage.AResource{A: a.As4()}); err != nil {
					return nil, false
				}
			}
		}
	case dnsmessage.TypeAAAA:
		for _, a := range addrs {
			if a.Is6() && !a.Is4In6() {
				if err := b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()}); err != nil {
					return nil, false
				}
			}
		}
	case dnsmessage.TypeTXT:
		for _, t := range txts {
			var parts []string
			for len(t) > 255 {
				parts, t = append(parts, t[:255]), t[255:]
			}
			if err := b.TXTResource(rr, dnsmessage.TXTResource{TXT: append(parts, t)}); err != nil {
				return nil, false
			}
		}
	}
	resp, err := b.Finish()
	if err != nil {
		return nil, false
	}
	return resp, true
}

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http/httpguts"

	"github.com/rampartsec/rampart/internal/authz"
	"github.com/rampartsec/rampart/internal/mtls"
	"github.com/rampartsec/rampart/internal/upstream"
)

// The HTTP/1.1 forwarding path. One goroutine per client connection reads a
// request, forwards it on an upstream connection from the pool (kept while
// the client has further requests already buffered, given back as soon as
// it waits for its next one), and copies the response back: no goroutine,
// ReverseProxy or channel hand-off per request, and each message leaves in
// as few writes as its arrival allows (the head and a body that is already
// buffered go out together; a streamed body is flushed whenever its source
// would block).
// HTTP/2 and h2c connections go to net/http instead (see listen.go).
//
// Parsing is net/http's (http.ReadRequest and http.ReadResponse), so
// ambiguous framing is judged as the net/http server judged it before:
// Transfer-Encoding wins over Content-Length and the Content-Length is
// dropped, conflicting Content-Lengths and unknown transfer codings are
// refused, header names and values are validated. The messages are written
// out by this file, framed afresh.

const (
	maxHeaderBytes        = 1 << 20
	responseHeaderTimeout = 60 * time.Second
	// staleAfter is how long an upstream connection may sit idle
	// before it is checked for a close by its peer before reuse.
	staleAfter = time.Second
)

// h1Forwarder forwards HTTP/1.1 requests from client connections to one
// upstream (the app for an inbound listener, the peer's inbound proxy for
// an outbound one).
type h1Forwarder struct {
	guard *authz.Guard // inbound: decides every request; nil outbound
	pool  *pool
	// badGateway is the detail of the 502 sent when the upstream fails.
	badGateway func(error) string
	// overloaded is the detail of the 503 sent when no upstream connection
	// came free in time.
	overloaded func(*upstream.OverloadError) string
	m          *directionMetrics
	log        *slog.Logger
	conns      *connSet
	// gate admits each request (nil: all).
	gate *listenerGate
	// headerTimeout and idleTimeout, if set, replace readHeaderTimeout
	// and idleTimeout (tests).
	headerTimeout, idleTimeout time.Duration
}

func (f *h1Forwarder) overloadedDetail(oe *upstream.OverloadError) string {
	if f.overloaded == nil {
		return "at capacity: " + overloadDetail(oe)
	}
	return f.overloaded(oe)
}

func (f *h1Forwarder) timeouts() (header, idle time.Duration) {
	header, idle = readHeaderTimeout, idleTimeout
	if f.headerTimeout > 0 {
		header = f.headerTimeout
	}
	if f.idleTimeout > 0 {
		idle = f.idleTimeout
	}
	return header, idle
}

// h1Conn is one client connection and the upstream connection serving its
// current request, if any.
type h1Conn struct {
	f   *h1Forwarder
	c   net.Conn
	tls *tls.ConnectionState // inbound: the verified peer; nil outbound
	// peer is tls's verified caller, derived once per connection.
	peer   spiffeid.ID
	remote string // c.RemoteAddr(), formatted once
	rd     readDeadline
	lr     *io.LimitedReader // bounds the request head
	rerr   *errReader        // the client connection's last read error
	br     *bufio.Reader
	bw     *bufio.Writer
	up     *upConn
	buf    []byte // copy buffer for bodies, allocated on first use
	idle   bool   // guarded by f.conns.mu: waiting for the next request
	// linger: the proxy answered and is closing while the client may still
	// be sending; see lingerClose.
	linger bool
}

// serve runs the request loop of one client connection until it closes,
// fails, or the listener drains. br may hold bytes already read from c.
func (f *h1Forwarder) serve(ctx context.Context, c net.Conn, br *bufio.Reader, cs *tls.ConnectionState) {
	h := &h1Conn{f: f, c: c, tls: cs, bw: bufio.NewWriterSize(c, 4<<10), remote: c.RemoteAddr().String(), rd: readDeadline{c: c}}
	if cs != nil {
		if id, err := mtls.PeerID(cs); err == nil {
			h.peer = id
		}
	}
	h.rerr = &errReader{r: c}
	h.lr = &io.LimitedReader{R: h.rerr, N: maxHeaderBytes}
	if br == nil {
		br = bufio.NewReaderSize(h.lr, 4<<10)
	} else {
		br.Reset(io.MultiReader(bytesOf(br), h.lr))
	}
	h.br = br
	if !f.conns.add(h) {
		return
	}
	defer func() {
		// Released before leaving the set: once the set is empty, no client
		// connection holds an upstream one.
		if h.up != nil {
			f.pool.release(h.up) // a connection that failed was dropped, not kept in h.up
		}
		f.conns.remove(h)
	}()
	for h.next(ctx) {
	}
	if h.linger {
		lingerClose(h.c)
	}
}

// Lingering before a close the client did not ask for: closing a socket
// with unread input makes the kernel send a reset, and the client's kernel
// may then drop our answer (a 431, or a 403 to an upload) before the client
// reads it. As net/http's server does, we half-close and read what is still
// coming, for a bounded time and amount, so the answer arrives first.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerBytes   = 256 << 10
)

func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() != nil {
			return
		}
	}
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, c, lingerBytes)
}

// bytesOf returns a reader of the bytes buffered in br (peeked, not yet
// consumed), so br can be re-pointed at a limited reader.
func bytesOf(br *bufio.Reader) io.Reader {
	b, _ := br.Peek(br.Buffered())
	return strings.NewReader(string(b))
}

// next serves one request; false ends the connection.
func (h *h1Conn) next(ctx context.Context) bool {
	f := h.f
	headerTimeout, idleTimeout := f.timeouts()
	if h.up != nil && h.br.Buffered() == 0 {
		// Waiting for the client: its upstream connection goes back to
		// the pool, so idle clients never hold app connections.
		f.pool.release(h.up)
		h.up = nil
	}
	// The deadline is set before the connection is marked idle, so a drain
	// that starts in between still wakes it (shutdown moves the deadline).
	h.rd.after(time.Now(), idleTimeout)
	if !f.conns.setIdle(h, true) {
		return false // draining
	}
	_, err := h.br.Peek(1)
	if !f.conns.setIdle(h, false) {
		h.rd.forget() // shutdown may have moved it
	}
	if err != nil {
		return false
	}
	start := time.Now()
	if !headBuffered(h.br) {
		// Parsing will read from the network: a client has this long to
		// finish its head (the idle deadline is far more generous).
		h.rd.after(start, headerTimeout)
	}
	h.lr.N = maxHeaderBytes
	req, err := http.ReadRequest(h.br)
	tooLarge := h.lr.N <= 0
	h.lr.N = 1<<63 - 1
	if err != nil {
		h.refuseMalformed(err, tooLarge)
		return false
	}
	if detail := checkRequest(req); detail != "" {
		h.answer(nil, &authz.Refusal{Status: http.StatusBadRequest, Detail: "malformed request: " + detail}, true, start)
		return false
	}
	if !expectOK(req) {
		h.answer(req, &authz.Refusal{Status: http.StatusExpectationFailed, Detail: "unsupported Expect header (only 100-continue)"}, true, start)
		return false
	}
	req.RemoteAddr = h.remote
	req.TLS = h.tls
	hasBody := req.Body != http.NoBody
	clientClose := req.Close || req.ProtoMinor == 0
	// Admission before anything costly (the policy, the upstream): a
	// refusal keeps the connection open for the caller's retry, unless
	// an unread body would be taken for the next request.
	if rf := f.gate.admit(req, f.guard, h.peer); rf != nil {
		return h.answer(req, rf, hasBody || clientClose, start)
	}
	defer f.gate.done()
	if hasBody && !bodyBuffered(req.ContentLength, h.br) {
		h.rd.none() // a body may stream for long; the next request sets a new one
	}
	// Hop-by-hop headers go before the guard, so the policy judges the
	// headers the app will be given.
	upgrade := prepareRequest(req)
	if f.guard != nil {
		if rf := f.guard.CheckPeer(req, h.peer); rf != nil {
			// An unread body would be taken for the next request: close.
			return h.answer(req, rf, hasBody || clientClose || rf.Close, start)
		}
		// Past three quarters of its certificate's life, the client is
		// asked to reconnect with its newer SVID after this answer.
		clientClose = clientClose || f.guard.PeerStale(h.tls.PeerCertificates[0])
	}
	if hasBody {
		req.Body = &flushingReader{r: req.Body, src: h.br, continue100: h.continueWriter(req)}
	}
	resp, err := h.roundTrip(ctx, req)
	if err != nil {
		var oe *upstream.OverloadError
		switch {
		case errors.As(err, &oe):
			// Nothing was sent: the client may try again shortly. An unread
			// body would be taken for the next request: close then.
			return h.answer(req, &authz.Refusal{Status: http.StatusServiceUnavailable, RetryAfter: f.pool.l.RetryAfter(),
				Detail: f.overloadedDetail(oe)}, hasBody || clientClose, start)
		case errors.Is(err, errClientGone):
			return false
		}
		f.m.upstreamErrors.Inc()
		f.log.Debug("upstream failed", "direction", f.m.direction, "err", err)
		return h.answer(req, &authz.Refusal{Status: http.StatusBadGateway, Detail: f.badGateway(err)}, true, start)
	}
	clientClose = clientClose || f.conns.draining()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return h.switchProtocols(ctx, req, resp, upgrade, start)
	}
	upKeep := !resp.Close
	if err := h.writeResponse(req, resp, clientClose); err != nil {
		clientClose = true
		// The client's own close leaves the upstream connection whole: only
		// a failed write (the response not read to its end) spoils it.
		upKeep = upKeep && errors.Is(err, errClientClose)
	}
	if upKeep && h.up.br.Buffered() > 0 {
		// Bytes after a complete response (a body on a HEAD or 204 answer,
		// a stray response) would answer the next request: never reused.
		upKeep = false
	}
	f.m.request(resp.StatusCode, start)
	if !upKeep {
		h.up.close()
		h.up = nil
	}
	if hasBody && !bodyDone(req.Body) {
		return false // the app answered before reading the whole request
	}
	return !clientClose
}

// roundTrip sends req on the client's current upstream connection (taking
// one from the pool first if it has none) and reads the response head. A request
// without a body that failed on a reused connection before any response
// byte arrived is sent once more on a fresh one: the peer closed the idle
// connection as we wrote (idempotent methods only, as net/http does).
func (h *h1Conn) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		if h.up == nil {
			up, waited, err := h.f.pool.get(ctx)
			if err != nil {
				return nil, err
			}
			if waited && peerGone(h.c) {
				// The client gave up while the request waited (its timeout
				// passed): forwarding it would spend an upstream connection
				// on an answer nobody reads.
				h.f.pool.release(up)
				return nil, errClientGone
			}
			h.up = up
		}
		up := h.up
		reused := up.used
		up.used = true
		if fr, ok := req.Body.(*flushingReader); ok {
			fr.dst = up.bw
		}
		err := h.writeRequest(up.bw, req)
		if err == nil {
			err = up.bw.Flush()
		}
		if err == nil {
			up.rd.after(time.Now(), responseHeaderTimeout)
			_, err = up.br.Peek(1)
		}
		if err != nil {
			up.close()
			h.up = nil
			if reused && attempt == 0 && req.Body == http.NoBody && idempotent(req) && !isTimeout(err) {
				continue // nothing came back: the request was not acted on
			}
			return nil, err
		}
		resp, err := h.readResponse(req)
		if err == nil && resp.Body != http.NoBody && !bodyBuffered(resp.ContentLength, up.br) {
			up.rd.none() // a body may stream for long
		}
		if err != nil {
			up.close()
			h.up = nil
			return nil, err
		}
		up.lastUsed = time.Now()
		return resp, nil
	}
}

// readResponse reads the final response head, passing informational (1xx)
// responses other than 101 on to the client.
func (h *h1Conn) readResponse(req *http.Request) (*http.Response, error) {
	up := h.up
	for informational := 0; ; {
		up.lr.N = maxHeaderBytes
		resp, err := http.ReadResponse(up.br, req)
		exhausted := up.lr.N <= 0
		up.lr.N = 1<<63 - 1
		if err != nil {
			if exhausted {
				err = fmt.Errorf("response head larger than %d bytes", maxHeaderBytes)
			}
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		if informational++; informational > maxInformational {
			return nil, fmt.Errorf("more than %d informational responses", maxInformational)
		}
		if resp.StatusCode == http.StatusContinue || req.ProtoMinor == 0 {
			// 100: we sent the body without waiting; the client got ours.
			// HTTP/1.0 clients get no 1xx at all (RFC 9110 15.2).
			continue
		}
		authz.RemoveHopByHop(resp.Header)
		h.bw.WriteString(statusLine(resp.StatusCode))
		resp.Header.Write(h.bw)
		h.bw.WriteString("\r\n")
		if err := h.bw.Flush(); err != nil {
			return nil, err
		}
	}
}

// writeResponse sends resp to the client, framed for the client's HTTP
// version, flushing a streamed body whenever the upstream would block.
func (h *h1Conn) writeResponse(req *http.Request, resp *http.Response, closeAfter bool) error {
	defer resp.Body.Close()
	authz.RemoveHopByHop(resp.Header)
	bw := h.bw
	noBody := req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
	chunked := false
	bw.WriteString(statusLine(resp.StatusCode))
	switch {
	case noBody:
		// Content-Length, if any, describes the resource: passed as is.
		resp.Header.Write(bw)
	case resp.ContentLength >= 0:
		resp.Header.WriteSubset(bw, framingHeaders)
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(resp.ContentLength, 10))
		bw.WriteString("\r\n")
	case req.ProtoMinor >= 1 && !closeAfter:
		chunked = true
		resp.Header.WriteSubset(bw, framingHeaders)
		if t := trailerFields(resp.Trailer); len(t) > 0 {
			bw.WriteString("Trailer: " + strings.Join(headerKeys(t), ", ") + "\r\n")
		}
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		// Length unknown and no chunking: the body ends with the connection.
		resp.Header.WriteSubset(bw, framingHeaders)
		closeAfter = true
	}
	if closeAfter {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	var err error
	if !noBody && resp.Body != http.NoBody {
		body := &flushingReader{r: resp.Body, src: h.up.br, dst: bw}
		if chunked {
			cw := httputil.NewChunkedWriter(bw)
			if _, err = h.copyBody(cw, body); err == nil {
				cw.Close()
				writeTrailer(bw, trailerFields(resp.Trailer))
			}
		} else {
			_, err = h.copyBody(bw, body)
		}
	}
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	if closeAfter && err == nil {
		err = errClientClose
	}
	return err
}

var errClientClose = errors.New("proxy: response delimited by closing the connection")

var errClientGone = errors.New("proxy: the client closed its connection while its request waited")

// switchProtocols passes a 101 answer to an upgrade request (WebSocket) on
// to the client, then copies bytes both ways until either side closes.
func (h *h1Conn) switchProtocols(ctx context.Context, req *http.Request, resp *http.Response, upgrade string, start time.Time) bool {
	up := h.up
	h.up = nil
	defer up.close()
	got := resp.Header.Get("Upgrade")
	if upgrade == "" || !strings.EqualFold(got, upgrade) {
		h.f.m.upstreamErrors.Inc()
		h.answer(req, &authz.Refusal{Status: http.StatusBadGateway, Detail: "the upstream switched to a protocol that was not asked for: " + got}, true, start)
		return false
	}
	authz.RemoveHopByHop(resp.Header)
	resp.Header.Set("Connection", "Upgrade")
	resp.Header.Set("Upgrade", got)
	h.bw.WriteString(statusLine(resp.StatusCode))
	resp.Header.Write(h.bw)
	h.bw.WriteString("\r\n")
	if h.bw.Flush() != nil {
		return false
	}
	h.f.m.request(http.StatusSwitchingProtocols, start)
	h.f.conns.remove(h) // a tunnel is not drained like a request
	h.c.SetReadDeadline(time.Time{})
	up.c.SetReadDeadline(time.Time{})
	if h.f.guard != nil {
		// No more requests to check the caller at: the tunnel ends when
		// its certificate expires or is revoked.
		var cancel context.CancelFunc
		ctx, cancel = h.f.guard.WatchPeer(ctx, h.peer, h.tls.PeerCertificates, h.remote)
		defer cancel()
	}
	splice(ctx, &bufferedConn{Conn: h.c, r: h.br}, &bufferedConn{Conn: up.c, r: up.br})
	return false
}

// answer writes a response the proxy makes itself (a refusal, a 502) and
// reports whether the connection may carry another request.
func (h *h1Conn) answer(req *http.Request, rf *authz.Refusal, closeAfter bool, start time.Time) bool {
	body := authz.ProblemJSON(rf.Status, rf.Detail)
	bw := h.bw
	bw.WriteString(statusLine(rf.Status))
	bw.WriteString("Content-Type: application/problem+json\r\nCache-Control: no-store\r\n")
	if rf.WWWAuthenticate != "" {
		bw.WriteString("Www-Authenticate: " + rf.WWWAuthenticate + "\r\n")
	}
	if rf.RetryAfter != "" {
		bw.WriteString("Retry-After: " + rf.RetryAfter + "\r\n")
	}
	if closeAfter || h.f.conns.draining() {
		closeAfter = true
		h.linger = true
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	if req == nil || req.Method != http.MethodHead {
		bw.Write(body)
	}
	err := bw.Flush()
	h.f.m.request(rf.Status, start)
	return err == nil && !closeAfter
}

// refuseMalformed answers a request that could not be parsed, as net/http's
// server does (431 for an oversized head, 501 for a transfer coding other
// than chunked, 400 otherwise), and closes.
func (h *h1Conn) refuseMalformed(err error, tooLarge bool) {
	status := http.StatusBadRequest
	var ne net.Error
	switch {
	case tooLarge:
		status = http.StatusRequestHeaderFieldsTooLarge
		err = fmt.Errorf("request head larger than %d bytes", maxHeaderBytes)
	case isTimeout(h.rerr.err):
		// textproto reports a line cut short by the deadline as malformed
		// ("missing colon"); the real reason is the client's slowness.
		header, _ := h.f.timeouts()
		status = http.StatusRequestTimeout
		err = fmt.Errorf("request head not received within %v", header)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne):
		return // the client went away or stalled: nobody to answer
	case strings.HasPrefix(err.Error(), "unsupported transfer encoding"), strings.HasPrefix(err.Error(), "too many transfer encodings"):
		// net/http's error type (both messages) is unexported; its server
		// answers 501 too.
		status = http.StatusNotImplemented
	}
	h.answer(nil, &authz.Refusal{Status: status, Detail: "malformed request: " + err.Error()}, true, time.Now())
}

// copyBody copies a message body to dst through the connection's copy
// buffer. Never through dst's ReadFrom: a bufio.Writer would read into its
// own spare buffer while the flushingReader flushes that same writer, and
// the bytes it held would be sent again in place of the body.
func (h *h1Conn) copyBody(dst io.Writer, body io.Reader) (int64, error) {
	if h.buf == nil {
		h.buf = make([]byte, 8<<10)
	}
	return io.CopyBuffer(writerOnly{dst}, body, h.buf)
}

// writerOnly hides a writer's ReadFrom from io.CopyBuffer.
type writerOnly struct{ io.Writer }

// continueWriter returns what to do when the body of a request that asked
// for "100 Continue" is first read: tell the client to send it. The
// Expect header itself is not forwarded.
func (h *h1Conn) continueWriter(req *http.Request) func() {
	if !req.ProtoAtLeast(1, 1) || req.Header.Get("Expect") == "" {
		return nil
	}
	req.Header.Del("Expect")
	return func() {
		h.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		h.bw.Flush()
	}
}

// flushingReader reads a message body. Before a read that would have to
// wait for the network (src has nothing buffered) it flushes dst, so data
// already received goes out in one write and streams are not held back.
type flushingReader struct {
	r           io.ReadCloser
	src         *bufio.Reader
	dst         *bufio.Writer // nil: the caller flushes
	continue100 func()
	eof         bool
}

func (f *flushingReader) Read(p []byte) (int, error) {
	if f.continue100 != nil {
		f.continue100()
		f.continue100 = nil
	}
	if f.dst != nil && f.src.Buffered() == 0 && f.dst.Buffered() > 0 {
		if err := f.dst.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := f.r.Read(p)
	if err == io.EOF {
		f.eof = true
	}
	return n, err
}

func (f *flushingReader) Close() error { return f.r.Close() }

// bodyDone reports whether a request body was read to its end (a body
// left unread would be taken for the next request).
func bodyDone(b io.ReadCloser) bool {
	f, ok := b.(*flushingReader)
	return ok && f.eof
}

// framingHeaders are written by the forwarder, never copied.
var framingHeaders = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// writeRequest writes req to the upstream in origin form, framed afresh.
func (h *h1Conn) writeRequest(bw *bufio.Writer, req *http.Request) error {
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	if req.Method == http.MethodOptions && req.RequestURI == "*" {
		bw.WriteByte('*')
	} else {
		bw.WriteString(req.URL.RequestURI())
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\n")
	if err := req.Header.WriteSubset(bw, requestExcluded); err != nil {
		return err
	}
	chunked := req.ContentLength < 0
	switch {
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case req.ContentLength > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(req.ContentLength, 10))
		bw.WriteString("\r\n")
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	if req.Body == http.NoBody {
		return nil
	}
	if chunked {
		cw := httputil.NewChunkedWriter(bw)
		if _, err := h.copyBody(cw, req.Body); err != nil {
			return fmt.Errorf("request body: %w", err)
		}
		cw.Close()
		// Request trailers are not forwarded: they arrive after the guard
		// decided, so it never judged them, and http.ReadRequest merges
		// every trailer field, declared or not (X-Rampart-Caller,
		// Content-Length...).
		_, err := bw.WriteString("\r\n")
		return err
	}
	n, err := h.copyBody(bw, req.Body)
	if err == nil && n != req.ContentLength {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

var requestExcluded = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// maxInformational bounds the 1xx responses read before the final one (each
// is also bounded by maxHeaderBytes), so an upstream cannot hold a request
// with an endless run of them.
const maxInformational = 5

// statusLine is the status line sent for code. The reason phrase is ours,
// never the upstream's: a reason phrase is free text in which a bare CR
// could pose as a line end to a lenient client.
func statusLine(code int) string {
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	return "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
}

// trailerFields is a response's trailer without the fields a trailer must
// not carry (RFC 9110 6.5.1): framing, routing and identity. It returns t
// itself when nothing needs dropping (the usual case).
func trailerFields(t http.Header) http.Header {
	bad := func(k string) bool {
		return framingHeaders[k] || k == "Host" || k == "Connection" || authz.IsIdentityHeader(k)
	}
	for k := range t {
		if bad(k) {
			clean := make(http.Header, len(t))
			for k, v := range t {
				if !bad(k) {
					clean[k] = v
				}
			}
			return clean
		}
	}
	return t
}

func writeTrailer(bw *bufio.Writer, t http.Header) error {
	if err := t.Write(bw); err != nil {
		return err
	}
	_, err := bw.WriteString("\r\n")
	return err
}

func headerKeys(h http.Header) []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// prepareRequest turns a client's request into the one forwarded:
// hop-by-hop and forwarding headers removed (authz.StripHopByHop, the rules
// the guard applies too), the upstream connection kept alive. It returns
// the protocol asked for by an upgrade request, or "".
func prepareRequest(req *http.Request) (upgrade string) {
	upgrade = authz.StripHopByHop(req.Header)
	if upgrade != "" && req.ProtoMinor == 0 {
		// HTTP/1.0 has no upgrade (RFC 9110 7.8: ignored); forwarded as
		// HTTP/1.1 it would become one.
		delete(req.Header, "Connection")
		delete(req.Header, "Upgrade")
		upgrade = ""
	}
	req.Close = false
	req.RequestURI = ""
	return upgrade
}

// checkRequest applies the checks net/http's server makes after parsing:
// HTTP/1.x only, a valid Host (RFC 9112 3.2; http.ReadRequest has refused
// more than one and moved it to req.Host).
func checkRequest(req *http.Request) string {
	switch {
	case req.ProtoMajor != 1:
		return "unsupported protocol version " + req.Proto
	case req.Method == http.MethodConnect:
		return "CONNECT is not forwarded"
	case req.ProtoAtLeast(1, 1) && req.Host == "":
		return "missing required Host header"
	case !httpguts.ValidHostHeader(req.Host):
		return "malformed Host header"
	}
	// What net/http's server checks after parsing: textproto accepts
	// "Name : value" (RFC 9112 5.1: MUST be refused), keeping "Name " as a
	// name no one will look up.
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return "invalid header name " + strconv.Quote(k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return "invalid value of header " + k
			}
		}
	}
	return ""
}

// expectOK reports whether the request's Expect header, if any, is one we
// honour (100-continue, answered by the proxy when the body is read).
func expectOK(req *http.Request) bool {
	e := req.Header.Get("Expect")
	return e == "" || (req.ProtoAtLeast(1, 1) && strings.EqualFold(e, "100-continue"))
}

func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != ""
}

// bufferedConn reads first what a bufio.Reader already holds.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes, so splice can pass an end of stream on.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// connSet tracks client connections so a drain can wake the idle ones and
// wait for the busy ones to finish their request.
type connSet struct {
	mu    sync.Mutex
	conns map[*h1Conn]struct{}
	// pending: accepted, not yet served (TLS handshake, h2c sniffing):
	// a drain cuts their wait.
	pending map[net.Conn]struct{}
	drain   bool
	closed  chan struct{} // closed when the set empties during a drain
}

func newConnSet() *connSet {
	return &connSet{conns: map[*h1Conn]struct{}{}, pending: map[net.Conn]struct{}{}, closed: make(chan struct{})}
}

// addPending tracks c until removePending; false if draining (close c).
func (s *connSet) addPending(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drain {
		return false
	}
	s.pending[c] = struct{}{}
	return true
}

func (s *connSet) removePending(c net.Conn) {
	s.mu.Lock()
	delete(s.pending, c)
	s.mu.Unlock()
}

func (s *connSet) add(h *h1Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drain {
		return false
	}
	s.conns[h] = struct{}{}
	return true
}

func (s *connSet) remove(h *h1Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[h]; !ok {
		return
	}
	delete(s.conns, h)
	if s.drain && len(s.conns) == 0 {
		close(s.closed)
	}
}

// setIdle marks h idle (waiting for a request) or busy; false means the
// set is draining and an idle connection should close.
func (s *connSet) setIdle(h *h1Conn, idle bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h.idle = idle
	return !s.drain
}

func (s *connSet) draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drain
}

// shutdown stops new requests: idle connections are woken and close, busy
// ones close after their response. It returns when all have closed or ctx
// ends, then closes whatever is left.
func (s *connSet) shutdown(ctx context.Context) {
	s.mu.Lock()
	if !s.drain && len(s.conns) == 0 {
		close(s.closed)
	}
	s.drain = true
	for h := range s.conns {
		if h.idle {
			h.c.SetReadDeadline(time.Now())
		}
	}
	for c := range s.pending {
		c.SetReadDeadline(time.Now()) // a handshake or a sniff would wait up to 2 min
	}
	s.mu.Unlock()
	select {
	case <-s.closed:
	case <-ctx.Done():
		s.mu.Lock()
		for h := range s.conns {
			h.c.Close()
		}
		s.mu.Unlock()
	}
}

// headBuffered reports whether br already holds a whole request head, so
// parsing it reads nothing more from the network. (A head ending in bare
// LFs is not recognised: the deadline is then set, which is only safer.)
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\r\n\r\n"))
}

// bodyBuffered reports whether a body of length n (-1: unknown, chunked)
// is already wholly in br, so reading it never waits for the network.
func bodyBuffered(n int64, br *bufio.Reader) bool {
	return n >= 0 && int64(br.Buffered()) >= n
}

// readDeadline is a connection's read deadline, moved only when it must:
// a deadline up to deadlineSlack earlier than the one asked for is kept
// (a later one never is), so a busy keep-alive connection resets its timer
// about once a second instead of several times a request.
type readDeadline struct {
	c  net.Conn
	at time.Time // the deadline set on c; zero: none
}

const deadlineSlack = time.Second

// farFuture marks a deadline that was changed behind our back.
var farFuture = time.Unix(1<<40, 0)

func (d *readDeadline) after(now time.Time, timeout time.Duration) {
	want := now.Add(timeout)
	if !d.at.IsZero() && !d.at.After(want) && want.Sub(d.at) < deadlineSlack {
		return
	}
	d.c.SetReadDeadline(want)
	d.at = want
}

func (d *readDeadline) none() {
	if !d.at.IsZero() {
		d.c.SetReadDeadline(time.Time{})
		d.at = time.Time{}
	}
}

// forget is called when something else may have set the deadline: the
// next after or none sets it whatever it was.
func (d *readDeadline) forget() { d.at = farFuture }

// errReader remembers the last error of the reader under it.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// h2Preface is what an HTTP/2 client with prior knowledge sends first.
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// sortTimeout bounds the TLS handshake and the wait for the first bytes
// that tell HTTP/1.1 from h2c.
const sortTimeout = 10 * time.Second

// acceptLoop accepts connections and sorts each in its own goroutine,
// which then serves an HTTP/1.1 connection on the lane or hands an HTTP/2
// one to the HTTP/2 server: one goroutine per connection, not per request.
func (p *Proxy) acceptLoop(ln net.Listener, tc *tls.Config, lis int) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		go p.sortConn(c, tc, lis)
	}
}

func (p *Proxy) sortConn(c net.Conn, tc *tls.Config, lis int) {
	if tc != nil {
		tlsConn := tls.Server(&peekedConn{Conn: c, lis: lis}, tc)
		tlsConn.SetDeadline(time.Now().Add(sortTimeout))
		if err := tlsConn.Handshake(); err != nil {
			c.Close()
			return
		}
		tlsConn.SetDeadline(time.Time{})
		if tlsConn.ConnectionState().NegotiatedProtocol == "h2" {
			p.h2.ln.push(tlsConn)
		} else {
			p.serveH1(tlsConn, nil, lis)
		}
		return
	}
	// Read just enough to decide: HTTP/1.1 request lines differ from the
	// preface by the second byte at the latest ("PUT", "POST", "PATCH").
	var buf [len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")]byte
	n := 0
	c.SetReadDeadline(time.Now().Add(sortTimeout))
	for {
		m, err := c.Read(buf[n:])
		n += m
		if n > 0 && !bytes.HasPrefix(h2Preface, buf[:n]) {
			break
		}
		if n == len(buf) {
			break
		}
		if err != nil {
			c.Close()
			return
		}
	}
	c.SetReadDeadline(time.Time{})
	if n == len(buf) && bytes.Equal(buf[:n], h2Preface) {
		p.h2.ln.push(&peekedConn{Conn: c, buf: buf[:n], lis: lis})
	} else {
		p.serveH1(c, buf[:n], lis)
	}
}

// peekedConn replays the bytes read while sorting, and remembers the
// listener the connection came in on.
type peekedConn struct {
	net.Conn
	buf []byte
	lis int
}

// peekedTLSConn is peekedConn for a TLS connection the lane hands over:
// it keeps *tls.Conn's methods, by which fasthttp tells a TLS request.
type peekedTLSConn struct {
	*tls.Conn
	buf []byte
	lis int
}

func (c *peekedTLSConn) Read(b []byte) (int, error) { return replay(&c.buf, b, c.Conn) }

// listenerOf returns the index of the listener c was accepted on, or -1.
func listenerOf(c net.Conn) int {
	if pc, ok := c.(*peekedTLSConn); ok {
		return pc.lis
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if pc, ok := c.(*peekedConn); ok {
		return pc.lis
	}
	return -1
}

func (c *peekedConn) Read(b []byte) (int, error) { return replay(&c.buf, b, c.Conn) }

// replay reads from *buf, the bytes already taken off the connection,
// until it is empty, and then from r.
func replay(buf *[]byte, b []byte, r io.Reader) (int, error) {
	if len(*buf) > 0 {
		n := copy(b, *buf)
		*buf = (*buf)[n:]
		return n, nil
	}
	return r.Read(b)
}

// chanListener feeds sorted connections to a server's Serve loop.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newChanListener() *chanListener {
	return &chanListener{addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

var errWouldBlock = errors.New("socket send buffer full")

// rawIO writes a message and then waits for the answer without the read
// that a net.Conn Read tries first. Right after a request (or a response
// on a keep-alive connection) that read nearly always finds nothing: a
// wasted syscall per message, which nginx, driven by epoll, does not make.
// Writing inside the RawConn read callback orders the write after the
// runtime has re-armed readiness for this read, so an answer, which can
// only follow the write, always wakes it. The state lives here, built once
// per connection, so the callback does not allocate per request.
type rawIO struct {
	rc      syscall.RawConn
	fn      func(fd uintptr) bool
	onWrite func() // called once the whole message is written; may be nil
	out     []byte
	buf     []byte
	written int
	n       int
	err     error
	wrote   bool
	once    bool // read without waiting
}

// newRawIO returns nil when c is not a plain socket (TLS, a test's pipe).
func newRawIO(c net.Conn, onWrite func()) *rawIO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc, onWrite: onWrite}
	r.fn = r.step
	return r
}

// writeThenRead writes out, waits until the socket is readable, and reads
// once into buf. written < len(out) means the rest of out is still to be
// written the ordinary way: err is then errWouldBlock (the send buffer is
// full) or the error that stopped the write (a deadline in the past among
// them).
func (r *rawIO) writeThenRead(out, buf []byte) (written, n int, err error) {
	r.out, r.buf, r.written, r.n, r.err, r.wrote = out, buf, 0, 0, nil, false
	rerr := r.rc.Read(r.fn)
	written, n, err = r.written, r.n, r.err
	r.out, r.buf = nil, nil
	if err == nil {
		err = rerr
	}
	return written, n, err
}

// readNow reads what buf can take of what is waiting, without waiting:
// (0, nil) when nothing is.
func (r *rawIO) readNow(buf []byte) (int, error) {
	r.out, r.buf, r.written, r.n, r.err, r.wrote = nil, buf, 0, 0, nil, true
	r.once = true
	rerr := r.rc.Read(r.fn)
	n, err := r.n, r.err
	r.buf, r.once = nil, false
	if err == nil {
		err = rerr
	}
	return n, err
}

func (r *rawIO) step(fd uintptr) bool {
	if !r.wrote {
		r.wrote = true
		for r.written < len(r.out) {
			m, err := syscall.Write(int(fd), r.out[r.written:])
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				r.err = errWouldBlock
				return true
			case err != nil:
				r.err = os.NewSyscallError("write", err)
				return true
			}
			r.written += m
		}
		if r.onWrite != nil {
			r.onWrite()
		}
		return false // wait until readable
	}
	for {
		m, err := syscall.Read(int(fd), r.buf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return r.once // readNow does not wait
		case err != nil:
			r.err = os.NewSyscallError("read", err)
		case m == 0:
			r.err = io.EOF
		}
		r.n = max(m, 0)
		return true
	}
}

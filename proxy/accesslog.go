package proxy

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/deployment-guardian/guardian/proxy/record"
	"github.com/valyala/fasthttp"
)

// accessLog writes one JSON object per line. A nil *accessLog is off and
// costs one nil check per request.
type accessLog struct {
	mu     sync.Mutex
	w      io.Writer
	closer io.Closer
	buf    []byte
}

func openAccessLog(path string, w io.Writer) (*accessLog, error) {
	switch {
	case w != nil:
		return &accessLog{w: w}, nil
	case path == "":
		return nil, nil
	case path == "-":
		return &accessLog{w: os.Stdout}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &accessLog{w: f, closer: f}, nil
}

func (l *accessLog) close() error {
	if l == nil || l.closer == nil {
		return nil
	}
	return l.closer.Close()
}

// entry is what both protocol paths log.
type entry struct {
	start          time.Time
	proto          string
	method, host   string
	path           []byte
	remote         string
	route, version string
	status         int
	kind           record.ErrorKind
	bytesOut       int
}

func (l *accessLog) fast(ctx *fasthttp.RequestCtx, start time.Time, route, version string, status int, kind record.ErrorKind) {
	if l == nil {
		return
	}
	l.write(entry{start: start, proto: "HTTP/1.1", method: string(ctx.Method()), host: string(ctx.Host()),
		path: ctx.RequestURI(), remote: ctx.RemoteAddr().String(), route: route, version: version,
		status: status, kind: kind, bytesOut: bodyLen(&ctx.Response)})
}

func (l *accessLog) std(req *http.Request, start time.Time, route, version string, status int, kind record.ErrorKind) {
	if l == nil {
		return
	}
	l.write(entry{start: start, proto: req.Proto, method: req.Method, host: req.Host,
		path: []byte(req.RequestURI), remote: req.RemoteAddr, route: route, version: version,
		status: status, kind: kind, bytesOut: -1})
}

func (l *accessLog) write(e entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf[:0]
	b = append(b, `{"time":`...)
	b = appendJSON(b, e.start.UTC().Format(time.RFC3339Nano))
	b = append(b, `,"proto":`...)
	b = appendJSON(b, e.proto)
	b = append(b, `,"method":`...)
	b = appendJSON(b, e.method)
	b = append(b, `,"host":`...)
	b = appendJSON(b, e.host)
	b = append(b, `,"uri":`...)
	b = appendJSON(b, string(e.path))
	b = append(b, `,"remote":`...)
	b = appendJSON(b, e.remote)
	b = append(b, `,"route":`...)
	b = appendJSON(b, e.route)
	b = append(b, `,"version":`...)
	b = appendJSON(b, e.version)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"duration_us":`...)
	b = strconv.AppendInt(b, time.Since(e.start).Microseconds(), 10)
	if e.bytesOut >= 0 {
		b = append(b, `,"bytes":`...)
		b = strconv.AppendInt(b, int64(e.bytesOut), 10)
	}
	if e.kind != record.None {
		b = append(b, `,"error":`...)
		b = appendJSON(b, e.kind.String())
	}
	b = append(b, "}\n"...)
	l.buf = b
	l.w.Write(b)
}

// appendJSON appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSON(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }

// bodyLen is the buffered body's length; a streamed body is not read for it.
func bodyLen(r *fasthttp.Response) int {
	if r.IsBodyStream() {
		return -1
	}
	return len(r.Body())
}

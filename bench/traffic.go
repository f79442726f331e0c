// Package bench replays recorded or synthetic traffic through rollout
// policies on a virtual clock, to measure how fast each one catches a
// regression, how many users it hurts first and how often it rolls back a
// healthy release for nothing.
package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Request is one replayed request. Version is empty when the log does not
// say which version served it; the replay then splits traffic by the
// policy's own weights.
type Request struct {
	Time    time.Time
	Version string
	Latency time.Duration
	Status  int // 0: no HTTP answer (connection failure)
}

// Failed reports whether the request counts as an error for the analysis:
// a 5xx answer or no answer at all.
func (r Request) Failed() bool { return r.Status == 0 || r.Status >= 500 }

// Format names an access-log format.
type Format string

const (
	FormatEnvoy Format = "envoy" // Envoy JSON access log
	FormatNginx Format = "nginx" // combined + $request_time [$upstream_response_time]
	FormatCSV   Format = "csv"   // ts,version,latency_ms,status
)

// ParseFormat accepts the names used on the command line.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case FormatEnvoy, FormatNginx, FormatCSV:
		return f, nil
	}
	return "", fmt.Errorf("format %q: want envoy, nginx or csv", s)
}

// Malformed is a log line that could not be read, kept with its number so a
// user can find it.
type Malformed struct {
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}

// ReadStats summarises a read: every line is either a request or malformed,
// never silently dropped (blank lines and # comments aside).
type ReadStats struct {
	Lines     int
	Requests  int
	Malformed int
	// Examples holds the first malformed lines (up to MaxMalformedExamples).
	Examples []Malformed
}

// MaxMalformedExamples bounds how many malformed lines are kept in detail.
const MaxMalformedExamples = 20

// VersionOf maps an upstream cluster name from an Envoy log to a version. The
// default takes the last dash-separated part ("checkout-canary" -> "canary")
// and treats known baseline names as "stable".
type VersionOf func(cluster string) string

// DefaultVersionOf is the cluster-name convention Guardian's xDS builders use.
func DefaultVersionOf(cluster string) string {
	if cluster == "" {
		return ""
	}
	v := cluster
	if i := strings.LastIndexAny(cluster, "-_."); i >= 0 && i < len(cluster)-1 {
		v = cluster[i+1:]
	}
	switch v {
	case "baseline", "primary", "blue":
		return "stable"
	case "green":
		return "canary"
	}
	return v
}

// ReadLog streams requests from r in the given format to fn, line by line, so
// a log of millions of requests needs no more memory than one line. progress,
// if not nil, is called with the bytes consumed every few thousand lines.
func ReadLog(r io.Reader, format Format, versionOf VersionOf, fn func(Request) error, progress func(bytes int64)) (ReadStats, error) {
	if versionOf == nil {
		versionOf = DefaultVersionOf
	}
	var parse func(line []byte) (Request, error)
	switch format {
	case FormatEnvoy:
		parse = func(line []byte) (Request, error) { return parseEnvoy(line, versionOf) }
	case FormatNginx:
		parse = parseNginx
	case FormatCSV:
		parse = parseCSV
	default:
		return ReadStats{}, fmt.Errorf("format %q: want envoy, nginx or csv", format)
	}
	var st ReadStats
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var consumed int64
	sawData := false // a CSV header may only be the first line with content
	for sc.Scan() {
		st.Lines++
		raw := sc.Bytes()
		consumed += int64(len(raw)) + 1
		if progress != nil && st.Lines%8192 == 0 {
			progress(consumed)
		}
		line := bytes.TrimSpace(raw)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if format == FormatCSV && !sawData && isCSVHeader(line) {
			sawData = true
			continue
		}
		sawData = true
		req, err := parse(line)
		if err != nil {
			st.Malformed++
			if len(st.Examples) < MaxMalformedExamples {
				st.Examples = append(st.Examples, Malformed{Line: st.Lines, Reason: err.Error()})
			}
			continue
		}
		st.Requests++
		if err := fn(req); err != nil {
			return st, err
		}
	}
	if progress != nil {
		progress(consumed)
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("line %d: %w", st.Lines+1, err)
	}
	return st, nil
}

func isCSVHeader(line []byte) bool {
	return bytes.HasPrefix(bytes.ToLower(line), []byte("ts,"))
}

type envoyLine struct {
	StartTime       *string          `json:"start_time"`
	Duration        *json.Number     `json:"duration"`
	ResponseCode    *json.RawMessage `json:"response_code"`
	UpstreamCluster string           `json:"upstream_cluster"`
}

func parseEnvoy(line []byte, versionOf VersionOf) (Request, error) {
	var e envoyLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&e); err != nil {
		return Request{}, fmt.Errorf("not a JSON object: %v", err)
	}
	if e.StartTime == nil {
		return Request{}, fmt.Errorf("start_time is missing")
	}
	t, err := time.Parse(time.RFC3339Nano, *e.StartTime)
	if err != nil {
		return Request{}, fmt.Errorf("start_time %q is not RFC 3339", *e.StartTime)
	}
	if e.Duration == nil {
		return Request{}, fmt.Errorf("duration is missing")
	}
	ms, err := e.Duration.Float64()
	if err != nil || ms < 0 || math.IsInf(ms, 0) {
		return Request{}, fmt.Errorf("duration %q is not a non-negative number of milliseconds", e.Duration.String())
	}
	if e.ResponseCode == nil {
		return Request{}, fmt.Errorf("response_code is missing")
	}
	code, err := jsonInt(*e.ResponseCode)
	if err != nil || code < 0 || code > 999 {
		return Request{}, fmt.Errorf("response_code %s is not an HTTP status", string(*e.ResponseCode))
	}
	return Request{Time: t, Version: versionOf(e.UpstreamCluster), Latency: msDuration(ms), Status: code}, nil
}

// jsonInt reads a status that Envoy may print as a number or, with some
// formatters, as a string.
func jsonInt(raw json.RawMessage) (int, error) {
	s := strings.Trim(string(raw), `"`)
	if s == "-" || s == "" {
		return 0, nil
	}
	return strconv.Atoi(s)
}

// nginx: $remote_addr - $remote_user [$time_local] "$request" $status
// $body_bytes_sent "$http_referer" "$http_user_agent" $request_time
// [$upstream_response_time]. Latency is $upstream_response_time when present
// (what the upstream version cost), else $request_time.
func parseNginx(line []byte) (Request, error) {
	s := string(line)
	lb := strings.IndexByte(s, '[')
	rb := strings.IndexByte(s, ']')
	if lb < 0 || rb < lb {
		return Request{}, fmt.Errorf("no [time_local] field")
	}
	t, err := time.Parse("02/Jan/2006:15:04:05 -0700", s[lb+1:rb])
	if err != nil {
		return Request{}, fmt.Errorf("time %q is not in nginx's time_local format", s[lb+1:rb])
	}
	rest := s[rb+1:]
	// Three quoted fields follow: request, referer, user agent; the status
	// and bytes sit between the first and second.
	var quoted [3][2]int
	pos := 0
	for i := range quoted {
		a := strings.IndexByte(rest[pos:], '"')
		if a < 0 {
			return Request{}, fmt.Errorf("expected the combined format's quoted fields")
		}
		a += pos
		b := a + 1
		for b < len(rest) && !(rest[b] == '"' && rest[b-1] != '\\') {
			b++
		}
		if b >= len(rest) {
			return Request{}, fmt.Errorf("unterminated quoted field")
		}
		quoted[i] = [2]int{a, b}
		pos = b + 1
	}
	mid := strings.Fields(rest[quoted[0][1]+1 : quoted[1][0]])
	if len(mid) < 1 {
		return Request{}, fmt.Errorf("status is missing")
	}
	status, err := strconv.Atoi(mid[0])
	if err != nil || status < 0 || status > 999 {
		return Request{}, fmt.Errorf("status %q is not an HTTP status", mid[0])
	}
	tail := strings.Fields(rest[quoted[2][1]+1:])
	if len(tail) == 0 {
		return Request{}, fmt.Errorf("$request_time is missing (log_format needs $request_time after the combined fields)")
	}
	secs := -1.0
	if len(tail) >= 2 && tail[1] != "-" {
		// Several upstream tries are listed "0.010, 0.020"; the user waited for all.
		secs = 0
		for _, p := range strings.Split(strings.Join(tail[1:], ""), ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil {
				return Request{}, fmt.Errorf("$upstream_response_time %q is not a number", strings.Join(tail[1:], " "))
			}
			secs += v
		}
	}
	if secs < 0 {
		v, err := strconv.ParseFloat(tail[0], 64)
		if err != nil || v < 0 {
			return Request{}, fmt.Errorf("$request_time %q is not a number of seconds", tail[0])
		}
		secs = v
	}
	return Request{Time: t, Latency: msDuration(secs * 1000), Status: status}, nil
}

// csv: ts,version,latency_ms,status with ts in RFC 3339 or Unix seconds
// (fractions allowed). The version may be empty.
func parseCSV(line []byte) (Request, error) {
	f := strings.Split(string(line), ",")
	if len(f) != 4 {
		return Request{}, fmt.Errorf("want 4 fields ts,version,latency_ms,status, got %d", len(f))
	}
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	var t time.Time
	if secs, err := strconv.ParseFloat(f[0], 64); err == nil {
		whole, frac := math.Modf(secs)
		t = time.Unix(int64(whole), int64(frac*1e9)).UTC()
	} else if t, err = time.Parse(time.RFC3339Nano, f[0]); err != nil {
		return Request{}, fmt.Errorf("ts %q is neither RFC 3339 nor Unix seconds", f[0])
	}
	ms, err := strconv.ParseFloat(f[2], 64)
	if err != nil || ms < 0 || math.IsInf(ms, 0) || math.IsNaN(ms) {
		return Request{}, fmt.Errorf("latency_ms %q is not a non-negative number", f[2])
	}
	status, err := strconv.Atoi(f[3])
	if err != nil || status < 0 || status > 999 {
		return Request{}, fmt.Errorf("status %q is not an HTTP status", f[3])
	}
	return Request{Time: t, Version: f[1], Latency: msDuration(ms), Status: status}, nil
}

func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

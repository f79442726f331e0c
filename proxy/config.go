package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	"gopkg.in/yaml.v3"
)

// Config is the data plane's whole configuration. It is a plain value: decode
// it with LoadConfig or DecodeConfig (YAML or JSON, unknown fields rejected),
// or build it in code, then check it with Validate. New validates again.
type Config struct {
	Listeners []Listener `yaml:"listeners" json:"listeners"`
	Routes    []Route    `yaml:"routes" json:"routes"`
	Timeouts  Timeouts   `yaml:"timeouts" json:"timeouts"`
	AccessLog AccessLog  `yaml:"accessLog" json:"accessLog"`
	// MaxHeaderBytes bounds a request's header block; larger requests get
	// 431. Zero means DefaultMaxHeaderBytes.
	MaxHeaderBytes int `yaml:"maxHeaderBytes" json:"maxHeaderBytes"`
	// MaxBodyBytes bounds a request body on the HTTP/1.1 path, which
	// buffers it; larger bodies get 413. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int `yaml:"maxBodyBytes" json:"maxBodyBytes"`
}

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 64 << 20

// DefaultMaxHeaderBytes is the request header limit when Config.MaxHeaderBytes is 0.
const DefaultMaxHeaderBytes = 16 << 10

// Listener is one address the proxy accepts connections on. With TLS set the
// listener terminates TLS and offers h2 and http/1.1 by ALPN; without it the
// listener speaks HTTP/1.1 and h2c (prior knowledge).
type Listener struct {
	Addr string `yaml:"addr" json:"addr"`
	TLS  *TLS   `yaml:"tls" json:"tls"`
}

// TLS names PEM files holding a certificate chain and its private key.
type TLS struct {
	CertFile string `yaml:"certFile" json:"certFile"`
	KeyFile  string `yaml:"keyFile" json:"keyFile"`
}

// Route is one rollout served by the proxy: the requests it matches and the
// versions they are split between.
type Route struct {
	// Name identifies the route to SetWeights and Snapshot; it is the
	// rollout's name.
	Name  string `yaml:"name" json:"name"`
	Match Match  `yaml:"match" json:"match"`
	// Listeners binds the route to the listeners with these addresses
	// (as written in Config.Listeners); empty means every listener. Two
	// rollouts served on different addresses then never capture each
	// other's requests, whatever their matches.
	Listeners []string `yaml:"listeners" json:"listeners"`
	// Versions in a fixed order. The first is the baseline (stable); sticky
	// users are placed by cumulative ranges that start with the last-listed
	// versions and leave the baseline the remainder, so growing a canary's
	// weight only ever adds users to it.
	Versions []Version `yaml:"versions" json:"versions"`
	// Cohorts pin matching requests to a version whatever the weights; the
	// first matching rule wins.
	Cohorts []Cohort `yaml:"cohorts" json:"cohorts"`
	Sticky  Sticky   `yaml:"sticky" json:"sticky"`
	// Weights is the initial split in percent summing to 100. Empty means
	// 100 to the first version.
	Weights rollout.Weights `yaml:"weights" json:"weights"`
	Mirror  *Mirror         `yaml:"mirror" json:"mirror"`
	// RequestTimeout bounds a whole exchange with the upstream; zero means
	// Timeouts.Request.
	RequestTimeout Duration `yaml:"requestTimeout" json:"requestTimeout"`
	// StreamResponseBody passes response bodies through as they arrive
	// instead of buffering them (server-sent events, large downloads) on
	// connections the HTTP/1.1 lane handed to fasthttp, where it costs
	// throughput, so it is per route. The lane and HTTP/2 always stream.
	StreamResponseBody bool `yaml:"streamResponseBody" json:"streamResponseBody"`
}

// Match selects requests by Host (exact, port ignored; empty matches any)
// and path prefix (empty means "/"). Routes are tried in order.
type Match struct {
	Host       string `yaml:"host" json:"host"`
	PathPrefix string `yaml:"pathPrefix" json:"pathPrefix"`
}

// Version is one deployable version and its endpoint pool.
type Version struct {
	Name string `yaml:"name" json:"name"`
	// Endpoints are URLs (http://host:port, https://host:port, h2c://host:port
	// for HTTP/2 without TLS) or bare host:port, meaning http.
	Endpoints []string `yaml:"endpoints" json:"endpoints"`
	// LB is round-robin (default) or least-request (power of two choices).
	LB string `yaml:"lb" json:"lb"`
	// HealthCheck, when set, probes every endpoint actively.
	HealthCheck *HealthCheck `yaml:"healthCheck" json:"healthCheck"`
}

// HealthCheck probes a version's endpoints with GET Path every Interval. An
// endpoint answering 2xx/3xx within Timeout is healthy; unhealthy endpoints
// get no traffic while a healthy one remains in the pool (if none does, all
// are used: failing open beats refusing every request). A round in which any
// endpoint fails is a failed round for the guard's health_check_failures.
type HealthCheck struct {
	Path     string   `yaml:"path" json:"path"`
	Interval Duration `yaml:"interval" json:"interval"` // default 5s
	Timeout  Duration `yaml:"timeout" json:"timeout"`   // default 2s
}

// Load-balancing policies.
const (
	RoundRobin   = "round-robin"
	LeastRequest = "least-request"
)

// Cohort pins requests carrying a header, cookie or query parameter to a
// version. Exactly one of Header, Cookie and Query is set. An empty Value
// matches any value that is present.
type Cohort struct {
	Header  string `yaml:"header" json:"header"`
	Cookie  string `yaml:"cookie" json:"cookie"`
	Query   string `yaml:"query" json:"query"`
	Value   string `yaml:"value" json:"value"`
	Version string `yaml:"version" json:"version"`
}

// Sticky names where a user's key is found; at most one is set. Requests
// with a key keep their version while weights grow.
type Sticky struct {
	Header string `yaml:"header" json:"header"`
	Cookie string `yaml:"cookie" json:"cookie"`
}

// Mirror copies Percent of a route's requests to Version. The copy's
// response is discarded and recorded apart from user traffic.
type Mirror struct {
	Version string `yaml:"version" json:"version"`
	Percent int    `yaml:"percent" json:"percent"`
}

// Timeouts for upstream and client connections. Zero values take the
// defaults below.
type Timeouts struct {
	Connect        Duration `yaml:"connect" json:"connect"`
	ResponseHeader Duration `yaml:"responseHeader" json:"responseHeader"`
	Idle           Duration `yaml:"idle" json:"idle"`
	Request        Duration `yaml:"request" json:"request"`
}

// Default timeouts.
const (
	DefaultConnectTimeout        = 5 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultIdleTimeout           = 90 * time.Second
	DefaultRequestTimeout        = 120 * time.Second
)

// AccessLog writes one JSON line per request. Path "" turns it off (the
// default), "-" means standard output.
type AccessLog struct {
	Path string `yaml:"path" json:"path"`
}

// Duration is a time.Duration written as "250ms" or "5s" in configs.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (want e.g. 250ms, 5s)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("%s is not a duration string", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (want e.g. 250ms, 5s)", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}

// LoadConfig reads and strictly decodes a YAML or JSON config file. It does
// not validate; call Validate.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, err
	}
	defer f.Close()
	return DecodeConfig(f, path)
}

// DecodeConfig strictly decodes YAML or JSON (JSON is read as YAML) from r;
// name is used in error messages. Unknown fields are errors with their line.
func DecodeConfig(r io.Reader, name string) (Config, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("%s: empty config", name)
		}
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// Validate reports every problem in c, each naming its field, joined into
// one error; nil means c is usable.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	for i, l := range c.Listeners {
		f := fmt.Sprintf("listeners[%d]", i)
		if _, _, err := net.SplitHostPort(l.Addr); err != nil {
			bad(f+".addr", "%q is not host:port", l.Addr)
		}
		if l.TLS != nil {
			if l.TLS.CertFile == "" {
				bad(f+".tls.certFile", "required with tls")
			}
			if l.TLS.KeyFile == "" {
				bad(f+".tls.keyFile", "required with tls")
			}
		}
	}
	// A proxy with no listener may have no route: a process that only
	// drives an xDS fleet still hosts the admin API's data plane.
	if len(c.Routes) == 0 && len(c.Listeners) > 0 {
		bad("routes", "at least one route is required")
	}
	addrs := map[string]bool{}
	for _, l := range c.Listeners {
		addrs[l.Addr] = true
	}
	names := map[string]bool{}
	for i, r := range c.Routes {
		f := fmt.Sprintf("routes[%d]", i)
		if r.Name == "" {
			bad(f+".name", "required")
		} else if names[r.Name] {
			bad(f+".name", "duplicate route %q", r.Name)
		}
		names[r.Name] = true
		for j, l := range r.Listeners {
			if !addrs[l] {
				bad(fmt.Sprintf("%s.listeners[%d]", f, j), "%q is not the addr of a listener", l)
			}
		}
		if p := r.Match.PathPrefix; p != "" && !strings.HasPrefix(p, "/") {
			bad(f+".match.pathPrefix", "%q must start with /", p)
		}
		if len(r.Versions) == 0 {
			bad(f+".versions", "at least one version is required")
		}
		vs := map[string]bool{}
		for j, v := range r.Versions {
			vf := fmt.Sprintf("%s.versions[%d]", f, j)
			if v.Name == "" {
				bad(vf+".name", "required")
			} else if vs[v.Name] {
				bad(vf+".name", "duplicate version %q", v.Name)
			}
			vs[v.Name] = true
			switch v.LB {
			case "", RoundRobin, LeastRequest:
			default:
				bad(vf+".lb", "%q is not %s or %s", v.LB, RoundRobin, LeastRequest)
			}
			if hc := v.HealthCheck; hc != nil {
				if !strings.HasPrefix(hc.Path, "/") {
					bad(vf+".healthCheck.path", "%q must start with /", hc.Path)
				}
				if hc.Interval < 0 || hc.Timeout < 0 {
					bad(vf+".healthCheck", "negative interval or timeout")
				}
			}
			for k, e := range v.Endpoints {
				if _, err := parseEndpoint(e); err != nil {
					bad(fmt.Sprintf("%s.endpoints[%d]", vf, k), "%v", err)
				}
			}
		}
		for j, co := range r.Cohorts {
			cf := fmt.Sprintf("%s.cohorts[%d]", f, j)
			n := 0
			for _, s := range []string{co.Header, co.Cookie, co.Query} {
				if s != "" {
					n++
				}
			}
			if n != 1 {
				bad(cf, "exactly one of header, cookie, query is required")
			}
			if !vs[co.Version] {
				bad(cf+".version", "unknown version %q", co.Version)
			}
		}
		if r.Sticky.Header != "" && r.Sticky.Cookie != "" {
			bad(f+".sticky", "header and cookie are exclusive")
		}
		if len(r.Weights) > 0 {
			if err := checkWeights(r.Weights, vs); err != nil {
				bad(f+".weights", "%v", err)
			}
		}
		if m := r.Mirror; m != nil {
			if !vs[m.Version] {
				bad(f+".mirror.version", "unknown version %q", m.Version)
			}
			if m.Percent < 0 || m.Percent > 100 {
				bad(f+".mirror.percent", "%d is not within 0..100", m.Percent)
			}
		}
		if r.RequestTimeout < 0 {
			bad(f+".requestTimeout", "negative")
		}
	}
	for _, t := range []struct {
		name string
		d    Duration
	}{{"connect", c.Timeouts.Connect}, {"responseHeader", c.Timeouts.ResponseHeader}, {"idle", c.Timeouts.Idle}, {"request", c.Timeouts.Request}} {
		if t.d < 0 {
			bad("timeouts."+t.name, "negative")
		}
	}
	if c.MaxBodyBytes < 0 {
		bad("maxBodyBytes", "negative")
	}
	if c.MaxHeaderBytes < 0 {
		bad("maxHeaderBytes", "negative")
	} else if c.MaxHeaderBytes > 0 && c.MaxHeaderBytes < 1024 {
		bad("maxHeaderBytes", "%d is below 1024", c.MaxHeaderBytes)
	}
	return errors.Join(errs...)
}

// checkWeights reports whether w names only known versions, has no value
// outside 0..100 and sums to 100.
func checkWeights(w rollout.Weights, known map[string]bool) error {
	sum := 0
	var errs []error
	for name, v := range w {
		if !known[name] {
			errs = append(errs, fmt.Errorf("unknown version %q", name))
		}
		if v < 0 || v > 100 {
			errs = append(errs, fmt.Errorf("%s=%d is not within 0..100", name, v))
		}
		sum += v
	}
	if len(errs) == 0 && sum != 100 {
		errs = append(errs, fmt.Errorf("weights sum to %d, want 100", sum))
	}
	return errors.Join(errs...)
}

// endpointSpec is a parsed endpoint.
type endpointSpec struct {
	scheme string // http, https or h2c
	addr   string // host:port
}

func parseEndpoint(s string) (endpointSpec, error) {
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return endpointSpec{}, fmt.Errorf("%q is neither a URL nor host:port", s)
		}
		return endpointSpec{scheme: "http", addr: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return endpointSpec{}, fmt.Errorf("%q: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "h2c" {
		return endpointSpec{}, fmt.Errorf("%q: scheme must be http, https or h2c", s)
	}
	if u.Host == "" {
		return endpointSpec{}, fmt.Errorf("%q: no host", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return endpointSpec{}, fmt.Errorf("%q: endpoints carry no path or query", s)
	}
	addr := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			addr = net.JoinHostPort(u.Hostname(), "443")
		} else {
			addr = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	return endpointSpec{scheme: u.Scheme, addr: addr}, nil
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&t.Connect, DefaultConnectTimeout)
	def(&t.ResponseHeader, DefaultResponseHeaderTimeout)
	def(&t.Idle, DefaultIdleTimeout)
	def(&t.Request, DefaultRequestTimeout)
	return t
}

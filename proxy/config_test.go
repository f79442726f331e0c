package proxy

import (
	"strings"
	"testing"
	"time"
)

const sampleYAML = `
listeners:
  - addr: 127.0.0.1:8080
  - addr: 127.0.0.1:8443
    tls: {certFile: cert.pem, keyFile: key.pem}
timeouts: {connect: 2s, responseHeader: 10s, idle: 60s, request: 30s}
accessLog: {path: "-"}
maxHeaderBytes: 8192
routes:
  - name: checkout
    match: {host: shop.example, pathPrefix: /checkout}
    versions:
      - name: stable
        endpoints: [http://127.0.0.1:9101, 127.0.0.1:9102]
        lb: least-request
      - name: canary
        endpoints: [h2c://127.0.0.1:9103]
    cohorts:
      - {header: X-Beta, value: "1", version: canary}
    sticky: {cookie: uid}
    weights: {stable: 95, canary: 5}
    mirror: {version: canary, percent: 10}
    requestTimeout: 5s
`

func TestDecodeConfig(t *testing.T) {
	c, err := DecodeConfig(strings.NewReader(sampleYAML), "guardian.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	r := c.Routes[0]
	if r.Weights["canary"] != 5 || r.Sticky.Cookie != "uid" || time.Duration(r.RequestTimeout) != 5*time.Second ||
		r.Versions[0].LB != LeastRequest || c.Listeners[1].TLS.KeyFile != "key.pem" || time.Duration(c.Timeouts.Connect) != 2*time.Second {
		t.Errorf("decoded %+v", c)
	}
	j := `{"routes":[{"name":"a","versions":[{"name":"v","endpoints":["127.0.0.1:1"]}]}],"timeouts":{"idle":"5s"}}`
	c, err = DecodeConfig(strings.NewReader(j), "g.json")
	if err != nil || c.Validate() != nil || time.Duration(c.Timeouts.Idle) != 5*time.Second {
		t.Errorf("JSON config: %+v, %v", c, err)
	}
}

func TestDecodeConfigRejectsUnknownFieldsWithLine(t *testing.T) {
	_, err := DecodeConfig(strings.NewReader("routes:\n  - name: a\n    wieghts: {stable: 100}\n"), "g.yaml")
	if err == nil || !strings.Contains(err.Error(), "g.yaml") || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "wieghts") {
		t.Fatalf("error %v, want one naming g.yaml, line 3 and the field", err)
	}
	_, err = DecodeConfig(strings.NewReader("timeouts: {idle: soon}\n"), "g.yaml")
	if err == nil || !strings.Contains(err.Error(), "soon") {
		t.Fatalf("bad duration error %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	ok := func() Config {
		return Config{Routes: []Route{{Name: "a", Versions: []Version{{Name: "stable", Endpoints: []string{"127.0.0.1:1"}}, {Name: "canary"}}}}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		wants []string
	}{
		{"no routes on a listener", func(c *Config) { c.Routes = nil; c.Listeners = []Listener{{Addr: "127.0.0.1:8080"}} }, []string{"routes: at least one"}},
		{"bad listener", func(c *Config) { c.Listeners = []Listener{{Addr: "nope", TLS: &TLS{}}} },
			[]string{"listeners[0].addr", "listeners[0].tls.certFile", "listeners[0].tls.keyFile"}},
		{"duplicate names", func(c *Config) {
			c.Routes = append(c.Routes, c.Routes[0])
			c.Routes[0].Versions[1].Name = "stable"
		}, []string{"routes[1].name: duplicate", "routes[0].versions[1].name: duplicate"}},
		{"bad endpoint and lb", func(c *Config) {
			c.Routes[0].Versions[0].Endpoints = []string{"ftp://x:1", "nohostport", "http://h:1/path"}
			c.Routes[0].Versions[0].LB = "random"
		}, []string{"versions[0].endpoints[0]", "versions[0].endpoints[1]", "versions[0].endpoints[2]", "versions[0].lb"}},
		{"weights", func(c *Config) { c.Routes[0].Weights = map[string]int{"stable": 90, "canary": 5} }, []string{"routes[0].weights: weights sum to 95"}},
		{"unknown weight version", func(c *Config) { c.Routes[0].Weights = map[string]int{"stable": 90, "blue": 10} }, []string{`unknown version "blue"`}},
		{"cohort", func(c *Config) {
			c.Routes[0].Cohorts = []Cohort{{Header: "a", Cookie: "b", Version: "x"}}
		}, []string{"routes[0].cohorts[0]: exactly one", "routes[0].cohorts[0].version"}},
		{"sticky and mirror", func(c *Config) {
			c.Routes[0].Sticky = Sticky{Header: "h", Cookie: "c"}
			c.Routes[0].Mirror = &Mirror{Version: "x", Percent: 101}
		}, []string{"routes[0].sticky", "routes[0].mirror.version", "routes[0].mirror.percent"}},
		{"path prefix and limits", func(c *Config) {
			c.Routes[0].Match.PathPrefix = "api"
			c.MaxHeaderBytes = 10
			c.Timeouts.Connect = -1
		}, []string{"routes[0].match.pathPrefix", "maxHeaderBytes", "timeouts.connect"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.edit(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want errors")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	c := ok()
	if err := c.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/xds"
)

// testCA issues loopback certificates into a temp dir.
type testCA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca := &testCA{dir: t.TempDir()}
	var err error
	if ca.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "guardian test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	ca.cert, _ = x509.ParseCertificate(der)
	ca.file = ca.write(t, "ca.crt", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return ca.write(t, name+".crt", "CERTIFICATE", der), ca.write(t, name+".key", "EC PRIVATE KEY", kder)
}

// A control plane that requires client certificates: a proxy with one
// follows it, a proxy without one never gets weights (and is not ready).
func TestProxyXDSMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue(t, "control-plane", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.issue(t, "edge-1", x509.ExtKeyUsageClientAuth)
	stable, _ := versionBackend(t, "stable")
	canary, _ := versionBackend(t, "canary")

	cp, err := xds.NewServer(xds.Config{Registerer: prometheus.NewRegistry(),
		TLS:    &xds.TLSConfig{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: ca.file},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.SetService(xds.Service{Name: "edge",
		Versions: []xds.Version{{Name: "stable", Endpoints: []string{hostPort(t, stable.URL)}}, {Name: "canary", Endpoints: []string{hostPort(t, canary.URL)}}},
		Weights:  rollout.Weights{"stable": 60, "canary": 40}}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go cp.Serve(ln)
	defer cp.Stop()
	addr := ln.Addr().String()

	withCert := startFleetProxy(t, "--stable", stable.URL, "--canary", canary.URL,
		"--xds", addr, "--xds-service", "edge", "--node-id", "edge-1", "--xds-ca", ca.file, "--xds-cert", cliCert, "--xds-key", cliKey)
	without := startFleetProxy(t, "--stable", stable.URL, "--canary", canary.URL,
		"--xds", addr, "--xds-service", "edge", "--node-id", "edge-2", "--xds-ca", ca.file, "--xds-initial-fetch-timeout", "1m")

	withCert.waitState(xds.ClientConnected, 20*time.Second)
	withCert.waitWeights("default", rollout.Weights{"stable": 60, "canary": 40}, 10*time.Second)
	if got := withCert.split(100); got != 40 {
		t.Errorf("mTLS proxy at 40%%: %d of 100 on the canary", got)
	}
	var code int
	var st xds.ProxyClientStatus
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if code, st = without.readyz(); st.LastError != "" {
			break
		}
	}
	if code != 503 || st.State != xds.ClientWaiting || st.Connected || st.LastError == "" {
		t.Errorf("proxy without a client certificate: /readyz %d %+v, want 503 waiting with the handshake error", code, st)
	}
	t.Logf("refused proxy's last error: %s", st.LastError)
	if w := without.weights("default"); w["canary"] != 0 {
		t.Errorf("proxy without a client certificate has weights %v, want its own (canary 0)", w)
	}
}

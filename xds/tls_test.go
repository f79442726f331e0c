package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

type testPKI struct {
	dir                string
	ca                 *x509.Certificate
	caKey              *ecdsa.PrivateKey
	pool               *x509.CertPool
	caFile             string
	serverCert, server string // file paths: cert, key
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	var err error
	p.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "guardian test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca)
	p.caFile = p.write(t, "ca.crt", "CERTIFICATE", der)
	p.serverCert, p.server = p.issue(t, "server", x509.ExtKeyUsageServerAuth)
	return p
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *testPKI) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".crt", "CERTIFICATE", der), p.write(t, name+".key", "EC PRIVATE KEY", kder)
}

// firstResponse opens an ADS stream and returns the first listener answer.
func firstResponse(addr string, tc *tls.Config) (*discovery.DiscoveryResponse, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "tls-node"}, TypeUrl: resource.ListenerType, ResourceNames: []string{"pay"}}); err != nil {
		return nil, err
	}
	return st.Recv()
}

func TestServerMutualTLS(t *testing.T) {
	pki := newPKI(t)
	s, err := NewServer(Config{TLS: &TLSConfig{CertFile: pki.serverCert, KeyFile: pki.server, ClientCAFile: pki.caFile}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetService(simService("pay")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)

	clientCert, clientKey := pki.issue(t, "envoy-edge-1", x509.ExtKeyUsageClientAuth)
	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := firstResponse(ln.Addr().String(), &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatalf("client with a CA-signed certificate: %v", err)
	}
	if len(resp.GetResources()) != 1 || resp.GetVersionInfo() != s.Version() {
		t.Errorf("response %d resources version %s, want the pay listener at %s", len(resp.GetResources()), resp.GetVersionInfo(), s.Version())
	}
	if _, err := firstResponse(ln.Addr().String(), &tls.Config{RootCAs: pki.pool}); err == nil {
		t.Error("client without a certificate was served")
	}
}

// A client reconnecting with the version it already has must still get the
// resources on its new stream (xds.md: "send the current resources even
// when the client's version string equals the server's").
func TestReconnectWithCurrentVersionIsAnswered(t *testing.T) {
	s, _ := newTestServer(t)
	if err := s.SetService(simService("pay")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for attempt := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req := &discovery.DiscoveryRequest{Node: &core.Node{Id: "again"}, TypeUrl: resource.ClusterType, ResourceNames: []string{"pay-stable"}}
		if attempt == 1 {
			req.VersionInfo = s.Version() // resuming: "I have this version"
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		cancel()
		if err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		if len(resp.GetResources()) != 1 {
			t.Fatalf("attempt %d: %d resources, want the pay-stable cluster", attempt, len(resp.GetResources()))
		}
	}
}

// A node whose very first configuration is bad has no snapshot to be held
// at; its NACKs must not turn into a tight resend loop.
func TestNACKWithoutGoodSnapshotIsSlowedDown(t *testing.T) {
	s, _ := newTestServer(t)
	if err := s.SetService(simService("pay")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"pay-stable"}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "picky"}, TypeUrl: resource.ClusterType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	responses := 0
	for time.Since(start) < 300*time.Millisecond {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		responses++
		// Reject everything, keeping the (empty) version we started with.
		if err := st.Send(&discovery.DiscoveryRequest{
			TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce(), ResourceNames: names,
			ErrorDetail: &statuspb.Status{Code: 3, Message: "picky client rejects " + resp.GetVersionInfo()},
		}); err != nil {
			t.Fatal(err)
		}
	}
	if responses > 5 {
		t.Errorf("%d responses in 300ms to a NACKing node, want the resends slowed to a few", responses)
	}
	var nack *NACK
	for _, n := range s.Status().Nodes {
		for _, ty := range n.Types {
			if n.Node == "picky" && ty.NACK != nil {
				nack = ty.NACK
			}
		}
	}
	if nack == nil || !strings.Contains(nack.Reason, "picky client rejects") {
		t.Errorf("status NACK = %+v, want the client's reason", nack)
	}
}

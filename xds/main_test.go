package xds

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// grpc-go reads GRPC_XDS_BOOTSTRAP once, at package initialisation, and its
// only other way in is a ForTesting API. So TestMain picks a loopback port,
// writes the bootstrap and runs the test binary again with the variable
// set; that child serves the shared control plane (sharedXDS) on the port.
const (
	envBootstrap = "GRPC_XDS_BOOTSTRAP"
	envTestAddr  = "GUARDIAN_XDS_TEST_ADDR"
	testNodeID   = "guardian-test-node"
)

var (
	sharedXDS *Server
	sharedReg *prometheus.Registry
)

func TestMain(m *testing.M) {
	addr := os.Getenv(envTestAddr)
	if addr == "" {
		os.Exit(reexec())
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "xds test: listen:", err)
		os.Exit(1)
	}
	sharedReg = prometheus.NewRegistry()
	level := slog.LevelWarn
	if os.Getenv("GUARDIAN_XDS_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	sharedXDS, err = NewServer(Config{
		Listen:     addr,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		Registerer: sharedReg,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "xds test:", err)
		os.Exit(1)
	}
	go sharedXDS.Serve(ln)
	code := m.Run()
	sharedXDS.Stop()
	os.Exit(code)
}

func reexec() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "xds test:", err)
		return 1
	}
	addr := ln.Addr().String()
	ln.Close() // the child listens on it; nothing else binds loopback ports here
	dir, err := os.MkdirTemp("", "guardian-xds-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, "xds test:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	boot, _ := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      addr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": testNodeID, "locality": map[string]any{}},
	})
	path := filepath.Join(dir, "bootstrap.json")
	if err := os.WriteFile(path, boot, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "xds test:", err)
		return 1
	}
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), envBootstrap+"="+path, envTestAddr+"="+addr)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "xds test:", err)
		return 1
	}
	return 0
}

// A hand-registered service whose one method answers with the name of the
// version that served it.
const whichMethod = "/guardian.test.Echo/Which"

var echoDesc = grpc.ServiceDesc{
	ServiceName: "guardian.test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Which",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in wrapperspb.StringValue
			if err := dec(&in); err != nil {
				return nil, err
			}
			return wrapperspb.String(srv.(string)), nil
		},
	}},
}

// startBackend serves the echo service as version name on loopback.
func startBackend(t testing.TB, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	gs.RegisterService(&echoDesc, name)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

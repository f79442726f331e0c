package smoke

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestGRPCHealthAgainstARealServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	hs.SetServingStatus("orders.v2.Orders", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("payments.v1.Payments", healthpb.HealthCheckResponse_NOT_SERVING)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	addr := lis.Addr().String()

	s, _, err := Generate(GenerateOptions{NoHealth: true, GRPCHealth: addr, GRPCService: "orders.v2.Orders"})
	if err != nil {
		t.Fatal(err)
	}
	s.Tests = append(s.Tests,
		Test{Name: "whole server", GRPC: &GRPCCheck{}},
		Test{Name: "payments", GRPC: &GRPCCheck{Address: addr, Service: "payments.v1.Payments"}},
		Test{Name: "unknown", GRPC: &GRPCCheck{Address: addr, Service: "nope.v1.Nope"}},
	)
	res := resultByName(Run(context.Background(), fast(s), Options{GRPCTarget: addr}))
	for name, want := range map[string]string{
		"grpc health orders.v2.Orders": "",
		"whole server":                 "",
		"payments":                     "grpc health " + addr + " service payments.v1.Payments: NOT_SERVING, want SERVING",
		"unknown":                      "code = NotFound",
	} {
		tr := res[name]
		if want == "" && !tr.Passed {
			t.Errorf("%s failed: %s", name, tr.Reason)
		}
		if want != "" && (tr.Passed || !strings.Contains(tr.Reason, want)) {
			t.Errorf("%s: passed=%v reason=%q, want %q", name, tr.Passed, tr.Reason, want)
		}
	}

	// The server going away fails the check.
	hs.Shutdown()
	res = resultByName(Run(context.Background(), fast(s), Options{GRPCTarget: addr}))
	if tr := res["whole server"]; tr.Passed || !strings.Contains(tr.Reason, "NOT_SERVING") {
		t.Errorf("after Shutdown: passed=%v reason=%q, want NOT_SERVING", tr.Passed, tr.Reason)
	}
}

package xds

import (
	"strings"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/deployment-guardian/guardian/rollout"
)

func checkoutService() Service {
	return Service{
		Name: "checkout",
		Versions: []Version{
			{Name: "stable", Endpoints: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
			{Name: "canary", Endpoints: []string{"10.0.1.1:8080"}, LBPolicy: "LEAST_REQUEST"},
		},
		Weights:      rollout.Weights{"stable": 95, "canary": 5},
		HeaderRoutes: []HeaderRoute{{Header: "x-cohort", Exact: "beta", Version: "canary"}},
		Mirror:       &Mirror{Version: "canary", Percent: 12.5},
		Envoy:        &EnvoyListener{Address: "0.0.0.0", Port: 10000},
	}
}

func TestBuildSnapshotResources(t *testing.T) {
	snap, err := BuildSnapshot("v1", []Service{checkoutService()})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		if got := snap.GetVersion(typ); got != "v1" {
			t.Errorf("%s version %q, want v1", typ, got)
		}
	}
	ls := snap.GetResources(resource.ListenerType)
	if len(ls) != 2 {
		t.Fatalf("listeners %v, want the gRPC api_listener and the Envoy listener", keys(ls))
	}
	// gRPC: api_listener named after the service, RDS over ADS, router last.
	api := ls["checkout"].(*listener.Listener).GetApiListener().GetApiListener()
	var m hcm.HttpConnectionManager
	if err := api.UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	if m.GetRds().GetConfigSource().GetAds() == nil || m.GetRds().GetRouteConfigName() != "checkout" {
		t.Errorf("gRPC HCM RDS = %v, want ads{} and route checkout", m.GetRds())
	}
	if f := m.GetHttpFilters(); len(f) != 1 || f[0].GetName() != "envoy.filters.http.router" {
		t.Errorf("gRPC HTTP filters = %v, want the router only", f)
	}
	el := ls["checkout-envoy"].(*listener.Listener)
	if sa := el.GetAddress().GetSocketAddress(); sa.GetAddress() != "0.0.0.0" || sa.GetPortValue() != 10000 {
		t.Errorf("Envoy listener address %v", sa)
	}

	routes := snap.GetResources(resource.RouteType)
	grpcRC := routes["checkout"].(*route.RouteConfiguration)
	vh := grpcRC.GetVirtualHosts()[0]
	if strings.Join(vh.GetDomains(), ",") != "checkout,*" {
		t.Errorf("domains %v, want checkout and *", vh.GetDomains())
	}
	if len(vh.GetRoutes()) != 2 {
		t.Fatalf("routes %d, want header route then weighted route", len(vh.GetRoutes()))
	}
	hr := vh.GetRoutes()[0]
	if hr.GetMatch().GetHeaders()[0].GetStringMatch().GetExact() != "beta" || hr.GetRoute().GetCluster() != "checkout-canary" {
		t.Errorf("header route = %v", hr)
	}
	wr := vh.GetRoutes()[1].GetRoute()
	got := map[string]uint32{}
	for _, c := range wr.GetWeightedClusters().GetClusters() {
		got[c.GetName()] = c.GetWeight().GetValue()
	}
	if got["checkout-stable"] != 95 || got["checkout-canary"] != 5 || len(got) != 2 {
		t.Errorf("weighted clusters %v, want stable 95 canary 5", got)
	}
	if len(wr.GetRequestMirrorPolicies()) != 0 {
		t.Error("gRPC route carries a mirror policy; only Envoy mirrors")
	}
	envoyRoute := routes["checkout-envoy"].(*route.RouteConfiguration).GetVirtualHosts()[0].GetRoutes()[1].GetRoute()
	mp := envoyRoute.GetRequestMirrorPolicies()
	if len(mp) != 1 || mp[0].GetCluster() != "checkout-canary" || mp[0].GetRuntimeFraction().GetDefaultValue().GetNumerator() != 125000 {
		t.Errorf("Envoy mirror policy %v, want 12.5%% (125000 per million) to checkout-canary", mp)
	}

	clusters := snap.GetResources(resource.ClusterType)
	cc := clusters["checkout-canary"].(*cluster.Cluster)
	if cc.GetType() != cluster.Cluster_EDS || cc.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil || cc.GetLbPolicy() != cluster.Cluster_LEAST_REQUEST {
		t.Errorf("canary cluster %v", cc)
	}
	if cc.GetOutlierDetection() == nil || len(cc.GetHealthChecks()) != 1 || cc.GetHealthChecks()[0].GetHttpHealthCheck().GetPath() != "/healthz" {
		t.Errorf("Envoy cluster lacks outlier detection or health check: %v", cc)
	}
	cla := snap.GetResources(resource.EndpointType)["checkout-stable"].(*endpoint.ClusterLoadAssignment)
	loc := cla.GetEndpoints()[0]
	if loc.GetLocality() == nil || loc.GetLoadBalancingWeight().GetValue() == 0 || len(loc.GetLbEndpoints()) != 2 {
		t.Errorf("stable load assignment %v: want a locality, weight > 0, two endpoints", cla)
	}
}

func TestBuildSnapshotGRPCOnlyHasNoEnvoyParts(t *testing.T) {
	svc := checkoutService()
	svc.Envoy, svc.Mirror = nil, nil
	snap, err := BuildSnapshot("v1", []Service{svc})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(snap.GetResources(resource.ListenerType)); n != 1 {
		t.Errorf("%d listeners, want only the api_listener", n)
	}
	if c := snap.GetResources(resource.ClusterType)["checkout-stable"].(*cluster.Cluster); c.GetOutlierDetection() != nil || c.GetHealthChecks() != nil {
		t.Errorf("gRPC-only cluster has Envoy health checking: %v", c)
	}
}

func TestServiceValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Service)
		want   string
	}{
		{"ok", func(*Service) {}, ""},
		{"bad name", func(s *Service) { s.Name = "check out" }, "name"},
		{"hostname endpoint", func(s *Service) { s.Versions[0].Endpoints[0] = "stable.local:80" }, `versions[0].endpoints[0] "stable.local:80"`},
		{"duplicate endpoint", func(s *Service) { s.Versions[0].Endpoints[1] = "10.0.0.1:8080" }, "duplicate endpoint"},
		{"maglev", func(s *Service) { s.Versions[1].LBPolicy = "MAGLEV" }, "versions[1].lbPolicy"},
		{"weights sum", func(s *Service) { s.Weights["canary"] = 10 }, "sum to 105"},
		{"weight on empty version", func(s *Service) { s.Versions[1].Endpoints = nil }, `"canary": weight 5 but no endpoints`},
		{"header version", func(s *Service) { s.HeaderRoutes[0].Version = "green" }, "headerRoutes[0].version"},
		{"header two matchers", func(s *Service) { s.HeaderRoutes[0].Prefix = "b" }, "exactly one"},
		{"bad regex", func(s *Service) { s.HeaderRoutes[0].Exact, s.HeaderRoutes[0].Regex = "", "(" }, "headerRoutes[0].regex"},
		{"mirror percent", func(s *Service) { s.Mirror.Percent = 101 }, "mirror.percent"},
		{"envoy port", func(s *Service) { s.Envoy.Port = 0 }, "envoy.port"},
		{"duplicate version", func(s *Service) { s.Versions[1].Name = "stable" }, "duplicate version"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := checkoutService()
			s.Versions = []Version{
				{Name: "stable", Endpoints: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
				{Name: "canary", Endpoints: []string{"10.0.1.1:8080"}},
			}
			c.mutate(&s)
			err := s.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestBuildSnapshotRejects(t *testing.T) {
	a, b := checkoutService(), checkoutService()
	b.Name = "payments"
	if _, err := BuildSnapshot("v1", []Service{a, b}); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("two Envoy listeners on one port: %v", err)
	}
	if _, err := BuildSnapshot("v1", []Service{a, a}); err == nil || !strings.Contains(err.Error(), "duplicate service") {
		t.Errorf("duplicate service: %v", err)
	}
	if _, err := BuildSnapshot("", []Service{a}); err == nil {
		t.Error("empty version accepted")
	}
	// No services at all is a valid, empty snapshot: clients learn deletions.
	if snap, err := BuildSnapshot("v1", nil); err != nil || len(snap.GetResources(resource.ListenerType)) != 0 {
		t.Errorf("empty snapshot: %v", err)
	}
}

// go-control-plane's Consistent rejects the api_listener's route reference;
// ours accepts it, and catches what gRPC would reject or silently drop.
func TestCheckConsistent(t *testing.T) {
	good, err := BuildSnapshot("v1", []Service{checkoutService()})
	if err != nil {
		t.Fatal(err)
	}
	if err := good.Consistent(); err == nil {
		t.Error("go-control-plane's Consistent accepted an api_listener snapshot; the reason for CheckConsistent is gone")
	} else {
		t.Logf("go-control-plane's Consistent: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T, s map[string]map[string]proto.Message)
		want   string
	}{
		{"missing route", func(t *testing.T, s map[string]map[string]proto.Message) {
			delete(s[resource.RouteType], "checkout")
		}, `route configuration "checkout" is missing`},
		{"missing cluster", func(t *testing.T, s map[string]map[string]proto.Message) {
			delete(s[resource.ClusterType], "checkout-canary")
		}, `cluster "checkout-canary" is missing`},
		{"missing assignment", func(t *testing.T, s map[string]map[string]proto.Message) {
			delete(s[resource.EndpointType], "checkout-stable")
		}, `load assignment "checkout-stable" is missing`},
		{"no locality weight", func(t *testing.T, s map[string]map[string]proto.Message) {
			s[resource.EndpointType]["checkout-stable"].(*endpoint.ClusterLoadAssignment).Endpoints[0].LoadBalancingWeight = nil
		}, "load_balancing_weight > 0"},
		{"maglev", func(t *testing.T, s map[string]map[string]proto.Message) {
			s[resource.ClusterType]["checkout-stable"].(*cluster.Cluster).LbPolicy = cluster.Cluster_MAGLEV
		}, "MAGLEV"},
		{"all weights zero", func(t *testing.T, s map[string]map[string]proto.Message) {
			for _, c := range s[resource.RouteType]["checkout"].(*route.RouteConfiguration).VirtualHosts[0].Routes[1].GetRoute().GetWeightedClusters().Clusters {
				c.Weight = wrapperspb.UInt32(0)
			}
		}, "sum to 0"},
		{"no router filter", func(t *testing.T, s map[string]map[string]proto.Message) {
			l := s[resource.ListenerType]["checkout"].(*listener.Listener)
			var m hcm.HttpConnectionManager
			if err := l.ApiListener.ApiListener.UnmarshalTo(&m); err != nil {
				t.Fatal(err)
			}
			m.HttpFilters = nil
			if err := l.ApiListener.ApiListener.MarshalFrom(&m); err != nil {
				t.Fatal(err)
			}
		}, "filter list is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap, err := cloneSnapshot("v2", good)
			if err != nil {
				t.Fatal(err)
			}
			m := map[string]map[string]proto.Message{}
			for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
				m[typ] = map[string]proto.Message{}
				for n, r := range snap.GetResources(typ) {
					m[typ][n] = r
				}
			}
			c.mutate(t, m)
			broken, err := rebuild("v2", m)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckConsistent(broken); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("CheckConsistent = %v, want an error containing %q", err, c.want)
			}
		})
	}
	if err := CheckConsistent(good); err != nil {
		t.Errorf("CheckConsistent(good) = %v", err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func rebuild(version string, m map[string]map[string]proto.Message) (*cache.Snapshot, error) {
	res := map[resource.Type][]types.Resource{}
	for typ, items := range m {
		res[typ] = []types.Resource{}
		for _, r := range items {
			res[typ] = append(res[typ], r)
		}
	}
	return cache.NewSnapshot(version, res)
}

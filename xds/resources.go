// Package xds is Guardian's fleet control plane: it turns rollouts into xDS
// resources for Envoy and proxyless gRPC clients, serves them over ADS
// (state-of-the-world and delta) with go-control-plane, tracks which version
// every node has acknowledged, and takes fleet metrics back in.
//
// Building and serving are kept apart: BuildSnapshot is a pure function from
// a description to a snapshot value, checked by CheckConsistent; Server owns
// the snapshot cache and the gRPC streams.
package xds

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/deployment-guardian/guardian/rollout"
)

// Service describes one rollout as the fleet sees it.
type Service struct {
	// Name is the xDS service name: proxyless gRPC clients dial xds:///Name,
	// and it prefixes the Envoy route and cluster names (Name-Version).
	Name string `json:"name"`
	// Rollout is the rollout whose weights drive this service; empty means
	// the rollout has the service's name.
	Rollout string `json:"rollout,omitempty"`
	// Versions are the deployable versions ("stable", "canary", …).
	Versions []Version `json:"versions"`
	// Weights is the keyless split in percent; it sums to 100.
	Weights rollout.Weights `json:"weights"`
	// HeaderRoutes send matching requests to one version ahead of the
	// weighted route (A/B tests, cohorts). The first match wins.
	HeaderRoutes []HeaderRoute `json:"headerRoutes,omitempty"`
	// Mirror shadows a share of the traffic to a version (Envoy only: gRPC
	// clients do not mirror).
	Mirror *Mirror `json:"mirror,omitempty"`
	// Envoy, when set, adds a Listener for Envoy fleets.
	Envoy *EnvoyListener `json:"envoy,omitempty"`
}

// Version is one version's endpoints.
type Version struct {
	Name string `json:"name"`
	// Endpoints are "ip:port" pairs; hostnames are refused because gRPC
	// clients may resolve them differently from Envoy.
	Endpoints []string `json:"endpoints"`
	// LBPolicy is ROUND_ROBIN (default), LEAST_REQUEST or RING_HASH: the
	// policies both Envoy and gRPC accept.
	LBPolicy string `json:"lbPolicy,omitempty"`
}

// HeaderRoute matches one request header. Exactly one of Exact, Prefix and
// Regex (RE2) is set.
type HeaderRoute struct {
	Header  string `json:"header"`
	Exact   string `json:"exact,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Regex   string `json:"regex,omitempty"`
	Version string `json:"version"`
}

// Mirror shadows Percent of the requests to Version; responses are dropped.
type Mirror struct {
	Version string  `json:"version"`
	Percent float64 `json:"percent"`
}

// EnvoyListener is where Envoy accepts traffic for the service.
type EnvoyListener struct {
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	// HealthCheckPath is the HTTP path Envoy's active health checks probe;
	// empty means /healthz.
	HealthCheckPath string `json:"healthCheckPath,omitempty"`
}

// RolloutName is the rollout that drives s.
func (s Service) RolloutName() string {
	if s.Rollout != "" {
		return s.Rollout
	}
	return s.Name
}

// ClusterName is the cluster (and Envoy stats prefix cluster.<name>.) of one
// version of a service.
func ClusterName(service, version string) string { return service + "-" + version }

// EnvoyListenerName and EnvoyRouteName name the Envoy-side resources; the
// gRPC listener and route configuration carry the bare service name.
func EnvoyListenerName(service string) string { return service + "-envoy" }

// EnvoyRouteName is the RouteConfiguration the Envoy listener loads over RDS.
func EnvoyRouteName(service string) string { return service + "-envoy" }

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?$`)

// Validate reports every problem with s, naming the field at fault.
func (s Service) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("service %q: "+format, append([]any{s.Name}, args...)...))
	}
	if !nameRE.MatchString(s.Name) {
		bad("name: must be letters, digits, '.', '_' or '-'")
	}
	if len(s.Versions) == 0 {
		bad("versions: at least one version is required")
	}
	versions := map[string]bool{}
	for i, v := range s.Versions {
		if !nameRE.MatchString(v.Name) {
			bad("versions[%d].name %q: must be letters, digits, '.', '_' or '-'", i, v.Name)
		}
		if versions[v.Name] {
			bad("versions[%d].name %q: duplicate version", i, v.Name)
		}
		versions[v.Name] = true
		seen := map[string]bool{}
		for j, ep := range v.Endpoints {
			ap, err := netip.ParseAddrPort(ep)
			if err != nil || ap.Port() == 0 {
				bad("versions[%d].endpoints[%d] %q: want ip:port", i, j, ep)
				continue
			}
			if seen[ap.String()] {
				bad("versions[%d].endpoints[%d] %q: duplicate endpoint", i, j, ep)
			}
			seen[ap.String()] = true
		}
		if _, err := lbPolicy(v.LBPolicy); err != nil {
			bad("versions[%d].lbPolicy: %v", i, err)
		}
	}
	sum := 0
	for name, w := range s.Weights {
		if !versions[name] {
			bad("weights[%s]: no such version", name)
		}
		if w < 0 || w > 100 {
			bad("weights[%s] = %d: must be 0..100", name, w)
		}
		sum += w
	}
	if sum != 100 {
		bad("weights: sum to %d, want 100", sum)
	}
	for i, v := range s.Versions {
		if s.Weights[v.Name] > 0 && len(v.Endpoints) == 0 {
			bad("versions[%d] %q: weight %d but no endpoints", i, v.Name, s.Weights[v.Name])
		}
	}
	for i, h := range s.HeaderRoutes {
		n := 0
		for _, m := range []string{h.Exact, h.Prefix, h.Regex} {
			if m != "" {
				n++
			}
		}
		if h.Header == "" {
			bad("headerRoutes[%d].header: required", i)
		}
		if n != 1 {
			bad("headerRoutes[%d]: set exactly one of exact, prefix, regex", i)
		}
		if h.Regex != "" {
			if _, err := regexp.Compile(h.Regex); err != nil {
				bad("headerRoutes[%d].regex: %v", i, err)
			}
		}
		if !versions[h.Version] {
			bad("headerRoutes[%d].version %q: no such version", i, h.Version)
		}
	}
	if m := s.Mirror; m != nil {
		if !versions[m.Version] {
			bad("mirror.version %q: no such version", m.Version)
		}
		if !(m.Percent >= 0 && m.Percent <= 100) {
			bad("mirror.percent %v: must be 0..100", m.Percent)
		}
	}
	if e := s.Envoy; e != nil {
		if _, err := netip.ParseAddr(e.Address); err != nil {
			bad("envoy.address %q: want an IP address", e.Address)
		}
		if e.Port == 0 || e.Port > 65535 {
			bad("envoy.port %d: must be 1..65535", e.Port)
		}
		if e.HealthCheckPath != "" && !strings.HasPrefix(e.HealthCheckPath, "/") {
			bad("envoy.healthCheckPath %q: must start with /", e.HealthCheckPath)
		}
	}
	return errors.Join(errs...)
}

func lbPolicy(name string) (cluster.Cluster_LbPolicy, error) {
	switch strings.ToUpper(name) {
	case "", "ROUND_ROBIN":
		return cluster.Cluster_ROUND_ROBIN, nil
	case "LEAST_REQUEST":
		return cluster.Cluster_LEAST_REQUEST, nil
	case "RING_HASH":
		return cluster.Cluster_RING_HASH, nil
	}
	// MAGLEV and the others are left out on purpose: gRPC clients NACK them.
	return 0, fmt.Errorf("%q: want ROUND_ROBIN, LEAST_REQUEST or RING_HASH", name)
}

// BuildSnapshot builds the resources for every service, for Envoy and for
// proxyless gRPC clients, under one version. It validates the services and
// checks the result with CheckConsistent.
func BuildSnapshot(version string, services []Service) (*cache.Snapshot, error) {
	if version == "" {
		return nil, errors.New("xds: snapshot version is empty")
	}
	var (
		errs                                []error
		listeners, routes, clusters, assign []types.Resource
		names                               = map[string]bool{}
		ports                               = map[string]string{}
	)
	sorted := slices.Clone(services)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, s := range sorted {
		if err := s.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if names[s.Name] {
			errs = append(errs, fmt.Errorf("service %q: duplicate service name", s.Name))
			continue
		}
		names[s.Name] = true
		if e := s.Envoy; e != nil {
			key := netip.AddrPortFrom(netip.MustParseAddr(e.Address), uint16(e.Port)).String()
			if other, ok := ports[key]; ok {
				errs = append(errs, fmt.Errorf("service %q: envoy listener %s already used by service %q", s.Name, key, other))
				continue
			}
			ports[key] = s.Name
		}
		l, r, c, a, err := serviceResources(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		listeners, routes, clusters, assign = append(listeners, l...), append(routes, r...), append(clusters, c...), append(assign, a...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Every type is present, even when empty, so that each carries the
	// version: a client waiting on a type with no version would never be
	// answered, and state-of-the-world clients learn deletions this way.
	snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: listeners,
		resource.RouteType:    routes,
		resource.ClusterType:  clusters,
		resource.EndpointType: assign,
	})
	if err != nil {
		return nil, err
	}
	if err := CheckConsistent(snap); err != nil {
		return nil, err
	}
	return snap, nil
}

func serviceResources(s Service) (listeners, routes, clusters, assign []types.Resource, err error) {
	grpcHCM, err := httpConnectionManager(s.Name, s.Name)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	listeners = append(listeners, &listener.Listener{
		Name:        s.Name,
		ApiListener: &listener.ApiListener{ApiListener: grpcHCM},
	})
	routes = append(routes, routeConfig(s, s.Name, false))
	if e := s.Envoy; e != nil {
		envoyHCM, err := httpConnectionManager(EnvoyRouteName(s.Name), s.Name)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		listeners = append(listeners, &listener.Listener{
			Name: EnvoyListenerName(s.Name),
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
				Address:       e.Address,
				PortSpecifier: &core.SocketAddress_PortValue{PortValue: e.Port},
			}}},
			FilterChains: []*listener.FilterChain{{
				Filters: []*listener.Filter{{
					Name:       wellknown.HTTPConnectionManager,
					ConfigType: &listener.Filter_TypedConfig{TypedConfig: envoyHCM},
				}},
			}},
		})
		routes = append(routes, routeConfig(s, EnvoyRouteName(s.Name), true))
	}
	for _, v := range s.Versions {
		name := ClusterName(s.Name, v.Name)
		policy, _ := lbPolicy(v.LBPolicy) // checked by Validate
		c := &cluster.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
			EdsClusterConfig: &cluster.Cluster_EdsClusterConfig{
				EdsConfig: adsSource(),
			},
			LbPolicy:       policy,
			ConnectTimeout: durationpb.New(2 * time.Second),
		}
		if e := s.Envoy; e != nil {
			// Envoy-only protection; gRPC clients ignore health checks and
			// treat an absent outlier detection as disabled.
			path := e.HealthCheckPath
			if path == "" {
				path = "/healthz"
			}
			c.HealthChecks = []*core.HealthCheck{{
				Timeout:            durationpb.New(time.Second),
				Interval:           durationpb.New(5 * time.Second),
				UnhealthyThreshold: wrapperspb.UInt32(2),
				HealthyThreshold:   wrapperspb.UInt32(1),
				HealthChecker: &core.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &core.HealthCheck_HttpHealthCheck{
					Path: path,
				}},
			}}
			c.OutlierDetection = &cluster.OutlierDetection{
				Consecutive_5Xx:    wrapperspb.UInt32(5),
				Interval:           durationpb.New(5 * time.Second),
				BaseEjectionTime:   durationpb.New(30 * time.Second),
				MaxEjectionPercent: wrapperspb.UInt32(50),
			}
		}
		clusters = append(clusters, c)
		assign = append(assign, loadAssignment(name, v.Endpoints))
	}
	return listeners, routes, clusters, assign, nil
}

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

func httpConnectionManager(routeName, statPrefix string) (*anypb.Any, error) {
	routerCfg, err := anypb.New(&router.Router{})
	if err != nil {
		return nil, err
	}
	return anypb.New(&hcm.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: routeName,
		}},
		// gRPC requires a non-empty filter list ending with the router.
		HttpFilters: []*hcm.HttpFilter{{
			Name:       wellknown.Router,
			ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: routerCfg},
		}},
	})
}

func routeConfig(s Service, name string, envoy bool) *route.RouteConfiguration {
	var rs []*route.Route
	for _, h := range s.HeaderRoutes {
		hm := &route.HeaderMatcher{Name: h.Header}
		var sm *matcher.StringMatcher
		switch {
		case h.Exact != "":
			sm = &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: h.Exact}}
		case h.Prefix != "":
			sm = &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: h.Prefix}}
		default:
			sm = &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: h.Regex}}}
		}
		hm.HeaderMatchSpecifier = &route.HeaderMatcher_StringMatch{StringMatch: sm}
		rs = append(rs, &route.Route{
			Name:  fmt.Sprintf("%s-header-%s", s.Name, h.Header),
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: ""}, Headers: []*route.HeaderMatcher{hm}},
			Action: &route.Route_Route{Route: &route.RouteAction{
				ClusterSpecifier: &route.RouteAction_Cluster{Cluster: ClusterName(s.Name, h.Version)},
			}},
		})
	}
	// Every version keeps its entry, weight 0 included: Envoy then keeps the
	// cluster warm, and gRPC skips zero-weight clusters without requesting
	// them (the snapshot cache runs in non-ADS mode so it never waits for
	// that request).
	var wc []*route.WeightedCluster_ClusterWeight
	for _, v := range s.Versions {
		wc = append(wc, &route.WeightedCluster_ClusterWeight{
			Name:   ClusterName(s.Name, v.Name),
			Weight: wrapperspb.UInt32(uint32(s.Weights[v.Name])),
		})
	}
	action := &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_WeightedClusters{WeightedClusters: &route.WeightedCluster{Clusters: wc}},
	}
	if envoy && s.Mirror != nil && s.Mirror.Percent > 0 {
		action.RequestMirrorPolicies = []*route.RouteAction_RequestMirrorPolicy{{
			Cluster: ClusterName(s.Name, s.Mirror.Version),
			RuntimeFraction: &core.RuntimeFractionalPercent{
				DefaultValue: &typev3.FractionalPercent{
					Numerator:   uint32(s.Mirror.Percent*10000 + 0.5),
					Denominator: typev3.FractionalPercent_MILLION,
				},
				RuntimeKey: "guardian.mirror." + s.Name,
			},
		}}
	}
	rs = append(rs, &route.Route{
		Name:   s.Name + "-weighted",
		Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: ""}},
		Action: &route.Route_Route{Route: action},
	})
	return &route.RouteConfiguration{
		Name: name,
		VirtualHosts: []*route.VirtualHost{{
			Name:    s.Name,
			Domains: []string{s.Name, "*"},
			Routes:  rs,
		}},
	}
}

func loadAssignment(clusterName string, endpoints []string) *endpoint.ClusterLoadAssignment {
	cla := &endpoint.ClusterLoadAssignment{ClusterName: clusterName}
	if len(endpoints) == 0 {
		return cla
	}
	lbs := make([]*endpoint.LbEndpoint, 0, len(endpoints))
	for _, ep := range endpoints {
		ap := netip.MustParseAddrPort(ep) // checked by Validate
		lbs = append(lbs, &endpoint.LbEndpoint{
			HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
				Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
					Address:       ap.Addr().Unmap().String(),
					PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
				}}},
			}},
		})
	}
	// gRPC silently drops a locality without a locality message or with a
	// zero weight, and then fails every RPC with "no targets to pick from".
	cla.Endpoints = []*endpoint.LocalityLbEndpoints{{
		Locality:            &core.Locality{},
		LoadBalancingWeight: wrapperspb.UInt32(1),
		LbEndpoints:         lbs,
	}}
	return cla
}

// CheckConsistent checks the references inside a snapshot and the rules a
// proxyless gRPC client enforces. go-control-plane's own Consistent looks for
// route names only in Envoy filter chains and so rejects api_listeners.
func CheckConsistent(s *cache.Snapshot) error {
	if s == nil {
		return errors.New("xds: nil snapshot")
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	routes := s.GetResources(resource.RouteType)
	clusters := s.GetResources(resource.ClusterType)
	assign := s.GetResources(resource.EndpointType)

	checkHCM := func(where string, cfg *anypb.Any) {
		var m hcm.HttpConnectionManager
		if err := cfg.UnmarshalTo(&m); err != nil {
			bad("%s: not an HttpConnectionManager: %v", where, err)
			return
		}
		switch rs := m.GetRouteSpecifier().(type) {
		case *hcm.HttpConnectionManager_Rds:
			cs := rs.Rds.GetConfigSource()
			if cs.GetAds() == nil && cs.GetSelf() == nil {
				bad("%s: RDS config source must be ads or self", where)
			}
			if _, ok := routes[rs.Rds.GetRouteConfigName()]; !ok {
				bad("%s: route configuration %q is missing", where, rs.Rds.GetRouteConfigName())
			}
		case *hcm.HttpConnectionManager_RouteConfig:
		default:
			bad("%s: no RDS or inline route configuration", where)
		}
		f := m.GetHttpFilters()
		if len(f) == 0 {
			bad("%s: HTTP filter list is empty", where)
		} else if last := f[len(f)-1].GetTypedConfig(); last == nil || !last.MessageIs(&router.Router{}) {
			bad("%s: last HTTP filter must be the router", where)
		}
	}
	for name, r := range s.GetResources(resource.ListenerType) {
		l, ok := r.(*listener.Listener)
		if !ok {
			bad("listener %q: unexpected type %T", name, r)
			continue
		}
		if api := l.GetApiListener().GetApiListener(); api != nil {
			checkHCM(fmt.Sprintf("listener %q api_listener", name), api)
		}
		for i, fc := range l.GetFilterChains() {
			for j, f := range fc.GetFilters() {
				if f.GetName() == wellknown.HTTPConnectionManager {
					checkHCM(fmt.Sprintf("listener %q filter_chains[%d].filters[%d]", name, i, j), f.GetTypedConfig())
				}
			}
		}
	}
	for name, r := range routes {
		rc, ok := r.(*route.RouteConfiguration)
		if !ok {
			bad("route configuration %q: unexpected type %T", name, r)
			continue
		}
		if len(rc.GetVirtualHosts()) == 0 {
			bad("route configuration %q: no virtual hosts", name)
		}
		for _, vh := range rc.GetVirtualHosts() {
			for i, rt := range vh.GetRoutes() {
				where := fmt.Sprintf("route configuration %q virtual host %q routes[%d]", name, vh.GetName(), i)
				if rt.GetMatch().GetPathSpecifier() == nil {
					bad("%s: match has no path", where)
				}
				a := rt.GetRoute()
				if a == nil {
					continue
				}
				refer := func(c string) {
					if _, ok := clusters[c]; !ok {
						bad("%s: cluster %q is missing", where, c)
					}
				}
				switch cs := a.GetClusterSpecifier().(type) {
				case *route.RouteAction_Cluster:
					refer(cs.Cluster)
				case *route.RouteAction_WeightedClusters:
					var sum uint64
					for _, c := range cs.WeightedClusters.GetClusters() {
						refer(c.GetName())
						sum += uint64(c.GetWeight().GetValue())
					}
					if sum == 0 {
						bad("%s: weighted clusters sum to 0", where)
					}
				default:
					bad("%s: no cluster", where)
				}
				for _, m := range a.GetRequestMirrorPolicies() {
					refer(m.GetCluster())
				}
			}
		}
	}
	for name, r := range clusters {
		c, ok := r.(*cluster.Cluster)
		if !ok {
			bad("cluster %q: unexpected type %T", name, r)
			continue
		}
		switch c.GetLbPolicy() {
		case cluster.Cluster_ROUND_ROBIN, cluster.Cluster_RING_HASH, cluster.Cluster_LEAST_REQUEST:
		default:
			bad("cluster %q: lb_policy %s is not accepted by gRPC clients", name, c.GetLbPolicy())
		}
		if c.GetType() != cluster.Cluster_EDS {
			continue
		}
		cs := c.GetEdsClusterConfig().GetEdsConfig()
		if cs.GetAds() == nil && cs.GetSelf() == nil {
			bad("cluster %q: EDS config source must be ads or self", name)
		}
		svc := c.GetEdsClusterConfig().GetServiceName()
		if svc == "" {
			svc = name
		}
		if _, ok := assign[svc]; !ok {
			bad("cluster %q: load assignment %q is missing", name, svc)
		}
	}
	for name, r := range assign {
		cla, ok := r.(*endpoint.ClusterLoadAssignment)
		if !ok {
			bad("load assignment %q: unexpected type %T", name, r)
			continue
		}
		seen := map[string]bool{}
		prios := map[uint32]bool{}
		for i, loc := range cla.GetEndpoints() {
			if loc.GetLocality() == nil || loc.GetLoadBalancingWeight().GetValue() == 0 {
				bad("load assignment %q endpoints[%d]: needs a locality and load_balancing_weight > 0", name, i)
			}
			prios[loc.GetPriority()] = true
			for _, lb := range loc.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				key := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
				if _, err := netip.ParseAddr(sa.GetAddress()); err != nil {
					bad("load assignment %q: address %q is not an IP", name, sa.GetAddress())
				}
				if seen[key] {
					bad("load assignment %q: duplicate address %s", name, key)
				}
				seen[key] = true
			}
		}
		for p := range uint32(len(prios)) {
			if !prios[p] {
				bad("load assignment %q: priorities must be 0, 1, 2… without gaps", name)
				break
			}
		}
	}
	// The API's own field rules (protoc-gen-validate), which Envoy enforces
	// by NACKing.
	for _, t := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		for name, r := range s.GetResources(t) {
			if v, ok := r.(interface{ ValidateAll() error }); ok {
				if err := v.ValidateAll(); err != nil {
					bad("%s %q: %v", shortType(t), name, err)
				}
			}
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// cloneSnapshot deep-copies the resources of s under a new version, so tests
// and rollbacks never share mutable protos with a published snapshot.
func cloneSnapshot(version string, s *cache.Snapshot) (*cache.Snapshot, error) {
	res := map[resource.Type][]types.Resource{}
	for _, t := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		items := []types.Resource{}
		for _, r := range s.GetResources(t) {
			items = append(items, proto.Clone(r))
		}
		res[t] = items
	}
	return cache.NewSnapshot(version, res)
}

package xds

import (
	"encoding/json"
	"os"
	"testing"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	// The typed configs the bootstraps name, so their Any fields resolve.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// The shipped Envoy bootstraps parse as Envoy's v3 Bootstrap (strictly:
// unknown fields fail) and pass the API's own validation rules, and they
// point ADS and the metrics sink at Guardian.
func TestDeployEnvoyBootstraps(t *testing.T) {
	for _, path := range []string{"../deploy/envoy/envoy.yaml", "../deploy/envoy/envoy-mtls.yaml"} {
		t.Run(path, func(t *testing.T) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var doc any
			if err := yaml.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			js, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			var b bootstrap.Bootstrap
			if err := protojson.Unmarshal(js, &b); err != nil {
				t.Fatalf("not an Envoy v3 bootstrap: %v", err)
			}
			if err := b.ValidateAll(); err != nil {
				t.Fatalf("Envoy validation: %v", err)
			}
			ads := b.GetDynamicResources().GetAdsConfig()
			if ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "guardian_xds" || b.GetDynamicResources().GetCdsConfig().GetAds() == nil || b.GetDynamicResources().GetLdsConfig().GetAds() == nil {
				t.Errorf("dynamic resources do not come over ADS from guardian_xds: %v", b.GetDynamicResources())
			}
			sink := b.GetStatsSinks()
			if len(sink) != 1 || sink[0].GetName() != "envoy.stat_sinks.metrics_service" {
				t.Errorf("stats sinks %v, want the metrics service", sink)
			}
			if b.GetNode().GetId() == "" {
				t.Error("node id is empty; Guardian tracks ACKs per node id")
			}
		})
	}
}

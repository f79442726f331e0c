package notify_test

import (
	"fmt"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	"github.com/deployment-guardian/guardian/rollout/notify"
	"github.com/deployment-guardian/guardian/rollout/report"
)

func exampleEvent() notify.Event {
	return notify.Event{
		Rollout: "checkout", Type: notify.TypeStep, Message: "canary 25%: all metrics pass",
		Time:  time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC),
		Phase: "Progressing", Step: 4, Stage: "Canary 25%", Elapsed: 754 * time.Second,
		Weights: rollout.Weights{"stable": 75, "canary": 25},
		Metrics: []notify.MetricRow{
			{Name: "Error Rate", Baseline: "0.1%", Current: "0.12%", Status: report.StatusOK},
			{Name: "P99 Latency", Baseline: "230ms", Current: "245ms", Status: report.StatusOK},
		},
		Decision: "PROCEED TO NEXT STAGE",
	}
}

func ExampleRender_json() {
	body, _ := notify.Render(notify.KindJSON, exampleEvent(), "9f2c4e1a0b7d3e5f6a8c1d2e", time.Date(2026, 11, 25, 21, 0, 1, 0, time.UTC))
	fmt.Println(string(body))
	fmt.Println(notify.Sign([]byte("s3cr3t"), body))
	// Output:
	// {"id":"9f2c4e1a0b7d3e5f6a8c1d2e","sent_at":"2026-11-25T21:00:01Z","rollout":"checkout","type":"step","message":"canary 25%: all metrics pass","time":"2026-11-25T21:00:00Z","phase":"Progressing","step":4,"stage":"Canary 25%","weights":{"canary":25,"stable":75},"metrics":[{"name":"Error Rate","baseline":"0.1%","current":"0.12%","status":"ok"},{"name":"P99 Latency","baseline":"230ms","current":"245ms","status":"ok"}],"decision":"PROCEED TO NEXT STAGE","elapsed_s":754}
	// sha256=d05dae8824a172fcc2ff10341f591f9daa98cca31c833ec735e2833220c67543
}

func ExampleSlackText() {
	fmt.Println(notify.SlackText(exampleEvent()))
	// Output:
	// 🐤 *checkout* step: canary 25%: all metrics pass
	// ```
	// ## Deployment Status Dashboard: checkout
	//
	// ### Current Stage: Canary 25%
	// 📍 Phase: Progressing
	// ⏱️ Duration: 12m 34s
	// ⚖️ Weights: stable 75% · canary 25%
	//
	// ### Health Metrics
	// | Metric      | Baseline | Current | Status |
	// |-------------|----------|---------|--------|
	// | Error Rate  | 0.1%     | 0.12%   | ✅     |
	// | P99 Latency | 230ms    | 245ms   | ✅     |
	//
	// ### Decision: PROCEED TO NEXT STAGE
	// ```
}

package bench

import (
	"os"
	"strings"
	"testing"
	"time"
)

func readAll(t *testing.T, path string, f Format) ([]Request, ReadStats) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var got []Request
	st, err := ReadLog(fh, f, nil, func(r Request) error { got = append(got, r); return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return got, st
}

func TestReadEnvoyLog(t *testing.T) {
	got, st := readAll(t, "testdata/envoy.log", FormatEnvoy)
	if st.Requests != 3 || st.Malformed != 3 || st.Lines != 6 {
		t.Fatalf("stats = %+v, want 3 requests, 3 malformed of 6 lines", st)
	}
	want := []Request{
		{Time: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), Version: "stable", Latency: 12 * time.Millisecond, Status: 200},
		{Time: time.Date(2026, 11, 25, 10, 0, 0, 150e6, time.UTC), Version: "canary", Latency: 3 * time.Millisecond, Status: 503},
		{Time: time.Date(2026, 11, 25, 10, 0, 0, 300e6, time.UTC), Version: "canary", Latency: time.Second, Status: 0},
	}
	for i := range want {
		if !got[i].Time.Equal(want[i].Time) || got[i].Version != want[i].Version || got[i].Latency != want[i].Latency || got[i].Status != want[i].Status {
			t.Errorf("request %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	lines := [3]int{st.Examples[0].Line, st.Examples[1].Line, st.Examples[2].Line}
	if lines != [3]int{4, 5, 6} {
		t.Errorf("malformed lines = %v, want 4, 5, 6", lines)
	}
	if !strings.Contains(st.Examples[1].Reason, "start_time") || !strings.Contains(st.Examples[2].Reason, "duration") {
		t.Errorf("reasons do not name the field: %+v", st.Examples)
	}
	if !got[1].Failed() || !got[2].Failed() || got[0].Failed() {
		t.Errorf("Failed() wrong: %+v", got)
	}
}

func TestReadNginxLog(t *testing.T) {
	got, st := readAll(t, "testdata/nginx.log", FormatNginx)
	if st.Requests != 3 || st.Malformed != 1 || st.Examples[0].Line != 4 {
		t.Fatalf("stats = %+v, want 3 requests and line 4 malformed", st)
	}
	wantLat := []time.Duration{12 * time.Millisecond, 250 * time.Millisecond, 4 * time.Millisecond}
	wantStatus := []int{200, 502, 200}
	for i := range got {
		if d := got[i].Latency - wantLat[i]; d > time.Microsecond || d < -time.Microsecond || got[i].Status != wantStatus[i] || got[i].Version != "" {
			t.Errorf("request %d = %+v, want latency %v status %d, no version", i, got[i], wantLat[i], wantStatus[i])
		}
	}
	if want := time.Date(2026, 11, 25, 10, 0, 1, 0, time.UTC); !got[1].Time.Equal(want) {
		t.Errorf("time = %v, want %v", got[1].Time, want)
	}
}

func TestReadCSV(t *testing.T) {
	got, st := readAll(t, "testdata/requests.csv", FormatCSV)
	if st.Requests != 3 || st.Malformed != 1 || st.Examples[0].Line != 5 || !strings.Contains(st.Examples[0].Reason, "latency_ms") {
		t.Fatalf("stats = %+v, want 3 requests and line 5 malformed on latency_ms", st)
	}
	if got[1].Version != "canary" || got[1].Status != 500 || got[1].Latency != 12*time.Millisecond ||
		!got[1].Time.Equal(time.Unix(1764064800, 250e6)) || got[2].Version != "" {
		t.Errorf("requests = %+v", got)
	}
}

func TestParseFormatRejectsUnknown(t *testing.T) {
	if _, err := ParseFormat("apache"); err == nil {
		t.Error("ParseFormat(apache) succeeded")
	}
}

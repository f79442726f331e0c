package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
)

// maxBody bounds request bodies: a weights document is tiny.
const maxBody = 64 << 10

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError answers {"error": msg}.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// errRoute is a request naming no route, or an unknown one.
type errRoute struct{ msg string }

func (e errRoute) Error() string { return e.msg }

// routes resolves ?route=: the named one, or every route when none is named
// (all=true), or the only route.
func (s *Server) routes(r *http.Request, all bool) ([]string, error) {
	names := s.dp.Routes()
	slices.Sort(names)
	if name := r.URL.Query().Get("route"); name != "" {
		if !slices.Contains(names, name) {
			return nil, errRoute{fmt.Sprintf("route: unknown route %q (routes: %s)", name, strings.Join(names, ", "))}
		}
		return []string{name}, nil
	}
	switch {
	case len(names) == 0:
		return nil, errRoute{"route: the data plane has no routes"}
	case len(names) > 1 && !all:
		return nil, errRoute{fmt.Sprintf("route: there are several routes (%s); name one with ?route=NAME", strings.Join(names, ", "))}
	}
	return names, nil
}

// weightsResponse is GET/PUT /api/v1/weights' answer.
type weightsResponse struct {
	Routes map[string]rollout.Weights `json:"routes"`
}

func (s *Server) getWeights(w http.ResponseWriter, r *http.Request) {
	names, err := s.routes(r, true)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out := weightsResponse{Routes: map[string]rollout.Weights{}}
	for _, n := range names {
		if wt, ok := s.dp.Weights(n); ok {
			out.Routes[n] = wt
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) putWeights(w http.ResponseWriter, r *http.Request) {
	names, err := s.routes(r, false)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	route := names[0]
	cur, ok := s.dp.Weights(route)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("route: %q has no weights", route))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: %v", err))
		return
	}
	next, err := ParseWeights(body, cur)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.dp.SetWeights(route, next); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("route %s: %v", route, err))
		return
	}
	s.log.Info("admin: weights changed", "route", route, "weights", fmt.Sprint(next), "remote", r.RemoteAddr)
	got, _ := s.dp.Weights(route)
	writeJSON(w, http.StatusOK, weightsResponse{Routes: map[string]rollout.Weights{route: got}})
}

// ParseWeights reads a weights document against a route's current weights
// (which name every version). Either every version is named and the values
// sum to 100, or one version of a two-version route is named and the other
// takes the rest: {"canary": 10} on stable/canary means stable 90. Errors
// name the field.
func ParseWeights(body []byte, current rollout.Weights) (rollout.Weights, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return nil, errors.New(`body: want a JSON object of version weights in percent, such as {"canary": 10}`)
	}
	if dec.More() {
		return nil, errors.New("body: trailing data after the JSON object")
	}
	versions := slices.Sorted(maps.Keys(current))
	if len(raw) == 0 {
		return nil, errors.New("body: no version named")
	}
	w := rollout.Weights{}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		if _, ok := current[name]; !ok {
			return nil, fmt.Errorf("%s: unknown version (the route has %s)", name, strings.Join(versions, ", "))
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(raw[name])))
		if err != nil {
			return nil, fmt.Errorf("%s: %s is not a whole percentage", name, raw[name])
		}
		if n < 0 || n > 100 {
			return nil, fmt.Errorf("%s: %d is not between 0 and 100", name, n)
		}
		w[name] = n
	}
	switch {
	case len(w) == len(current):
		sum := 0
		for _, n := range w {
			sum += n
		}
		if sum != 100 {
			return nil, fmt.Errorf("body: the weights sum to %d, not 100", sum)
		}
	case len(w) == 1 && len(current) == 2:
		named := 0
		for _, n := range w {
			named = n
		}
		for _, v := range versions {
			if _, ok := w[v]; !ok {
				w[v] = 100 - named
				break
			}
		}
	default:
		var missing []string
		for _, v := range versions {
			if _, ok := w[v]; !ok {
				missing = append(missing, v)
			}
		}
		return nil, fmt.Errorf("body: name every version (missing %s) so the weights sum to 100", strings.Join(missing, ", "))
	}
	return w, nil
}

// VersionStats is one version's numbers in GET /api/v1/stats.
type VersionStats struct {
	Requests  int64            `json:"requests"`
	Errors    int64            `json:"errors"`
	ErrorRate float64          `json:"error_rate"`
	P50ms     float64          `json:"p50_ms"`
	P90ms     float64          `json:"p90_ms"`
	P99ms     float64          `json:"p99_ms"`
	P999ms    float64          `json:"p999_ms"`
	Status    map[string]int64 `json:"status"`
}

// RouteStats is one route in GET /api/v1/stats.
type RouteStats struct {
	Time     time.Time               `json:"time"`
	Weights  rollout.Weights         `json:"weights,omitempty"`
	Versions map[string]VersionStats `json:"versions"`
}

// StatsResponse is GET /api/v1/stats' answer.
type StatsResponse struct {
	Routes map[string]RouteStats `json:"routes"`
}

var classNames = [6]string{"error", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Stats turns a snapshot's version into the API's numbers.
func Stats(v rollout.VersionStats) VersionStats {
	out := VersionStats{Requests: v.Requests, Errors: v.Errors, Status: map[string]int64{}}
	if v.Requests > 0 {
		out.ErrorRate = float64(v.Errors) / float64(v.Requests)
	}
	for i, n := range v.Status {
		if n > 0 {
			out.Status[classNames[i]] = n
		}
	}
	if h := v.Latency; h != nil && h.TotalCount() > 0 {
		ms := func(pct float64) float64 { return math.Round(float64(h.ValueAtQuantile(pct))) / 1000 }
		out.P50ms, out.P90ms, out.P99ms, out.P999ms = ms(50), ms(90), ms(99), ms(99.9)
	}
	return out
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	names, err := s.routes(r, true)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out := StatsResponse{Routes: map[string]RouteStats{}}
	for _, n := range names {
		snap, err := s.dp.Snapshot(n)
		if err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("route %s: %v", n, err))
			return
		}
		rs := RouteStats{Time: snap.Time.UTC(), Versions: map[string]VersionStats{}}
		rs.Weights, _ = s.dp.Weights(n)
		for v, vs := range snap.Versions {
			rs.Versions[v] = Stats(vs)
		}
		out.Routes[n] = rs
	}
	writeJSON(w, http.StatusOK, out)
}

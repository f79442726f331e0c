package xds

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/protobuf/proto"
)

// FleetStatus is what `guardian status` shows about the fleet.
type FleetStatus struct {
	Listen  string       `json:"listen,omitempty"`
	Version string       `json:"version"` // published last
	Nodes   []NodeStatus `json:"nodes"`
	// Converged counts streams that acknowledged Version.
	Converged int `json:"converged"`
	// Groups sums the streams per node group (Config.NodeGroup).
	Groups []GroupStatus `json:"groups"`
}

// GroupStatus is one node group's share of the fleet.
type GroupStatus struct {
	Group     string `json:"group"`
	Streams   int    `json:"streams"`
	Converged int    `json:"converged"`
	NACKs     int    `json:"nacks"` // streams whose last answer of some type was a NACK
}

// NodeStatus is one xDS stream (a node may hold several).
type NodeStatus struct {
	Node      string    `json:"node"`
	Group     string    `json:"group"`
	Stream    int64     `json:"stream"`
	Delta     bool      `json:"delta"`
	Connected time.Time `json:"connected"`
	// Held is the version the node is held at after a NACK, until the next
	// publish gives it a new snapshot to try.
	Held  string       `json:"held,omitempty"`
	Types []TypeStatus `json:"types"`
}

// TypeStatus is one resource type on one stream.
type TypeStatus struct {
	Type    string    `json:"type"` // short name: Listener, RouteConfiguration, …
	Sent    string    `json:"sent,omitempty"`
	Acked   string    `json:"acked,omitempty"`
	AckedAt time.Time `json:"ackedAt,omitzero"`
	NACK    *NACK     `json:"nack,omitempty"`
}

// NACK is the last rejection of a type by a node.
type NACK struct {
	Version string    `json:"version"`
	Reason  string    `json:"reason"`
	Time    time.Time `json:"time"`
}

// streamKey: the state-of-the-world and delta servers number their
// streams independently, so IDs collide across the two.
type streamKey struct {
	delta bool
	id    int64
}

type streamState struct {
	id        streamKey
	delta     bool
	node      string
	group     string
	connected time.Time
	held      string
	backoff   time.Duration
	types     map[string]*typeState
}

type typeState struct {
	sent        map[string]string // nonce → version, the last few
	sentOrder   []string
	sentVersion string
	acked       string
	ackedAt     time.Time
	nack        *NACK
	// delta subscriptions
	wildcard bool
	names    map[string]bool
}

type pendingVersion struct {
	version     string
	seq         uint64
	start       time.Time
	outstanding map[streamKey]bool
	changed     map[string]map[string]bool // type → resource names added, changed or removed
	done        chan struct{}
	took        time.Duration
	err         error
}

const maxPending = 64

func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.openStream(streamKey{false, id})
			return nil
		},
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.openStream(streamKey{true, id})
			return nil
		},
		StreamClosedFunc:      func(id int64, _ *core.Node) { s.closeStream(streamKey{false, id}) },
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) { s.closeStream(streamKey{true, id}) },
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			return s.onRequest(streamKey{false, id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetVersionInfo(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil, nil)
		},
		StreamResponseFunc: func(_ context.Context, id int64, req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
			s.onResponse(streamKey{false, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
		},
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			return s.onRequest(streamKey{true, id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), "", req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil, req)
		},
		StreamDeltaResponseFunc: func(id int64, req *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
			s.onResponse(streamKey{true, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
		},
	}
}

func (s *Server) openStream(id streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[id] = &streamState{id: id, delta: id.delta, connected: time.Now(), types: map[string]*typeState{}}
	s.metrics.streams.Inc()
}

func (s *Server) closeStream(id streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[id]
	if !ok {
		return
	}
	delete(s.streams, id)
	s.metrics.streams.Dec()
	if st.node == "" {
		return
	}
	for _, other := range s.streams {
		if other.node == st.node {
			s.settleLocked(time.Now())
			return
		}
	}
	// The last stream of the node: forget its cache entry. A reconnect
	// registers again under s.mu, so this cannot race a new stream.
	s.cache.ClearSnapshot(st.node)
	s.metrics.nodes.Dec()
	s.log.Info("xds: node disconnected", "node", st.node, "group", st.group)
	s.settleLocked(time.Now())
}

func (s *Server) onRequest(id streamKey, node *core.Node, typeURL, nonce, version, reason string, nacked bool, delta *discovery.DeltaDiscoveryRequest) error {
	var sleep time.Duration
	defer func() {
		// No good snapshot to hold the node at: slow its NACK loop down
		// instead of answering every NACK with the same bad snapshot at once.
		if sleep > 0 {
			time.Sleep(sleep)
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	st, ok := s.streams[id]
	if !ok {
		return fmt.Errorf("xds: request on unknown stream %d", id.id)
	}
	if st.node == "" {
		if node == nil {
			return errors.New("xds: first request carries no node")
		}
		st.node = node.GetId()
		st.group = s.cfg.NodeGroup(node)
		first := true
		for _, other := range s.streams {
			if other != st && other.node == st.node {
				first = false
			}
		}
		// It will be sent the current snapshot, which settles every
		// pending version: it counts for them like the streams it replaces.
		for _, p := range s.pending {
			p.outstanding[id] = true
		}
		if first {
			s.metrics.nodes.Inc()
			s.log.Info("xds: node connected", "node", st.node, "group", st.group, "delta", st.delta)
		}
		// The node's cache entry must exist before the server opens the
		// watch this request creates, or the first answer would wait for
		// the next publish.
		if _, err := s.cache.GetSnapshot(st.node); err != nil {
			if err := s.cache.SetSnapshot(context.Background(), st.node, s.current); err != nil {
				return err
			}
		}
	}
	ts := st.types[typeURL]
	if ts == nil {
		ts = &typeState{sent: map[string]string{}, names: map[string]bool{}}
		st.types[typeURL] = ts
		if delta != nil && len(delta.GetResourceNamesSubscribe()) == 0 {
			ts.wildcard = true // an empty first delta request is a wildcard subscription
		}
	}
	if delta != nil {
		for _, n := range delta.GetResourceNamesSubscribe() {
			if n == "*" {
				ts.wildcard = true
			} else {
				ts.names[n] = true
			}
		}
		for _, n := range delta.GetResourceNamesUnsubscribe() {
			if n == "*" {
				ts.wildcard = false
			} else {
				delete(ts.names, n)
			}
		}
	}
	if nonce == "" {
		return nil // a new subscription, not an answer
	}
	answered, known := ts.sent[nonce]
	if !known {
		return nil // stale nonce: the server ignores it too
	}
	if !nacked {
		ts.acked, ts.ackedAt = answered, now
		st.backoff = 0
		s.settleStreamLocked(st, now)
		return nil
	}
	short := shortType(typeURL)
	ts.nack = &NACK{Version: answered, Reason: reason, Time: now}
	s.metrics.nacks.WithLabelValues(short).Inc()
	s.log.Warn("xds: NACK", "node", st.node, "group", st.group, "type", short, "version", answered, "reason", reason)
	for _, p := range s.pending {
		if p.outstanding[id] && p.err == nil {
			if seq, ok := s.versionSeq(answered); ok && seq >= p.seq {
				p.err = fmt.Errorf("xds: node %q rejected %s version %s: %s", st.node, short, answered, reason)
				s.finishLocked(p, now)
			}
		}
	}
	cur, err := s.cache.GetSnapshot(st.node)
	if err != nil || cur.GetVersion(typeURL) != answered {
		return nil // already moved on to a newer snapshot
	}
	if delta != nil {
		version = ts.acked // delta requests carry no version_info
	}
	good := s.snapshotByVersionLocked(version)
	if good == nil || version == answered {
		st.backoff = min(max(2*st.backoff, 100*time.Millisecond), 5*time.Second)
		sleep = st.backoff
		return nil
	}
	for _, other := range s.streams {
		if other.node == st.node {
			other.held = version
		}
	}
	s.log.Warn("xds: holding node at its last acknowledged snapshot", "node", st.node, "version", version)
	return s.cache.SetSnapshot(context.Background(), st.node, good)
}

func (s *Server) onResponse(id streamKey, typeURL, nonce, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[id]
	if !ok {
		return
	}
	ts := st.types[typeURL]
	if ts == nil {
		ts = &typeState{sent: map[string]string{}, names: map[string]bool{}}
		st.types[typeURL] = ts
	}
	ts.sent[nonce] = version
	ts.sentOrder = append(ts.sentOrder, nonce)
	// Clients answer the latest nonce; a few older ones cover reordering.
	if len(ts.sentOrder) > 4 {
		delete(ts.sent, ts.sentOrder[0])
		ts.sentOrder = ts.sentOrder[1:]
	}
	ts.sentVersion = version
}

// streamNeedsLocked reports whether st must acknowledge p before p counts
// as converged. State-of-the-world streams get every type again on every
// version; delta streams only get the types whose subscribed resources
// changed.
func (s *Server) streamNeedsLocked(st *streamState, p *pendingVersion) bool {
	if len(st.types) == 0 {
		return false
	}
	if !st.delta {
		return true
	}
	for t, ts := range st.types {
		if ts.touchedBy(p.changed[t]) {
			return true
		}
	}
	return false
}

func (ts *typeState) touchedBy(changed map[string]bool) bool {
	if len(changed) == 0 {
		return false
	}
	if ts.wildcard {
		return true
	}
	for n := range changed {
		if ts.names[n] {
			return true
		}
	}
	return false
}

func (s *Server) convergedLocked(st *streamState, p *pendingVersion) bool {
	if len(st.types) == 0 {
		return false
	}
	for t, ts := range st.types {
		if st.delta && !ts.touchedBy(p.changed[t]) {
			continue
		}
		seq, ok := s.versionSeq(ts.acked)
		if !ok || seq < p.seq {
			return false
		}
	}
	return true
}

func (s *Server) settleStreamLocked(st *streamState, now time.Time) {
	for _, p := range slices.Clone(s.pending) {
		if p.outstanding[st.id] && s.convergedLocked(st, p) {
			delete(p.outstanding, st.id)
			if len(p.outstanding) == 0 {
				s.finishLocked(p, now)
			}
		}
	}
}

func (s *Server) settleLocked(now time.Time) {
	for _, p := range slices.Clone(s.pending) {
		for id := range p.outstanding {
			st, ok := s.streams[id]
			if !ok || s.convergedLocked(st, p) {
				delete(p.outstanding, id)
			}
		}
		if len(p.outstanding) == 0 {
			s.finishLocked(p, now)
		}
	}
	for len(s.pending) > maxPending {
		p := s.pending[0]
		p.err = fmt.Errorf("xds: version %s superseded by %d newer versions before every node acknowledged it", p.version, maxPending)
		s.finishLocked(p, now)
	}
}

func (s *Server) finishLocked(p *pendingVersion, now time.Time) {
	i := slices.Index(s.pending, p)
	if i < 0 {
		return
	}
	s.pending = slices.Delete(s.pending, i, i+1)
	// Kept for a while so a WaitAcked that comes late still gets the result.
	s.finished = append(s.finished, p)
	if len(s.finished) > maxPending {
		s.finished = slices.Delete(s.finished, 0, len(s.finished)-maxPending)
	}
	p.took = now.Sub(p.start)
	if p.err == nil {
		s.metrics.convergence.Observe(p.took.Seconds())
	}
	close(p.done)
}

// changedNames lists, per type, the resources that differ between two
// snapshots.
func changedNames(prev, next *cache.Snapshot) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, t := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		m := map[string]bool{}
		nr := next.GetResources(t)
		var pr = map[string]typesResource{}
		if prev != nil {
			for n, r := range prev.GetResources(t) {
				pr[n] = r
			}
		}
		for n, r := range nr {
			if p, ok := pr[n]; !ok || !proto.Equal(p, r) {
				m[n] = true
			}
		}
		for n := range pr {
			if _, ok := nr[n]; !ok {
				m[n] = true
			}
		}
		out[t] = m
	}
	return out
}

type typesResource = proto.Message

func shortType(typeURL string) string {
	i := strings.LastIndexByte(typeURL, '.')
	return typeURL[i+1:]
}

// Status is the fleet as the control plane sees it: every stream, the
// version each type acknowledged, and the last NACK with its reason.
func (s *Server) Status() FleetStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs := FleetStatus{Listen: s.cfg.Listen, Version: s.version, Nodes: []NodeStatus{}, Groups: []GroupStatus{}}
	groups := map[string]*GroupStatus{}
	for _, st := range s.streams {
		if st.node == "" {
			continue
		}
		ns := NodeStatus{Node: st.node, Group: st.group, Stream: st.id.id, Delta: st.delta, Connected: st.connected, Held: st.held}
		for t, ts := range st.types {
			ns.Types = append(ns.Types, TypeStatus{Type: shortType(t), Sent: ts.sentVersion, Acked: ts.acked, AckedAt: ts.ackedAt, NACK: ts.nack})
		}
		sort.Slice(ns.Types, func(i, j int) bool { return ns.Types[i].Type < ns.Types[j].Type })
		g := groups[st.group]
		if g == nil {
			g = &GroupStatus{Group: st.group}
			groups[st.group] = g
		}
		g.Streams++
		if len(st.types) > 0 && ns.allAcked(s.version, st.delta) {
			fs.Converged++
			g.Converged++
		}
		for _, ts := range st.types {
			if ts.nack != nil && ts.nack.Version == ts.sentVersion {
				g.NACKs++
				break
			}
		}
		fs.Nodes = append(fs.Nodes, ns)
	}
	for _, g := range groups {
		fs.Groups = append(fs.Groups, *g)
	}
	sort.Slice(fs.Groups, func(i, j int) bool { return fs.Groups[i].Group < fs.Groups[j].Group })
	sort.Slice(fs.Nodes, func(i, j int) bool {
		if fs.Nodes[i].Node != fs.Nodes[j].Node {
			return fs.Nodes[i].Node < fs.Nodes[j].Node
		}
		if fs.Nodes[i].Delta != fs.Nodes[j].Delta {
			return !fs.Nodes[i].Delta
		}
		return fs.Nodes[i].Stream < fs.Nodes[j].Stream
	})
	return fs
}

// allAcked: for state-of-the-world every type carries the current version;
// a delta stream is up to date when its last answer of each type is acked.
func (ns NodeStatus) allAcked(version string, delta bool) bool {
	for _, t := range ns.Types {
		if delta {
			if t.Sent != t.Acked {
				return false
			}
		} else if t.Acked != version {
			return false
		}
	}
	return true
}

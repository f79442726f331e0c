package store

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	bolt "go.etcd.io/bbolt"
)

// crashChildEnv makes the test binary act as the crash test's writer.
const crashChildEnv = "GUARDIAN_STORE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		if err := crashChild(path); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var t0 = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)

func ev(typ, msg string, i int) rollout.Event {
	return rollout.Event{
		Time:    t0.Add(time.Duration(i) * time.Second),
		Type:    typ,
		Message: msg,
		Data:    json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
	}
}

func openT(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

func TestCommitLoadReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "state", FileName)
	s := openT(t, path)

	if _, ok, err := s.Load("checkout"); err != nil || ok {
		t.Fatalf("Load before commit: ok=%v err=%v, want ok=false err=nil", ok, err)
	}
	if err := s.Commit("checkout", json.RawMessage(`{"step":1}`), []rollout.Event{ev("start", "rollout started", 0), ev("weight", "canary 1%", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit("checkout", json.RawMessage(`{"step":2}`), []rollout.Event{ev("weight", "canary 5%", 2)}); err != nil {
		t.Fatal(err)
	}
	// Events only: the state stays.
	if err := s.Commit("checkout", nil, []rollout.Event{ev("note", "analysis inconclusive", 3)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit("search", json.RawMessage(`{"step":0}`), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, path)
	defer s.Close()
	state, ok, err := s.Load("checkout")
	if err != nil || !ok || string(state) != `{"step":2}` {
		t.Fatalf("Load after reopen = %s, %v, %v; want {\"step\":2}, true, nil", state, ok, err)
	}
	evs, err := s.Events("checkout", 0)
	if err != nil {
		t.Fatal(err)
	}
	wantMsgs := []string{"rollout started", "canary 1%", "canary 5%", "analysis inconclusive"}
	if len(evs) != len(wantMsgs) {
		t.Fatalf("got %d events, want %d: %+v", len(evs), len(wantMsgs), evs)
	}
	for i, e := range evs {
		if e.Seq != uint64(i+1) || e.Message != wantMsgs[i] || !e.Time.Equal(t0.Add(time.Duration(i)*time.Second)) {
			t.Errorf("event %d = seq %d %q at %v; want seq %d %q", i, e.Seq, e.Message, e.Time, i+1, wantMsgs[i])
		}
		if want := fmt.Sprintf(`{"i":%d}`, i); string(e.Data) != want {
			t.Errorf("event %d data = %s, want %s", i, e.Data, want)
		}
	}
	tail, err := s.Events("checkout", 2)
	if err != nil || len(tail) != 2 || tail[0].Seq != 3 {
		t.Fatalf("Events(after 2) = %+v, %v; want seqs 3,4", tail, err)
	}
	if none, err := s.Events("checkout", ^uint64(0)); err != nil || len(none) != 0 {
		t.Fatalf("Events(after max) = %+v, %v; want none", none, err)
	}
	if last, err := s.LastSeq("checkout"); err != nil || last != 4 {
		t.Fatalf("LastSeq = %d, %v; want 4", last, err)
	}
	names, err := s.List()
	if err != nil || strings.Join(names, ",") != "checkout,search" {
		t.Fatalf("List = %v, %v; want [checkout search]", names, err)
	}
	// Sequence numbers continue across reopen, never reused.
	if err := s.Commit("checkout", nil, []rollout.Event{ev("promote", "promoted", 4)}); err != nil {
		t.Fatal(err)
	}
	if last, _ := s.LastSeq("checkout"); last != 5 {
		t.Fatalf("LastSeq after reopen and commit = %d, want 5", last)
	}
}

func TestCommitRejectsBadInput(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), FileName))
	defer s.Close()
	cases := []struct {
		name, rollout string
		state         json.RawMessage
		events        []rollout.Event
		want          string
	}{
		{"empty name", "", json.RawMessage(`{}`), nil, "empty rollout name"},
		{"long name", strings.Repeat("x", MaxNameLen+1), json.RawMessage(`{}`), nil, "longer than"},
		{"invalid state", "a", json.RawMessage(`{"step":`), nil, "state is not valid JSON"},
		{"invalid event data", "a", nil, []rollout.Event{{Type: "x", Data: json.RawMessage(`{oops`)}}, "event 0 (x)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.Commit(c.rollout, c.state, c.events)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Commit error = %v, want one containing %q", err, c.want)
			}
		})
	}
	// A refused commit wrote nothing.
	if _, ok, _ := s.Load("a"); ok {
		t.Fatal("refused commit left a state behind")
	}
	if evs, _ := s.Events("a", 0); len(evs) != 0 {
		t.Fatalf("refused commit left events: %+v", evs)
	}
}

func TestIncidents(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	s := openT(t, path)
	if _, err := s.Incident("checkout", Incident{}); err == nil {
		t.Fatal("incident without reason accepted")
	}
	seq, err := s.Incident("checkout", Incident{
		Time:     t0,
		Reason:   "error_rate > 5%",
		Weights:  rollout.Weights{"stable": 100, "canary": 0},
		Evidence: json.RawMessage(`{"metric":"error_rate","lower_bound":0.31}`),
	})
	if err != nil || seq != 1 {
		t.Fatalf("Incident = %d, %v; want 1, nil", seq, err)
	}
	if err := s.SetIncidentActions("checkout", seq, json.RawMessage(`[{"action":"undo","ok":true}]`)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetIncidentActions("checkout", 9, json.RawMessage(`[]`)); err == nil {
		t.Fatal("SetIncidentActions on a missing incident succeeded")
	}
	s.Close()

	s = openT(t, path)
	defer s.Close()
	incs, err := s.Incidents("checkout")
	if err != nil || len(incs) != 1 {
		t.Fatalf("Incidents = %+v, %v; want one", incs, err)
	}
	got := incs[0]
	if got.Seq != 1 || got.Reason != "error_rate > 5%" || got.Weights["canary"] != 0 || got.Weights["stable"] != 100 ||
		string(got.Evidence) != `{"metric":"error_rate","lower_bound":0.31}` || string(got.Actions) != `[{"action":"undo","ok":true}]` ||
		!got.Time.Equal(t0) {
		t.Fatalf("incident after reopen = %+v", got)
	}
}

func TestSecondOpenFailsWithLockError(t *testing.T) {
	old := lockTimeout
	lockTimeout = 50 * time.Millisecond
	defer func() { lockTimeout = old }()

	path := filepath.Join(t.TempDir(), FileName)
	s := openT(t, path)
	defer s.Close()
	_, err := Open(path)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open error = %v, want ErrLocked naming %s", err, path)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	s := openT(t, path)
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, u64(schemaVersion+1)) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "schema version 2") {
		t.Fatalf("Open of a newer schema = %v, want schema error", err)
	}
}

// TestConcurrentReadsWhileWriting checks that readers always see whole
// commits: the state's count never exceeds the number of events that a later
// read returns, and both only grow.
func TestConcurrentReadsWhileWriting(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), FileName))
	defer s.Close()
	const commits = 100
	wantEvents := 0
	for n := 1; n <= commits; n++ {
		wantEvents += 1 + n%3
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	wg.Add(1)
	go func() {
		defer wg.Done()
		total := 0
		for n := 1; n <= commits; n++ {
			k := 1 + n%3
			evs := make([]rollout.Event, k)
			for i := range evs {
				evs[i] = ev("tick", "", total+i)
			}
			total += k
			if err := s.Commit("r", json.RawMessage(fmt.Sprintf(`{"events":%d}`, total)), evs); err != nil {
				errc <- err
				return
			}
		}
	}()
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := 0
			for {
				state, ok, err := s.Load("r")
				if err != nil {
					errc <- err
					return
				}
				if !ok {
					runtime.Gosched()
					continue
				}
				var st struct{ Events int }
				if err := json.Unmarshal(state, &st); err != nil {
					errc <- fmt.Errorf("torn state %q: %v", state, err)
					return
				}
				if st.Events < last {
					errc <- fmt.Errorf("state went back from %d to %d events", last, st.Events)
					return
				}
				last = st.Events
				evs, err := s.Events("r", 0)
				if err != nil {
					errc <- err
					return
				}
				if len(evs) < st.Events {
					errc <- fmt.Errorf("state records %d events but only %d are readable", st.Events, len(evs))
					return
				}
				for i, e := range evs {
					if e.Seq != uint64(i+1) {
						errc <- fmt.Errorf("event %d has seq %d", i, e.Seq)
						return
					}
				}
				if last == wantEvents {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// crashChild commits forever (bounded by a deadline in case the parent dies)
// and reports each durable commit on stdout after Commit returns.
func crashChild(path string) error {
	s, err := Open(path)
	if err != nil {
		return err
	}
	var st crashState
	if b, ok, err := s.Load("crash"); err != nil {
		return err
	} else if ok {
		if err := json.Unmarshal(b, &st); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		st.Commits++
		k := 1 + st.Commits%4
		evs := make([]rollout.Event, k)
		for i := range evs {
			evs[i] = rollout.Event{
				Time: time.Unix(int64(st.Events+i), 0).UTC(),
				Type: "tick",
				// A big message makes commits span several pages, so a
				// torn write would have room to show.
				Message: strings.Repeat("x", 300*i),
				Data:    json.RawMessage(fmt.Sprintf(`{"commit":%d,"i":%d,"of":%d}`, st.Commits, i, k)),
			}
		}
		st.Events += k
		b, _ := json.Marshal(st)
		if err := s.Commit("crash", b, evs); err != nil {
			return err
		}
		fmt.Fprintf(os.Stdout, "%d %d\n", st.Commits, st.Events)
	}
	return errors.New("parent never killed the child")
}

type crashState struct {
	Commits int `json:"commits"`
	Events  int `json:"events"`
}

// TestCrashMidCommit kills a writer with SIGKILL at random moments and checks
// that the reopened file is consistent: the state's own event count equals
// the stored events, every commit's events are all present or all absent,
// and every commit the writer saw succeed survived.
func TestCrashMidCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	path := filepath.Join(t.TempDir(), FileName)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	acked := 0
	for round := 0; round < 20; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan int, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) == 2 {
					n, _ := strconv.Atoi(f[1])
					lines <- n
				}
			}
		}()
		// Wait for the child to be committing, then kill it somewhere in
		// its loop.
		select {
		case n, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("round %d: child exited before committing: %s", round, stderr.String())
			}
			acked = max(acked, n)
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child did not commit within 30s: %s", round, stderr.String())
		}
		time.Sleep(time.Duration(rng.IntN(40_000)) * time.Microsecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for n := range lines {
			acked = max(acked, n)
		}
		cmd.Wait()

		s := openT(t, path)
		b, ok, err := s.Load("crash")
		if err != nil || !ok {
			s.Close()
			t.Fatalf("round %d: Load = %s, %v, %v", round, b, ok, err)
		}
		var st crashState
		if err := json.Unmarshal(b, &st); err != nil {
			s.Close()
			t.Fatalf("round %d: torn state %q: %v", round, b, err)
		}
		evs, err := s.Events("crash", 0)
		s.Close()
		if err != nil {
			t.Fatalf("round %d: Events: %v", round, err)
		}
		if len(evs) != st.Events {
			t.Fatalf("round %d: state records %d events, store holds %d", round, st.Events, len(evs))
		}
		if st.Events < acked {
			t.Fatalf("round %d: %d events acknowledged to the writer, only %d survived", round, acked, st.Events)
		}
		// Every commit is whole: its events are consecutive and complete.
		commit, want, seen := 0, 0, 0
		for i, e := range evs {
			if e.Seq != uint64(i+1) {
				t.Fatalf("round %d: event %d has seq %d", round, i, e.Seq)
			}
			var d struct{ Commit, I, Of int }
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatalf("round %d: event %d data %q: %v", round, i, e.Data, err)
			}
			if d.I == 0 {
				if seen != want {
					t.Fatalf("round %d: commit %d has %d of %d events", round, commit, seen, want)
				}
				commit, want, seen = d.Commit, d.Of, 0
			}
			if d.Commit != commit || d.I != seen {
				t.Fatalf("round %d: event %d is commit %d #%d, want commit %d #%d", round, i, d.Commit, d.I, commit, seen)
			}
			seen++
		}
		if seen != want || commit != st.Commits {
			t.Fatalf("round %d: last commit %d has %d of %d events; state says %d commits", round, commit, seen, want, st.Commits)
		}
		t.Logf("round %d: killed after %d commits, %d events", round, st.Commits, st.Events)
	}
}

// BenchmarkCommit measures one durable commit (state + one event) against
// the baseline of a bare bbolt Update writing the same bytes: the ratio is
// the store's own overhead on top of bbolt's fsync-bound commit.
func BenchmarkCommit(b *testing.B) {
	state := json.RawMessage(`{"phase":"Progressing","step":3,"weights":{"stable":75,"canary":25}}`)
	e := rollout.Event{Time: t0, Type: "weight", Message: "canary 25%", Data: json.RawMessage(`{"weight":25}`)}
	b.Run("store", func(b *testing.B) {
		s, err := Open(filepath.Join(b.TempDir(), FileName))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		for b.Loop() {
			if err := s.Commit("checkout", state, []rollout.Event{e}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bbolt-baseline", func(b *testing.B) {
		db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		ev, _ := json.Marshal(e)
		for b.Loop() {
			err := db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte("checkout"))
				if err != nil {
					return err
				}
				seq, _ := bk.NextSequence()
				if err := bk.Put([]byte("state"), state); err != nil {
					return err
				}
				return bk.Put(u64(seq+1<<32), ev)
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

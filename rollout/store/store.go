// Package store keeps rollout state durable in one embedded bbolt file.
//
// Every rollout has a bucket holding its latest state (opaque JSON owned by
// the engine), an append-only event log keyed by a monotonically increasing
// sequence number, and its incident records. Commit replaces the state and
// appends events in one fsync'd transaction, so after a crash (kill -9, power
// loss) a reader sees either all of a commit or none of it: the state never
// runs ahead of or behind the events it recorded. The driver commits BEFORE
// it carries out the action the commit records, so a restart never finds an
// action that took effect without its record.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/deployment-guardian/guardian/rollout"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the database file inside a state directory.
const FileName = "guardian.db"

// lockTimeout bounds how long Open waits for the file lock that another
// Guardian process may hold; a variable so tests need not wait it out.
var lockTimeout = 2 * time.Second

// schemaVersion is stored in the meta bucket; Open refuses files written by a
// newer, incompatible layout instead of misreading them.
const schemaVersion = 1

// MaxNameLen bounds rollout names (bbolt keys can be up to 32 KiB, but a
// rollout name is a DNS-label-like identifier and a long one is a bug).
const MaxNameLen = 253

var (
	bucketMeta     = []byte("meta")
	bucketRollouts = []byte("rollouts")
	keySchema      = []byte("schema")
	keyState       = []byte("state")
	bucketEvents   = []byte("events")
	bucketIncident = []byte("incidents")
)

// ErrLocked is returned by Open when another process holds the database.
var ErrLocked = errors.New("state file is locked by another process")

// StoredEvent is an event with the sequence number the store gave it. Seqs of
// one rollout start at 1 and increase by one with every appended event.
type StoredEvent struct {
	Seq uint64 `json:"seq"`
	rollout.Event
}

// Incident records why a rollout was rolled back or aborted, with the
// evidence behind the decision and, once known, what the rollback actions did.
type Incident struct {
	Seq      uint64          `json:"seq"` // assigned by the store
	Time     time.Time       `json:"time"`
	Reason   string          `json:"reason"`
	Weights  rollout.Weights `json:"weights,omitempty"` // weights the rollback set
	Evidence json.RawMessage `json:"evidence,omitempty"`
	// Actions holds the outcomes of the rollback hooks as JSON.
	Actions json.RawMessage `json:"actions,omitempty"`
}

// Store is a handle on the state file. Its methods are safe for concurrent
// use: bbolt serialises writers and gives readers consistent snapshots.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens (creating it and its directories if needed) the database at
// path. When another process holds the file, Open fails after two seconds
// with an error wrapping ErrLocked.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("store: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: create state directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: %s: %w (is another guardian running with the same --state-dir?)", path, ErrLocked)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("corrupt schema version (%d bytes)", len(v))
			}
			if got := binary.BigEndian.Uint64(v); got != schemaVersion {
				return fmt.Errorf("schema version %d, this guardian understands %d", got, schemaVersion)
			}
		} else if err := meta.Put(keySchema, u64(schemaVersion)); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketRollouts)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Path is the database file's path.
func (s *Store) Path() string { return s.path }

// Close releases the file and its lock.
func (s *Store) Close() error { return s.db.Close() }

func checkName(name string) error {
	if name == "" {
		return errors.New("store: empty rollout name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("store: rollout name is %d bytes, longer than %d", len(name), MaxNameLen)
	}
	return nil
}

// Commit replaces the rollout's state with state and appends events, in one
// durable transaction. A nil state leaves the stored state as it is (events
// only). state must be valid JSON, and so must every event's Data.
func (s *Store) Commit(name string, state json.RawMessage, events []rollout.Event) error {
	if err := checkName(name); err != nil {
		return err
	}
	if state != nil && !json.Valid(state) {
		return fmt.Errorf("store: commit %s: state is not valid JSON", name)
	}
	encoded := make([][]byte, len(events))
	for i, ev := range events {
		b, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("store: commit %s: event %d (%s): %w", name, i, ev.Type, err)
		}
		encoded[i] = b
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		rb, err := tx.Bucket(bucketRollouts).CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		if state != nil {
			// bbolt keeps a reference to the value until commit; copy so a
			// caller reusing its buffer cannot change what is written.
			if err := rb.Put(keyState, append([]byte(nil), state...)); err != nil {
				return err
			}
		}
		if len(encoded) == 0 {
			return nil
		}
		eb, err := rb.CreateBucketIfNotExists(bucketEvents)
		if err != nil {
			return err
		}
		for _, b := range encoded {
			seq, err := eb.NextSequence()
			if err != nil {
				return err
			}
			if err := eb.Put(u64(seq), b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: commit %s: %w", name, err)
	}
	return nil
}

// Load returns the rollout's latest committed state; ok is false when the
// store has never seen the rollout or holds no state for it.
func (s *Store) Load(name string) (state json.RawMessage, ok bool, err error) {
	if err := checkName(name); err != nil {
		return nil, false, err
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRollouts).Bucket([]byte(name))
		if rb == nil {
			return nil
		}
		if v := rb.Get(keyState); v != nil {
			// Values are only valid inside the transaction.
			state = append(json.RawMessage(nil), v...)
			ok = true
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("store: load %s: %w", name, err)
	}
	return state, ok, nil
}

// Events returns the rollout's events with a sequence number greater than
// afterSeq, oldest first. Events(name, 0) is the whole history.
func (s *Store) Events(name string, afterSeq uint64) ([]StoredEvent, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var out []StoredEvent
	err := s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRollouts).Bucket([]byte(name))
		if rb == nil {
			return nil
		}
		eb := rb.Bucket(bucketEvents)
		if eb == nil {
			return nil
		}
		if afterSeq == ^uint64(0) {
			return nil // afterSeq+1 would wrap to the first event
		}
		c := eb.Cursor()
		for k, v := c.Seek(u64(afterSeq + 1)); k != nil; k, v = c.Next() {
			var se StoredEvent
			if len(k) != 8 {
				return fmt.Errorf("corrupt event key (%d bytes)", len(k))
			}
			se.Seq = binary.BigEndian.Uint64(k)
			if err := json.Unmarshal(v, &se.Event); err != nil {
				return fmt.Errorf("event %d: %w", se.Seq, err)
			}
			out = append(out, se)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: events %s: %w", name, err)
	}
	return out, nil
}

// LastSeq is the sequence number of the rollout's newest event (0 if none).
func (s *Store) LastSeq(name string) (uint64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if rb := tx.Bucket(bucketRollouts).Bucket([]byte(name)); rb != nil {
			if eb := rb.Bucket(bucketEvents); eb != nil {
				seq = eb.Sequence()
			}
		}
		return nil
	})
	return seq, err
}

// List returns the names of every rollout in the store, sorted bytewise.
func (s *Store) List() ([]string, error) {
	var names []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRollouts).ForEachBucket(func(k []byte) error {
			names = append(names, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list: %w", err)
	}
	return names, nil
}

// Incident appends an incident record to the rollout and returns the
// sequence number it was given. A zero inc.Time is left zero: the caller
// owns the clock.
func (s *Store) Incident(name string, inc Incident) (uint64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	if inc.Reason == "" {
		return 0, fmt.Errorf("store: incident %s: empty reason", name)
	}
	var seq uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		rb, err := tx.Bucket(bucketRollouts).CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		ib, err := rb.CreateBucketIfNotExists(bucketIncident)
		if err != nil {
			return err
		}
		if seq, err = ib.NextSequence(); err != nil {
			return err
		}
		inc.Seq = seq
		b, err := json.Marshal(inc)
		if err != nil {
			return err
		}
		return ib.Put(u64(seq), b)
	})
	if err != nil {
		return 0, fmt.Errorf("store: incident %s: %w", name, err)
	}
	return seq, nil
}

// SetIncidentActions records the outcomes of the rollback actions on an
// existing incident; hooks finish after the incident is first written.
func (s *Store) SetIncidentActions(name string, seq uint64, actions json.RawMessage) error {
	if err := checkName(name); err != nil {
		return err
	}
	if !json.Valid(actions) {
		return fmt.Errorf("store: incident %s #%d: actions are not valid JSON", name, seq)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRollouts).Bucket([]byte(name))
		var ib *bolt.Bucket
		if rb != nil {
			ib = rb.Bucket(bucketIncident)
		}
		var v []byte
		if ib != nil {
			v = ib.Get(u64(seq))
		}
		if v == nil {
			return fmt.Errorf("no incident #%d", seq)
		}
		var inc Incident
		if err := json.Unmarshal(v, &inc); err != nil {
			return err
		}
		inc.Actions = append(json.RawMessage(nil), actions...)
		b, err := json.Marshal(inc)
		if err != nil {
			return err
		}
		return ib.Put(u64(seq), b)
	})
	if err != nil {
		return fmt.Errorf("store: incident %s: %w", name, err)
	}
	return nil
}

// Incidents returns the rollout's incident records, oldest first.
func (s *Store) Incidents(name string) ([]Incident, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var out []Incident
	err := s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRollouts).Bucket([]byte(name))
		if rb == nil {
			return nil
		}
		ib := rb.Bucket(bucketIncident)
		if ib == nil {
			return nil
		}
		return ib.ForEach(func(k, v []byte) error {
			var inc Incident
			if err := json.Unmarshal(v, &inc); err != nil {
				return fmt.Errorf("incident %x: %w", k, err)
			}
			out = append(out, inc)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: incidents %s: %w", name, err)
	}
	return out, nil
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

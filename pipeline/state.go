package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fhirferry/fhirferry/fetch"
)

// Phases of a run, in order. The state file is rewritten after each step,
// so a restart knows exactly where the run stopped.
const (
	PhaseKickingOff = "kicking_off" // the kick-off request may have been sent
	PhasePolling    = "polling"     // status URL known and saved
	PhaseLoading    = "loading"     // manifest saved; files download and load
	PhaseCommitted  = "committed"   // every sink committed; cleanup pending
)

// RunState is what a run persists in data_dir/state/<source>.json.
type RunState struct {
	RunID     string    `json:"run_id"`
	Source    string    `json:"source"`
	Phase     string    `json:"phase"`
	Since     string    `json:"since"`
	StatusURL string    `json:"status_url,omitempty"`
	Started   time.Time `json:"started"`
	KickOffs  int       `json:"kick_offs"`
	// Manifest is the completed export's manifest (all pages merged).
	Manifest *fetch.Manifest `json:"manifest,omitempty"`
	// Spooled maps a manifest file index to the file stored in the spool.
	Spooled map[int]fetch.Spooled `json:"spooled,omitempty"`
	// Members is the Group membership the run records (Group sources).
	Members *MemberSnapshot `json:"members,omitempty"`
	// Committed lists the sinks that hold the export.
	Committed []string `json:"committed,omitempty"`
}

// ExportID identifies the export a state describes.
func (s *RunState) ExportID() string {
	if s.Manifest == nil {
		return s.StatusURL
	}
	return s.StatusURL + "#" + s.Manifest.TransactionTime
}

// stateStore persists one source's RunState with atomic replaces.
type stateStore struct {
	mu   sync.Mutex
	path string
}

func newStateStore(dataDir, source string) *stateStore {
	return &stateStore{path: filepath.Join(dataDir, "state", source+".json")}
}

// load returns the saved state, or nil when there is none.
func (s *stateStore) load() (*RunState, error) {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st RunState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("run state %s is corrupt: %w", s.path, err)
	}
	return &st, nil
}

// save writes st durably.
func (s *stateStore) save(st *RunState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.path, data)
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new content: temp file, fsync, rename, fsync of the folder.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func (s *stateStore) remove() error {
	err := os.Remove(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

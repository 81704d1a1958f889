package pipeline

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/sinks"
)

// How a run learnt its Group's members: the runs table's membership column.
const (
	MembersFromRead   = "group read" // GET [base]/Group/{id}
	MembersFromExport = "export"     // the Group resource in the export's own files
	// MembersOmitted: the server neither reads the Group nor exports it;
	// group_member keeps what the previous runs recorded.
	MembersOmitted = "omitted"
)

// MemberSnapshot is the membership a run records (RunState.Members). It
// is taken once, before the kick-off, so a resumed run records the same.
type MemberSnapshot struct {
	Group string `json:"group"`
	// Patients are Patient ids, sorted and distinct.
	Patients []string `json:"patients"`
	// From is MembersFromRead, or "" while the run waits for the Group
	// in its export (the server refused the read).
	From string `json:"from"`
}

// learnMembers takes the run's membership snapshot: for a Group source
// whose runner tracks members, before its export is kicked off, so the
// snapshot and the export describe the same moment as closely as the
// server allows. A server that refuses the read (4xx) leaves the snapshot
// to the export's own Group resource.
func (r *Runner) learnMembers(ctx context.Context, store *stateStore, st *RunState, log *slog.Logger) error {
	if r.Members == nil || r.Request.Level != fetch.LevelGroup || r.Request.GroupID == "" || st.Members != nil {
		return nil
	}
	group := r.Request.GroupID
	refs := r.known
	if refs == nil {
		var err error
		refs, err = r.Members.GroupMembers(ctx, group)
		var ue *fetch.UnsupportedError
		if errors.As(err, &ue) {
			log.Warn("the server does not read the Group; its members are taken from the export's Group resource, if it has one",
				"group", group, "err", err)
			st.Members = &MemberSnapshot{Group: group}
			return r.saveIfStarted(store, st)
		}
		if err != nil {
			return fmt.Errorf("read the members of Group/%s: %w", group, err)
		}
		refs = restrict(refs, r.Request.Patients)
	}
	st.Members = &MemberSnapshot{Group: group, Patients: patientIDs(refs), From: MembersFromRead}
	return r.saveIfStarted(store, st)
}

// saveIfStarted saves a state that is already on disk (a resumed run); a
// new one is saved by the kick-off.
func (r *Runner) saveIfStarted(store *stateStore, st *RunState) error {
	if st.Phase == "" {
		return nil
	}
	return store.save(st)
}

// patientIDs turns sorted "Patient/<id>" references into their ids.
func patientIDs(refs []string) []string {
	out := make([]string, 0, len(refs))
	for _, ref := range refs {
		out = append(out, strings.TrimPrefix(ref, "Patient/"))
	}
	return out
}

// exportedMembers looks for the run's Group in one exported Group file
// (gzip NDJSON in the spool). It returns ok false when the file does not
// hold it.
func exportedMembers(path, group string) (refs []string, ok bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = f.Close() }()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, false, err
	}
	br := bufio.NewReader(zr)
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if len(b) > 0 {
			var head struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			}
			// A line that does not parse is the transform's to reject.
			if json.Unmarshal(b, &head) == nil && head.ResourceType == "Group" && head.ID == group {
				refs, perr := fetch.ParseGroupMembers(b, group)
				if perr != nil {
					return nil, false, fmt.Errorf("line %d: %w", line, perr)
				}
				return refs, true, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// membership is the sinks.Membership a run commits, and how it was
// learnt ("" when the runner does not track members).
func (r *Runner) membership(st *RunState, exported []string, found bool, log *slog.Logger) (*sinks.Membership, string) {
	snap := st.Members
	if snap == nil {
		return nil, ""
	}
	at := st.Started
	if st.Manifest != nil {
		if tt, err := time.Parse(time.RFC3339Nano, st.Manifest.TransactionTime); err == nil {
			at = tt
		}
	}
	switch {
	case snap.From == MembersFromRead:
		return &sinks.Membership{Group: snap.Group, Patients: snap.Patients, At: at}, MembersFromRead
	case found:
		return &sinks.Membership{Group: snap.Group, Patients: patientIDs(restrict(exported, r.Request.Patients)), At: at}, MembersFromExport
	}
	// An incremental export leaves out a Group that did not change, so on
	// its own this is no error; a server that never exports it is.
	log.Warn("the server does not read the Group and this export holds no Group resource (unchanged since _since, or never exported): group_member keeps the membership of earlier runs",
		"group", snap.Group, "since", st.Since)
	return nil, MembersOmitted
}

// findGroup takes the run's membership from an exported Group file when
// the run waits for it there.
func (ld *loading) findGroup(sp fetch.Spooled, name string) error {
	snap := ld.st.Members
	if snap == nil || snap.From != "" || sp.File.Type != "Group" || sp.File.Kind != fetch.KindOutput {
		return nil
	}
	refs, ok, err := exportedMembers(sp.Path, snap.Group)
	if err != nil {
		return fmt.Errorf("read Group/%s from %s: %w", snap.Group, name, err)
	}
	if ok {
		ld.mu.Lock()
		ld.exported, ld.foundGroup = refs, true
		ld.mu.Unlock()
	}
	return nil
}

package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fhirferry/fhirferry/fetch"
)

// MemberLister reads a Group's current members as sorted "Patient/<id>"
// references (*fetch.Client does, with GET [base]/Group/{id}).
type MemberLister interface {
	GroupMembers(ctx context.Context, groupID string) ([]string, error)
}

// Backfill runs a Group source with the Group Membership Request Pattern
// (C49, spec §3.2 item 4). A Group `_since` export need not carry the older
// history of patients who joined the Group after `_since`, so each run
// first diffs the Group's members with the snapshot taken at the previous
// run, exports the newcomers' whole history (POST with one `patient` per new
// member, no `_since`), and then runs the usual incremental export.
//
// The back-fill export goes through its own Runner whose source is
// "<source>.backfill": its own state file and its own checkpoint rows, so
// the main watermark never moves because of it. The snapshot, in
// data_dir/state/<source>.members.json, moves only once both runs have
// committed; after a crash the cycle resumes where it stopped, and a
// repeated back-fill is harmless because sinks upsert with the lastUpdated
// guard. Members who left the Group keep their data (servers never report
// removals); they are only reported in Result.RemovedMembers.
type Backfill struct {
	// Runner is the source's ordinary runner; Request.Level must be group.
	Runner  *Runner
	Members MemberLister
}

// How a cycle fetches the new members' history.
const (
	backfillNone     = ""         // nobody new, or the main run is a full export
	backfillPatients = "patients" // POST Group/{id}/$export with patient parameters
	backfillGroup    = "group"    // full re-export of the Group (the fallback)
)

// membership is the snapshot file.
type membership struct {
	Group string `json:"group"`
	// Members were in the Group when the last completed cycle started:
	// every sink holds their history up to the main checkpoint.
	Members []string  `json:"members"`
	TakenAt time.Time `json:"taken_at"`
	// Cycle is the cycle in progress; nil between cycles.
	Cycle *memberCycle `json:"cycle,omitempty"`
}

// memberCycle is one run of the pattern, persisted before its first export.
type memberCycle struct {
	// Members is the list read at the cycle's start; it replaces
	// membership.Members once the main run commits.
	Members      []string  `json:"members"`
	TakenAt      time.Time `json:"taken_at"`
	New          []string  `json:"new,omitempty"`
	Removed      []string  `json:"removed,omitempty"`
	Mode         string    `json:"mode,omitempty"`
	BackfillDone bool      `json:"backfill_done,omitempty"`
}

// BackfillSource is the source name of a source's back-fill runs.
func BackfillSource(source string) string { return source + ".backfill" }

// MembersPath is where a source's membership snapshot is stored.
func MembersPath(dataDir, source string) string {
	return filepath.Join(dataDir, "state", source+".members.json")
}

// Run performs one cycle: read and diff the members, back-fill the new
// ones, run the incremental export, then store the new snapshot. The
// Result is the main run's, with the membership fields filled in.
func (b *Backfill) Run(ctx context.Context) (*Result, error) {
	r := b.Runner
	group := r.Request.GroupID
	if r.Request.Level != fetch.LevelGroup || group == "" {
		return nil, errors.New("the new-member back-fill needs a group-level source")
	}
	path := MembersPath(r.DataDir, r.Source)
	snap, err := loadMembership(path)
	if err != nil {
		return nil, err
	}
	log := r.log().With("source", r.Source, "group", group)
	if snap.Cycle == nil {
		if snap.Cycle, err = b.plan(ctx, snap, log); err != nil {
			return nil, err
		}
		if err := saveMembership(path, snap); err != nil {
			return nil, err
		}
	} else {
		log.Info("resuming membership cycle", "new", len(snap.Cycle.New), "mode", snap.Cycle.Mode, "backfill_done", snap.Cycle.BackfillDone)
	}
	cyc := snap.Cycle
	var bres *Result
	if cyc.Mode != backfillNone && !cyc.BackfillDone {
		bres, err = b.backfill(ctx, path, snap, log)
		if err != nil {
			return &Result{Source: r.Source, NewMembers: cyc.New, RemovedMembers: cyc.Removed, Backfill: bres}, err
		}
	}
	// The main run records the membership this cycle read: one read.
	r.known = cyc.Members
	res, err := r.Run(ctx)
	r.known = nil
	if res != nil {
		res.NewMembers, res.RemovedMembers, res.Backfill = cyc.New, cyc.Removed, bres
	}
	if err != nil {
		return res, err
	}
	snap.Group, snap.Members, snap.TakenAt, snap.Cycle = group, cyc.Members, cyc.TakenAt, nil
	if err := saveMembership(path, snap); err != nil {
		return res, fmt.Errorf("store the membership snapshot: %w", err)
	}
	log.Info("group membership", "run_id", res.RunID, "members", len(cyc.Members), "new", len(cyc.New),
		"removed", len(cyc.Removed), "backfill", cyc.Mode)
	return res, nil
}

// plan reads the members and decides how to fetch the newcomers' history.
func (b *Backfill) plan(ctx context.Context, snap *membership, log *slog.Logger) (*memberCycle, error) {
	r := b.Runner
	group := r.Request.GroupID
	taken := time.Now().UTC()
	cur, err := b.Members.GroupMembers(ctx, group)
	var ue *fetch.UnsupportedError
	if errors.As(err, &ue) {
		return nil, fmt.Errorf("read the members of Group/%s for export.backfill_new_members (turn it off for servers that cannot): %w", group, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read the members of Group/%s: %w", group, err)
	}
	cur = restrict(cur, r.Request.Patients)
	if cur == nil {
		cur = []string{} // an empty Group is a known snapshot, not a missing one
	}
	cyc := &memberCycle{Members: cur, TakenAt: taken}
	known := snap.Group == group && snap.Members != nil
	if known {
		cyc.New, cyc.Removed = diff(snap.Members, cur), diff(cur, snap.Members)
	}
	full, err := b.mainIsFull(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case full:
		// The main run exports everything from InitialSince into every
		// sink, newcomers included: nothing to back-fill.
	case !known:
		// The sinks hold data but nobody recorded who was in the Group:
		// members may have joined unseen since, so re-export it once.
		cyc.New, cyc.Mode = cur, backfillGroup
		log.Warn("no membership snapshot for this group source; re-exporting the whole Group once without _since",
			"members", len(cur))
	case len(cyc.New) > 0:
		cyc.Mode = backfillPatients
	}
	if len(cyc.Removed) > 0 {
		what := "their data is kept"
		if b.Runner.Purge {
			what = "their data is purged with the run (export.former_members: purge)"
		}
		log.Info("members left the Group; "+what, "removed", len(cyc.Removed))
	}
	return cyc, nil
}

// mainIsFull reports whether the main run is a full export into every
// sink: none holds a checkpoint of the source. When only some do, those
// may sit out a full export and catch up incrementally later, so the
// newcomers still need their back-fill.
func (b *Backfill) mainIsFull(ctx context.Context) (bool, error) {
	r := b.Runner
	for _, s := range r.Sinks {
		cp, ok, err := s.Checkpoint(ctx, r.Source)
		if err != nil {
			return false, fmt.Errorf("read checkpoint of sink %s: %w", s.Name(), err)
		}
		if ok && cp.TransactionTime != "" {
			return false, nil
		}
	}
	return true, nil
}

// backfill runs the back-fill export of the cycle, falling back to a full
// re-export of the Group when the server rejects the patient parameter.
func (b *Backfill) backfill(ctx context.Context, path string, snap *membership, log *slog.Logger) (*Result, error) {
	cyc := snap.Cycle
	log.Info("back-filling new group members", "new", len(cyc.New), "mode", cyc.Mode)
	res, err := b.backfillRunner(cyc).Run(ctx)
	if err != nil && cyc.Mode == backfillPatients && patientUnsupported(err) {
		log.Warn("the server rejected the patient parameter; re-exporting the whole Group once without _since instead",
			"new_members", len(cyc.New), "err", err)
		cyc.Mode = backfillGroup
		if err := saveMembership(path, snap); err != nil {
			return res, err
		}
		res, err = b.backfillRunner(cyc).Run(ctx)
	}
	if err != nil {
		return res, fmt.Errorf("back-fill of %d new member(s) of Group/%s: %w", len(cyc.New), b.Runner.Request.GroupID, err)
	}
	cyc.BackfillDone = true
	if err := saveMembership(path, snap); err != nil {
		return res, err
	}
	return res, nil
}

// backfillRunner is the source's runner, renamed and without _since.
func (b *Backfill) backfillRunner(cyc *memberCycle) *Runner {
	br := *b.Runner
	// The back-fill stores the same server's resources: same namespace.
	br.Namespace = b.Runner.namespace()
	br.Source, br.Full = BackfillSource(b.Runner.Source), true
	// The back-fill exports some members only: the main run records who
	// is in the Group.
	br.Members, br.known, br.Purge = nil, nil, false
	if cyc.Mode == backfillPatients {
		br.Request.Patients = cyc.New
		if strings.EqualFold(br.Request.Method, "get") {
			br.Request.Method = "auto" // patient needs POST; a 4xx falls back
		}
	}
	return &br
}

// patientUnsupported reports whether a back-fill failed because the server
// refused the kick-off (4xx other than auth and throttling).
func patientUnsupported(err error) bool {
	var he *fetch.HTTPError
	if !errors.As(err, &he) || he.Kind != "kickoff" {
		return false
	}
	switch he.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
		return false
	}
	return he.StatusCode >= 400 && he.StatusCode < 500
}

// diff returns the sorted elements of b missing from a.
func diff(a, b []string) []string {
	in := make(map[string]struct{}, len(a))
	for _, x := range a {
		in[x] = struct{}{}
	}
	var out []string
	for _, x := range b {
		if _, ok := in[x]; !ok {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

// restrict keeps the members in the configured patient list, if any.
func restrict(members, patients []string) []string {
	if len(patients) == 0 {
		return members
	}
	want := map[string]bool{}
	for _, p := range patients {
		if !strings.Contains(p, "/") {
			p = "Patient/" + p
		}
		want[p] = true
	}
	var out []string
	for _, m := range members {
		if want[m] {
			out = append(out, m)
		}
	}
	return out
}

func loadMembership(path string) (*membership, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &membership{}, nil
	}
	if err != nil {
		return nil, err
	}
	var m membership
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("membership snapshot %s is corrupt: %w", path, err)
	}
	return &m, nil
}

// saveMembership writes the snapshot durably (see writeFileAtomic).
func saveMembership(path string, m *membership) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}

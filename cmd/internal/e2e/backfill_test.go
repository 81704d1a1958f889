package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
	"github.com/fhirferry/fhirferry/transform"
)

// These tests run the Group membership pattern (C49) against the real
// bulktest server, whose Group `_since` exports do not back-fill the
// history of members who joined after `_since`.

var bfOpts = bulktest.Options{Patients: 16, Seed: 11, FileMaxResources: 200, PollsBeforeComplete: -1}

func bfBackfill(h *harness) *pipeline.Backfill {
	return &pipeline.Backfill{Runner: h.runner, Members: h.runner.Client.(*fetch.Client)}
}

func bfRun(t *testing.T, b *pipeline.Backfill) *pipeline.Result {
	t.Helper()
	res, err := b.Run(context.Background())
	require.NoError(t, err)
	return res
}

// bfSnapshot is the membership file as the tests read it.
type bfSnapshot struct {
	Group   string   `json:"group"`
	Members []string `json:"members"`
	Cycle   *struct {
		Members      []string `json:"members"`
		New          []string `json:"new"`
		Mode         string   `json:"mode"`
		BackfillDone bool     `json:"backfill_done"`
	} `json:"cycle"`
}

func bfReadSnapshot(t *testing.T, h *harness) bfSnapshot {
	t.Helper()
	data, err := os.ReadFile(pipeline.MembersPath(h.runner.DataDir, "src"))
	require.NoError(t, err)
	var s bfSnapshot
	require.NoError(t, json.Unmarshal(data, &s))
	return s
}

// bfKickOffs returns the kick-offs the server saw from request from on.
func bfKickOffs(h *harness, from int) []bulktest.RequestRecord {
	var out []bulktest.RequestRecord
	for _, r := range h.srv.Stats().Requests[from:] {
		if r.Kind == bulktest.KindKickOff {
			out = append(out, r)
		}
	}
	return out
}

// bfParams splits a kick-off's parameters into patient references and the rest.
func bfParams(r bulktest.RequestRecord) (patients, other []string) {
	for _, p := range r.Params {
		if ref, ok := strings.CutPrefix(p, "patient="); ok {
			patients = append(patients, ref)
		} else {
			other = append(other, p)
		}
	}
	slices.Sort(patients)
	return patients, other
}

func bfRefs(keys ...[]bulktest.Key) []string {
	var out []string
	for _, ks := range keys {
		for _, k := range ks {
			out = append(out, k.Type+"/"+k.ID)
		}
	}
	slices.Sort(out)
	return out
}

// bfMissing lists the truth's resources absent from the warehouse.
func bfMissing(t *testing.T, h *harness) map[string]bool {
	t.Helper()
	rows, err := h.sink.DB().Query(`SELECT resource_type || '/' || id FROM fhir_resources`)
	require.NoError(t, err)
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		have[k] = true
	}
	require.NoError(t, rows.Err())
	missing := map[string]bool{}
	for k := range h.srv.Truth(h.level, h.group, nil) {
		if !have[k.Type+"/"+k.ID] {
			missing[k.Type+"/"+k.ID] = true
		}
	}
	return missing
}

func (h *harness) backfillCheckpoint(t *testing.T) (sinks.Checkpoint, bool) {
	cp, ok, err := h.sink.Checkpoint(context.Background(), pipeline.BackfillSource("src"))
	require.NoError(t, err)
	return cp, ok
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Reset empties the buffer.
func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestGroupSinceLosesNewMembersUntilBackfill shows the loss the pattern
// exists for, then that turning it on for a source with history (no
// snapshot yet) repairs it with one full re-export of the Group.
func TestGroupSinceLosesNewMembersUntilBackfill(t *testing.T) {
	h := newHarness(t, bfOpts, "group", "cohort")
	res1 := h.run(t)
	h.assertTruth(t)
	mut := h.srv.Advance(24*time.Hour, bulktest.Mutation{AddGroupMembers: 2, UpdatedResources: 15})
	require.Len(t, mut.AddedToGroup, 2)
	h.run(t)
	missing := bfMissing(t, h)
	for _, ref := range bfRefs(mut.AddedToGroup) {
		require.True(t, missing[ref], "%s joined the Group with old history: a plain _since run must miss it", ref)
	}

	from := len(h.srv.Stats().Requests)
	res := bfRun(t, bfBackfill(h))
	h.assertTruth(t)
	require.NotNil(t, res.Backfill)
	require.Empty(t, res.Backfill.Since)
	require.NotEqual(t, res1.TransactionTime, res.Since, "the main run stays incremental")
	ks := bfKickOffs(h, from)
	require.Len(t, ks, 2)
	patients, other := bfParams(ks[0])
	require.Empty(t, patients, "without a snapshot the whole Group is re-exported")
	require.Empty(t, other, "no _since on the re-export")
	require.Contains(t, ks[1].Params, "_since="+res.Since)
	snap := bfReadSnapshot(t, h)
	require.Nil(t, snap.Cycle)
	require.Equal(t, "cohort", snap.Group)
	require.Contains(t, snap.Members, bfRefs(mut.AddedToGroup)[0])
}

func TestGroupBackfillNewMembers(t *testing.T) {
	h := newHarness(t, bfOpts, "group", "cohort")
	var logs syncBuffer
	h.runner.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	b := bfBackfill(h)

	// First run: a full export, no back-fill, members recorded.
	res1 := bfRun(t, b)
	require.Empty(t, res1.Since)
	require.Nil(t, res1.Backfill)
	require.Empty(t, res1.NewMembers)
	h.assertTruth(t)
	members, err := h.runner.Client.(*fetch.Client).GroupMembers(context.Background(), "cohort")
	require.NoError(t, err)
	require.Equal(t, members, bfReadSnapshot(t, h).Members)
	require.Len(t, bfKickOffs(h, 0), 1)

	// Members join (two with old history, one brand new) among other changes.
	from := len(h.srv.Stats().Requests)
	mut := h.srv.Advance(24*time.Hour, bulktest.Mutation{AddGroupMembers: 2, NewPatients: 1, UpdatedResources: 20, DeletedResources: 5})
	want := bfRefs(mut.AddedToGroup, mut.NewPatients)
	require.Len(t, want, 3)
	res2 := bfRun(t, b)
	h.assertTruth(t)
	require.Equal(t, want, res2.NewMembers)
	require.Empty(t, res2.RemovedMembers)
	require.Equal(t, res1.TransactionTime, res2.Since, "the main watermark is untouched by the back-fill")
	require.NotNil(t, res2.Backfill)
	require.Equal(t, pipeline.BackfillSource("src"), res2.Backfill.Source)
	require.Empty(t, res2.Backfill.Since)
	require.Positive(t, res2.Backfill.Stats.Resources)
	ks := bfKickOffs(h, from)
	require.Len(t, ks, 2)
	require.Equal(t, "POST", ks[0].Method)
	patients, other := bfParams(ks[0])
	require.Equal(t, want, patients, "one patient parameter per new member, nobody else")
	require.Empty(t, other, "no _since (nor anything else) on the back-fill")
	require.Equal(t, "GET", ks[1].Method)
	require.Equal(t, []string{"_since=" + res1.TransactionTime}, ks[1].Params)
	require.Equal(t, res2.TransactionTime, h.checkpoint(t).TransactionTime)
	bcp, ok := h.backfillCheckpoint(t)
	require.True(t, ok)
	require.Equal(t, res2.Backfill.TransactionTime, bcp.TransactionTime)
	require.Contains(t, logs.String(), `msg="group membership"`)
	require.Contains(t, logs.String(), "new=3")

	// No membership change: no back-fill.
	from = len(h.srv.Stats().Requests)
	h.srv.Advance(time.Hour, bulktest.Mutation{UpdatedResources: 10})
	res3 := bfRun(t, b)
	h.assertTruth(t)
	require.Nil(t, res3.Backfill)
	require.Empty(t, res3.NewMembers)
	ks = bfKickOffs(h, from)
	require.Len(t, ks, 1)
	require.Equal(t, []string{"_since=" + res2.TransactionTime}, ks[0].Params)
	require.Equal(t, res2.Backfill.TransactionTime, func() string { cp, _ := h.backfillCheckpoint(t); return cp.TransactionTime }())

	// A crash after both runs committed but before the snapshot moved,
	// and a member the Group no longer lists: the back-fill repeats
	// harmlessly and the departed member's data stays.
	path := pipeline.MembersPath(h.runner.DataDir, "src")
	h.srv.Advance(time.Hour, bulktest.Mutation{AddGroupMembers: 1})
	stale := bfReadSnapshot(t, h)
	ghost := "Patient/" + strings.Repeat("f", 8)
	stale.Members = append(stale.Members, ghost)
	data, err := json.Marshal(stale)
	require.NoError(t, err)
	res4 := bfRun(t, b)
	require.Len(t, res4.NewMembers, 1)
	h.assertTruth(t)
	require.NoError(t, os.WriteFile(path, data, 0o600))
	from = len(h.srv.Stats().Requests)
	res5 := bfRun(t, b)
	h.assertTruth(t)
	require.Equal(t, res4.NewMembers, res5.NewMembers, "the same member is back-filled again")
	require.Equal(t, []string{ghost}, res5.RemovedMembers)
	ks = bfKickOffs(h, from)
	require.Len(t, ks, 2)
	patients, _ = bfParams(ks[0])
	require.Equal(t, res4.NewMembers, patients)
	require.NotContains(t, bfReadSnapshot(t, h).Members, ghost)
	require.Contains(t, logs.String(), "removed=1")
}

func TestGroupBackfillFallsBackWhenPatientIsRejected(t *testing.T) {
	opts := bfOpts
	opts.Faults = bulktest.Faults{RejectPatientParam: true}
	h := newHarness(t, opts, "group", "cohort")
	var logs syncBuffer
	h.runner.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	b := bfBackfill(h)
	res1 := bfRun(t, b)

	from := len(h.srv.Stats().Requests)
	mut := h.srv.Advance(24*time.Hour, bulktest.Mutation{AddGroupMembers: 2, UpdatedResources: 10})
	res2 := bfRun(t, b)
	h.assertTruth(t)
	require.Equal(t, bfRefs(mut.AddedToGroup), res2.NewMembers)
	ks := bfKickOffs(h, from)
	require.Len(t, ks, 3)
	require.Equal(t, "RejectPatientParam", ks[0].Fault)
	require.Equal(t, 400, ks[0].Status)
	patients, other := bfParams(ks[1])
	require.Empty(t, patients, "the fallback re-exports the whole Group")
	require.Empty(t, other, "without _since")
	require.Equal(t, 202, ks[1].Status)
	require.Equal(t, []string{"_since=" + res1.TransactionTime}, ks[2].Params)
	require.Empty(t, res2.Backfill.Since)
	l := logs.String()
	require.Contains(t, l, "rejected the patient parameter")
	require.Contains(t, l, "source=src")
	require.Contains(t, l, "new_members=2")
	require.Contains(t, l, "backfill=group")
}

// bfHooks cancels a run at a chosen point.
type bfHooks struct {
	mu       sync.Mutex
	cancel   context.CancelFunc
	onFile   string // cancel when a file of this source is loaded
	onCommit string // cancel when this source commits
}

func (k *bfHooks) Phase(string, string, time.Duration)                       {}
func (k *bfHooks) Manifest(string, *fetch.Manifest)                          {}
func (k *bfHooks) FileDone(s string, _ fetch.Spooled, _ transform.FileStats) { k.fire(s, k.onFile) }
func (k *bfHooks) Committed(s, _ string, _ time.Duration)                    { k.fire(s, k.onCommit) }
func (k *bfHooks) Recorded(string, string, sinks.RunSummary)                 {}

func (k *bfHooks) fire(source, want string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if source == want && k.cancel != nil {
		k.cancel()
	}
}

func TestGroupBackfillSurvivesCrashes(t *testing.T) {
	h := newHarness(t, bfOpts, "group", "cohort")
	b := bfBackfill(h)
	res1 := bfRun(t, b)
	before := bfReadSnapshot(t, h).Members

	crash := func(hooks *bfHooks) error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		hooks.cancel = cancel
		h.runner.Hooks = hooks
		defer func() { h.runner.Hooks = nil }()
		_, err := b.Run(ctx)
		return err
	}

	// Crash while the back-fill loads: nothing moves; the rerun resumes
	// the same back-fill export rather than kicking off another.
	from := len(h.srv.Stats().Requests)
	mut := h.srv.Advance(24*time.Hour, bulktest.Mutation{AddGroupMembers: 2, UpdatedResources: 10})
	require.ErrorIs(t, crash(&bfHooks{onFile: pipeline.BackfillSource("src")}), context.Canceled)
	snap := bfReadSnapshot(t, h)
	require.Equal(t, before, snap.Members, "the snapshot moves only after success")
	require.NotNil(t, snap.Cycle)
	require.Equal(t, bfRefs(mut.AddedToGroup), snap.Cycle.New)
	require.False(t, snap.Cycle.BackfillDone)
	require.Equal(t, res1.TransactionTime, h.checkpoint(t).TransactionTime)
	_, ok := h.backfillCheckpoint(t)
	require.False(t, ok)
	res2 := bfRun(t, b)
	h.assertTruth(t)
	require.Equal(t, bfRefs(mut.AddedToGroup), res2.NewMembers)
	require.True(t, res2.Backfill.Resumed)
	ks := bfKickOffs(h, from)
	require.Len(t, ks, 2, "one back-fill kick-off (resumed after the crash) and one main")
	patients, _ := bfParams(ks[0])
	require.Equal(t, bfRefs(mut.AddedToGroup), patients)

	// Crash after the back-fill committed, before the main run: the rerun
	// does only the main run, and the new members are not lost.
	from = len(h.srv.Stats().Requests)
	mut = h.srv.Advance(24*time.Hour, bulktest.Mutation{AddGroupMembers: 1, UpdatedResources: 10})
	require.Error(t, crash(&bfHooks{onCommit: pipeline.BackfillSource("src")}))
	snap = bfReadSnapshot(t, h)
	require.NotNil(t, snap.Cycle)
	require.True(t, snap.Cycle.BackfillDone)
	require.NotContains(t, snap.Members, bfRefs(mut.AddedToGroup)[0])
	require.Equal(t, res2.TransactionTime, h.checkpoint(t).TransactionTime, "the main watermark did not move")
	res3 := bfRun(t, b)
	h.assertTruth(t)
	require.Equal(t, bfRefs(mut.AddedToGroup), res3.NewMembers)
	require.Nil(t, res3.Backfill, "the back-fill is not repeated")
	ks = bfKickOffs(h, from)
	require.Len(t, ks, 2)
	require.Equal(t, "POST", ks[0].Method)
	require.Equal(t, []string{"_since=" + res2.TransactionTime}, ks[1].Params)
	require.Contains(t, bfReadSnapshot(t, h).Members, bfRefs(mut.AddedToGroup)[0])
}

func TestBackfillNeedsAGroupSource(t *testing.T) {
	h := newHarness(t, bfOpts, "system", "")
	_, err := bfBackfill(h).Run(context.Background())
	require.ErrorContains(t, err, "needs a group-level source")
}

// TestGroupBackfillWhenASinkIsAdded: a sink added to a source with history
// makes the main run a full export, but the sinks that hold a checkpoint
// may sit it out and catch up incrementally, so the newcomers are still
// back-filled into every sink.
func TestGroupBackfillWhenASinkIsAdded(t *testing.T) {
	h := newHarness(t, bfOpts, "group", "cohort")
	b := bfBackfill(h)
	bfRun(t, b)
	mut := h.srv.Advance(24*time.Hour, bulktest.Mutation{AddGroupMembers: 2, UpdatedResources: 10})

	added, err := duckdb.New(configs.DuckDBSink{Path: filepath.Join(t.TempDir(), "added.duckdb")}, sinks.Env{Name: "added"})
	require.NoError(t, err)
	t.Cleanup(func() { added.Close() })
	require.NoError(t, added.Prepare(context.Background(), h.runner.Engine.Tables()))
	h.runner.Sinks = append(h.runner.Sinks, added)

	res := bfRun(t, b)
	require.Empty(t, res.Since, "the new sink needs a full export")
	require.Equal(t, bfRefs(mut.AddedToGroup), res.NewMembers)
	require.NotNil(t, res.Backfill, "the old sink may not take the full export: back-fill anyway")
	h.srv.Advance(time.Hour, bulktest.Mutation{UpdatedResources: 5})
	bfRun(t, b)
	h.assertTruth(t)
	(&harness{srv: h.srv, sink: added, views: h.views, level: h.level, group: h.group}).assertTruth(t)
}

type bfListerFunc func(ctx context.Context, group string) ([]string, error)

func (f bfListerFunc) GroupMembers(ctx context.Context, group string) ([]string, error) {
	return f(ctx, group)
}

func TestGroupBackfillStopsWhenMembersCannotBeRead(t *testing.T) {
	h := newHarness(t, bfOpts, "group", "cohort")
	b := &pipeline.Backfill{Runner: h.runner, Members: bfListerFunc(func(context.Context, string) ([]string, error) {
		return nil, &fetch.UnsupportedError{Feature: "group read", HTTPError: fetch.HTTPError{Kind: "group", StatusCode: 405}}
	})}
	_, err := b.Run(context.Background())
	require.ErrorContains(t, err, "turn it off")
	var ue *fetch.UnsupportedError
	require.ErrorAs(t, err, &ue)
	require.Empty(t, bfKickOffs(h, 0), "nothing is exported with an unknown membership")
	_, err = os.Stat(pipeline.MembersPath(h.runner.DataDir, "src"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

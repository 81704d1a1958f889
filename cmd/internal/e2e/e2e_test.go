package e2e_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
	"github.com/fhirferry/fhirferry/transform"
)

// harness wires the real pieces: the bulktest server over HTTP, the fetch
// client, the transform engine and a DuckDB file.
type harness struct {
	srv    *bulktest.Server
	sink   *duckdb.Sink
	views  []transform.View
	runner *pipeline.Runner
	level  string
	group  string
}

func newHarness(t *testing.T, opts bulktest.Options, level, group string) *harness {
	t.Helper()
	ctx := context.Background()
	srv, err := bulktest.NewServer(opts)
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	sink, err := duckdb.New(configs.DuckDBSink{Path: filepath.Join(dir, "warehouse.duckdb")}, sinks.Env{Name: "duck"})
	require.NoError(t, err)
	t.Cleanup(func() { sink.Close() })
	views := testViews(t)
	eng, err := transform.New(transform.Options{Views: views, BatchRows: 500})
	require.NoError(t, err)
	require.NoError(t, sink.Prepare(ctx, eng.Tables()))
	c, err := fetch.New(fetch.Options{BaseURL: srv.BaseURL(), MinWait: 5 * time.Millisecond, MaxWait: 100 * time.Millisecond, Parallel: 3})
	require.NoError(t, err)
	r := &pipeline.Runner{
		Source: "src", Request: fetch.Request{Level: level, GroupID: group},
		Client: c, Engine: eng, Sinks: []sinks.Sink{sink}, DataDir: dir,
		Workers: 2, QueueDepth: 2, DeleteAfter: true, FailOnErrorOutcomes: true,
	}
	return &harness{srv: srv, sink: sink, views: views, runner: r, level: level, group: group}
}

func (h *harness) run(t *testing.T) *pipeline.Result {
	t.Helper()
	res, err := h.runner.Run(context.Background())
	require.NoError(t, err)
	return res
}

// assertTruth compares the raw landing and every view table with the
// server's ground truth.
func (h *harness) assertTruth(t *testing.T) {
	t.Helper()
	e2e.RequireMatchesTruth(t, h.sink.DB(), h.views, h.srv.Truth(h.level, h.group, nil))
}

func (h *harness) checkpoint(t *testing.T) sinks.Checkpoint {
	cp, ok, err := h.sink.Checkpoint(context.Background(), "src")
	require.NoError(t, err)
	require.True(t, ok)
	return cp
}

func TestIncrementalRunsMatchGroundTruth(t *testing.T) {
	for _, tc := range []struct{ level, group string }{{"system", ""}, {"group", "cohort"}} {
		t.Run(tc.level, func(t *testing.T) {
			h := newHarness(t, bulktest.Options{
				Patients: 12, Seed: 3, FileMaxResources: 150, PollsBeforeComplete: 2,
				TransactionTimeOffset: time.FixedZone("", -5*3600),
			}, tc.level, tc.group)

			res1 := h.run(t)
			require.Empty(t, res1.Since, "first run is a full export")
			require.Regexp(t, `-05:00$`, res1.TransactionTime)
			require.Equal(t, res1.TransactionTime, h.checkpoint(t).TransactionTime, "checkpoint is the manifest's transactionTime, verbatim")
			require.Positive(t, res1.Stats.Resources)
			require.Zero(t, res1.Stats.Rejects)
			h.assertTruth(t)
			assertViewsFollowRaw(t, h.sink, h.runner.Engine.Tables())

			mut := h.srv.Advance(24*time.Hour, bulktest.Mutation{NewPatients: 2, UpdatedResources: 25, DeletedResources: 9, RecreatedResources: 0})
			require.NotEmpty(t, mut.Updated)
			require.NotEmpty(t, mut.Deleted)
			res2 := h.run(t)
			require.Equal(t, res1.TransactionTime, res2.Since, "_since is the previous transactionTime exactly")
			require.NotEqual(t, res1.TransactionTime, res2.TransactionTime)
			require.Equal(t, res2.TransactionTime, h.checkpoint(t).TransactionTime)
			require.Positive(t, res2.Stats.Deleted)
			require.Less(t, res2.Stats.Resources, res1.Stats.Resources, "an incremental export carries only changes")
			h.assertTruth(t)
			assertViewsFollowRaw(t, h.sink, h.runner.Engine.Tables())

			// Delete-then-recreate across runs.
			h.srv.Advance(time.Hour, bulktest.Mutation{RecreatedResources: 3, DeletedResources: 2})
			h.run(t)
			h.assertTruth(t)

			// No changes: the run still commits and moves the checkpoint.
			h.srv.Advance(time.Hour, bulktest.Mutation{})
			res4 := h.run(t)
			require.Zero(t, res4.Stats.Deleted)
			require.Equal(t, res4.TransactionTime, h.checkpoint(t).TransactionTime)
			h.assertTruth(t)
			st := h.srv.Stats()
			require.Equal(t, 4, st.KickOffs)
			require.Equal(t, 4, st.Deletes, "every export is released once loaded")
		})
	}
}

type runRow struct{ id, outcome string }

func (h *harness) runRows(t *testing.T) []runRow {
	t.Helper()
	rows, err := h.sink.DB().Query(`SELECT run_id, outcome FROM runs ORDER BY finished_at`)
	require.NoError(t, err)
	defer rows.Close()
	var out []runRow
	for rows.Next() {
		var r runRow
		require.NoError(t, rows.Scan(&r.id, &r.outcome))
		out = append(out, r)
	}
	require.NoError(t, rows.Err())
	return out
}

// TestFailedRunsAreRecorded: a run that fails is in the runs table with
// its outcome; a resumed run that then succeeds replaces its failure row.
func TestFailedRunsAreRecorded(t *testing.T) {
	h := newHarness(t, bulktest.Options{Patients: 3, Seed: 9, PollsBeforeComplete: -1}, "system", "")
	h.srv.SetFaults(bulktest.Faults{FailJob: true})
	_, err := h.runner.Run(context.Background())
	require.Error(t, err)
	rows := h.runRows(t)
	require.Len(t, rows, 1)
	require.Equal(t, "failed", rows[0].outcome)

	// A cancelled load keeps its state; the resumed run succeeds under the
	// same run id and its row replaces the failure row.
	h.srv.SetFaults(bulktest.Faults{SlowFirstByte: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	_, err = h.runner.Run(ctx)
	cancel()
	require.Error(t, err)
	rows = h.runRows(t)
	require.Len(t, rows, 2)
	require.Equal(t, "cancelled", rows[1].outcome)
	require.NotEqual(t, rows[0].id, rows[1].id, "a failed job is abandoned: the next run kicks off a new export")
	require.Equal(t, 2, h.srv.Stats().KickOffs)
	h.srv.SetFaults(bulktest.Faults{})
	res := h.run(t)
	require.True(t, res.Resumed)
	require.Equal(t, rows[1].id, res.RunID)
	rows = h.runRows(t)
	require.Equal(t, []runRow{{rows[0].id, "failed"}, {res.RunID, "success"}}, rows)
	h.assertTruth(t)
}

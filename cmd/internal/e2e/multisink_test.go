package e2e_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks"
)

// errInjectedCommit is the failure failingSink injects.
var errInjectedCommit = errors.New("injected commit failure")

// failingSink is a real sink whose next sinks.Txn.Commit fails (before the real
// commit, which is then rolled back by the runner) while armed is set.
type failingSink struct {
	sinks.Sink
	armed atomic.Bool
	fired atomic.Int32
}

func (s *failingSink) Begin(ctx context.Context, run sinks.RunInfo) (sinks.Txn, error) {
	txn, err := s.Sink.Begin(ctx, run)
	if err != nil {
		return nil, err
	}
	return &failingTxn{Txn: txn, s: s}, nil
}

type failingTxn struct {
	sinks.Txn
	s *failingSink
}

func (t *failingTxn) Commit(ctx context.Context, sum sinks.RunSummary) error {
	if t.s.armed.CompareAndSwap(true, false) {
		t.s.fired.Add(1)
		return errInjectedCommit
	}
	return t.Txn.Commit(ctx, sum)
}

// sinkPairs put a sink that commits first and one that fails to commit
// second, so the run fails after the first one committed.
var sinkPairs = []struct {
	name          string
	first, second func(t *testing.T, name string) e2eSink
}{
	{"duckdb+parquet", openDuckSink, openLakeSink},
	{"postgres+duckdb", openPGSink, openDuckSink},
}

func newMultiServer(t *testing.T) *bulktest.Server {
	t.Helper()
	srv, err := bulktest.NewServer(bulktest.Options{Patients: 8, Seed: 21, FileMaxResources: 200, PollsBeforeComplete: -1})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	return srv
}

// requireEachFileOnce checks no export file was downloaded twice: a
// resumed run reuses its spool.
func requireEachFileOnce(t *testing.T, srv *bulktest.Server) {
	t.Helper()
	for path, n := range srv.Stats().Downloads {
		require.Equal(t, 1, n, "file %s downloaded %d times", path, n)
	}
}

// TestMultiSinkCommitFailure: with two sinks on one source, the second
// fails its commit after the first committed. The failed sink keeps its
// previous state whole; the rerun resumes the same export, skips the sink
// that holds it and commits the other; both then equal the server's truth.
// When the run state is lost instead, the next export starts at the older
// checkpoint and re-applying changes the first sink already holds is a
// no-op.
func TestMultiSinkCommitFailure(t *testing.T) {
	views := defaultViews(t)
	for _, p := range sinkPairs {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			srv := newMultiServer(t)
			a := p.first(t, "a")
			bReal := p.second(t, "b")
			b := &failingSink{Sink: bReal.sink}
			dataDir := t.TempDir()
			r := e2eRunner(t, srv, views, dataDir, "system", "", a.sink, b)
			statePath := filepath.Join(dataDir, "state", "src.json")

			res1, err := r.Run(ctx)
			require.NoError(t, err)
			require.Equal(t, []string{"a", "b"}, res1.Committed)
			truth1 := srv.Truth("system", "", nil)

			// Run 2: b fails at commit after a committed.
			srv.Advance(24*time.Hour, bulktest.Mutation{NewPatients: 1, UpdatedResources: 20, DeletedResources: 6})
			b.armed.Store(true)
			res2, err := r.Run(ctx)
			require.ErrorIs(t, err, errInjectedCommit)
			require.EqualValues(t, 1, b.fired.Load())
			require.Equal(t, []string{"a"}, res2.Committed)
			require.Equal(t, res2.TransactionTime, sinkCheckpoint(t, a.sink).TransactionTime)
			require.Equal(t, res1.TransactionTime, sinkCheckpoint(t, b).TransactionTime, "a failed commit leaves the checkpoint")
			truth2 := srv.Truth("system", "", nil)
			requireSinkMatches(t, a, views, truth2)
			requireSinkMatches(t, bReal, views, truth1) // the failed run is invisible in b
			_, err = os.Stat(statePath)
			require.NoError(t, err, "the failed run's state is kept for the rerun")

			// Rerun: same export resumed, a skipped, b committed.
			kick := srv.Stats().KickOffs
			res3, err := r.Run(ctx)
			require.NoError(t, err)
			require.True(t, res3.Resumed)
			require.Equal(t, res2.RunID, res3.RunID)
			require.Equal(t, res2.ExportID, res3.ExportID)
			require.Equal(t, []string{"a"}, res3.Skipped)
			require.Equal(t, []string{"b"}, res3.Committed)
			require.Equal(t, res1.TransactionTime, res3.Since, "the resumed export is the one started from the older checkpoint")
			require.Equal(t, kick, srv.Stats().KickOffs, "a resumed run kicks off nothing")
			require.Equal(t, res2.TransactionTime, sinkCheckpoint(t, b).TransactionTime)
			requireSinkMatches(t, a, views, truth2)
			requireSinkMatches(t, bReal, views, truth2)
			requireEachFileOnce(t, srv)
			_, err = os.Stat(statePath)
			require.ErrorIs(t, err, os.ErrNotExist)

			// Run 4 fails the same way; then the state and spool are lost
			// (a wiped data_dir): the next export starts at b's older
			// checkpoint and a takes changes it already holds again.
			srv.Advance(time.Hour, bulktest.Mutation{UpdatedResources: 10, DeletedResources: 3, RecreatedResources: 2})
			b.armed.Store(true)
			res4, err := r.Run(ctx)
			require.ErrorIs(t, err, errInjectedCommit)
			require.Equal(t, res4.TransactionTime, sinkCheckpoint(t, a.sink).TransactionTime)
			require.NoError(t, os.RemoveAll(filepath.Join(dataDir, "state")))
			require.NoError(t, os.RemoveAll(filepath.Join(dataDir, "spool")))
			srv.Advance(time.Hour, bulktest.Mutation{UpdatedResources: 5, DeletedResources: 2})
			res5, err := r.Run(ctx)
			require.NoError(t, err)
			require.False(t, res5.Resumed)
			require.Equal(t, res3.TransactionTime, res5.Since, "_since is the oldest checkpoint over the sinks")
			require.Empty(t, res5.Skipped, "a holds an older export, not this one")
			require.Equal(t, []string{"a", "b"}, res5.Committed)
			truth5 := srv.Truth("system", "", nil)
			requireSinkMatches(t, a, views, truth5)
			requireSinkMatches(t, bReal, views, truth5)
			require.Equal(t, res5.TransactionTime, sinkCheckpoint(t, a.sink).TransactionTime)
			require.Equal(t, res5.TransactionTime, sinkCheckpoint(t, b).TransactionTime)
		})
	}
}

// TestMultiSinkAddedLater: a sink added to a source that already has runs
// makes the next export a full one; a sink left behind (it was not part of
// some runs) makes the next export start at its checkpoint. Both converge
// on the server's truth.
func TestMultiSinkAddedLater(t *testing.T) {
	views := defaultViews(t)
	ctx := context.Background()
	srv := newMultiServer(t)
	a := openDuckSink(t, "a")
	b := openLakeSink(t, "b")
	dataDir := t.TempDir()
	onlyA := e2eRunner(t, srv, views, dataDir, "system", "", a.sink)
	both := e2eRunner(t, srv, views, dataDir, "system", "", a.sink, b.sink)
	run := func(r *pipeline.Runner) *pipeline.Result {
		t.Helper()
		res, err := r.Run(ctx)
		require.NoError(t, err)
		return res
	}

	run(onlyA)
	srv.Advance(24*time.Hour, bulktest.Mutation{NewPatients: 1, UpdatedResources: 15, DeletedResources: 5})
	resA2 := run(onlyA)
	require.NotEmpty(t, resA2.Since)

	// b joins: it holds nothing, so the export is a full one. A full
	// export has no deleted entries, so a (which holds an older state)
	// waits: applied to a, it would keep what was deleted since resA2.
	truthA2 := srv.Truth("system", "", nil)
	srv.Advance(time.Hour, bulktest.Mutation{UpdatedResources: 5, DeletedResources: 2})
	res3 := run(both)
	require.Empty(t, res3.Since, "a sink without a checkpoint needs a full export")
	require.Equal(t, []string{"b"}, res3.Committed)
	require.Equal(t, []string{"a"}, res3.Deferred)
	require.Equal(t, resA2.TransactionTime, sinkCheckpoint(t, a.sink).TransactionTime)
	truth := srv.Truth("system", "", nil)
	requireSinkMatches(t, a, views, truthA2)
	requireSinkMatches(t, b, views, truth)

	// The next run starts at a's older checkpoint; both converge.
	res3b := run(both)
	require.Equal(t, resA2.TransactionTime, res3b.Since)
	require.Equal(t, []string{"a", "b"}, res3b.Committed)
	requireSinkMatches(t, a, views, truth)
	requireSinkMatches(t, b, views, truth)
	res3 = res3b

	// a runs alone once more; b falls behind.
	srv.Advance(time.Hour, bulktest.Mutation{UpdatedResources: 8, DeletedResources: 3, RecreatedResources: 2})
	resA4 := run(onlyA)
	require.Equal(t, res3.TransactionTime, resA4.Since)
	require.Equal(t, res3.TransactionTime, sinkCheckpoint(t, b.sink).TransactionTime)

	srv.Advance(time.Hour, bulktest.Mutation{NewPatients: 1, UpdatedResources: 6, DeletedResources: 2})
	res5 := run(both)
	require.Equal(t, res3.TransactionTime, res5.Since, "_since is b's older checkpoint, not a's")
	require.Equal(t, []string{"a", "b"}, res5.Committed)
	truth = srv.Truth("system", "", nil)
	requireSinkMatches(t, a, views, truth)
	requireSinkMatches(t, b, views, truth)
	for _, s := range []sinks.Sink{a.sink, b.sink} {
		require.Equal(t, res5.TransactionTime, sinkCheckpoint(t, s).TransactionTime, s.Name())
	}
	requireEachFileOnce(t, srv)
}

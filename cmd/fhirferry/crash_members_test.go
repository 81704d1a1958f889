package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

// crashMembers kills a Group source's run at a failpoint, in a first run
// and in one whose membership changes (two members leave, a newcomer
// joins), and checks group_member moves with the checkpoint: after the
// kill it holds the stays of the runs the checkpoint says committed, no
// more and no less, and after the restart those of the resumed run too,
// stamped with its manifest's transactionTime. Every current member's
// Patient is in the warehouse whenever its stay is, and the source purges
// former members: a leaver's Patient goes exactly when its stay closes.
func crashMembers(t *testing.T, bin, dir string, wh crashWarehouse, seed int64, spec, phase string) {
	srv, err := bulktest.NewServer(bulktest.Options{
		Patients: 8, Seed: seed, FileMaxResources: 40, PollsBeforeComplete: 2, RetryAfter: "1",
	})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	e := &crashEnv{t: t, bin: bin, dataDir: filepath.Join(dir, "data"), wh: wh, cfg: filepath.Join(dir, "config.yaml")}
	require.NoError(t, os.WriteFile(e.cfg, []byte(fmt.Sprintf(`data_dir: %s
transform:
  batch_rows: 100
  workers: 2
  queue_depth: 2
sources:
  - name: cohort
    base_url: %s
    level: group
    group_id: cohort
    export:
      former_members: purge
    http:
      parallel: 2
      min_wait: 50ms
      max_wait: 2s
sinks:
  - name: warehouse
%s`, e.dataDir, srv.BaseURL(), wh.yaml)), 0o600))

	var before, after e2e.MemberHistory
	round := func(t *testing.T) {
		since := wh.checkpoint(t, "cohort")
		members := srv.Members("cohort")
		_, stderr, err := e.run(t, "FHIRFERRY_FAILPOINT="+spec)
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "the child was not killed at %s; stderr:\n%s", spec, stderr)
		ws, ok := ee.Sys().(syscall.WaitStatus)
		require.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, "child ended with %v; stderr:\n%s", ee, stderr)
		st := e.state(t, "cohort")
		require.NotNil(t, st)
		require.Equal(t, phase, st.Phase)

		after = before.Clone()
		after.Observe(members, srv.Now())
		check := func(t *testing.T, want *e2e.MemberHistory) {
			db := wh.open(t)
			if db == nil {
				require.Empty(t, want.Rows())
				return
			}
			defer db.Close()
			e2e.RequireMembers(t, db, "cohort", "cohort", want)
			patients := func(p string) int {
				var n int
				require.NoError(t, db.QueryRow(`SELECT count(*) FROM fhir_resources WHERE resource_type = 'Patient' AND id = $1`, p).Scan(&n))
				return n
			}
			for _, p := range want.Current() {
				require.Equal(t, 1, patients(p), "current member %s has no Patient row", p)
			}
			for _, p := range want.Former() {
				require.Zero(t, patients(p), "former member %s was not purged with the run that saw it leave", p)
			}
		}
		if cp := wh.checkpoint(t, "cohort"); cp != since {
			tt, err := time.Parse(time.RFC3339Nano, cp)
			require.NoError(t, err)
			require.True(t, tt.Equal(srv.Now()), "the kill committed a run the server did not make")
			check(t, &after)
		} else {
			check(t, &before)
		}

		_, stderr, err = e.run(t)
		require.NoError(t, err, "restart failed; stderr:\n%s", stderr)
		require.Regexp(t, `resuming run.*`+st.RunID, stderr)
		require.Nil(t, e.state(t, "cohort"))
		check(t, &after)
		before = after
	}
	t.Run("initial", round)
	m := srv.Advance(24*time.Hour, bulktest.Mutation{RemoveGroupMembers: 2, NewPatients: 1, UpdatedResources: 5})
	require.Len(t, m.RemovedFromGroup, 2)
	t.Run("leaves and joins", round)
}

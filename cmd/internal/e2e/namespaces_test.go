package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
)

// TestSourcesShareOneWarehouse: two servers started with the same seed
// number their resources identically, as two EHRs that both count from 1
// do; a third source is a Group of the first server. On every sink, after
// runs with updates and deletes on each server, each namespace holds
// exactly its server's current state (what a load of that server alone
// gives), the Group source shares its server's rows instead of copying
// them, and a delete on one server removes nothing of the other.
func TestSourcesShareOneWarehouse(t *testing.T) {
	views := defaultViews(t)
	for _, k := range sinkKinds {
		t.Run(k.kind, func(t *testing.T) {
			t.Parallel()
			newServer := func() *bulktest.Server {
				srv, err := bulktest.NewServer(bulktest.Options{Patients: 8, Seed: 7, FileMaxResources: 200, PollsBeforeComplete: -1})
				require.NoError(t, err)
				t.Cleanup(srv.Close)
				return srv
			}
			srvA, srvB := newServer(), newServer()
			nsA, nsB := configs.NormalizeBaseURL(srvA.BaseURL()), configs.NormalizeBaseURL(srvB.BaseURL())
			require.NotEqual(t, nsA, nsB)
			s := k.open(t, "wh")
			dataDir := t.TempDir()
			ehrA := e2eRunner(t, srvA, views, dataDir, "system", "", s.sink)
			ehrA.Source, ehrA.Namespace = "ehr_a", nsA
			ehrB := e2eRunner(t, srvB, views, dataDir, "system", "", s.sink)
			ehrB.Source, ehrB.Namespace = "ehr_b", nsB
			cohort := e2eRunner(t, srvA, views, dataDir, "group", "cohort", s.sink)
			cohort.Source, cohort.Namespace = "ehr_a_cohort", nsA
			check := func(step string) {
				t.Helper()
				db, done := s.read(t)
				defer done()
				truthA, truthB := srvA.Truth("system", "", nil), srvB.Truth("system", "", nil)
				e2e.RequireNamespaceMatchesTruth(t, db, nsA, views, truthA)
				e2e.RequireNamespaceMatchesTruth(t, db, nsB, views, truthB)
				var total int
				require.NoError(t, db.QueryRowContext(context.Background(), `SELECT count(*) FROM fhir_resources`).Scan(&total))
				require.Equal(t, len(truthA)+len(truthB), total, "%s: every resource of each server once, nothing else", step)
			}
			runAll := func() {
				t.Helper()
				for _, r := range []*pipeline.Runner{ehrA, ehrB, cohort} {
					_, err := r.Run(context.Background())
					require.NoError(t, err, r.Source)
				}
			}
			runAll()
			check("first runs")
			first := srvA.Truth("group", "cohort", nil)
			require.NotEmpty(t, first)
			for k := range first {
				require.Contains(t, srvB.Truth("system", "", nil), k, "the two servers use the same ids")
				break
			}

			srvA.Advance(24*time.Hour, bulktest.Mutation{NewPatients: 1, UpdatedResources: 20, DeletedResources: 8})
			srvB.Advance(24*time.Hour, bulktest.Mutation{UpdatedResources: 5, DeletedResources: 3})
			runAll()
			check("after updates and deletes on both servers")

			// Deletes on A only: B keeps every one of those ids.
			mut := srvA.Advance(time.Hour, bulktest.Mutation{DeletedResources: 10})
			require.NotEmpty(t, mut.Deleted)
			runAll()
			check("after deletes on A")
			truthB := srvB.Truth("system", "", nil)
			kept := 0
			for _, k := range mut.Deleted {
				if _, ok := truthB[k]; ok {
					kept++
				}
			}
			require.Positive(t, kept, "B still has resources with the ids A deleted")
		})
	}
}

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
)

// TestRunSourceBackfillsNewGroupMembers checks RunSource (used by run,
// daemon and demo) applies the membership pattern when the config asks.
func TestRunSourceBackfillsNewGroupMembers(t *testing.T) {
	srv, err := bulktest.NewServer(bulktest.Options{Patients: 12, Seed: 21, PollsBeforeComplete: -1})
	require.NoError(t, err)
	defer srv.Close()
	dir := t.TempDir()
	duckPath := filepath.Join(dir, "warehouse.duckdb")
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`data_dir: %s
sources:
  - name: ehr
    base_url: %s
    level: group
    group_id: cohort
    export:
      backfill_new_members: true
    http:
      min_wait: 10ms
      max_wait: 100ms
sinks:
  - name: warehouse
    type: duckdb
    duckdb:
      path: %s
`, filepath.Join(dir, "data"), srv.BaseURL(), duckPath)), 0o600))
	ctx := context.Background()
	a, err := testApp(ctx, cfgPath)
	require.NoError(t, err)
	closed := false
	defer func() {
		if !closed {
			a.Close()
		}
	}()

	res1, err := a.RunSource(ctx, "ehr")
	require.NoError(t, err)
	require.Nil(t, res1.Backfill)
	_, err = os.Stat(pipeline.MembersPath(filepath.Join(dir, "data"), "ehr"))
	require.NoError(t, err, "the membership snapshot is stored")

	mut := srv.Advance(24*time.Hour, bulktest.Mutation{AddGroupMembers: 2, UpdatedResources: 8})
	res2, err := a.RunSource(ctx, "ehr")
	require.NoError(t, err)
	require.Len(t, res2.NewMembers, len(mut.AddedToGroup))
	require.NotNil(t, res2.Backfill)
	require.Equal(t, "ehr.backfill", res2.Backfill.Source)
	a.Close()
	closed = true
	assertWarehouseMatches(t, duckPath, srv.Truth("group", "cohort", nil))
}

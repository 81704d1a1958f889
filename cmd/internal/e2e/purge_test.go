package e2e_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
)

// count runs a count query on the harness's warehouse.
func (h *harness) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, h.sink.DB().QueryRow(q, args...).Scan(&n))
	return n
}

// patientData counts the resources of a patient's compartment that the
// warehouse holds, its Patient included.
func (h *harness) patientData(t *testing.T, id string) int {
	return h.count(t, `SELECT count(*) FROM fhir_resources WHERE (resource_type = 'Patient' AND id = ?)
		OR json_extract_string(resource, '$.subject.reference') = ? OR json_extract_string(resource, '$.patient.reference') = ?
		OR json_extract_string(resource, '$.beneficiary.reference') = ?`, id, "Patient/"+id, "Patient/"+id, "Patient/"+id)
}

// TestPurgeFormerMembers: with export.former_members: purge, the run in
// which patients leave the Group removes their Patient and compartment
// (Observations, Conditions, Encounters, claims, ...) in its own
// transaction, so the warehouse equals the Group's current export; the
// shared Practitioners, Organizations and Locations stay, the runs row
// counts what went, and a leaver who is still a member of another Group
// source of the namespace keeps its data.
func TestPurgeFormerMembers(t *testing.T) {
	h := newHarness(t, bfOpts, "group", "cohort")
	h.runner.Members = h.runner.Client.(*fetch.Client)
	h.runner.Purge = true
	res := h.run(t)
	h.assertTruth(t)
	require.Empty(t, res.Purged)
	shared := h.count(t, `SELECT count(*) FROM fhir_resources WHERE resource_type IN ('Practitioner', 'Organization', 'Location')`)
	require.Positive(t, shared)

	m := h.srv.Advance(24*time.Hour, bulktest.Mutation{RemoveGroupMembers: 2, UpdatedResources: 10})
	require.Len(t, m.RemovedFromGroup, 2)
	var before int
	for _, k := range m.RemovedFromGroup {
		n := h.patientData(t, k.ID)
		require.Greater(t, n, 1, "leaver %s has data to purge", k.ID)
		before += n
	}
	res = h.run(t)
	for _, k := range m.RemovedFromGroup {
		require.Zero(t, h.patientData(t, k.ID), "leaver %s's data is purged", k.ID)
	}
	for _, typ := range []string{"Observation", "Condition", "Encounter"} {
		require.Zero(t, h.count(t, `SELECT count(*) FROM fhir_resources WHERE resource_type = ? AND json_extract_string(resource, '$.subject.reference') IN (?, ?)`,
			typ, "Patient/"+m.RemovedFromGroup[0].ID, "Patient/"+m.RemovedFromGroup[1].ID))
	}
	require.Equal(t, shared, h.count(t, `SELECT count(*) FROM fhir_resources WHERE resource_type IN ('Practitioner', 'Organization', 'Location')`),
		"shared resources stay")
	h.assertTruth(t) // views included: the leavers' rows are gone from every table
	require.Equal(t, map[string]int64{"duck": int64(before)}, res.Purged)
	require.Equal(t, before, h.count(t, `SELECT purged FROM runs WHERE run_id = ?`, res.RunID))

	// A second Group source of the same server and namespace whose Group
	// still lists everyone: cohort's next leavers keep their data.
	all := *h.runner
	all.Source, all.Request = "all", fetch.Request{Level: fetch.LevelGroup, GroupID: "all"}
	all.Namespace = "src" // the harness runner's, defaulted from its name
	_, err := all.Run(context.Background())
	require.NoError(t, err)
	m = h.srv.Advance(time.Hour, bulktest.Mutation{RemoveGroupMembers: 1})
	res = h.run(t)
	require.Empty(t, res.Purged, "the leaver is still a member of Group all")
	require.Greater(t, h.patientData(t, m.RemovedFromGroup[0].ID), 1)
	require.Equal(t, 0, h.count(t, `SELECT purged FROM runs WHERE run_id = ?`, res.RunID))
	require.Equal(t, pipeline.MembersFromRead, e2e.RunMembership(t, h.sink.DB(), res.RunID))
}

// TestPurgeOnEverySink: the purge goes through each sink's own deletion
// path in the run's transaction; after the leavers' run every sink equals
// the Group's current export (raw and views), with the same count in the
// runs row, and a rejoin (with the back-fill of C49) brings the data back.
func TestPurgeOnEverySink(t *testing.T) {
	views := defaultViews(t)
	for _, k := range sinkKinds {
		t.Run(k.kind, func(t *testing.T) {
			t.Parallel()
			srv, err := bulktest.NewServer(bfOpts)
			require.NoError(t, err)
			t.Cleanup(srv.Close)
			s := k.open(t, "wh")
			r := e2eRunner(t, srv, views, t.TempDir(), "group", "cohort", s.sink)
			c := r.Client.(*fetch.Client)
			r.Members, r.Purge = c, true
			b := &pipeline.Backfill{Runner: r, Members: c}
			run := func() *pipeline.Result {
				t.Helper()
				res := bfRun(t, b)
				requireSinkMatches(t, s, views, srv.Truth("group", "cohort", nil))
				return res
			}
			run()
			m := srv.Advance(24*time.Hour, bulktest.Mutation{RemoveGroupMembers: 3, UpdatedResources: 5})
			require.Len(t, m.RemovedFromGroup, 3)
			res := run()
			require.Positive(t, res.Purged["wh"])
			db, done := s.read(t)
			var n int64
			require.NoError(t, db.QueryRow(`SELECT purged FROM runs WHERE run_id = $1`, res.RunID).Scan(&n))
			done()
			require.Equal(t, res.Purged["wh"], n)

			rejoined := false
			for i := 0; i < 10 && !rejoined; i++ {
				a := srv.Advance(time.Hour, bulktest.Mutation{AddGroupMembers: 3})
				for _, k := range a.AddedToGroup {
					rejoined = rejoined || slices.Contains(m.RemovedFromGroup, k)
				}
				run()
			}
			require.True(t, rejoined, "no leaver rejoined")
		})
	}
}

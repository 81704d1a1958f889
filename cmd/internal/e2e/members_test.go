package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
)

func ttOf(t *testing.T, res *pipeline.Result) time.Time {
	t.Helper()
	tt, err := time.Parse(time.RFC3339Nano, res.TransactionTime)
	require.NoError(t, err)
	return tt
}

// TestGroupMembershipHistory runs a Group source over a server whose
// cohort changes between runs (joins, leaves, a rejoin, newcomers) and
// compares group_member after each run with the history of the server's
// own membership. A leaver's data is kept (export.former_members: keep).
func TestGroupMembershipHistory(t *testing.T) {
	for _, mode := range []string{"runner", "backfill"} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t, bfOpts, "group", "cohort")
			c := h.runner.Client.(*fetch.Client)
			h.runner.Members = c
			run := func() *pipeline.Result { return h.run(t) }
			if mode == "backfill" {
				b := bfBackfill(h)
				run = func() *pipeline.Result { return bfRun(t, b) }
			}
			var want e2e.MemberHistory
			var tts []time.Time
			step := func() *pipeline.Result {
				t.Helper()
				res := run()
				tts = append(tts, ttOf(t, res))
				want.Observe(h.srv.Members("cohort"), ttOf(t, res))
				e2e.RequireMembers(t, h.sink.DB(), "src", "cohort", &want)
				require.Equal(t, pipeline.MembersFromRead, e2e.RunMembership(t, h.sink.DB(), res.RunID))
				require.NotNil(t, res.Members)
				require.Equal(t, h.srv.Members("cohort"), res.Members.Patients)
				return res
			}
			step()
			require.Len(t, want.Current(), len(h.srv.Members("cohort")))
			h.assertTruth(t)

			m := h.srv.Advance(24*time.Hour, bulktest.Mutation{RemoveGroupMembers: 2, AddGroupMembers: 1, NewPatients: 1, UpdatedResources: 10})
			require.Len(t, m.RemovedFromGroup, 2)
			step()
			// The leavers' data stays in the warehouse.
			for _, k := range m.RemovedFromGroup {
				var n int
				require.NoError(t, h.sink.DB().QueryRow(`SELECT count(*) FROM fhir_resources WHERE resource_type = 'Patient' AND id = ?`, k.ID).Scan(&n))
				require.Equal(t, 1, n, "former member %s kept", k.ID)
			}

			// A run without membership changes changes no stay.
			h.srv.Advance(time.Hour, bulktest.Mutation{UpdatedResources: 5})
			before := want.Rows()
			step()
			require.Equal(t, before, want.Rows())

			// Additions until a leaver rejoins: a second stay.
			rejoined := false
			for i := 0; i < 10 && !rejoined; i++ {
				a := h.srv.Advance(time.Hour, bulktest.Mutation{AddGroupMembers: 3})
				for _, k := range a.AddedToGroup {
					rejoined = rejoined || slices.Contains(m.RemovedFromGroup, k)
				}
				step()
			}
			require.True(t, rejoined, "no leaver rejoined")
			require.Greater(t, len(want.Rows()), len(want.Current()), "history holds closed stays")
			requireREADMECohortQueries(t, h, &want, tts)
		})
	}
}

// TestGroupMembershipFromExport: a server that refuses the Group read
// but exports the Group gives the membership from the export; an
// incremental export without the Group (unchanged) records none, and a
// server that does neither says so in the runs row.
func TestGroupMembershipFromExport(t *testing.T) {
	h := newHarness(t, bfOpts, "group", "cohort")
	h.runner.Members = h.runner.Client.(*fetch.Client)
	h.srv.SetFaults(bulktest.Faults{GroupReadUnsupported: true, ExportGroupResource: true})
	var want e2e.MemberHistory

	res := h.run(t)
	require.Equal(t, pipeline.MembersFromExport, res.MembersFrom)
	require.Equal(t, pipeline.MembersFromExport, e2e.RunMembership(t, h.sink.DB(), res.RunID))
	want.Observe(h.srv.Members("cohort"), ttOf(t, res))
	e2e.RequireMembers(t, h.sink.DB(), "src", "cohort", &want)

	h.srv.Advance(time.Hour, bulktest.Mutation{UpdatedResources: 5})
	res = h.run(t)
	require.Equal(t, pipeline.MembersOmitted, res.MembersFrom, "the Group did not change: not in the export")
	require.Equal(t, pipeline.MembersOmitted, e2e.RunMembership(t, h.sink.DB(), res.RunID))
	e2e.RequireMembers(t, h.sink.DB(), "src", "cohort", &want)

	h.srv.Advance(time.Hour, bulktest.Mutation{RemoveGroupMembers: 1, AddGroupMembers: 1})
	res = h.run(t)
	require.Equal(t, pipeline.MembersFromExport, res.MembersFrom)
	want.Observe(h.srv.Members("cohort"), ttOf(t, res))
	e2e.RequireMembers(t, h.sink.DB(), "src", "cohort", &want)

	h.srv.SetFaults(bulktest.Faults{GroupReadUnsupported: true})
	h.srv.Advance(time.Hour, bulktest.Mutation{RemoveGroupMembers: 1})
	res = h.run(t)
	require.Equal(t, pipeline.MembersOmitted, res.MembersFrom)
	e2e.RequireMembers(t, h.sink.DB(), "src", "cohort", &want)
}

// requireREADMECohortQueries runs the README's two group_member queries,
// verbatim, and checks their answers against the membership history and
// the server's Conditions.
func requireREADMECohortQueries(t *testing.T, h *harness, want *e2e.MemberHistory, tts []time.Time) {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	require.NoError(t, err)
	i := strings.Index(string(readme), "### Group membership: `group_member` and `current_member`")
	require.Positive(t, i)
	blocks := regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(readme[i:]), 2)
	require.Len(t, blocks, 2)

	current := want.Current()
	diabetic := 0
	for _, row := range h.srv.Truth("system", "", []string{"Condition"}) {
		var c struct {
			Subject struct{ Reference string }
			Code    struct {
				Coding []struct{ System, Code string }
			}
		}
		require.NoError(t, json.Unmarshal(row.JSON, &c))
		for _, cd := range c.Code.Coding {
			p := strings.TrimPrefix(c.Subject.Reference, "Patient/")
			if cd.System == "http://snomed.info/sct" && cd.Code == "44054006" && slices.Contains(current, p) {
				diabetic++
				current = slices.DeleteFunc(current, func(x string) bool { return x == p }) // count a patient once
			}
		}
	}
	require.Equal(t, []string{fmt.Sprintf("src|cohort|%d|%d", len(want.Current()), diabetic)}, queryRows(t, h.sink.DB(), blocks[0][1]))

	var sizes []string
	for _, tt := range tts {
		sizes = append(sizes, fmt.Sprintf("src|%s|%d", tt.UTC().Format("2006-01-02T15:04:05.000Z07:00"), want.OpenAt(tt)))
	}
	require.Equal(t, sizes, queryRows(t, h.sink.DB(), blocks[1][1]))
}

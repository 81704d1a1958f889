package bulktest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// groupRead reads Group/id and returns its member Patient ids.
func groupRead(t *testing.T, s *Server, id string) []string {
	t.Helper()
	resp, body := do(t, http.MethodGet, s.BaseURL()+"/Group/"+id, nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return memberIDs(t, body)
}

func memberIDs(t *testing.T, body []byte) []string {
	t.Helper()
	var g struct {
		Member []struct{ Entity struct{ Reference string } }
	}
	require.NoError(t, json.Unmarshal(body, &g))
	out := []string{}
	for _, m := range g.Member {
		out = append(out, strings.TrimPrefix(m.Entity.Reference, "Patient/"))
	}
	return out
}

func TestCohortMembersLeaveAndRejoin(t *testing.T) {
	s := newTestServer(t, Options{Patients: 30, Seed: 11})
	before := s.Members(groupCohort)
	require.ElementsMatch(t, before, groupRead(t, s, groupCohort))
	require.Len(t, s.Members(groupAll), 30)

	res := s.Advance(time.Hour, Mutation{RemoveGroupMembers: 3})
	require.Len(t, res.RemovedFromGroup, 3)
	now := s.Members(groupCohort)
	require.Len(t, now, len(before)-3)
	for _, k := range res.RemovedFromGroup {
		require.Contains(t, before, k.ID)
		require.NotContains(t, now, k.ID, "a leaver is no longer listed")
		_, live := s.Truth("system", "", []string{"Patient"})[k]
		require.True(t, live, "a leaver's data stays on the server")
	}
	require.ElementsMatch(t, now, groupRead(t, s, groupCohort))
	require.Len(t, s.Members(groupAll), 30, "leaving the cohort is not leaving the server")

	// The Group's version moves, so an incremental Group export of
	// _type=Group shows the change.
	var gv string
	for k, row := range s.Truth("system", "", []string{"Group"}) {
		if k.ID == groupCohort {
			gv = row.VersionID
		}
	}
	require.Equal(t, "2", gv)

	// Adding members may bring leavers back; keep adding until one of
	// them rejoins.
	rejoined := ""
	for range 20 {
		r := s.Advance(time.Hour, Mutation{AddGroupMembers: 2})
		for _, k := range r.AddedToGroup {
			if slices.ContainsFunc(res.RemovedFromGroup, func(x Key) bool { return x == k }) {
				rejoined = k.ID
			}
		}
		if rejoined != "" {
			break
		}
	}
	require.NotEmpty(t, rejoined, "no leaver rejoined in 40 additions")
	require.Contains(t, s.Members(groupCohort), rejoined)
}

func TestGroupReadUnsupportedAndExportedGroup(t *testing.T) {
	s := newTestServer(t, Options{Patients: 10, Seed: 3})
	s.SetFaults(Faults{GroupReadUnsupported: true, ExportGroupResource: true})
	resp, body := do(t, http.MethodGet, s.BaseURL()+"/Group/cohort", nil, "")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, string(body), "not-supported")

	m := waitManifest(t, kickOff(t, s, "/Group/cohort/$export", nil))
	got := collect(t, m, false)
	g, ok := got[Key{"Group", groupCohort}]
	require.True(t, ok, "the export lists its own Group")
	require.ElementsMatch(t, s.Members(groupCohort), memberIDs(t, []byte(g)))
	_, other := got[Key{"Group", groupAll}]
	require.False(t, other, "only the exported Group")

	// An incremental export lists the Group only when it changed.
	m2 := waitManifest(t, kickOff(t, s, "/Group/cohort/$export", url.Values{"_since": {m.TransactionTime}}))
	_, ok = collect(t, m2, false)[Key{"Group", groupCohort}]
	require.False(t, ok)
	s.Advance(time.Hour, Mutation{RemoveGroupMembers: 1})
	m3 := waitManifest(t, kickOff(t, s, "/Group/cohort/$export", url.Values{"_since": {m.TransactionTime}}))
	g, ok = collect(t, m3, false)[Key{"Group", groupCohort}]
	require.True(t, ok)
	require.ElementsMatch(t, s.Members(groupCohort), memberIDs(t, []byte(g)))

	s.SetFaults(Faults{})
	_, ok = collect(t, waitManifest(t, kickOff(t, s, "/Group/cohort/$export", nil)), false)[Key{"Group", groupCohort}]
	require.False(t, ok, "by default a Group export holds no Group")
}

func TestMemberSearchPages(t *testing.T) {
	s := newTestServer(t, Options{Patients: 30, Seed: 11})
	next := s.BaseURL() + "/Patient?_has:Group:member:_id=cohort&_elements=id&_count=7"
	var got []string
	pages := 0
	for next != "" {
		pages++
		resp, body := do(t, http.MethodGet, next, nil, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		var b struct {
			Type, ResourceType string
			Total              int
			Link               []struct{ Relation, URL string }
			Entry              []struct {
				Resource struct{ ResourceType, ID string }
			}
		}
		require.NoError(t, json.Unmarshal(body, &b))
		require.Equal(t, "searchset", b.Type)
		require.Equal(t, len(s.Members(groupCohort)), b.Total)
		require.LessOrEqual(t, len(b.Entry), 7)
		next = ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				next = l.URL
			}
		}
		for _, e := range b.Entry {
			require.Equal(t, "Patient", e.Resource.ResourceType)
			got = append(got, e.Resource.ID)
		}
	}
	require.Equal(t, s.Members(groupCohort), got)
	require.Equal(t, (len(got)+6)/7, pages)

	resp, _ := do(t, http.MethodGet, s.BaseURL()+"/Patient?name=x", nil, "")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "only the member search")

	// _elements on a Group read keeps id, meta and what was asked, tagged SUBSETTED.
	resp, body := do(t, http.MethodGet, s.BaseURL()+"/Group/cohort?_elements=member,quantity", nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var g map[string]any
	require.NoError(t, json.Unmarshal(body, &g))
	require.NotContains(t, g, "name")
	require.Contains(t, string(body), "SUBSETTED")
	require.ElementsMatch(t, s.Members(groupCohort), memberIDs(t, body))
}

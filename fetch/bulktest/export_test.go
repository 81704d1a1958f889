package bulktest

import (
	"encoding/json"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFullGroupExportMatchesTruth(t *testing.T) {
	s := newTestServer(t, Options{Patients: 30, Seed: 7, FileMaxResources: 100})
	m := waitManifest(t, kickOff(t, s, "/Group/cohort/$export", nil))
	require.Equal(t, "2025-01-01T00:00:00.000Z", m.TransactionTime)
	require.Equal(t, false, *m.RequiresAccessToken)
	got := collect(t, m, false)
	truth := s.Truth("group", "cohort", nil)
	require.Equal(t, len(truth), len(got))
	for k, row := range truth {
		require.JSONEq(t, string(row.JSON), got[k], "%v", k)
	}
	// the cohort is a strict subset of all patients
	all := s.Truth("group", "all", []string{"Patient"})
	var pats int
	for k := range truth {
		if k.Type == "Patient" {
			pats++
		}
	}
	require.Less(t, pats, len(all))
	require.Greater(t, pats, 0)
	// several files per type when the type exceeds FileMaxResources
	obsFiles := 0
	for _, it := range m.Output {
		if it.Type == "Observation" {
			obsFiles++
			require.LessOrEqual(t, it.Count, 100)
		}
	}
	require.Greater(t, obsFiles, 1)
}

func TestResourcesAreValidJSONWithMeta(t *testing.T) {
	s := newTestServer(t, Options{Patients: 5, Seed: 1})
	for k, row := range s.Truth("system", "", nil) {
		var v map[string]any
		require.NoError(t, json.Unmarshal(row.JSON, &v), "%v: %s", k, row.JSON)
		require.Equal(t, k.Type, v["resourceType"])
		require.Equal(t, k.ID, v["id"])
		meta := v["meta"].(map[string]any)
		require.Equal(t, row.VersionID, meta["versionId"])
		require.NotEmpty(t, meta["lastUpdated"])
	}
}

func TestGzipAndIdentityServeSameBytes(t *testing.T) {
	s := newTestServer(t, Options{Patients: 3, Seed: 2})
	m := waitManifest(t, kickOff(t, s, "/Patient/$export", url.Values{"_type": {"Observation"}}))
	require.Len(t, m.Output, 1)
	require.Equal(t, download(t, m.Output[0].URL, false), download(t, m.Output[0].URL, true))
}

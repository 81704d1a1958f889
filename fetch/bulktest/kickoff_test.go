package bulktest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestKickOffValidation(t *testing.T) {
	s := newTestServer(t, Options{Patients: 5, Seed: 3})
	pid := s.gen.id(tPatient, 1, 0)
	nonMember := ""
	st := s.st.Load()
	for p := uint32(0); p < 5; p++ {
		if !st.inGroup(s.gen, groupCohort, p) {
			nonMember = s.gen.id(tPatient, p, 0)
		}
	}
	postBody := func(params ...string) string {
		return `{"resourceType":"Parameters","parameter":[` + strings.Join(params, ",") + `]}`
	}
	tests := []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		body   string
		want   int
		errHas string
	}{
		{"ok", "GET", "/$export", kickHdr, "", 202, ""},
		{"accept list rejected", "GET", "/$export", map[string]string{"Accept": "application/fhir+json, application/json", "Prefer": "respond-async"}, "", 400, "Accept"},
		{"no accept", "GET", "/$export", map[string]string{"Prefer": "respond-async"}, "", 400, "Accept"},
		{"no prefer", "GET", "/$export", map[string]string{"Accept": "application/fhir+json"}, "", 400, "respond-async"},
		{"prefer with lenient", "GET", "/$export", map[string]string{"Accept": "application/fhir+json", "Prefer": "respond-async, handling=lenient"}, "", 202, ""},
		{"patient on GET", "GET", "/Group/cohort/$export?patient=Patient/" + pid, kickHdr, "", 400, "POST"},
		{"POST body not Parameters", "POST", "/Group/cohort/$export", kickHdr, `{"resourceType":"Patient"}`, 400, "Parameters"},
		{"POST body not JSON", "POST", "/Group/cohort/$export", kickHdr, `nope`, 400, "Parameters"},
		{"POST ok", "POST", "/Patient/$export", kickHdr, postBody(`{"name":"_type","valueString":"Patient"}`), 202, ""},
		{"POST unknown patient", "POST", "/Patient/$export", kickHdr, postBody(`{"name":"patient","valueReference":{"reference":"Patient/nope"}}`), 400, "unknown"},
		{"POST non-member patient", "POST", "/Group/cohort/$export", kickHdr, postBody(`{"name":"patient","valueReference":{"reference":"Patient/` + nonMember + `"}}`), 400, "not a member"},
		{"patient at system level", "POST", "/$export", kickHdr, postBody(`{"name":"patient","valueReference":{"reference":"Patient/` + pid + `"}}`), 400, "system"},
		{"future since", "GET", "/$export?_since=" + url.QueryEscape("2030-01-01T00:00:00Z"), kickHdr, "", 400, "future"},
		{"unencoded plus", "GET", "/$export?_since=2024-01-01T00:00:00+01:00", kickHdr, "", 400, "instant"},
		{"encoded plus", "GET", "/$export?_since=2024-01-01T00:00:00%2B01:00", kickHdr, "", 202, ""},
		{"bad outputFormat", "GET", "/$export?_outputFormat=text/csv", kickHdr, "", 400, "_outputFormat"},
		{"short outputFormat", "GET", "/$export?_outputFormat=ndjson", kickHdr, "", 202, ""},
		{"unknown type", "GET", "/Patient/$export?_type=Patient,Spaceship", kickHdr, "", 400, "Spaceship"},
		{"Group not in patient compartment", "GET", "/Patient/$export?_type=Group", kickHdr, "", 400, "Group"},
		{"unknown type lenient", "GET", "/Patient/$export?_type=Patient,Spaceship", map[string]string{"Accept": "application/fhir+json", "Prefer": "respond-async; handling=lenient"}, "", 202, ""},
		{"unsupported typeFilter", "GET", "/$export?_typeFilter=" + url.QueryEscape("Observation?value-quantity=gt5"), kickHdr, "", 400, "value-quantity"},
		{"organizeOutputBy", "GET", "/$export?organizeOutputBy=Patient", kickHdr, "", 400, "organizeOutputBy"},
		{"bad elements", "GET", "/$export?_elements=Spaceship.id", kickHdr, "", 400, "_elements"},
		{"unknown group", "GET", "/Group/nope/$export", kickHdr, "", 404, "nope"},
		{"includeAssociatedData accepted", "GET", "/$export?includeAssociatedData=LatestProvenanceResources", kickHdr, "", 202, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, s.BaseURL()+tt.path, tt.hdr, tt.body)
			require.Equal(t, tt.want, resp.StatusCode, string(body))
			require.Equal(t, "application/fhir+json", resp.Header.Get("Content-Type"))
			var oo struct {
				ResourceType string
				Issue        []struct{ Severity, Code, Diagnostics string }
			}
			require.NoError(t, json.Unmarshal(body, &oo))
			require.Equal(t, "OperationOutcome", oo.ResourceType)
			if tt.want >= 400 {
				require.Contains(t, oo.Issue[0].Diagnostics, tt.errHas)
			} else {
				require.True(t, strings.HasPrefix(resp.Header.Get("Content-Location"), s.BaseURL()+"/bulkstatus/"))
			}
		})
	}
}

func TestPostPatientListRestrictsOutput(t *testing.T) {
	s := newTestServer(t, Options{Patients: 10, Seed: 4})
	p1, p2 := s.gen.id(tPatient, 2, 0), s.gen.id(tPatient, 5, 0)
	body := `{"resourceType":"Parameters","parameter":[` +
		`{"name":"_type","valueString":"Patient,Condition"},` +
		`{"name":"patient","valueReference":{"reference":"Patient/` + p1 + `"}},` +
		`{"name":"patient","valueReference":{"reference":"` + s.BaseURL() + `/Patient/` + p2 + `"}}]}`
	resp, rb := do(t, http.MethodPost, s.BaseURL()+"/Group/all/$export", kickHdr, body)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(rb))
	got := collect(t, waitManifest(t, resp.Header.Get("Content-Location")), false)
	want := 0
	for k, row := range s.Truth("group", "all", []string{"Patient", "Condition"}) {
		if k.ID == p1 || k.ID == p2 || strings.Contains(string(row.JSON), p1) || strings.Contains(string(row.JSON), p2) {
			want++
			require.Contains(t, got, k)
		}
	}
	require.Equal(t, want, len(got))
	require.Contains(t, got, Key{"Patient", p1})
}

func TestSinceUntilAndDeleted(t *testing.T) {
	s := newTestServer(t, Options{Patients: 20, Seed: 5, TransactionTimeOffset: time.FixedZone("", -5*3600)})
	m0 := waitManifest(t, kickOff(t, s, "/Group/cohort/$export", nil))
	require.Equal(t, "2024-12-31T19:00:00.000-05:00", m0.TransactionTime)
	require.Nil(t, m0.Deleted, "no deleted[] without _since")

	res := s.Advance(time.Hour, Mutation{NewPatients: 1, UpdatedResources: 15, DeletedResources: 10, AddGroupMembers: 2})
	require.Len(t, res.Updated, 15)
	require.Len(t, res.Deleted, 10)
	require.Len(t, res.AddedToGroup, 2)
	require.Equal(t, s.Now(), res.Time)

	// _since = previous transactionTime, sent verbatim (offset, encoded)
	m1 := waitManifest(t, kickOff(t, s, "/Group/cohort/$export", url.Values{"_since": {m0.TransactionTime}}))
	got := collect(t, m1, true)
	truth := s.Truth("group", "cohort", nil)
	since, _ := time.Parse(time.RFC3339, m0.TransactionTime)
	want := 0
	for k, row := range truth {
		if row.LastUpdated.After(since) {
			want++
			require.JSONEq(t, string(row.JSON), got[k])
		}
	}
	require.Equal(t, want, len(got))
	require.Greater(t, want, 50, "new patient's history must be there")
	// new members' old history is not back-filled
	for _, k := range res.AddedToGroup {
		_, ok := got[k]
		require.False(t, ok)
	}
	// deleted entries: exactly the deletions in scope
	var dels []string
	for _, it := range m1.Deleted {
		require.Equal(t, "Bundle", it.Type)
		lines := download(t, it.URL, false)
		require.Len(t, lines, it.Count)
		for _, l := range lines {
			var b struct {
				ResourceType, Type string
				Entry              []struct{ Request struct{ Method, URL string } }
			}
			require.NoError(t, json.Unmarshal([]byte(l), &b))
			require.Equal(t, "transaction", b.Type)
			for _, e := range b.Entry {
				require.Equal(t, "DELETE", e.Request.Method)
				dels = append(dels, e.Request.URL)
			}
		}
	}
	var wantDels []string
	for _, k := range res.Deleted {
		if _, live := s.Truth("system", "", []string{k.Type})[k]; live {
			t.Fatalf("deleted %v still in truth", k)
		}
		typ, p, _, ok := s.gen.parseID(k.ID)
		require.True(t, ok)
		if typ >= numPatientTypes || s.st.Load().inGroup(s.gen, groupCohort, p) {
			wantDels = append(wantDels, k.Type+"/"+k.ID)
		}
	}
	require.ElementsMatch(t, wantDels, dels)
	for _, d := range dels {
		ty, id, _ := strings.Cut(d, "/")
		_, inOutput := got[Key{ty, id}]
		require.False(t, inOutput, "deleted and output must be disjoint")
	}

	// recreate: back in output, no longer in deleted
	res2 := s.Advance(time.Minute, Mutation{RecreatedResources: 3})
	require.Len(t, res2.Recreated, 3)
	m2 := waitManifest(t, kickOff(t, s, "/$export", url.Values{"_since": {m1.TransactionTime}}))
	got2 := collect(t, m2, false)
	require.Empty(t, m2.Deleted)
	for _, k := range res2.Recreated {
		require.Contains(t, got2, k)
	}
	require.Equal(t, 3, len(got2))

	// _until excludes the last hour
	until := since.Add(30 * time.Minute)
	m3 := waitManifest(t, kickOff(t, s, "/$export", url.Values{"_until": {until.Format(time.RFC3339)}, "_type": {"Patient"}}))
	got3 := collect(t, m3, false)
	wantUntil := 0
	for k, row := range s.Truth("system", "", []string{"Patient"}) {
		_, ok := got3[k]
		require.Equal(t, row.LastUpdated.Before(until), ok, "%v", k)
		if ok {
			wantUntil++
		}
	}
	require.Equal(t, wantUntil, len(got3))
	require.Less(t, wantUntil, 21)
}

func TestSnapshotIsolation(t *testing.T) {
	s := newTestServer(t, Options{Patients: 8, Seed: 6, PollsBeforeComplete: 2})
	status := kickOff(t, s, "/$export", url.Values{"_type": {"Patient,Condition"}})
	before := s.Truth("system", "", []string{"Patient", "Condition"})
	s.Advance(time.Hour, Mutation{NewPatients: 3, UpdatedResources: 20, DeletedResources: 5})
	got := collect(t, waitManifest(t, status), false)
	require.Equal(t, len(before), len(got))
	for k, row := range before {
		require.JSONEq(t, string(row.JSON), got[k])
	}
}

func TestTypeElementsAndTypeFilter(t *testing.T) {
	s := newTestServer(t, Options{Patients: 15, Seed: 8})
	// _type
	m := waitManifest(t, kickOff(t, s, "/Patient/$export", url.Values{"_type": {"Condition", "Immunization"}}))
	types := map[string]bool{}
	for _, it := range m.Output {
		types[it.Type] = true
	}
	require.Equal(t, map[string]bool{"Condition": true, "Immunization": true}, types)

	// _elements: mandatory kept, SUBSETTED tag, other types untouched
	m = waitManifest(t, kickOff(t, s, "/Patient/$export", url.Values{"_type": {"Patient,Coverage"}, "_elements": {"Patient.gender,birthDate"}}))
	for _, it := range m.Output {
		for _, l := range download(t, it.URL, false) {
			var v map[string]json.RawMessage
			require.NoError(t, json.Unmarshal([]byte(l), &v))
			var h resourceHead
			require.NoError(t, json.Unmarshal([]byte(l), &h))
			require.Len(t, h.Meta.Tag, 1)
			require.Equal(t, "SUBSETTED", h.Meta.Tag[0].Code)
			if it.Type == "Patient" {
				require.ElementsMatch(t, []string{"resourceType", "id", "meta", "gender", "birthDate"}, keys(v))
			} else {
				require.ElementsMatch(t, []string{"resourceType", "id", "meta"}, keys(v))
			}
		}
	}

	// _typeFilter: two ORed filters on Observation, one on Condition
	q := url.Values{"_type": {"Observation,Condition,Patient"}, "_typeFilter": {
		"Observation?category=laboratory", "Observation?code=http://loinc.org|8867-4", "Condition?clinical-status=active",
	}}
	got := collect(t, waitManifest(t, kickOff(t, s, "/Patient/$export", q)), false)
	want := 0
	for k, row := range s.Truth("patient", "", []string{"Observation", "Condition", "Patient"}) {
		var v struct {
			Category       []struct{ Coding []struct{ Code string } }
			Code           struct{ Coding []struct{ Code string } }
			ClinicalStatus struct{ Coding []struct{ Code string } }
		}
		require.NoError(t, json.Unmarshal(row.JSON, &v))
		keep := true
		switch k.Type {
		case "Observation":
			keep = v.Category[0].Coding[0].Code == "laboratory" || v.Code.Coding[0].Code == "8867-4"
		case "Condition":
			keep = v.ClinicalStatus.Coding[0].Code == "active"
		}
		if keep {
			want++
			require.Contains(t, got, k)
		}
	}
	require.Equal(t, want, len(got))
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestPartialManifestPaging(t *testing.T) {
	s := newTestServer(t, Options{Patients: 20, Seed: 9, FileMaxResources: 50, ManifestPageSize: 4, PollsBeforeComplete: 1})
	status := kickOff(t, s, "/$export", url.Values{"allowPartialManifests": {"true"}})
	// in progress: 202 with a partial manifest body
	resp, body := do(t, http.MethodGet, status, nil, "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var partial manifest
	require.NoError(t, json.Unmarshal(body, &partial))
	require.Len(t, partial.Output, 4)
	require.Empty(t, partial.Link)

	all := map[string]bool{}
	next, pages := status, 0
	for next != "" {
		m := waitManifest(t, next)
		pages++
		require.LessOrEqual(t, len(m.Output), 4)
		for _, it := range m.Output {
			require.False(t, all[it.URL], "output repeated across pages")
			all[it.URL] = true
		}
		next = ""
		if len(m.Link) > 0 {
			require.Equal(t, "next", m.Link[0].Relation)
			next = m.Link[0].URL
		}
	}
	require.Greater(t, pages, 2)
	full := 0
	for range s.Truth("system", "", nil) {
		full++
	}
	total := 0
	for u := range all {
		total += len(download(t, u, false))
	}
	require.Equal(t, full, total)
}

func TestDeleteThenPoll404(t *testing.T) {
	s := newTestServer(t, Options{Patients: 2, Seed: 10})
	status := kickOff(t, s, "/$export", nil)
	m := waitManifest(t, status)
	resp, body := do(t, http.MethodDelete, status, nil, "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	resp, body = do(t, http.MethodGet, status, nil, "")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, string(body), "OperationOutcome")
	resp, _ = do(t, http.MethodGet, m.Output[0].URL, nil, "")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = do(t, http.MethodDelete, status, nil, "")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Equal(t, 2, s.Stats().Deletes)
}

func TestMetadataGroupReadAndAttachment(t *testing.T) {
	s := newTestServer(t, Options{Patients: 6, Seed: 11})
	resp, body := do(t, http.MethodGet, s.BaseURL()+"/metadata", nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data")

	resp, body = do(t, http.MethodGet, s.BaseURL()+"/Group/cohort", nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var g struct {
		Quantity int
		Member   []struct{ Entity struct{ Reference string } }
	}
	require.NoError(t, json.Unmarshal(body, &g))
	require.Equal(t, len(g.Member), g.Quantity)
	n := 0
	for k := range s.Truth("group", "cohort", []string{"Patient"}) {
		require.Contains(t, string(body), "Patient/"+k.ID)
		n++
	}
	require.Equal(t, n, g.Quantity)

	for _, row := range s.Truth("patient", "", []string{"DocumentReference"}) {
		var d struct {
			Content []struct {
				Attachment struct {
					URL  string
					Size int
				}
			}
		}
		require.NoError(t, json.Unmarshal(row.JSON, &d))
		a := d.Content[0].Attachment
		require.True(t, strings.HasPrefix(a.URL, s.BaseURL()+"/attachments/"))
		resp, body := do(t, http.MethodGet, a.URL, nil, "")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Len(t, body, a.Size)
		break
	}
}

func TestCompat2018(t *testing.T) {
	s := newTestServer(t, Options{Patients: 3, Seed: 12, Compat2018: true, Start: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)})
	status := kickOff(t, s, "/$export", url.Values{"start": {"2025-01-01T00:00:00Z"}, "outputFormat": {"application/fhir+ndjson"}})
	var resp *http.Response
	var body []byte
	for i := 0; i < 3; i++ {
		resp, body = do(t, http.MethodGet, status, nil, "")
	}
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "false", resp.Header.Get("X-FHIR-Links-Require-Authorization"))
	require.NotContains(t, string(body), "requiresAccessToken")
	var m manifest
	require.NoError(t, json.Unmarshal(body, &m))
	got := collect(t, m, false)
	since := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	want := 0
	for _, row := range s.Truth("system", "", nil) {
		if row.LastUpdated.After(since) {
			want++
		}
	}
	require.Equal(t, want, len(got))
	require.Greater(t, want, 0)
}

package bulktest

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRejectPatientParamAndRecordedParams(t *testing.T) {
	s := newTestServer(t, Options{Patients: 4, Seed: 8, Faults: Faults{RejectPatientParam: true}})
	var member string
	st := s.st.Load()
	for p := uint32(0); p < 4 && member == ""; p++ {
		if st.inGroup(s.gen, groupCohort, p) {
			member = s.gen.id(tPatient, p, 0)
		}
	}
	require.NotEmpty(t, member)
	u := s.BaseURL() + "/Group/cohort/$export"
	withPatient := `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"},` +
		`{"name":"patient","valueReference":{"reference":"Patient/` + member + `"}}]}`

	resp, body := do(t, http.MethodPost, u, kickHdr, withPatient)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, string(body), "patient parameter is not supported")

	// Without the patient parameter the fault does not apply.
	resp, body = do(t, http.MethodPost, u, kickHdr, `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"}]}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	kickOff(t, s, "/Group/cohort/$export", map[string][]string{"_type": {"Patient"}, "_since": {"2024-06-01T00:00:00Z"}})

	// Cleared, the same request is accepted.
	s.SetFaults(Faults{})
	resp, body = do(t, http.MethodPost, u, kickHdr, withPatient)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))

	stats := s.Stats()
	require.Equal(t, map[string]int{"RejectPatientParam": 1}, stats.Faults)
	var kicks []RequestRecord
	for _, r := range stats.Requests {
		if r.Kind == KindKickOff {
			kicks = append(kicks, r)
		}
	}
	require.Len(t, kicks, 4)
	require.Equal(t, "RejectPatientParam", kicks[0].Fault)
	require.Equal(t, []string{"_type=Patient", "patient=Patient/" + member}, kicks[0].Params)
	require.Equal(t, []string{"_type=Patient"}, kicks[1].Params)
	require.Equal(t, []string{"_since=2024-06-01T00:00:00Z", "_type=Patient"}, kicks[2].Params, "query parameters are sorted by name")
	require.Equal(t, kicks[0].Params, kicks[3].Params)
	require.Empty(t, kicks[3].Fault)
}

package fetch

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestKickOffGETBuildsEncodedQuery(t *testing.T) {
	var got *http.Request
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(r.Context())
		w.Header().Set("Content-Location", "/fhir/bulkstatus/42")
		w.WriteHeader(http.StatusAccepted)
	})
	c := testClient(t, s.URL+"/fhir", func(o *Options) { o.Auth = &fakeTokens{} })
	loc, err := c.KickOff(t.Context(), Request{
		Level: LevelGroup, GroupID: "diabetes cohort", Since: "2025-01-20T10:11:12.000+05:00",
		Types: []string{"Patient", "Observation"}, Lenient: true,
		TypeFilters: []string{"Observation?status=final", "Observation?category=laboratory"},
	})
	require.NoError(t, err)
	require.Equal(t, s.URL+"/fhir/bulkstatus/42", loc)
	require.Equal(t, http.MethodGet, got.Method)
	require.Equal(t, "/fhir/Group/diabetes%20cohort/$export", got.URL.EscapedPath())
	require.Equal(t, []string{"application/fhir+json"}, got.Header.Values("Accept"))
	require.Equal(t, "respond-async, handling=lenient", got.Header.Get("Prefer"))
	require.Equal(t, "Bearer tok-a", got.Header.Get("Authorization"))
	require.Contains(t, got.URL.RawQuery, "_since=2025-01-20T10%3A11%3A12.000%2B05%3A00")
	q := got.URL.Query()
	require.Equal(t, "2025-01-20T10:11:12.000+05:00", q.Get("_since"))
	require.Equal(t, "Patient,Observation", q.Get("_type"))
	require.Equal(t, []string{"Observation?status=final", "Observation?category=laboratory"}, q["_typeFilter"])
	for _, k := range []string{"_outputFormat", "_until", "start", "organizeOutputBy", "allowPartialManifests"} {
		require.NotContains(t, q, k, "C20: %s must not be sent unless configured", k)
	}
}

func TestKickOffPOSTForPatients(t *testing.T) {
	var body []byte
	var method, ctype string
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		method, ctype = r.Method, r.Header.Get("Content-Type")
		body, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Location", "http://elsewhere.example/status/1")
		w.WriteHeader(http.StatusAccepted)
	})
	c := testClient(t, s.URL, nil)
	loc, err := c.KickOff(t.Context(), Request{Level: LevelGroup, GroupID: "g", Patients: []string{"123", "Patient/456"}, Since: "2025-01-01T00:00:00Z", Types: []string{"Patient"}})
	require.NoError(t, err)
	require.Equal(t, "http://elsewhere.example/status/1", loc)
	require.Equal(t, http.MethodPost, method)
	require.Equal(t, "application/fhir+json", ctype)
	var p struct {
		ResourceType string
		Parameter    []map[string]any
	}
	require.NoError(t, json.Unmarshal(body, &p))
	require.Equal(t, "Parameters", p.ResourceType)
	var refs []string
	for _, x := range p.Parameter {
		switch x["name"] {
		case "patient":
			refs = append(refs, x["valueReference"].(map[string]any)["reference"].(string))
		case "_since":
			require.Equal(t, "2025-01-01T00:00:00Z", x["valueInstant"])
		}
	}
	require.Equal(t, []string{"Patient/123", "Patient/456"}, refs)

	_, err = c.KickOff(t.Context(), Request{Level: LevelGroup, GroupID: "g", Patients: []string{"1"}, Method: "get"})
	require.ErrorContains(t, err, "needs POST")
	_, err = c.KickOff(t.Context(), Request{Level: LevelSystem, Patients: []string{"1"}})
	require.ErrorContains(t, err, "not valid for a system-level")
	_, err = c.KickOff(t.Context(), Request{Level: LevelPatient, TypeFilters: []string{"Observation?_sort=date"}})
	require.ErrorContains(t, err, "C16")
}

func TestKickOff2018Compat(t *testing.T) {
	var q string
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		q = r.URL.RawQuery
		w.Header().Set("Content-Location", "s")
		w.WriteHeader(http.StatusAccepted)
	})
	c := testClient(t, s.URL+"/fhir/", nil)
	loc, err := c.KickOff(t.Context(), Request{Level: LevelPatient, Since: "2018-01-01T00:00:00+01:00", OutputFormat: "application/fhir+ndjson", Compat: "2018-draft"})
	require.NoError(t, err)
	require.Equal(t, s.URL+"/fhir/Patient/s", loc, "relative Content-Location resolves against the request URL")
	require.Equal(t, "outputFormat=application%2Ffhir%2Bndjson&start=2018-01-01T00%3A00%3A00%2B01%3A00", q)
}

func TestKickOffFailures(t *testing.T) {
	t.Run("202 without Content-Location", func(t *testing.T) {
		s := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
		_, err := testClient(t, s.URL, nil).KickOff(t.Context(), Request{})
		require.ErrorContains(t, err, "without Content-Location")
	})
	t.Run("400 is fatal with the OperationOutcome text", func(t *testing.T) {
		var n atomic.Int32
		s := server(t, func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			w.Header().Set("Content-Type", "application/fhir+json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, oo400)
		})
		_, err := testClient(t, s.URL, nil).KickOff(t.Context(), Request{})
		var he *HTTPError
		require.ErrorAs(t, err, &he)
		require.Equal(t, 400, he.StatusCode)
		require.ErrorContains(t, err, "Invalid _since")
		require.EqualValues(t, 1, n.Load())
	})
	t.Run("429 and 5xx are retried", func(t *testing.T) {
		var n atomic.Int32
		s := server(t, func(w http.ResponseWriter, r *http.Request) {
			switch n.Add(1) {
			case 1:
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusTooManyRequests)
			case 2:
				w.WriteHeader(http.StatusServiceUnavailable)
			default:
				w.Header().Set("Content-Location", "/status/9")
				w.WriteHeader(http.StatusAccepted)
			}
		})
		obs := &recObserver{}
		loc, err := testClient(t, s.URL, func(o *Options) { o.Observer = obs }).KickOff(t.Context(), Request{})
		require.NoError(t, err)
		require.Equal(t, s.URL+"/status/9", loc)
		require.Equal(t, []string{"429", "5xx"}, obs.Retries())
	})
	t.Run("5xx gives up after Retries", func(t *testing.T) {
		var n atomic.Int32
		s := server(t, func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html>bad gateway</html>")
		})
		_, err := testClient(t, s.URL, nil).KickOff(t.Context(), Request{})
		require.ErrorContains(t, err, "HTTP 502 (text/html)")
		require.ErrorContains(t, err, "bad gateway")
		require.EqualValues(t, 4, n.Load(), "first try + 3 retries")
	})
	t.Run("401 renews the token once", func(t *testing.T) {
		var auths []string
		s := server(t, func(w http.ResponseWriter, r *http.Request) {
			auths = append(auths, r.Header.Get("Authorization"))
			if len(auths) == 1 || strings.HasSuffix(r.URL.Path, "/always") {
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, "Token expired")
				return
			}
			w.Header().Set("Content-Location", "/s")
			w.WriteHeader(http.StatusAccepted)
		})
		ts := &fakeTokens{}
		_, err := testClient(t, s.URL, func(o *Options) { o.Auth = ts }).KickOff(t.Context(), Request{})
		require.NoError(t, err)
		require.Equal(t, []string{"Bearer tok-a", "Bearer tok-b"}, auths)
		require.Equal(t, []string{"tok-a"}, ts.invalidated)
	})
}

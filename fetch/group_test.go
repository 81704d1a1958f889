package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

func TestGroupMembersParsesReferences(t *testing.T) {
	var got http.Header
	var path string
	var query url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, path, query = r.Header.Clone(), r.URL.Path, r.URL.Query()
		w.Header().Set("Content-Type", "application/fhir+json")
		_, _ = w.Write([]byte(`{"resourceType":"Group","id":"g 1","member":[
			{"entity":{"reference":"Patient/b"}},
			{"entity":{"reference":"http://other.example/fhir/Patient/a"}},
			{"entity":{"reference":"Patient/c/_history/3"}},
			{"entity":{"reference":"Patient/gone"},"inactive":true},
			{"entity":{"reference":"Practitioner/x"}},
			{"entity":{"reference":"#contained"}},
			{"entity":{"reference":"Patient/b"}},
			{"entity":{"reference":"  Patient/d  "},"inactive":false}
		]}`))
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL+"/fhir", func(o *fetch.Options) { o.Auth = &countingTokens{} })
	members, err := c.GroupMembers(t.Context(), "g 1")
	require.NoError(t, err)
	require.Equal(t, []string{"Patient/a", "Patient/b", "Patient/c", "Patient/d"}, members)
	require.Equal(t, "/fhir/Group/g 1", path)
	require.Equal(t, "member,quantity", query.Get("_elements"), "the read asks only for what it uses")
	require.Equal(t, "application/fhir+json", got.Get("Accept"))
	require.Equal(t, "Bearer tok-0", got.Get("Authorization"))
}

func TestGroupMembersBadBodies(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"not json", `<html>`, "Group/g: the body is not a FHIR Group"},
		{"wrong type", `{"resourceType":"Patient","id":"g"}`, `got resourceType "Patient"`},
		{"member without reference", `{"resourceType":"Group","member":[{"entity":{"display":"x"}}]}`, "member[0].entity has no reference"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			_, err := newClient(t, srv.URL, nil).GroupMembers(t.Context(), "g")
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// countingTokens hands out tok-0, tok-1, … advancing on Invalidate.
type countingTokens struct {
	mu          sync.Mutex
	n           int
	invalidated []string
}

func (c *countingTokens) Token(context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("tok-%d", c.n), nil
}

func (c *countingTokens) Invalidate(tok string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidated = append(c.invalidated, tok)
	c.n++
}

func TestGroupMembersRetriesAndRenewsToken(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	step := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.Header.Get("Authorization"))
		step++
		switch step {
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		case 3:
			w.WriteHeader(http.StatusUnauthorized)
		default:
			_, _ = w.Write([]byte(`{"resourceType":"Group","member":[{"entity":{"reference":"Patient/1"}}]}`))
		}
	}))
	t.Cleanup(srv.Close)
	ts := &countingTokens{}
	obs := &countingObserver{}
	c := newClient(t, srv.URL, func(o *fetch.Options) { o.Auth = ts; o.Observer = obs })
	members, err := c.GroupMembers(t.Context(), "g")
	require.NoError(t, err)
	require.Equal(t, []string{"Patient/1"}, members)
	require.Equal(t, []string{"Bearer tok-0", "Bearer tok-0", "Bearer tok-0", "Bearer tok-1"}, seen)
	require.Equal(t, []string{"tok-0"}, ts.invalidated)
}

func TestGroupMembersErrors(t *testing.T) {
	for _, tc := range []struct {
		status      int
		unsupported bool
	}{
		{http.StatusBadRequest, true},
		{http.StatusNotFound, true},
		{http.StatusMethodNotAllowed, true},
		{http.StatusForbidden, false},
		{http.StatusUnauthorized, false},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			calls := 0
			var queries []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls++
				queries = append(queries, r.URL.RawQuery)
				w.Header().Set("Content-Type", "application/fhir+json")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"no read"}]}`))
			}))
			t.Cleanup(srv.Close)
			_, err := newClient(t, srv.URL, nil).GroupMembers(t.Context(), "g")
			require.Error(t, err)
			var ue *fetch.UnsupportedError
			require.Equal(t, tc.unsupported, errors.As(err, &ue), "err: %v", err)
			var he *fetch.HTTPError
			require.ErrorAs(t, err, &he)
			require.Equal(t, tc.status, he.StatusCode)
			require.ErrorContains(t, err, "no read")
			if tc.status == http.StatusBadRequest {
				// The 400 may be the _elements parameter's: asked once more without it.
				require.Equal(t, []string{"_elements=member,quantity", ""}, queries)
				return
			}
			require.Equal(t, 1, calls, "a 4xx is not retried")
		})
	}
	t.Run("5xx retries are bounded", func(t *testing.T) {
		calls := 0
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls++
			w.WriteHeader(http.StatusBadGateway)
		}))
		t.Cleanup(srv.Close)
		_, err := newClient(t, srv.URL, func(o *fetch.Options) { o.Retries = 2 }).GroupMembers(t.Context(), "g")
		require.ErrorContains(t, err, "HTTP 502")
		require.ErrorContains(t, err, "gave up after 2 retries")
		require.Equal(t, 3, calls)
	})
}

// TestGroupMembersBulktest reads the bulktest cohort before and after
// members join, with SMART tokens that expire in between.
func TestGroupMembersBulktest(t *testing.T) {
	s, as, ts := smartEnv(t, bulktest.Options{Patients: 20, Seed: 5})
	c := newClient(t, s.BaseURL(), func(o *fetch.Options) { o.Auth = ts })
	patients := func() []string {
		var out []string
		for k := range s.Truth("group", "cohort", []string{"Patient"}) {
			out = append(out, "Patient/"+k.ID)
		}
		slices.Sort(out)
		return out
	}
	before, err := c.GroupMembers(t.Context(), "cohort")
	require.NoError(t, err)
	require.NotEmpty(t, before)
	require.Equal(t, patients(), before)

	mut := s.Advance(time.Hour, bulktest.Mutation{AddGroupMembers: 2, NewPatients: 1})
	require.Len(t, mut.AddedToGroup, 2)
	as.ExpireAllTokens()
	after, err := c.GroupMembers(t.Context(), "cohort")
	require.NoError(t, err)
	require.Equal(t, patients(), after)
	var added []string
	for _, m := range after {
		if !slices.Contains(before, m) {
			added = append(added, m)
		}
	}
	var want []string
	for _, k := range append(mut.AddedToGroup, mut.NewPatients...) {
		want = append(want, "Patient/"+k.ID)
	}
	slices.Sort(want)
	require.Equal(t, want, added)
	require.Equal(t, 1, s.Stats().AuthFailures, "the expired token was renewed once")

	_, err = c.GroupMembers(t.Context(), "nope")
	var ue *fetch.UnsupportedError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, http.StatusNotFound, ue.StatusCode)
}

// TestGroupMembersTruncatedAndSubsetted: a server that truncates large
// Groups (quantity > members listed) has its members read with the paged
// search; one that refuses _elements on read is read whole; both give the
// Group's members exactly.
func TestGroupMembersTruncatedAndSubsetted(t *testing.T) {
	s, err := bulktest.NewServer(bulktest.Options{Patients: 130, Seed: 9})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	c := newClient(t, s.BaseURL(), nil)
	want := func(id string) []string {
		var out []string
		for _, p := range s.Members(id) {
			out = append(out, "Patient/"+p)
		}
		return out
	}
	kinds := func(from int) map[string]int {
		out := map[string]int{}
		for _, r := range s.Stats().Requests[from:] {
			out[r.Kind]++
		}
		return out
	}

	from := len(s.Stats().Requests)
	got, err := c.GroupMembers(t.Context(), "all")
	require.NoError(t, err)
	require.Equal(t, want("all"), got)
	require.Equal(t, map[string]int{bulktest.KindGroupRead: 1}, kinds(from))

	s.SetFaults(bulktest.Faults{GroupReadMemberLimit: 7})
	from = len(s.Stats().Requests)
	got, err = c.GroupMembers(t.Context(), "all")
	require.NoError(t, err)
	require.Len(t, got, 130)
	require.Equal(t, want("all"), got)
	require.Equal(t, map[string]int{bulktest.KindGroupRead: 1, bulktest.KindSearch: 1}, kinds(from), "130 members fit one page of 1000")

	s.Advance(time.Hour, bulktest.Mutation{RemoveGroupMembers: 5})
	got, err = c.GroupMembers(t.Context(), "cohort")
	require.NoError(t, err)
	require.Equal(t, want("cohort"), got)

	s.SetFaults(bulktest.Faults{GroupElementsUnsupported: true})
	from = len(s.Stats().Requests)
	got, err = c.GroupMembers(t.Context(), "cohort")
	require.NoError(t, err)
	require.Equal(t, want("cohort"), got)
	require.Equal(t, map[string]int{bulktest.KindGroupRead: 2}, kinds(from))
}

// TestGroupMemberSearchPages follows next links page by page and refuses
// one that leaves the FHIR server.
func TestGroupMemberSearchPages(t *testing.T) {
	var pages []string
	srv := httptest.NewServer(nil)
	t.Cleanup(srv.Close)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/fhir+json")
		if r.URL.Path == "/fhir/Group/g" {
			_, _ = w.Write([]byte(`{"resourceType":"Group","id":"g","quantity":5,"member":[{"entity":{"reference":"Patient/a"}}]}`))
			return
		}
		pages = append(pages, r.URL.RawQuery)
		switch r.URL.Query().Get("page") {
		case "":
			_, _ = fmt.Fprintf(w, `{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"%s/fhir/Patient?page=2"}],
				"entry":[{"resource":{"resourceType":"Patient","id":"c"}},{"resource":{"resourceType":"Patient","id":"a"}}]}`, srv.URL)
		case "2":
			_, _ = w.Write([]byte(`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"Patient?page=3"}],
				"entry":[{"resource":{"resourceType":"Patient","id":"b"}},{"resource":{"resourceType":"OperationOutcome","id":"x"}}]}`))
		case "3":
			_, _ = w.Write([]byte(`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"https://elsewhere.example/fhir/Patient?page=4"}],"entry":[]}`))
		}
	})
	_, err := newClient(t, srv.URL+"/fhir", nil).GroupMembers(t.Context(), "g")
	require.ErrorContains(t, err, "is not on the FHIR server")
	require.Len(t, pages, 3, "the relative next link resolves against the base")
	require.Contains(t, pages[0], "_has%3AGroup%3Amember%3A_id=g")
	require.Contains(t, pages[0], "_elements=id")
}

package fetch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// maxGroupBytes bounds a Group read's body: a million members fit easily.
const maxGroupBytes = 256 << 20

// UnsupportedError means the server answered a 4xx to an optional feature
// the client can do without (a Group read, a POST with `patient`): the
// caller should fall back to another way rather than retry.
type UnsupportedError struct {
	Feature string // e.g. "group read"
	HTTPError
}

func (e *UnsupportedError) Error() string {
	return e.Feature + " is not supported by the server: " + e.HTTPError.Error()
}

// Unwrap exposes the HTTP details.
func (e *UnsupportedError) Unwrap() error { return &e.HTTPError }

// GroupMembers reads `GET [base]/Group/{id}` and returns its active members
// as sorted, distinct `Patient/<id>` references: the membership snapshot the
// Group Membership Request Pattern diffs between runs (C49). Members marked
// `inactive: true`, and members that are not Patients, are left out;
// relative, absolute and versioned references are accepted. Retries follow
// KickOff: 429, 5xx and network errors wait and retry, 401 renews the token
// once. 401 and 403 left after that fail as *HTTPError; any other 4xx
// returns an *UnsupportedError so the caller can fall back.
func (c *Client) GroupMembers(ctx context.Context, groupID string) ([]string, error) {
	if groupID == "" {
		return nil, fmt.Errorf("fetch: group read needs a group id")
	}
	x := exchange{
		kind:   "group",
		method: http.MethodGet,
		url:    c.base.String() + "/Group/" + url.PathEscape(groupID),
		accept: "application/fhir+json",
		auth:   true,
	}
	var members []string
	err := c.exchangeRetrying(ctx, x, maxGroupBytes+1, "group read", func(resp *http.Response, body []byte) error {
		switch {
		case resp.StatusCode == http.StatusOK:
			if len(body) > maxGroupBytes {
				return fmt.Errorf("fetch: group read %s: the Group is larger than %d MiB", redact(x.url), maxGroupBytes>>20)
			}
			var err error
			members, err = ParseGroupMembers(body, groupID)
			return err
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return httpError("group", x.url, resp, body)
		case resp.StatusCode >= 400:
			return &UnsupportedError{Feature: "group read", HTTPError: *httpError("group", x.url, resp, body)}
		}
		return httpError("group", x.url, resp, body)
	})
	return members, err
}

// ParseGroupMembers extracts the active Patient members of a Group
// resource (a read's body, or a line of an exported Group file) as sorted,
// distinct `Patient/<id>` references.
func ParseGroupMembers(body []byte, groupID string) ([]string, error) {
	var g struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
		Member       []struct {
			Entity *struct {
				Reference string `json:"reference"`
			} `json:"entity"`
			Inactive bool `json:"inactive"`
		} `json:"member"`
	}
	if err := json.Unmarshal(body, &g); err != nil {
		return nil, fmt.Errorf("fetch: Group/%s: the body is not a FHIR Group: %w", groupID, err)
	}
	if g.ResourceType != "Group" {
		return nil, fmt.Errorf("fetch: Group/%s: got resourceType %q, want Group", groupID, g.ResourceType)
	}
	out := make([]string, 0, len(g.Member))
	for i, m := range g.Member {
		if m.Inactive {
			continue
		}
		if m.Entity == nil || m.Entity.Reference == "" {
			return nil, fmt.Errorf("fetch: Group/%s: member[%d].entity has no reference", groupID, i)
		}
		id, ok := patientID(m.Entity.Reference)
		if !ok {
			continue
		}
		out = append(out, "Patient/"+id)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// patientID returns the id of a (relative, absolute or versioned) Patient
// reference; ok is false for other resource types and contained references.
func patientID(ref string) (string, bool) {
	ref = strings.TrimSpace(ref)
	if i := strings.IndexAny(ref, "?#"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	parts := strings.Split(strings.TrimRight(ref, "/"), "/")
	if len(parts) < 2 || parts[len(parts)-2] != "Patient" || parts[len(parts)-1] == "" {
		return "", false
	}
	return parts[len(parts)-1], true
}

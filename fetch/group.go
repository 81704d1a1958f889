package fetch

import (
	"context"
	"encoding/json"
	"errors"
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

// GroupMembers reads `GET [base]/Group/{id}?_elements=member,quantity`
// and returns its active members as sorted, distinct `Patient/<id>`
// references: the membership snapshot the Group Membership Request Pattern
// diffs between runs (C49) and group_member records. A server that refuses
// `_elements` (400) is asked again without it. When the Group says it has
// more members (`quantity`) than it lists, as servers that truncate large
// Groups do, the members are read instead with the paged search
// `Patient?_has:Group:member:_id={id}&_elements=id` (see searchMembers).
// Members marked `inactive: true`, and members that are not Patients, are
// left out; relative, absolute and versioned references are accepted.
// Retries follow KickOff: 429, 5xx and network errors wait and retry, 401
// renews the token once. 401 and 403 left after that fail as *HTTPError;
// any other 4xx returns an *UnsupportedError so the caller can fall back.
func (c *Client) GroupMembers(ctx context.Context, groupID string) ([]string, error) {
	if groupID == "" {
		return nil, fmt.Errorf("fetch: group read needs a group id")
	}
	read := c.base.String() + "/Group/" + url.PathEscape(groupID)
	g, err := c.readGroup(ctx, read+"?_elements=member,quantity", groupID)
	var ue *UnsupportedError
	if errors.As(err, &ue) && ue.StatusCode == http.StatusBadRequest {
		c.log.Debug("the server refused _elements on the Group read; reading the whole Group", "group", groupID)
		g, err = c.readGroup(ctx, read, groupID)
	}
	if err != nil {
		return nil, err
	}
	if g.quantity > g.listed {
		c.log.Info("the Group lists fewer members than it has; searching them page by page",
			"group", groupID, "listed", g.listed, "quantity", g.quantity)
		return c.searchMembers(ctx, groupID)
	}
	return g.members, nil
}

// groupRead is what a Group read tells: the active Patient members, the
// member entries listed, and the Group's quantity (0 when absent).
type groupRead struct {
	members          []string
	listed, quantity int
}

func (c *Client) readGroup(ctx context.Context, u, groupID string) (groupRead, error) {
	var g groupRead
	err := c.getGroupJSON(ctx, u, "group read", func(body []byte) error {
		var err error
		g, err = parseGroup(body, groupID)
		return err
	})
	return g, err
}

// getGroupJSON GETs one body of a membership read (a Group, or a page of
// the member search) and hands it to parse. Retries follow KickOff; 401
// and 403 left after them fail as *HTTPError, any other 4xx as an
// *UnsupportedError naming feature, so the caller can fall back.
func (c *Client) getGroupJSON(ctx context.Context, u, feature string, parse func(body []byte) error) error {
	x := exchange{kind: "group", method: http.MethodGet, url: u, accept: "application/fhir+json", auth: true}
	return c.exchangeRetrying(ctx, x, maxGroupBytes+1, feature, func(resp *http.Response, body []byte) error {
		switch {
		case resp.StatusCode == http.StatusOK:
			if len(body) > maxGroupBytes {
				return fmt.Errorf("fetch: %s %s: the body is larger than %d MiB", feature, redact(x.url), maxGroupBytes>>20)
			}
			return parse(body)
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return httpError("group", x.url, resp, body)
		case resp.StatusCode >= 400:
			return &UnsupportedError{Feature: feature, HTTPError: *httpError("group", x.url, resp, body)}
		}
		return httpError("group", x.url, resp, body)
	})
}

// ParseGroupMembers extracts the active Patient members of a Group
// resource (a read's body, or a line of an exported Group file) as sorted,
// distinct `Patient/<id>` references.
func ParseGroupMembers(body []byte, groupID string) ([]string, error) {
	g, err := parseGroup(body, groupID)
	return g.members, err
}

func parseGroup(body []byte, groupID string) (groupRead, error) {
	var g struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
		Quantity     int    `json:"quantity"`
		Member       []struct {
			Entity *struct {
				Reference string `json:"reference"`
			} `json:"entity"`
			Inactive bool `json:"inactive"`
		} `json:"member"`
	}
	if err := json.Unmarshal(body, &g); err != nil {
		return groupRead{}, fmt.Errorf("fetch: Group/%s: the body is not a FHIR Group: %w", groupID, err)
	}
	if g.ResourceType != "Group" {
		return groupRead{}, fmt.Errorf("fetch: Group/%s: got resourceType %q, want Group", groupID, g.ResourceType)
	}
	out := make([]string, 0, len(g.Member))
	for i, m := range g.Member {
		if m.Inactive {
			continue
		}
		if m.Entity == nil || m.Entity.Reference == "" {
			return groupRead{}, fmt.Errorf("fetch: Group/%s: member[%d].entity has no reference", groupID, i)
		}
		id, ok := patientID(m.Entity.Reference)
		if !ok {
			continue
		}
		out = append(out, "Patient/"+id)
	}
	slices.Sort(out)
	return groupRead{members: slices.Compact(out), listed: len(g.Member), quantity: g.Quantity}, nil
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

// memberPage is the page size asked of a member search, and maxMemberPages
// bounds how many pages one Group may take (10 M members).
const (
	memberPage     = 1000
	maxMemberPages = 10_000
)

// searchMembers reads a Group's members with the paged search
// `Patient?_has:Group:member:_id={id}&_elements=id&_count=1000`, following
// each searchset's `next` link. A next link to another origin is refused:
// the bearer token goes only to the FHIR server.
func (c *Client) searchMembers(ctx context.Context, groupID string) ([]string, error) {
	q := url.Values{"_has:Group:member:_id": {groupID}, "_elements": {"id"}, "_count": {fmt.Sprint(memberPage)}}
	next := c.base.String() + "/Patient?" + q.Encode()
	var out []string
	for page := 0; next != ""; page++ {
		if page == maxMemberPages {
			return nil, fmt.Errorf("fetch: Group/%s: the member search did not end after %d pages", groupID, page)
		}
		u, err := url.Parse(next)
		if err == nil {
			u = c.base.ResolveReference(u) // a relative link is the server's own
			next = u.String()
		}
		if err != nil || origin(u) != origin(c.base) {
			return nil, fmt.Errorf("fetch: Group/%s: the member search's next link %s is not on the FHIR server", groupID, redact(next))
		}
		this := next
		next = ""
		err = c.getGroupJSON(ctx, this, "group member search", func(body []byte) error {
			ids, link, err := parseMemberPage(body)
			if err != nil {
				return fmt.Errorf("fetch: Group/%s: member search page %d: %w", groupID, page+1, err)
			}
			out, next = append(out, ids...), link
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// parseMemberPage reads one searchset page: the Patient ids as
// references, and the next link ("" on the last page).
func parseMemberPage(body []byte) (refs []string, next string, err error) {
	var b struct {
		ResourceType string `json:"resourceType"`
		Link         []struct {
			Relation string `json:"relation"`
			URL      string `json:"url"`
		} `json:"link"`
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, "", fmt.Errorf("not a FHIR Bundle: %w", err)
	}
	if b.ResourceType != "Bundle" {
		return nil, "", fmt.Errorf("got resourceType %q, want Bundle", b.ResourceType)
	}
	for _, e := range b.Entry {
		// A server may add an OperationOutcome (search mode outcome).
		if e.Resource.ResourceType == "Patient" && e.Resource.ID != "" {
			refs = append(refs, "Patient/"+e.Resource.ID)
		}
	}
	for _, l := range b.Link {
		if l.Relation == "next" {
			next = l.URL
		}
	}
	return refs, next, nil
}

package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// KickOff starts an export and returns its absolute status URL. Persist it
// before calling Wait, so a restart resumes instead of exporting twice (C22).
// 429, 5xx and network errors are retried (Retry-After honoured); 401 renews
// the token once; other 4xx fail with the server's OperationOutcome text.
func (c *Client) KickOff(ctx context.Context, r Request) (string, error) {
	x, err := c.kickOffExchange(r)
	if err != nil {
		return "", err
	}
	var status string
	err = c.exchangeRetrying(ctx, x, 64<<10, "kick-off", func(resp *http.Response, body []byte) error {
		if resp.StatusCode != http.StatusAccepted {
			return httpError("kickoff", x.url, resp, body)
		}
		loc := resp.Header.Get("Content-Location")
		if loc == "" {
			return fmt.Errorf("fetch: kick-off %s: 202 Accepted without Content-Location (C21)", redact(x.url))
		}
		abs, err := resolve(x.url, loc)
		if err != nil {
			return fmt.Errorf("fetch: kick-off: bad Content-Location %q: %w", loc, err)
		}
		c.log.Debug("export kicked off", "level", r.Level, "method", x.method, "status_url", redact(abs))
		status = abs
		return nil
	})
	return status, err
}

// exchangeRetrying sends x until the answer is neither transient (a
// network error, 429 or 5xx: retried as retryOrFail says) nor a first 401
// while auth is on (the token is renewed once), and returns what final
// makes of that answer. what names the request in network errors.
func (c *Client) exchangeRetrying(ctx context.Context, x exchange, limit int64, what string, final func(*http.Response, []byte) error) error {
	authRetried := false
	for attempt := 0; ; attempt++ {
		resp, body, tok, err := c.timed(ctx, x, limit) //nolint:bodyclose // timed reads and closes the body
		var wait error
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			wait = c.retryOrFail(ctx, attempt, nil, "network", fmt.Errorf("fetch: %s %s: %w", what, redact(x.url), err))
		case resp.StatusCode == http.StatusUnauthorized && c.o.Auth != nil && !authRetried:
			c.o.Auth.Invalidate(tok)
			c.obs.Retry("auth")
			authRetried = true
			attempt--
			continue
		case resp.StatusCode == http.StatusTooManyRequests:
			wait = c.retryOrFail(ctx, attempt, resp, "429", httpError(x.kind, x.url, resp, body))
		case resp.StatusCode >= 500:
			wait = c.retryOrFail(ctx, attempt, resp, "5xx", httpError(x.kind, x.url, resp, body))
		default:
			return final(resp, body)
		}
		if wait != nil {
			return wait
		}
	}
}

// retryOrFail waits before attempt+1, or returns cause once retries are spent.
func (c *Client) retryOrFail(ctx context.Context, attempt int, resp *http.Response, reason string, cause error) error {
	if attempt >= c.o.Retries {
		return fmt.Errorf("%w (gave up after %d retries)", cause, attempt)
	}
	c.obs.Retry(reason)
	d := c.waitFor(resp, attempt, c.retryLimit())
	c.log.Debug("retrying", "reason", reason, "wait", d, "attempt", attempt+1)
	if err := sleep(ctx, d); err != nil {
		return err
	}
	return nil
}

// kickOffExchange builds the kick-off request (C12-C20).
func (c *Client) kickOffExchange(r Request) (exchange, error) {
	path, err := kickOffPath(r)
	if err != nil {
		return exchange{}, err
	}
	for _, f := range r.TypeFilters {
		if err := checkTypeFilter(f); err != nil {
			return exchange{}, err
		}
	}
	post, err := kickOffPost(r)
	if err != nil {
		return exchange{}, err
	}
	prefer := "respond-async"
	if r.Lenient {
		prefer += ", handling=lenient"
	}
	x := exchange{
		kind:   "kickoff",
		method: http.MethodGet,
		url:    c.base.String() + path,
		accept: "application/fhir+json",
		header: http.Header{"Prefer": {prefer}},
		auth:   true,
	}
	names := paramNames{since: "_since", format: "_outputFormat"}
	if r.Compat == "2018-draft" {
		names = paramNames{since: "start", format: "outputFormat"}
	} else if r.Compat != "" {
		return exchange{}, fmt.Errorf("fetch: unknown compat %q (want \"\" or 2018-draft)", r.Compat)
	}
	if !post {
		if enc := kickOffQuery(r, names).Encode(); enc != "" {
			x.url += "?" + enc
		}
		return x, nil
	}
	body, err := kickOffParameters(r, names)
	if err != nil {
		return exchange{}, err
	}
	x.method, x.body, x.contentType = http.MethodPost, body, "application/fhir+json"
	return x, nil
}

// kickOffPath is the $export path of the request's level.
func kickOffPath(r Request) (string, error) {
	switch r.Level {
	case LevelSystem, "":
		if len(r.Patients) > 0 {
			return "", errors.New("fetch: the patient parameter is not valid for a system-level export")
		}
		return "/$export", nil
	case LevelPatient:
		return "/Patient/$export", nil
	case LevelGroup:
		if r.GroupID == "" {
			return "", errors.New("fetch: a group-level export needs a group id")
		}
		return "/Group/" + url.PathEscape(r.GroupID) + "/$export", nil
	}
	return "", fmt.Errorf("fetch: unknown export level %q (want system, patient or group)", r.Level)
}

// kickOffPost reports whether the kick-off is a POST: when asked, or when
// the patient parameter (POST-only) is set under method auto.
func kickOffPost(r Request) (bool, error) {
	switch strings.ToLower(r.Method) {
	case "", "auto":
		return len(r.Patients) > 0, nil
	case "get":
		if len(r.Patients) > 0 {
			return false, errors.New("fetch: the patient parameter needs POST (method get was configured)")
		}
		return false, nil
	case "post":
		return true, nil
	}
	return false, fmt.Errorf("fetch: unknown kick-off method %q (want auto, get or post)", r.Method)
}

// paramNames are the kick-off parameters whose names changed after the
// 2018 draft.
type paramNames struct{ since, format string }

// kickOffQuery is the GET kick-off's query.
func kickOffQuery(r Request, n paramNames) url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set(n.format, r.OutputFormat)
	set(n.since, r.Since)
	set("_until", r.Until)
	set("_type", strings.Join(r.Types, ","))
	set("_elements", strings.Join(r.Elements, ","))
	set("includeAssociatedData", strings.Join(r.IncludeAssociatedData, ","))
	set("organizeOutputBy", r.OrganizeOutputBy)
	if r.AllowPartialManifests {
		q.Set("allowPartialManifests", "true")
	}
	for _, f := range r.TypeFilters {
		q.Add("_typeFilter", f)
	}
	return q
}

// kickOffParameters is the POST kick-off's Parameters resource.
func kickOffParameters(r Request, n paramNames) ([]byte, error) {
	type param struct {
		Name           string          `json:"name"`
		ValueString    string          `json:"valueString,omitempty"`
		ValueInstant   string          `json:"valueInstant,omitempty"`
		ValueCode      string          `json:"valueCode,omitempty"`
		ValueBoolean   *bool           `json:"valueBoolean,omitempty"`
		ValueReference json.RawMessage `json:"valueReference,omitempty"`
	}
	var ps []param
	str := func(k, v string) {
		if v != "" {
			ps = append(ps, param{Name: k, ValueString: v})
		}
	}
	str(n.format, r.OutputFormat)
	if r.Since != "" {
		ps = append(ps, param{Name: n.since, ValueInstant: r.Since})
	}
	if r.Until != "" {
		ps = append(ps, param{Name: "_until", ValueInstant: r.Until})
	}
	str("_type", strings.Join(r.Types, ","))
	str("_elements", strings.Join(r.Elements, ","))
	for _, f := range r.TypeFilters {
		str("_typeFilter", f)
	}
	for _, p := range r.Patients {
		ref := p
		if !strings.Contains(ref, "/") {
			ref = "Patient/" + ref
		}
		b, err := json.Marshal(map[string]string{"reference": ref})
		if err != nil {
			return nil, err
		}
		ps = append(ps, param{Name: "patient", ValueReference: b})
	}
	for _, v := range r.IncludeAssociatedData {
		ps = append(ps, param{Name: "includeAssociatedData", ValueCode: v})
	}
	str("organizeOutputBy", r.OrganizeOutputBy)
	if r.AllowPartialManifests {
		t := true
		ps = append(ps, param{Name: "allowPartialManifests", ValueBoolean: &t})
	}
	return json.Marshal(struct {
		ResourceType string  `json:"resourceType"`
		Parameter    []param `json:"parameter"`
	}{"Parameters", ps})
}

// checkTypeFilter rejects result parameters inside a _typeFilter (C16).
func checkTypeFilter(f string) error {
	typ, query, ok := strings.Cut(f, "?")
	if !ok || typ == "" || query == "" {
		return fmt.Errorf("fetch: _typeFilter %q must look like Type?param=value", f)
	}
	vals, err := url.ParseQuery(query)
	if err != nil {
		return fmt.Errorf("fetch: _typeFilter %q: %w", f, err)
	}
	for k := range vals {
		switch strings.SplitN(k, ":", 2)[0] {
		case "_include", "_revinclude", "_sort", "_elements", "_count", "_summary", "_total", "_contained", "_containedType":
			return fmt.Errorf("fetch: _typeFilter %q uses result parameter %s, which the spec forbids (C16)", f, k)
		}
	}
	return nil
}

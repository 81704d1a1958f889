package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/fhirferry/fhirferry/configs"
)

// Client is a Bulk Data client for one server. It is safe for concurrent use.
type Client struct {
	o    Options
	base *url.URL
	hc   *http.Client
	log  *slog.Logger
	obs  Observer
}

// New validates o, applies defaults and builds a Client. It makes no
// network calls.
func New(o Options) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(o.BaseURL, "/"))
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("fetch: base URL %q must be an absolute http(s) URL", o.BaseURL)
	}
	if base.Scheme != "http" && base.Scheme != "https" {
		return nil, fmt.Errorf("fetch: base URL %q: scheme must be http or https", o.BaseURL)
	}
	if o.Parallel <= 0 {
		o.Parallel = configs.DefaultParallel
	}
	if o.Retries < 0 {
		return nil, fmt.Errorf("fetch: Retries must be >= 0, got %d", o.Retries)
	}
	if o.MinWait <= 0 {
		o.MinWait = configs.DefaultMinWait
	}
	if o.MaxWait <= 0 {
		o.MaxWait = configs.DefaultMaxWait
	}
	if o.MaxWait < o.MinWait {
		return nil, fmt.Errorf("fetch: MaxWait %s is below MinWait %s", o.MaxWait, o.MinWait)
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = configs.DefaultRequestTimeout
	}
	if o.ExportTimeout <= 0 {
		o.ExportTimeout = configs.DefaultExportTimeout
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = configs.DefaultMaxLineBytes
	}
	if o.UserAgent == "" {
		o.UserAgent = configs.DefaultUserAgent
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	hc := &http.Client{}
	if o.HTTPClient != nil {
		cp := *o.HTTPClient
		hc = &cp
	}
	hc.CheckRedirect = stripAuthOnOriginChange(hc.CheckRedirect)
	obs := o.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	return &Client{o: o, base: base, hc: hc, log: lg, obs: obs}, nil
}

type nopObserver struct{}

func (nopObserver) Retry(string)            {}
func (nopObserver) HTTPStatus(string, int)  {}
func (nopObserver) Bytes(string, int64)     {}
func (nopObserver) Progress(string, string) {}

// stripAuthOnOriginChange drops Authorization once a redirect chain has left
// the origin of the first request (C35). Go's default keeps it for
// subdomains; we are stricter. It then defers to next (or Go's 10-hop rule).
func stripAuthOnOriginChange(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) > 0 {
			first := origin(via[0].URL)
			left := origin(req.URL) != first
			for _, v := range via[1:] {
				left = left || origin(v.URL) != first
			}
			if left {
				req.Header.Del("Authorization")
			}
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
}

// origin is scheme://host:port with the default port made explicit.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// exchange is one HTTP request description.
type exchange struct {
	kind        string // kickoff, status, file, delete, attachment
	method      string
	url         string
	accept      string
	body        []byte
	contentType string
	header      http.Header
	auth        bool // send the bearer token (if Options.Auth is set)
}

// send performs one HTTP exchange. It returns the token used (for
// Invalidate after a 401). The caller closes the response body.
func (c *Client) send(ctx context.Context, x exchange) (*http.Response, string, error) {
	var body io.Reader
	if x.body != nil {
		body = bytes.NewReader(x.body)
	}
	req, err := http.NewRequestWithContext(ctx, x.method, x.url, body)
	if err != nil {
		return nil, "", fmt.Errorf("fetch: %s: build request: %w", x.kind, err)
	}
	for k, v := range x.header {
		req.Header[k] = v
	}
	if x.accept != "" {
		req.Header.Set("Accept", x.accept)
	}
	if x.contentType != "" {
		req.Header.Set("Content-Type", x.contentType)
	}
	req.Header.Set("User-Agent", c.o.UserAgent)
	var tok string
	if x.auth && c.o.Auth != nil {
		tok, err = c.o.Auth.Token(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("fetch: %s: get access token: %w", x.kind, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, tok, err
	}
	c.obs.HTTPStatus(x.kind, resp.StatusCode)
	return resp, tok, nil
}

// timed runs send under Options.RequestTimeout and reads the whole (small)
// body, bounded to limit bytes, so callers never hold a connection open.
func (c *Client) timed(ctx context.Context, x exchange, limit int64) (*http.Response, []byte, string, error) {
	rctx, cancel := context.WithTimeout(ctx, c.o.RequestTimeout)
	defer cancel()
	resp, tok, err := c.send(rctx, x)
	if err != nil {
		return nil, nil, tok, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	c.obs.Bytes(x.kind, int64(len(b)))
	if err != nil {
		return nil, nil, tok, err
	}
	return resp, b, tok, nil
}

// httpError builds a readable error from a response and its (prefix of) body.
func httpError(kind, u string, resp *http.Response, body []byte) *HTTPError {
	e := &HTTPError{Kind: kind, URL: u, StatusCode: resp.StatusCode, ContentType: resp.Header.Get("Content-Type")}
	if issues, ok := parseOutcome(body); ok {
		e.Issues = issues
	} else {
		e.Body = snippet(body, 200)
	}
	return e
}

// snippet returns the first n bytes of b as printable text.
func snippet(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	s := strings.ToValidUTF8(string(b), "?")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if r < 0x20 || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

// parseOutcome returns the issues of an OperationOutcome body.
func parseOutcome(b []byte) ([]Issue, bool) {
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Severity    string `json:"severity"`
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
			Details     struct {
				Text string `json:"text"`
			} `json:"details"`
		} `json:"issue"`
	}
	if err := json.Unmarshal(b, &oo); err != nil || oo.ResourceType != "OperationOutcome" {
		return nil, false
	}
	out := make([]Issue, len(oo.Issue))
	for i, is := range oo.Issue {
		out[i] = Issue{Severity: is.Severity, Code: is.Code, Diagnostics: is.Diagnostics, Details: is.Details.Text}
	}
	return out, true
}

// transientCodes is the FHIR IssueType "transient" family (C28).
var transientCodes = map[string]bool{
	"transient": true, "lock-error": true, "no-store": true, "exception": true,
	"timeout": true, "incomplete": true, "throttled": true,
}

// allTransient reports whether issues is non-empty and every code is transient.
func allTransient(issues []Issue) bool {
	for _, is := range issues {
		if !transientCodes[is.Code] {
			return false
		}
	}
	return len(issues) > 0
}

// resolve resolves ref against the URL base (tolerating relative references).
func resolve(base, ref string) (string, error) {
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	r, err := url.Parse(strings.TrimSpace(ref))
	if err != nil {
		return "", err
	}
	return b.ResolveReference(r).String(), nil
}

// redact drops the query string and fragment, which may hold a signed-URL secret.
func redact(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		return u[:i]
	}
	return u
}

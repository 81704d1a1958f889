package fetch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Wait polls statusURL until the export completes and returns the manifest,
// with every `link` next page fetched and merged. 202 waits (Retry-After
// clamped, else exponential backoff with jitter); 429 waits; a 4xx/5xx whose
// OperationOutcome is all-transient waits; network errors and non-FHIR 5xx
// are retried up to Options.Retries times in a row. 404 returns
// ErrExportGone. Other failures return a *JobError. When ExportTimeout
// elapses the job is DELETEd and ErrExportTimeout returned.
func (c *Client) Wait(ctx context.Context, statusURL string) (*Manifest, error) {
	wctx, cancel := context.WithTimeout(ctx, c.o.ExportTimeout)
	defer cancel()
	m, err := c.wait(wctx, statusURL)
	if err != nil && ctx.Err() == nil && errors.Is(wctx.Err(), context.DeadlineExceeded) {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), c.o.RequestTimeout)
		defer dcancel()
		derr := c.Delete(dctx, statusURL)
		if derr != nil && !errors.Is(derr, ErrExportGone) {
			return nil, errors.Join(fmt.Errorf("%w after %s", ErrExportTimeout, c.o.ExportTimeout), derr)
		}
		return nil, fmt.Errorf("%w after %s (job deleted)", ErrExportTimeout, c.o.ExportTimeout)
	}
	return m, err
}

func (c *Client) wait(ctx context.Context, statusURL string) (*Manifest, error) {
	p := &statusPoll{c: c, statusURL: statusURL, page: statusURL}
	for {
		m, err := p.step(ctx)
		if m != nil || err != nil {
			return m, err
		}
	}
}

// statusPoll is the state of one Wait: the page polled (manifests may be
// paged), the pages merged so far and the counters of the backoffs.
type statusPoll struct {
	c               *Client
	statusURL, page string
	merged          *Manifest
	polls, failures int
	authRetried     bool
}

// step polls once. It returns the manifest when the export is complete,
// an error when it failed, and neither when the poll is to be repeated
// (after the wait step has already slept).
func (p *statusPoll) step(ctx context.Context) (*Manifest, error) {
	c := p.c
	x := exchange{kind: "status", method: http.MethodGet, url: p.page, accept: "application/json", auth: true}
	resp, body, tok, err := c.timed(ctx, x, 256<<20) //nolint:bodyclose // timed reads and closes the body
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		err = c.retryOrFail(ctx, p.failures, nil, "network", fmt.Errorf("fetch: status %s: %w", redact(p.page), err))
		p.failures++
		return nil, err
	}
	code := resp.StatusCode
	if code == http.StatusUnauthorized && c.o.Auth != nil && !p.authRetried {
		c.o.Auth.Invalidate(tok)
		c.obs.Retry("auth")
		p.authRetried = true
		return nil, nil
	}
	p.authRetried = false
	switch code {
	case http.StatusOK:
		p.failures = 0
		return p.manifestPage(resp, body)
	case http.StatusAccepted:
		p.failures = 0
		if pr := resp.Header.Get("X-Progress"); pr != "" {
			c.obs.Progress(p.statusURL, pr)
			c.log.Debug("export in progress", "progress", pr)
		}
		return nil, p.pollAgain(ctx, resp)
	case http.StatusTooManyRequests:
		c.obs.Retry("429")
		return nil, p.pollAgain(ctx, resp)
	case http.StatusNotFound:
		return nil, fmt.Errorf("%w: %w", ErrExportGone, httpError("status", p.page, resp, body))
	}
	return nil, p.failed(ctx, resp, body)
}

// pollAgain waits before the next poll of a running export.
func (p *statusPoll) pollAgain(ctx context.Context, resp *http.Response) error {
	err := sleep(ctx, p.c.waitFor(resp, p.polls, p.c.pollLimit()))
	p.polls++
	return err
}

// manifestPage merges one page of the manifest and moves to the next one,
// returning the whole manifest after the last page.
func (p *statusPoll) manifestPage(resp *http.Response, body []byte) (*Manifest, error) {
	m, next, err := parseManifest(body, p.page, resp)
	if err != nil {
		return nil, err
	}
	if p.merged == nil {
		p.merged = m
		p.merged.StatusURL = p.statusURL
	} else {
		p.merged.merge(m)
	}
	if next != "" {
		p.page, p.polls = next, 0
		return nil, nil
	}
	p.merged.reindex()
	p.c.log.Debug("export complete", "status_url", redact(p.statusURL), "output", len(p.merged.Output),
		"deleted", len(p.merged.Deleted), "error", len(p.merged.Error), "transaction_time", p.merged.TransactionTime)
	return p.merged, nil
}

// failed handles an error status: auth problems and job errors end the
// wait; transient OperationOutcomes and a gateway's non-FHIR 5xx are
// waited out.
func (p *statusPoll) failed(ctx context.Context, resp *http.Response, body []byte) error {
	c, code := p.c, resp.StatusCode
	he := httpError("status", p.page, resp, body)
	if code == http.StatusUnauthorized || code == http.StatusForbidden {
		return he // an auth problem, not a statement about the job
	}
	if allTransient(he.Issues) {
		p.failures = 0
		c.obs.Retry("5xx")
		c.log.Debug("transient status error, job still running", "code", code)
		return p.pollAgain(ctx, resp)
	}
	if he.Issues == nil && code >= 500 {
		// A gateway's non-FHIR 5xx says nothing about the job: retry.
		err := c.retryOrFail(ctx, p.failures, resp, "5xx", he)
		p.failures++
		return err
	}
	return &JobError{HTTPError: *he}
}

// Delete sends DELETE to the status URL: it cancels a running job, or tells
// the server the client is done with a completed one (C50, C51). Call it
// only after every file is durably stored. A 404 returns ErrExportGone.
func (c *Client) Delete(ctx context.Context, statusURL string) error {
	x := exchange{kind: "delete", method: http.MethodDelete, url: statusURL, accept: "application/fhir+json", auth: true}
	return c.exchangeRetrying(ctx, x, 64<<10, "delete", func(resp *http.Response, body []byte) error {
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			c.log.Debug("export deleted", "status_url", redact(statusURL))
			return nil
		case resp.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%w: %w", ErrExportGone, httpError("delete", statusURL, resp, body))
		}
		return httpError("delete", statusURL, resp, body)
	})
}

// refresh re-GETs a completed export's status URL for fresh file links
// (C41). It fails fast rather than waiting: the job was already complete.
func (c *Client) refresh(ctx context.Context, statusURL string) (*Manifest, error) {
	rctx, cancel := context.WithTimeout(ctx, max(c.o.RequestTimeout, 10*time.Minute))
	defer cancel()
	return c.wait(rctx, statusURL)
}

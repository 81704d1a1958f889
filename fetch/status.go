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
	var merged *Manifest
	page := statusURL
	polls, failures := 0, 0
	authRetried := false
	for {
		x := exchange{kind: "status", method: http.MethodGet, url: page, accept: "application/json", auth: true}
		resp, body, tok, err := c.timed(ctx, x, 256<<20)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err := c.retryOrFail(ctx, failures, nil, "network", fmt.Errorf("fetch: status %s: %w", redact(page), err)); err != nil {
				return nil, err
			}
			failures++
			continue
		}
		code := resp.StatusCode
		if code == http.StatusUnauthorized && c.o.Auth != nil && !authRetried {
			c.o.Auth.Invalidate(tok)
			c.obs.Retry("auth")
			authRetried = true
			continue
		}
		authRetried = false
		switch {
		case code == http.StatusOK:
			failures = 0
			m, next, err := parseManifest(body, page, resp)
			if err != nil {
				return nil, err
			}
			if merged == nil {
				merged = m
				merged.StatusURL = statusURL
			} else {
				merged.merge(m)
			}
			if next == "" {
				merged.reindex()
				c.log.Debug("export complete", "status_url", redact(statusURL), "output", len(merged.Output),
					"deleted", len(merged.Deleted), "error", len(merged.Error), "transaction_time", merged.TransactionTime)
				return merged, nil
			}
			page, polls = next, 0
			continue
		case code == http.StatusAccepted:
			failures = 0
			if p := resp.Header.Get("X-Progress"); p != "" {
				c.obs.Progress(statusURL, p)
				c.log.Debug("export in progress", "progress", p)
			}
			if err := sleep(ctx, c.waitFor(resp, polls, c.pollLimit())); err != nil {
				return nil, err
			}
			polls++
			continue
		case code == http.StatusTooManyRequests:
			c.obs.Retry("429")
			if err := sleep(ctx, c.waitFor(resp, polls, c.pollLimit())); err != nil {
				return nil, err
			}
			polls++
			continue
		case code == http.StatusNotFound:
			return nil, fmt.Errorf("%w: %w", ErrExportGone, httpError("status", page, resp, body))
		}
		he := httpError("status", page, resp, body)
		if code == http.StatusUnauthorized || code == http.StatusForbidden {
			return nil, he // an auth problem, not a statement about the job
		}
		if allTransient(he.Issues) {
			failures = 0
			c.obs.Retry("5xx")
			c.log.Debug("transient status error, job still running", "code", code)
			if err := sleep(ctx, c.waitFor(resp, polls, c.pollLimit())); err != nil {
				return nil, err
			}
			polls++
			continue
		}
		if he.Issues == nil && code >= 500 {
			// A gateway's non-FHIR 5xx says nothing about the job: retry.
			if err := c.retryOrFail(ctx, failures, resp, "5xx", he); err != nil {
				return nil, err
			}
			failures++
			continue
		}
		return nil, &JobError{HTTPError: *he}
	}
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

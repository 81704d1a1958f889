package fetch

import (
	"errors"
	"fmt"
	"strings"
)

// ErrExportGone means the status URL answered 404: the job is unknown,
// purged or cancelled. Kick off again with the same _since watermark.
var ErrExportGone = errors.New("fetch: export job gone (404 at status URL)")

// ErrExportTimeout means Options.ExportTimeout elapsed; the job was DELETEd.
var ErrExportTimeout = errors.New("fetch: export timed out")

// Issue is one OperationOutcome issue.
type Issue struct {
	Severity    string `json:"severity"`
	Code        string `json:"code"`
	Diagnostics string `json:"diagnostics,omitempty"`
	Details     string `json:"details,omitempty"` // details.text
}

func (i Issue) String() string {
	s := i.Severity + "/" + i.Code
	if i.Details != "" {
		s += ": " + i.Details
	}
	if i.Diagnostics != "" {
		s += ": " + i.Diagnostics
	}
	return s
}

// HTTPError is a non-retryable or retries-exhausted HTTP failure. Body is a
// short, printable prefix of a non-FHIR body; Issues holds the
// OperationOutcome issues when the body was one.
type HTTPError struct {
	Kind        string // kickoff, status, file, delete, attachment
	URL         string
	StatusCode  int
	ContentType string
	Issues      []Issue
	Body        string
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fetch: %s %s: HTTP %d", e.Kind, redact(e.URL), e.StatusCode)
	if len(e.Issues) > 0 {
		parts := make([]string, len(e.Issues))
		for i, is := range e.Issues {
			parts[i] = is.String()
		}
		b.WriteString(": " + strings.Join(parts, "; "))
	} else if e.Body != "" || e.ContentType != "" {
		fmt.Fprintf(&b, " (%s): %q", e.ContentType, e.Body)
	}
	return b.String()
}

// JobError means the server reported the export job itself failed (a
// 4xx/5xx status response whose OperationOutcome is not all-transient).
type JobError struct{ HTTPError }

func (e *JobError) Error() string { return "export job failed: " + e.HTTPError.Error() }

// Unwrap exposes the HTTP details.
func (e *JobError) Unwrap() error { return &e.HTTPError }

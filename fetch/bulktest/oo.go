package bulktest

import (
	"net/http"
	"strconv"
	"time"
)

// writeOO answers status with a one-issue OperationOutcome.
func writeOO(w http.ResponseWriter, status int, severity, code, diagnostics string) {
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	_, _ = w.Write(ooJSON(nil, severity, code, diagnostics))
}

func ooJSON(b []byte, severity, code, diagnostics string) []byte {
	x := w{b: b}
	x.raw(`{"resourceType":"OperationOutcome","issue":[{"severity":"`)
	x.raw(severity)
	x.raw(`","code":"`)
	x.raw(code)
	x.raw(`","diagnostics":`)
	x.str(diagnostics)
	x.raw(`}]}`)
	return x.b
}

// retryAfter renders a Retry-After value in the configured style. Callers
// hold s.mu.
func (s *Server) retryAfterLocked() string {
	switch s.faults.RetryAfterStyle {
	case "http-date":
		return time.Now().Add(time.Second).UTC().Format(http.TimeFormat)
	case "malformed":
		// The reference server's rate limiter sends an absolute epoch,
		// in seconds on one branch and milliseconds on another.
		s.malfSeq++
		if s.malfSeq%2 == 1 {
			return strconv.FormatInt(time.Now().Add(5*time.Minute).Unix(), 10)
		}
		return strconv.FormatInt(time.Now().Add(5*time.Minute).UnixMilli(), 10)
	case "zero":
		return "0"
	}
	return s.opts.RetryAfter
}

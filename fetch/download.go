package fetch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/valyala/fastjson"
)

// Download failure classes.
const (
	classFatal   = iota
	classRetry   // 5xx, 429, network, truncation: retry with backoff
	classAuth    // 401 with a token: invalidate and retry once
	classExpired // 404/410, or 403 after Expires: refresh the manifest
)

type dlError struct {
	class  int
	reason string // Observer retry reason
	resp   *http.Response
	token  string
	err    error
}

func (e *dlError) Error() string { return e.err.Error() }
func (e *dlError) Unwrap() error { return e.err }

// Download fetches one file into path, gzip-compressed (a gzip response is
// stored as received), atomically: temp file, fsync, rename. It retries
// 5xx, 429, network errors and truncation (gzip EOF, Content-Length
// mismatch, invalid last line, fewer lines than count) with backoff;
// renews the token once on 401; on 404/410 (or 403 after Expires) re-GETs
// the status URL for a fresh link to the same file. Other 4xx, including
// 413, fail at once. It never DELETEs the job.
func (c *Client) Download(ctx context.Context, m *Manifest, f File, path string) (Spooled, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return Spooled{}, fmt.Errorf("fetch: spool dir: %w", err)
	}
	u := f.URL
	retries, refreshes := 0, 0
	authRetried := false
	shortLines := int64(-1)
	for {
		sp, tmp, err := c.fetchFile(ctx, m, f, u, path)
		if err == nil {
			short := f.Count >= 0 && f.Kind != KindError && sp.Lines < f.Count
			if short && sp.Lines != shortLines {
				// Possibly cut at a line boundary: download again; the
				// same short count twice means the count is just wrong.
				shortLines = sp.Lines
				os.Remove(tmp)
				err = &dlError{class: classRetry, reason: "truncated",
					err: fmt.Errorf("fetch: file %s: %d lines, fewer than the manifest count %d", redact(u), sp.Lines, f.Count)}
			} else {
				if sp.Lines != f.Count && f.Count >= 0 && f.Kind != KindError {
					c.log.Warn("file line count differs from manifest count", "kind", f.Kind, "index", f.Index, "type", f.Type, "lines", sp.Lines, "count", f.Count)
				}
				if err := os.Rename(tmp, path); err != nil {
					os.Remove(tmp)
					return Spooled{}, fmt.Errorf("fetch: store %s: %w", path, err)
				}
				sp.Path = path
				return sp, nil
			}
		}
		var de *dlError
		if !errors.As(err, &de) {
			return Spooled{}, err
		}
		switch de.class {
		case classAuth:
			if authRetried || c.o.Auth == nil {
				return Spooled{}, de.err
			}
			authRetried = true
			c.o.Auth.Invalidate(de.token)
			c.obs.Retry("auth")
			continue
		case classExpired:
			if refreshes >= 2 || m.StatusURL == "" {
				return Spooled{}, de.err
			}
			refreshes++
			c.obs.Retry("expired")
			nu, rerr := c.freshURL(ctx, m, f)
			if rerr != nil {
				return Spooled{}, errors.Join(de.err, rerr)
			}
			c.log.Info("file link expired, using refreshed manifest", "kind", f.Kind, "index", f.Index)
			u = nu
			continue
		case classRetry:
			if retries >= c.o.Retries {
				return Spooled{}, fmt.Errorf("%w (gave up after %d retries)", de.err, retries)
			}
			c.obs.Retry(de.reason)
			d := c.waitFor(de.resp, retries, c.retryLimit())
			retries++
			c.log.Debug("retrying file", "kind", f.Kind, "index", f.Index, "reason", de.reason, "wait", d)
			if err := sleep(ctx, d); err != nil {
				return Spooled{}, err
			}
			continue
		}
		return Spooled{}, de.err
	}
}

// freshURL re-GETs the status URL and returns the same file's new link.
func (c *Client) freshURL(ctx context.Context, m *Manifest, f File) (string, error) {
	nm, err := c.refresh(ctx, m.StatusURL)
	if err != nil {
		return "", fmt.Errorf("fetch: refresh manifest: %w", err)
	}
	files := nm.Files()
	if f.Index >= len(files) || files[f.Index].Kind != f.Kind || files[f.Index].Type != f.Type {
		return "", fmt.Errorf("fetch: refreshed manifest no longer lists %s file %d (%s)", f.Kind, f.Index, f.Type)
	}
	return files[f.Index].URL, nil
}

// fetchFile makes one download attempt into a temp file beside path and
// returns its stats and temp name; on error the temp file is removed.
func (c *Client) fetchFile(ctx context.Context, m *Manifest, f File, u, path string) (sp Spooled, tmpName string, err error) {
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(c.o.RequestTimeout, cancel)
	defer idle.Stop()
	resp, tok, err := c.send(ictx, exchange{
		kind: "file", method: http.MethodGet, url: u, accept: "application/fhir+ndjson",
		header: http.Header{"Accept-Encoding": {"gzip"}}, auth: m.RequiresAccessToken,
	})
	if err != nil {
		if ctx.Err() != nil {
			return sp, "", ctx.Err()
		}
		return sp, "", &dlError{class: classRetry, reason: "network", err: fmt.Errorf("fetch: file %s: %w", redact(u), err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sp, "", fileStatusError(m, u, tok, resp)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" && !strings.Contains(ct, "ndjson") {
		c.log.Warn("file has an unexpected Content-Type; parsing it as NDJSON anyway", "kind", f.Kind, "index", f.Index, "content_type", ct)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".part-*")
	if err != nil {
		return sp, "", fmt.Errorf("fetch: spool: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	wire := &meter{r: resp.Body, idle: idle, timeout: c.o.RequestTimeout, obs: c.obs}
	bw := bufio.NewWriterSize(tmp, 256<<10)
	decoded, gzw, closeDecoder, err := c.decoder(ctx, resp, wire, bw, u)
	if err != nil {
		return sp, "", err
	}
	defer closeDecoder()
	plain := &meter{r: decoded}
	sp, err = c.scan(ctx, f, u, plain)
	wire.flush()
	sp.File, sp.Bytes, sp.WireBytes = f, plain.n, wire.n
	if err != nil {
		return sp, "", err
	}
	if resp.ContentLength >= 0 && wire.n != resp.ContentLength {
		return sp, "", &dlError{class: classRetry, reason: "truncated",
			err: fmt.Errorf("fetch: file %s: got %d bytes, Content-Length said %d", redact(u), wire.n, resp.ContentLength)}
	}
	if gzw != nil {
		if err = gzw.Close(); err != nil {
			return sp, "", fmt.Errorf("fetch: spool %s: %w", path, err)
		}
	}
	if err = bw.Flush(); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return sp, "", fmt.Errorf("fetch: spool %s: %w", path, err)
	}
	return sp, tmp.Name(), nil
}

// fileStatusError classifies a file download's error status: a 401 with
// a token is renewed, an expired link refreshed, a throttled or failing
// server retried; anything else fails the download.
func fileStatusError(m *Manifest, u, tok string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	he := httpError("file", u, resp, body)
	code := resp.StatusCode
	switch {
	case code == http.StatusUnauthorized && tok != "":
		return &dlError{class: classAuth, token: tok, err: he}
	case code == http.StatusUnauthorized:
		return fmt.Errorf("%w (no token was sent: the manifest says requiresAccessToken=%v)", he, m.RequiresAccessToken)
	case code == http.StatusNotFound || code == http.StatusGone:
		return &dlError{class: classExpired, err: he}
	case code == http.StatusForbidden && (m.Expires.IsZero() || m.Expired(time.Now())):
		return &dlError{class: classExpired, err: he}
	case code == http.StatusTooManyRequests:
		return &dlError{class: classRetry, reason: "429", resp: resp, err: he}
	case code >= 500:
		return &dlError{class: classRetry, reason: "5xx", resp: resp, err: he}
	}
	return he
}

// decoder returns the plain NDJSON of a download. The spool always holds
// gzip: a gzip body is teed to bw as received, any other is compressed
// into bw through gzw (nil for a gzip body), which the caller closes to
// finish the spool. closeDecoder releases the decompressor.
func (c *Client) decoder(ctx context.Context, resp *http.Response, wire io.Reader, bw io.Writer, u string) (decoded io.Reader, gzw *gzip.Writer, closeDecoder func(), err error) {
	enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding")))
	switch enc {
	case "gzip", "x-gzip":
		// A large buffer keeps socket reads big; gzip would add a 4 KiB one.
		zr, zerr := gzip.NewReader(bufio.NewReaderSize(io.TeeReader(wire, bw), 128<<10))
		if zerr != nil {
			return nil, nil, nil, c.readError(ctx, u, zerr)
		}
		return zr, nil, func() { _ = zr.Close() }, nil
	case "", "identity":
		gzw, _ = gzip.NewWriterLevel(bw, gzip.BestSpeed)
		return io.TeeReader(wire, gzw), gzw, func() {}, nil
	case "deflate":
		gzw, _ = gzip.NewWriterLevel(bw, gzip.BestSpeed)
		fr := flate.NewReader(wire)
		return io.TeeReader(fr, gzw), gzw, func() { _ = fr.Close() }, nil
	}
	return nil, nil, nil, fmt.Errorf("fetch: file %s: unsupported Content-Encoding %q", redact(u), enc)
}

// scan reads every line: counts, checks resourceType against the file's
// expected type, and validates the last line (truncation, C40).
func (c *Client) scan(ctx context.Context, f File, u string, r io.Reader) (Spooled, error) {
	var sp Spooled
	want := f.Type
	if f.Kind == KindOutput && f.Type == "" {
		want = "" // organizeOutputBy: lines of any type
	}
	var p fastjson.Parser
	var last []byte
	lr := newLineReader(r, c.o.MaxLineBytes)
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if tl := (*lineTooLongError)(nil); errors.As(err, &tl) {
			// Kept in the spool: the transform rejects the line with its
			// file and number, and loads the rest of the file.
			sp.Lines++
			sp.LongLines++
			c.log.Warn("line over max_line_bytes: it will be rejected, the rest of the file is loaded",
				"kind", f.Kind, "index", f.Index, "type", f.Type, "line", tl.line, "max_line_bytes", tl.max)
			continue
		}
		if err != nil {
			return sp, c.readError(ctx, u, err)
		}
		sp.Lines++
		rt, ok := resourceType(&p, line)
		if want != "" && (!ok || string(rt) != want) {
			sp.MismatchedTypes++
		}
		last = append(last[:0], line...)
	}
	if len(last) > 0 && fastjson.ValidateBytes(last) != nil {
		return sp, &dlError{class: classRetry, reason: "truncated",
			err: fmt.Errorf("fetch: file %s: last line (%d) is not valid JSON: truncated", redact(u), lr.n)}
	}
	if sp.MismatchedTypes > 0 {
		c.log.Warn("lines whose resourceType differs from the manifest type", "kind", f.Kind, "index", f.Index, "type", f.Type, "lines", sp.MismatchedTypes)
	}
	return sp, nil
}

// readError classifies a body read error: truncation and network errors
// are retried, a line over the limit is fatal.
func (c *Client) readError(ctx context.Context, u string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, gzip.ErrChecksum),
		errors.Is(err, gzip.ErrHeader), errors.As(err, new(flate.CorruptInputError)):
		return &dlError{class: classRetry, reason: "truncated", err: fmt.Errorf("fetch: file %s: truncated or corrupt: %w", redact(u), err)}
	}
	return &dlError{class: classRetry, reason: "network", err: fmt.Errorf("fetch: file %s: %w", redact(u), err)}
}

// meter counts bytes, pushes the idle timer on progress, and reports bytes
// to the Observer in chunks.
type meter struct {
	r       io.Reader
	n       int64
	idle    *time.Timer
	timeout time.Duration
	obs     Observer
	pending int64
}

func (m *meter) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if n > 0 {
		m.n += int64(n)
		if m.idle != nil {
			m.idle.Reset(m.timeout)
		}
		if m.obs != nil {
			m.pending += int64(n)
			if m.pending >= 1<<20 {
				m.flush()
			}
		}
	}
	return n, err
}

func (m *meter) flush() {
	if m.obs != nil && m.pending > 0 {
		m.obs.Bytes("file", m.pending)
		m.pending = 0
	}
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// SpoolName is the file name DownloadAll uses for f: kind, zero-padded
// index and type, e.g. "output-0003.Observation.ndjson.gz".
func SpoolName(f File) string {
	t := unsafeName.ReplaceAllString(f.Type, "_")
	if t == "" {
		t = "mixed"
	}
	return fmt.Sprintf("%s-%04d.%s.ndjson.gz", f.Kind, f.Index, t)
}

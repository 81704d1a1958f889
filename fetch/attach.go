package fetch

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/valyala/fastjson"
	"golang.org/x/sync/errgroup"
)

// attachmentKeys are the element names whose values are FHIR Attachments in
// the resources exports carry (DocumentReference.content.attachment,
// DiagnosticReport.presentedForm, Patient/Practitioner.photo, Media.content).
var attachmentKeys = map[string]bool{"attachment": true, "presentedForm": true, "photo": true}

type attachRef struct {
	resource, url, contentType string
}

// Attachments fetches every Attachment.url (without inline data) found in
// the spooled output files into dir, with Options.Parallel workers.
// Relative URLs resolve against the FHIR base (C52); the token is sent when
// the manifest requires it, as for files (C33-C35). A response that is a
// FHIR Binary JSON is decoded to its bytes; anything else is stored raw.
// Each URL is fetched once.
func (c *Client) Attachments(ctx context.Context, m *Manifest, spooled []Spooled, dir string) ([]Attachment, error) {
	var refs []attachRef
	seen := map[string]bool{}
	for _, sp := range spooled {
		if sp.File.Kind != KindOutput {
			continue
		}
		found, err := c.findAttachments(sp.Path)
		if err != nil {
			return nil, err
		}
		for _, r := range found {
			if !seen[r.url] {
				seen[r.url] = true
				refs = append(refs, r)
			}
		}
	}
	if len(refs) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fetch: attachments dir: %w", err)
	}
	out := make([]Attachment, len(refs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.o.Parallel)
	for i, r := range refs {
		g.Go(func() error {
			name := fmt.Sprintf("%04d.%s.bin", i, unsafeName.ReplaceAllString(strings.ReplaceAll(r.resource, "/", "-"), "_"))
			a, err := c.fetchAttachment(gctx, m, r, filepath.Join(dir, name))
			if err != nil {
				return fmt.Errorf("fetch: attachment of %s: %w", r.resource, err)
			}
			out[i] = a
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// findAttachments scans one spooled file for attachment URLs.
func (c *Client) findAttachments(path string) ([]attachRef, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("fetch: attachments: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("fetch: attachments: %s: %w", path, err)
	}
	defer zr.Close()
	base := c.base.String() + "/"
	var p fastjson.Parser
	var out []attachRef
	lr := newLineReader(zr, c.o.MaxLineBytes)
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if errors.As(err, new(*lineTooLongError)) {
			continue // the transform rejects it
		}
		if err != nil {
			return nil, fmt.Errorf("fetch: attachments: %s: %w", path, err)
		}
		v, err := p.ParseBytes(line)
		if err != nil {
			continue // the transform records bad lines
		}
		res := string(v.GetStringBytes("resourceType")) + "/" + string(v.GetStringBytes("id"))
		var walk func(v *fastjson.Value, att bool)
		walk = func(v *fastjson.Value, att bool) {
			switch v.Type() {
			case fastjson.TypeObject:
				if att {
					if u := string(v.GetStringBytes("url")); u != "" && v.Get("data") == nil {
						if abs, err := resolve(base, u); err == nil {
							out = append(out, attachRef{resource: res, url: abs, contentType: string(v.GetStringBytes("contentType"))})
						}
					}
					return
				}
				o, _ := v.Object()
				o.Visit(func(k []byte, cv *fastjson.Value) {
					walk(cv, attachmentKeys[string(k)] || (res[:min(len(res), 6)] == "Media/" && string(k) == "content"))
				})
			case fastjson.TypeArray:
				arr, _ := v.Array()
				for _, e := range arr {
					walk(e, att)
				}
			}
		}
		walk(v, false)
	}
}

// fetchAttachment downloads one attachment with the file retry rules.
func (c *Client) fetchAttachment(ctx context.Context, m *Manifest, r attachRef, path string) (Attachment, error) {
	accept := r.contentType
	if accept == "" {
		accept = "*/*"
	}
	authRetried := false
	for attempt := 0; ; attempt++ {
		resp, tok, err := c.send(ctx, exchange{kind: "attachment", method: http.MethodGet, url: r.url, accept: accept, auth: m.RequiresAccessToken})
		if err != nil {
			if ctx.Err() != nil {
				return Attachment{}, ctx.Err()
			}
			if werr := c.retryOrFail(ctx, attempt, nil, "network", fmt.Errorf("GET %s: %w", redact(r.url), err)); werr != nil {
				return Attachment{}, werr
			}
			continue
		}
		a, class, err := c.storeAttachment(resp, r, path)
		resp.Body.Close()
		switch {
		case err == nil:
			return a, nil
		case class == classAuth && tok != "" && !authRetried:
			authRetried = true
			c.o.Auth.Invalidate(tok)
			c.obs.Retry("auth")
			attempt--
		case class == classRetry:
			if werr := c.retryOrFail(ctx, attempt, resp, "5xx", err); werr != nil {
				return Attachment{}, werr
			}
		default:
			return Attachment{}, err
		}
	}
}

func (c *Client) storeAttachment(resp *http.Response, r attachRef, path string) (Attachment, int, error) {
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		he := httpError("attachment", r.url, resp, body)
		switch {
		case resp.StatusCode == http.StatusUnauthorized:
			return Attachment{}, classAuth, he
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			return Attachment{}, classRetry, he
		}
		return Attachment{}, classFatal, he
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".part-*")
	if err != nil {
		return Attachment{}, classFatal, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, &meter{r: resp.Body})
	c.obs.Bytes("attachment", n)
	if err != nil {
		tmp.Close()
		return Attachment{}, classRetry, err
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		tmp.Close()
		return Attachment{}, classRetry, fmt.Errorf("GET %s: got %d bytes, Content-Length said %d", redact(r.url), n, resp.ContentLength)
	}
	ct := resp.Header.Get("Content-Type")
	if strings.Contains(ct, "json") && n < 1<<30 {
		if b, ok, err := decodeBinary(tmp); err != nil {
			tmp.Close()
			return Attachment{}, classFatal, fmt.Errorf("GET %s: Binary data: %w", redact(r.url), err)
		} else if ok {
			err := tmp.Truncate(0)
			if err == nil {
				_, err = tmp.WriteAt(b, 0)
			}
			if err != nil {
				tmp.Close()
				return Attachment{}, classFatal, err
			}
			n = int64(len(b))
		}
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return Attachment{}, classFatal, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Attachment{}, classFatal, err
	}
	typ := r.contentType
	if typ == "" {
		typ = ct
	}
	return Attachment{Resource: r.resource, URL: r.url, ContentType: typ, Path: path, Bytes: n}, classFatal, nil
}

// decodeBinary returns the bytes of a FHIR Binary resource stored in f.
func decodeBinary(f *os.File) ([]byte, bool, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, false, err
	}
	raw, err := io.ReadAll(f)
	if err != nil {
		return nil, false, err
	}
	v, err := fastjson.ParseBytes(raw)
	if err != nil || string(v.GetStringBytes("resourceType")) != "Binary" {
		return nil, false, nil
	}
	data := v.GetStringBytes("data")
	b, err := base64.StdEncoding.DecodeString(string(data))
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

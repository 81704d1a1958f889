package fetch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// wireManifest is the tolerant decoding of STU1-STU3 manifests (C31, C32).
// Unknown fields and extension are ignored by encoding/json.
type wireManifest struct {
	TransactionTime     *string         `json:"transactionTime"`
	Request             string          `json:"request"`
	RequiresAccessToken json.RawMessage `json:"requiresAccessToken"`
	Output              *[]wireFile     `json:"output"`
	Deleted             []wireFile      `json:"deleted"`
	Error               []wireFile      `json:"error"`
	Outcome             []wireFile      `json:"outcome"` // 4.0 ballot drafts
	OutputOrganizedBy   string          `json:"outputOrganizedBy"`
	Link                []struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	} `json:"link"`
}

type wireFile struct {
	Type  string          `json:"type"`
	URL   string          `json:"url"`
	Count json.RawMessage `json:"count"`
}

// parseManifest decodes one manifest page. pageURL resolves relative file
// URLs (STU1 said "path"); resp supplies Expires and the 2018-draft header.
// It returns the next page's URL, if any.
func parseManifest(body []byte, pageURL string, resp *http.Response) (*Manifest, string, error) {
	var w wireManifest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return nil, "", fmt.Errorf("fetch: manifest from %s is not valid JSON: %w (starts %q)", redact(pageURL), err, snippet(body, 80))
	}
	var missing []string
	if w.TransactionTime == nil || *w.TransactionTime == "" {
		missing = append(missing, "transactionTime")
	}
	if w.Output == nil {
		missing = append(missing, "output")
	}
	rat, ok, err := parseBool(w.RequiresAccessToken)
	if err != nil {
		return nil, "", fmt.Errorf("fetch: manifest field requiresAccessToken: %w", err)
	}
	if !ok {
		// The 2018 drafts carried this as a header instead.
		if h := resp.Header.Get("X-FHIR-Links-Require-Authorization"); h != "" {
			rat, ok = strings.EqualFold(strings.TrimSpace(h), "true"), true
		}
	}
	if !ok {
		missing = append(missing, "requiresAccessToken")
	}
	if len(missing) > 0 {
		return nil, "", fmt.Errorf("fetch: manifest from %s lacks required field(s) %s (C31)", redact(pageURL), strings.Join(missing, ", "))
	}
	m := &Manifest{
		TransactionTime:     *w.TransactionTime,
		Request:             w.Request,
		RequiresAccessToken: rat,
		OutputOrganizedBy:   w.OutputOrganizedBy,
		Raw:                 json.RawMessage(append([]byte(nil), body...)),
	}
	if e := resp.Header.Get("Expires"); e != "" {
		if t, err := http.ParseTime(e); err == nil {
			m.Expires = t
		}
	}
	conv := func(kind FileKind, in []wireFile, defType string) ([]File, error) {
		out := make([]File, 0, len(in))
		for i, f := range in {
			if f.URL == "" {
				return nil, fmt.Errorf("fetch: manifest %s[%d] has no url", kind, i)
			}
			u, err := resolve(pageURL, f.URL)
			if err != nil {
				return nil, fmt.Errorf("fetch: manifest %s[%d].url %q: %w", kind, i, f.URL, err)
			}
			n, err := parseCount(f.Count)
			if err != nil {
				return nil, fmt.Errorf("fetch: manifest %s[%d].count: %w", kind, i, err)
			}
			t := f.Type
			if t == "" {
				t = defType
			}
			out = append(out, File{Kind: kind, Type: t, URL: u, Count: n})
		}
		return out, nil
	}
	if m.Output, err = conv(KindOutput, *w.Output, ""); err != nil {
		return nil, "", err
	}
	if m.Deleted, err = conv(KindDeleted, w.Deleted, "Bundle"); err != nil {
		return nil, "", err
	}
	if m.Error, err = conv(KindError, append(w.Error, w.Outcome...), "OperationOutcome"); err != nil {
		return nil, "", err
	}
	var next string
	for _, l := range w.Link {
		if l.Relation == "next" && l.URL != "" {
			if next, err = resolve(pageURL, l.URL); err != nil {
				return nil, "", fmt.Errorf("fetch: manifest link next %q: %w", l.URL, err)
			}
		}
	}
	return m, next, nil
}

func parseBool(raw json.RawMessage) (v, ok bool, err error) {
	s := strings.TrimSpace(string(raw))
	switch s {
	case "", "null":
		return false, false, nil
	case "true", `"true"`:
		return true, true, nil
	case "false", `"false"`:
		return false, true, nil
	}
	return false, false, fmt.Errorf("want a boolean, got %s", snippet(raw, 40))
}

func parseCount(raw json.RawMessage) (int64, error) {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	if s == "" || s == "null" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("want a non-negative integer, got " + snippet(raw, 40))
	}
	return n, nil
}

// merge appends a later page's files (STU3 link paging).
func (m *Manifest) merge(p *Manifest) {
	m.Output = append(m.Output, p.Output...)
	m.Deleted = append(m.Deleted, p.Deleted...)
	m.Error = append(m.Error, p.Error...)
	if !p.Expires.IsZero() && (m.Expires.IsZero() || p.Expires.Before(m.Expires)) {
		m.Expires = p.Expires
	}
}

// reindex sets Index on every file to its position in Files().
func (m *Manifest) reindex() {
	i := 0
	for _, s := range [][]File{m.Output, m.Deleted, m.Error} {
		for j := range s {
			s[j].Index = i
			i++
		}
	}
}

// Files lists output, then deleted, then error files, with Index set to
// the position in this list (stable across refreshes of the same export).
func (m *Manifest) Files() []File {
	m.reindex()
	out := make([]File, 0, len(m.Output)+len(m.Deleted)+len(m.Error))
	out = append(out, m.Output...)
	out = append(out, m.Deleted...)
	return append(out, m.Error...)
}

// Expired reports whether the manifest's Expires has passed.
func (m *Manifest) Expired(now time.Time) bool {
	return !m.Expires.IsZero() && now.After(m.Expires)
}

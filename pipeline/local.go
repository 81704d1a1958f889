package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
)

// LocalExport presents an export folder (written by `fhirferry export` or
// another bulk client) as an Exporter, so `fhirferry load` runs the same
// state machine as a server export, without the network.
type LocalExport struct {
	Dir string
	// TransactionTime overrides the manifest's (needed when there is none).
	TransactionTime string
}

var _ Exporter = (*LocalExport)(nil)

// KickOff returns the folder's identity as the "status URL".
func (l *LocalExport) KickOff(context.Context, fetch.Request) (string, error) {
	abs, err := filepath.Abs(l.Dir)
	if err != nil {
		return "", err
	}
	return "file://" + abs, nil
}

// Wait builds the manifest from manifest.json when present, otherwise from
// the file names (<Type>.ndjson, <n>.<Type>.ndjson, optionally .gz).
func (l *LocalExport) Wait(_ context.Context, statusURL string) (*fetch.Manifest, error) {
	files, err := ndjsonFiles(l.Dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no .ndjson files", l.Dir)
	}
	m := &fetch.Manifest{StatusURL: statusURL}
	if data, err := os.ReadFile(filepath.Join(l.Dir, "manifest.json")); err == nil {
		if err := l.fromManifest(m, data, files); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(l.Dir, "manifest.json"), err)
		}
	} else {
		for _, f := range files {
			kind, typ := guessKind(filepath.Base(f))
			fi := fetch.File{Kind: kind, Type: typ, URL: f, Count: -1}
			switch kind {
			case fetch.KindDeleted:
				m.Deleted = append(m.Deleted, fi)
			case fetch.KindError:
				m.Error = append(m.Error, fi)
			default:
				m.Output = append(m.Output, fi)
			}
		}
	}
	if l.TransactionTime != "" {
		m.TransactionTime = l.TransactionTime
	}
	numberFiles(m)
	return m, nil
}

// numberFiles sets File.Index in Files() order (output, deleted, error).
func numberFiles(m *fetch.Manifest) {
	i := 0
	for _, list := range [][]fetch.File{m.Output, m.Deleted, m.Error} {
		for j := range list {
			list[j].Index = i
			i++
		}
	}
}

type localManifest struct {
	TransactionTime string `json:"transactionTime"`
	Request         string `json:"request"`
	Output          []struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	} `json:"output"`
	Deleted []struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	} `json:"deleted"`
	Error []struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	} `json:"error"`
}

// fromManifest maps each manifest entry to the local file with the URL's
// base name or, failing that, to the files of the entry's type (folders
// where a type's files were joined into <Type>.ndjson). Files the manifest
// lists but the folder lacks are an error: loading part of an export would
// advance the checkpoint past lost data.
func (l *LocalExport) fromManifest(m *fetch.Manifest, data []byte, files []string) error {
	var lm localManifest
	if err := json.Unmarshal(data, &lm); err != nil {
		return err
	}
	m.TransactionTime, m.Request = lm.TransactionTime, lm.Request
	byBase := map[string]string{}
	for _, f := range files {
		byBase[strings.TrimSuffix(filepath.Base(f), ".gz")] = f
	}
	used := map[string]bool{}
	var missing []string
	add := func(kind fetch.FileKind, typ, u string) {
		var found []string
		base := u
		if pu, err := url.Parse(u); err == nil {
			base = pu.Path
		}
		base = path.Base(base)
		if f, ok := byBase[base]; ok {
			found = []string{f}
		} else {
			for _, f := range files {
				if k, t := guessKind(filepath.Base(f)); k == kind && (t == typ || kind != fetch.KindOutput) {
					found = append(found, f)
				}
			}
		}
		if len(found) == 0 {
			missing = append(missing, fmt.Sprintf("file %s (%s) listed in the manifest is not in the folder", base, typ))
			return
		}
		for _, f := range found {
			if used[f] {
				continue
			}
			used[f] = true
			fi := fetch.File{Kind: kind, Type: typ, URL: f, Count: -1}
			switch kind {
			case fetch.KindDeleted:
				m.Deleted = append(m.Deleted, fi)
			case fetch.KindError:
				m.Error = append(m.Error, fi)
			default:
				m.Output = append(m.Output, fi)
			}
		}
	}
	for _, o := range lm.Output {
		add(fetch.KindOutput, o.Type, o.URL)
	}
	for _, o := range lm.Deleted {
		add(fetch.KindDeleted, "Bundle", o.URL)
	}
	for _, o := range lm.Error {
		add(fetch.KindError, "OperationOutcome", o.URL)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s", strings.Join(missing, "; "))
	}
	return nil
}

var numbered = regexp.MustCompile(`^(?:\d+\.)?([A-Z][A-Za-z]+)(?:[-_.]\d+)?$`)

// guessKind reads a file's kind and type from its name.
func guessKind(name string) (fetch.FileKind, string) {
	base := strings.TrimSuffix(strings.TrimSuffix(name, ".gz"), ".ndjson")
	lower := strings.ToLower(base)
	switch {
	case strings.Contains(lower, "deleted"):
		return fetch.KindDeleted, "Bundle"
	case strings.Contains(lower, "error") || strings.HasPrefix(lower, "err_") || strings.Contains(base, "OperationOutcome"):
		return fetch.KindError, "OperationOutcome"
	}
	if m := numbered.FindStringSubmatch(base); m != nil {
		return fetch.KindOutput, m[1]
	}
	return fetch.KindOutput, "" // any type; each line names its own
}

func ndjsonFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".ndjson") || strings.HasSuffix(p, ".ndjson.gz")) {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// Delete does nothing: a folder is never removed by a load.
func (l *LocalExport) Delete(context.Context, string) error { return nil }

// DownloadAll hands each file on in place: the folder is the spool.
func (l *LocalExport) DownloadAll(ctx context.Context, m *fetch.Manifest, _ string, skip func(fetch.File) (fetch.Spooled, bool), done func(fetch.Spooled) error) error {
	for _, list := range [][]fetch.File{m.Output, m.Deleted, m.Error} {
		for _, f := range list {
			if err := ctx.Err(); err != nil {
				return err
			}
			if sp, ok := skip(f); ok {
				if err := done(sp); err != nil {
					return err
				}
				continue
			}
			fi, err := os.Stat(f.URL)
			if err != nil {
				return err
			}
			if err := done(fetch.Spooled{File: f, Path: f.URL, Bytes: fi.Size(), WireBytes: fi.Size()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// DirDigest is a short stable digest of a path, for export ids.
func DirDigest(p string) string {
	h := sha256.Sum256([]byte(p))
	return hex.EncodeToString(h[:6])
}

// Namespace is the namespace of the folder's resources: the server the
// manifest's request URL names (its base, normalised as a source's base
// URL is), or fallback when there is no manifest or request.
func (l *LocalExport) Namespace(fallback string) string {
	data, err := os.ReadFile(filepath.Join(l.Dir, "manifest.json"))
	if err != nil {
		return fallback
	}
	var m struct {
		Request string `json:"request"`
	}
	if json.Unmarshal(data, &m) != nil || m.Request == "" {
		return fallback
	}
	base, _, _ := strings.Cut(m.Request, "?")
	if i := strings.Index(base, "/$export"); i >= 0 {
		base = base[:i]
	}
	base = strings.TrimSuffix(base, "/Patient")
	if i := strings.LastIndex(base, "/Group/"); i >= 0 {
		base = base[:i]
	}
	if ns := configs.NormalizeBaseURL(base); strings.Contains(ns, "://") {
		return ns
	}
	return fallback
}

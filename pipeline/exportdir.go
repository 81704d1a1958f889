package pipeline

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
)

// ExportDirProgress is told how an ExportDir goes; it also observes the
// client's HTTP events. Its methods must be safe for concurrent use.
type ExportDirProgress interface {
	fetch.Observer
	// Waiting: the export is kicked off (or resumed) and being polled.
	Waiting()
	// Downloading: the manifest lists files files.
	Downloading(files int)
	// FileDone: one more file is stored.
	FileDone()
	// Finish ends the current phase's display.
	Finish()
}

// ExportDirOptions say what ExportDir downloads and where.
type ExportDirOptions struct {
	Source configs.Source
	// Out is the folder; it is created when missing.
	Out string
	// StatusURL resumes polling an export instead of kicking one off.
	StatusURL    string
	NoDelete     bool
	Attachments  bool
	MaxLineBytes int64
	// Logger is the terminal's logger; events are also written to
	// Out/log.ndjson. nil: log.ndjson only.
	Logger   *slog.Logger
	Progress ExportDirProgress // nil is allowed
}

// ExportDirResult is what ExportDir stored.
type ExportDirResult struct {
	Files           int
	Lines           int64
	TransactionTime string
	ErrorFiles      int
}

// ExportDir runs one $export and writes it like the SMART reference client:
// <n>.<Type>.ndjson per output file (decompressed), deleted/ and error/
// subfolders, manifest.json (every page merged), log.ndjson (events, never
// tokens or resource contents) and status-url.txt, written before polling
// starts so that a killed command resumes the same export. Files already
// in the folder are not downloaded again.
func ExportDir(ctx context.Context, o ExportDirOptions) (*ExportDirResult, error) {
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(filepath.Join(o.Out, "log.ndjson"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	term := o.Logger
	if term == nil {
		term = slog.New(slog.DiscardHandler)
	}
	log := slog.New(exportTee{term.Handler(), slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo})})
	prog := o.Progress
	if prog == nil {
		prog = nopExportProgress{}
	}
	c, err := fetch.FromConfig(ctx, o.Source, o.MaxLineBytes, log, prog)
	if err != nil {
		return nil, err
	}
	statusURL, m, err := exportWait(ctx, c, o, log, prog)
	if err != nil {
		return nil, err
	}
	return exportFiles(ctx, c, o, statusURL, m, log, prog)
}

// exportWait kicks off (or resumes) the export and waits for its manifest,
// which it writes to the folder.
func exportWait(ctx context.Context, c *fetch.Client, o ExportDirOptions, log *slog.Logger, prog ExportDirProgress) (string, *fetch.Manifest, error) {
	statusURL := o.StatusURL
	var err error
	if statusURL == "" {
		if statusURL, err = c.KickOff(ctx, fetch.RequestFor(o.Source)); err != nil {
			return "", nil, err
		}
	} else {
		log.Info("resuming export", "status_url", exportRedact(statusURL))
	}
	if err := exportWriteFile(filepath.Join(o.Out, "status-url.txt"), []byte(statusURL+"\n")); err != nil {
		return "", nil, err
	}
	prog.Waiting()
	m, err := c.Wait(ctx, statusURL)
	prog.Finish()
	if err != nil {
		if errors.Is(err, fetch.ErrExportGone) {
			return "", nil, fmt.Errorf("%w; start a new export (same --since)", err)
		}
		return "", nil, err
	}
	mj, err := exportManifestJSON(m)
	if err != nil {
		return "", nil, err
	}
	return statusURL, m, exportWriteFile(filepath.Join(o.Out, "manifest.json"), mj)
}

// exportFiles downloads the manifest's files into the folder, then the
// attachments when asked, and releases the export on the server.
func exportFiles(ctx context.Context, c *fetch.Client, o ExportDirOptions, statusURL string, m *fetch.Manifest,
	log *slog.Logger, prog ExportDirProgress) (*ExportDirResult, error) {
	files := m.Files()
	prog.Downloading(len(files))
	st := &exportStore{o: o, m: m, log: log, prog: prog}
	skip := func(file fetch.File) (fetch.Spooled, bool) {
		p := filepath.Join(o.Out, exportFileName(m, file))
		if _, err := os.Stat(p); err == nil && !o.Attachments {
			return fetch.Spooled{File: file, Path: p}, true
		}
		return fetch.Spooled{}, false
	}
	spool := filepath.Join(o.Out, ".spool")
	err := c.DownloadAll(ctx, m, spool, skip, st.done)
	prog.Finish()
	if err != nil {
		return nil, err
	}
	if o.Attachments {
		atts, err := c.Attachments(ctx, m, st.spooled, filepath.Join(o.Out, "attachments"))
		if err != nil {
			return nil, err
		}
		for _, a := range atts {
			log.Info("attachment stored", "resource", a.Resource, "path", a.Path, "bytes", a.Bytes, "content_type", a.ContentType)
		}
	}
	if err := os.RemoveAll(spool); err != nil {
		log.Warn("could not remove the spool", "error", err)
	}
	if !o.NoDelete {
		if err := c.Delete(ctx, statusURL); err != nil && !errors.Is(err, fetch.ErrExportGone) {
			log.Warn("could not DELETE the export on the server", "error", err)
		}
	}
	log.Info("export downloaded", "dir", o.Out, "transaction_time", m.TransactionTime, "files", len(files),
		"lines", st.lines, "bytes", st.bytes, "mismatched_types", st.mismatched, "error_files", len(m.Error))
	return &ExportDirResult{Files: len(files), Lines: st.lines, TransactionTime: m.TransactionTime, ErrorFiles: len(m.Error)}, nil
}

// exportStore moves each downloaded file from the spool to its place in
// the folder. DownloadAll calls done from one goroutine at a time.
type exportStore struct {
	o                        ExportDirOptions
	m                        *fetch.Manifest
	log                      *slog.Logger
	prog                     ExportDirProgress
	spooled                  []fetch.Spooled
	lines, bytes, mismatched int64
}

func (st *exportStore) done(sp fetch.Spooled) error {
	final := filepath.Join(st.o.Out, exportFileName(st.m, sp.File))
	if sp.Path == final {
		st.log.Info("file already present", "kind", sp.File.Kind, "index", sp.File.Index, "path", final)
		st.prog.FileDone()
		return nil
	}
	if err := exportDecompress(sp.Path, final); err != nil {
		return err
	}
	if st.o.Attachments {
		st.spooled = append(st.spooled, sp) // the attachments are read from the spooled files
	} else if err := os.Remove(sp.Path); err != nil {
		return err
	}
	st.lines += sp.Lines
	st.bytes += sp.Bytes
	st.mismatched += sp.MismatchedTypes
	st.log.Info("file stored", "kind", sp.File.Kind, "index", sp.File.Index, "type", sp.File.Type, "path", final,
		"lines", sp.Lines, "bytes", sp.Bytes, "wire_bytes", sp.WireBytes, "mismatched_types", sp.MismatchedTypes)
	st.prog.FileDone()
	return nil
}

type nopExportProgress struct{}

func (nopExportProgress) Retry(string)            {}
func (nopExportProgress) HTTPStatus(string, int)  {}
func (nopExportProgress) Bytes(string, int64)     {}
func (nopExportProgress) Progress(string, string) {}
func (nopExportProgress) Waiting()                {}
func (nopExportProgress) Downloading(int)         {}
func (nopExportProgress) FileDone()               {}
func (nopExportProgress) Finish()                 {}

// exportFileName is a file's place in the output folder, like the SMART
// reference client: <n>.<Type>.ndjson, with deleted/ and error/ subfolders;
// n counts from 1 within each kind.
func exportFileName(m *fetch.Manifest, f fetch.File) string {
	n := f.Index + 1
	dir := ""
	switch f.Kind {
	case fetch.KindDeleted:
		n, dir = f.Index-len(m.Output)+1, "deleted"
	case fetch.KindError:
		n, dir = f.Index-len(m.Output)-len(m.Deleted)+1, "error"
	}
	t := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, f.Type)
	if t == "" {
		t = "output"
	}
	return filepath.Join(dir, fmt.Sprintf("%d.%s.ndjson", n, t))
}

// exportManifestJSON is the manifest as received, with every page's files
// merged in and link removed.
func exportManifestJSON(m *fetch.Manifest) ([]byte, error) {
	doc := map[string]any{}
	if err := json.Unmarshal(m.Raw, &doc); err != nil {
		return nil, err
	}
	list := func(fs []fetch.File) []map[string]any {
		out := make([]map[string]any, 0, len(fs))
		for _, f := range fs {
			e := map[string]any{"type": f.Type, "url": f.URL}
			if f.Count >= 0 {
				e["count"] = f.Count
			}
			out = append(out, e)
		}
		return out
	}
	doc["output"], doc["error"] = list(m.Output), list(m.Error)
	if len(m.Deleted) > 0 {
		doc["deleted"] = list(m.Deleted)
	}
	delete(doc, "link")
	return json.MarshalIndent(doc, "", "  ")
}

// exportDecompress writes the gzip spool file src as plain NDJSON at dst,
// atomically.
func exportDecompress(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	defer zr.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, zr); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", src, err)
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// exportWriteFile writes a small file atomically.
func exportWriteFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func exportRedact(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		return u[:i]
	}
	return u
}

// exportTee sends log records to the terminal handler and to log.ndjson.
type exportTee [2]slog.Handler

func (t exportTee) Enabled(ctx context.Context, l slog.Level) bool {
	return t[0].Enabled(ctx, l) || t[1].Enabled(ctx, l)
}

func (t exportTee) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (t exportTee) WithAttrs(as []slog.Attr) slog.Handler {
	return exportTee{t[0].WithAttrs(as), t[1].WithAttrs(as)}
}

func (t exportTee) WithGroup(n string) slog.Handler {
	return exportTee{t[0].WithGroup(n), t[1].WithGroup(n)}
}

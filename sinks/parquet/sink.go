package parquet

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/compress"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/internal/prepared"
	"github.com/fhirferry/fhirferry/sinks/internal/sqlread"
)

// Sink is the Parquet lake. It serves one Txn at a time and assumes it is
// the lake's only writer.
type Sink struct {
	// Reads reads the tables back for views rebuild (reader).
	sqlread.Reads
	name string
	log  *slog.Logger
	st   Store
	mem  memory.Allocator
	comp compress.Compression

	mu     sync.Mutex
	meta   *lakeMeta // the published state
	tables prepared.Tables
	// writer holds a token while a Txn, ReplaceTable or Migrate runs: one
	// writer at a time, the others wait (as with the DuckDB sink).
	writer chan struct{}
	duck   *sql.DB // reads the published files (reader); nil until used
	// staging bounds the row groups a Txn holds across its tables (see
	// Txn.holdWithin).
	staging int64
}

// defaultStaging is the staging budget of a sink given none: two row
// groups' worth.
const defaultStaging = 2 * rowGroupBytes

var _ sinks.Sink = (*Sink)(nil)

// Option adjusts a Sink.
type Option func(*Sink)

// WithStore replaces the local directory store (the cfg.Dir is then unused).
func WithStore(st Store) Option { return func(s *Sink) { s.st = st } }

// WithAllocator sets the Arrow allocator (tests pass a checked one).
func WithAllocator(mem memory.Allocator) Option { return func(s *Sink) { s.mem = mem } }

// Open is the sinks.Factory of type parquet.
func Open(_ context.Context, cfg configs.Sink, env sinks.Env) (sinks.Sink, error) {
	return New(cfg.Parquet, env)
}

// New opens (or starts) the lake in cfg.Dir. It reads _lake.json and removes
// objects a crashed run left behind: staging files, temporary files of cut
// writes, and Parquet files that _lake.json does not list.
func New(cfg configs.ParquetSink, env sinks.Env, opts ...Option) (*Sink, error) {
	name, log := env.Name, env.Log()
	comp, err := codec(cfg.Compression)
	if err != nil {
		return nil, fmt.Errorf("parquet sink %s: %w", name, err)
	}
	s := &Sink{name: name, log: log, mem: memory.DefaultAllocator, comp: comp, writer: make(chan struct{}, 1), staging: env.StagingBytes}
	if s.staging <= 0 {
		s.staging = defaultStaging
	}
	s.Reads = sqlread.Reads{Reader: s.reader}
	for _, o := range opts {
		o(s)
	}
	if s.st == nil {
		if cfg.Dir == "" {
			return nil, fmt.Errorf("parquet sink %s: dir is required", name)
		}
		if s.st, err = NewDirStore(cfg.Dir); err != nil {
			return nil, fmt.Errorf("parquet sink %s: %w", name, err)
		}
	}
	ctx := context.Background()
	if s.meta, err = loadMeta(ctx, s.st); err != nil {
		return nil, fmt.Errorf("parquet sink %s: %w", name, err)
	}
	// A crash between publishing _lake.json and rewriting views.sql would
	// leave views.sql naming files the cleanup below deletes: rewrite it
	// from the published state first.
	s.published(ctx, s.meta, "")
	if d, ok := s.st.(*DirStore); ok {
		if err := d.sweepTemp(ctx); err != nil {
			log.Warn("removing temporary files of unfinished writes failed", "err", err)
		}
	}
	return s, nil
}

// collect deletes Parquet files not in live, and staging objects (all of
// them, or those of one run tag). Failures are logged: garbage is harmless.
func (s *Sink) collect(ctx context.Context, live map[string]bool, tag string) {
	names, err := s.st.List(ctx, "")
	if err != nil {
		s.log.Warn("listing lake for cleanup failed", "err", err)
		return
	}
	for _, n := range names {
		stale := strings.HasSuffix(n, ".parquet") && !live[n] && !strings.HasPrefix(n, stagingDir)
		if tag == "" {
			stale = stale || strings.HasPrefix(n, stagingDir)
		} else {
			stale = stale || strings.HasPrefix(n, stagingDir+tag+"/")
		}
		if stale {
			if err := s.st.Delete(ctx, n); err != nil {
				s.log.Warn("deleting stale lake object failed", "object", n, "err", err)
			}
		}
	}
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Close implements sinks.Sink.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.duck == nil {
		return nil
	}
	err := s.duck.Close()
	s.duck = nil
	return err
}

// Checkpoint implements sinks.Sink from the published _lake.json.
func (s *Sink) Checkpoint(ctx context.Context, source string) (sinks.Checkpoint, bool, error) {
	m, err := loadMeta(ctx, s.st)
	if err != nil {
		return sinks.Checkpoint{}, false, fmt.Errorf("parquet sink %s: %w", s.name, err)
	}
	cp, ok := m.Checkpoints[source]
	if !ok {
		return sinks.Checkpoint{}, false, nil
	}
	return sinks.Checkpoint{Source: source, TransactionTime: cp.TransactionTime, ExportID: cp.ExportID, CommittedAt: cp.CommittedAt}, true, nil
}

func columnsOf(t *schemas.Table) []columnMeta {
	var cols []columnMeta
	for _, f := range t.StoredFields() {
		cols = append(cols, columnMeta{Name: f.Name, Type: duckType(f.Type)})
	}
	return cols
}

// Prepare implements sinks.Sink. A table that gained columns has its
// files rewritten with the new (null) columns; columns a view lost stay in
// the files (nothing is dropped).
func (s *Sink) Prepare(ctx context.Context, tables []*schemas.Table) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prepare(ctx, tables)
}

// acquire takes the writer token, waiting while another writer has it.
func (s *Sink) acquire(ctx context.Context) error {
	select {
	case s.writer <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("parquet sink %s: waiting for the writer in progress: %w", s.name, ctx.Err())
	}
}

func (s *Sink) release() { <-s.writer }

// prepare is Prepare with the writer token and s.mu held.
func (s *Sink) prepare(ctx context.Context, tables []*schemas.Table) error {
	m := s.meta.clone()
	changed := false
	tag := newTag("prepare")
	var written []string
	for _, t := range append(schemas.System(), tables...) {
		if t.Kind == schemas.KindDeleted {
			s.tables.Put(t)
			continue
		}
		cols := columnsOf(t)
		tm, ok := m.Tables[t.Name]
		switch {
		case !ok:
			m.Tables[t.Name] = &tableMeta{Kind: t.Kind.String(), ResourceType: t.ResourceType, Columns: cols}
			changed = true
		case !slices.Equal(tm.Columns, mergeColumns(tm.Columns, cols)):
			tm.Columns = mergeColumns(tm.Columns, cols)
			changed = true
			if len(tm.Files) > 0 {
				// Rewrite so every file has the new columns (as nulls).
				mg := &merger{s: s, ctx: ctx, tag: tag, t: t, tm: tm, rewriteAll: true}
				if err := mg.run(); err != nil {
					s.deleteAll(ctx, append(written, mg.out...))
					return fmt.Errorf("parquet sink %s: prepare %s: %w", s.name, t.Name, err)
				}
				written = append(written, mg.out...)
			}
		}
		s.tables.Put(t)
	}
	if !changed {
		return nil
	}
	m.Version++
	if err := publish(ctx, s.st, m, tag); err != nil {
		s.deleteAll(ctx, written)
		return fmt.Errorf("parquet sink %s: %w", s.name, err)
	}
	s.published(ctx, m, tag)
	return nil
}

// mergeColumns is cur followed by the columns of old that cur lacks.
func mergeColumns(old, cur []columnMeta) []columnMeta {
	out := slices.Clone(cur)
	for _, c := range old {
		if !slices.ContainsFunc(cur, func(x columnMeta) bool { return x.Name == c.Name }) {
			out = append(out, c)
		}
	}
	return out
}

func (s *Sink) deleteAll(ctx context.Context, names []string) {
	for _, n := range names {
		_ = s.st.Delete(context.WithoutCancel(ctx), n)
	}
}

// published installs m as the current state after its rename, rewrites
// views.sql and garbage-collects what m no longer lists. Readers holding
// the previous file list lose it now: the lake keeps no history.
func (s *Sink) published(ctx context.Context, m *lakeMeta, tag string) {
	s.meta = m
	var b bytes.Buffer
	if err := writeViews(&b, s.st, m); err == nil {
		if err := putObject(ctx, s.st, viewsFile, b.Bytes()); err != nil {
			s.log.Warn("writing views.sql failed", "err", err)
		}
	}
	s.collect(context.WithoutCancel(ctx), m.liveFiles(), tag)
}

// WriteDuckDBViews writes one DuckDB view per table over exactly the files
// of the published lake state; views.sql in the lake root holds the same.
func (s *Sink) WriteDuckDBViews(w io.Writer) error {
	s.mu.Lock()
	m := s.meta
	s.mu.Unlock()
	return writeViews(w, s.st, m)
}

// LiveFiles returns the locations of the files a table currently consists of.
func (s *Sink) LiveFiles(table string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tm, ok := s.meta.Tables[table]
	if !ok {
		return nil
	}
	out := make([]string, len(tm.Files))
	for i, f := range tm.Files {
		out[i] = s.st.Location(f.Path)
	}
	return out
}

var unsafeTag = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// newTag names a run's objects: readable, unique, safe in paths.
func newTag(run string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	run = unsafeTag.ReplaceAllString(run, "_")
	if len(run) > 40 {
		run = run[:40]
	}
	return run + "-" + hex.EncodeToString(b)
}

func paths(fs []fileMeta) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Path
	}
	return out
}

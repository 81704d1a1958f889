package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/schemas/mempool"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/transform"
)

// Deps are what the caller wires into an App besides the config: the sink
// types the binary supports and the observers of its runs. Only Sinks is
// required.
type Deps struct {
	// Sinks builds a sink by its config type ("duckdb", "postgres", ...).
	Sinks map[string]sinks.Factory
	// Logger is the process logger; nil discards.
	Logger *slog.Logger
	// Hooks observe every run (metrics, progress); nil is allowed.
	Hooks Hooks
	// Observer returns a source's HTTP observer (metrics, progress); nil
	// is allowed.
	Observer func(source string) fetch.Observer
	// Failpoint is called at the run's named points (see Runner.Failpoint);
	// nil in production binaries.
	Failpoint func(name string)
}

// App is a configuration turned into components: the transform engine and
// the sinks every source's runs share, and the shared Arrow buffer pool.
// Build makes one; Close releases it.
type App struct {
	cfg    *configs.Config
	deps   Deps
	log    *slog.Logger
	pool   *mempool.PoolAllocator
	engine *transform.Engine
	sinks  map[string]sinks.Sink
}

// Build applies cfg's process settings (the Go memory limit), creates
// data_dir, compiles the views and opens and prepares every sink.
func Build(ctx context.Context, cfg *configs.Config, deps Deps) (app *App, err error) {
	a := &App{cfg: cfg, deps: deps, log: deps.Logger, sinks: map[string]sinks.Sink{}}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	// Everything that can fail without touching the disk comes first, so
	// a start that fails validation creates nothing.
	views, err := transform.LoadViews(cfg.Views.DefaultsOn(), cfg.Views.Dir)
	if err != nil {
		return nil, err
	}
	// One pool for the process: the transform's batches and the sinks'
	// Parquet pages recycle each other's buffers.
	a.pool = mempool.NewPoolAllocator(mempool.DefaultBytes)
	a.engine, err = transform.New(transform.Options{
		Views:        views,
		BatchRows:    cfg.Transform.BatchRows,
		BatchBytes:   int(cfg.Transform.BatchBytes),
		MaxLineBytes: int(cfg.Transform.MaxLineBytes),
		Alloc:        a.pool,
	})
	if err != nil {
		return nil, err
	}
	// A start that fails after this removes what it created (the data
	// folder, a new warehouse file or lake), so a retry starts clean and
	// a typo leaves no stray /var/lib/fhirferry behind.
	fresh := missingPaths(cfg)
	defer func() {
		if err != nil {
			removeCreated(fresh)
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	if cfg.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		// The environment wins, as it does for the Go runtime itself.
		debug.SetMemoryLimit(int64(cfg.MemoryLimit))
	}
	var migrated []string
	for _, sc := range cfg.Sinks {
		rebuild, err := a.openSink(ctx, sc)
		if err != nil {
			a.Close()
			return nil, err
		}
		if rebuild {
			migrated = append(migrated, sc.Name)
		}
	}
	if len(migrated) > 0 {
		if err := a.rebuildMigrated(ctx, migrated); err != nil {
			a.Close()
			return nil, err
		}
	}
	a.Flush(ctx)
	return a, nil
}

// missingPaths lists the files and folders a start may create that do not
// exist yet: the data folder and the local sinks' files.
func missingPaths(cfg *configs.Config) []string {
	paths := []string{cfg.DataDir}
	for _, sc := range cfg.Sinks {
		switch {
		case sc.Type == configs.SinkDuckDB && sc.DuckDB.Path != ":memory:" && sc.DuckDB.Path != "":
			for _, p := range []string{sc.DuckDB.Path, sc.DuckDB.WriterPath()} {
				paths = append(paths, p, p+".wal", p+".tmp")
			}
		case sc.Type == configs.SinkParquet && sc.Parquet.Dir != "":
			paths = append(paths, sc.Parquet.Dir)
		}
	}
	var out []string
	for _, p := range paths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			out = append(out, p)
		}
	}
	return out
}

// removeCreated removes those of paths that exist now.
func removeCreated(paths []string) {
	for _, p := range paths {
		_ = os.RemoveAll(p) // best effort: the start has failed already
	}
}

// Flush makes what the sinks wrote outside a run (tables prepared,
// migrated or rebuilt) visible to their outside readers; failures are
// logged (the next commit retries them).
func (a *App) Flush(ctx context.Context) {
	for _, sc := range a.cfg.Sinks {
		if f, ok := a.sinks[sc.Name].(sinks.Flusher); ok {
			if err := f.Flush(ctx); err != nil {
				a.log.Warn("publishing the warehouse for readers failed", "sink", sc.Name, "err", err)
			}
		}
	}
}

// migration is what the sinks need to migrate tables an older fhirferry
// wrote: the namespace of every configured source.
func (a *App) migration() sinks.Migration {
	m := sinks.Migration{Namespaces: map[string]string{}}
	for _, src := range a.cfg.Sources {
		m.Namespaces[src.Name] = src.NamespaceOf()
		m.Namespaces[BackfillSource(src.Name)] = src.NamespaceOf()
	}
	return m
}

// migrate brings a sink's tables to sinks.SchemaVersion and reports
// whether its views must be rebuilt.
func (a *App) migrate(ctx context.Context, name string, s sinks.Sink) (bool, error) {
	mg, ok := s.(sinks.Migrator)
	if !ok {
		return false, nil
	}
	rep, err := mg.Migrate(ctx, a.migration())
	if err != nil {
		return false, err
	}
	if rep.From < rep.To {
		a.log.Warn("migrated the warehouse to a new table shape", "sink", name, "from", rep.From, "to", rep.To,
			"change", "rows keyed by namespace; view tables typed and rebuilt from the raw landing")
	}
	for _, c := range rep.Collisions {
		a.log.Warn("migration: resources of several servers may have overwritten each other", "sink", name, "detail", c,
			"fix", "see README, Several sources in one warehouse")
	}
	return rep.RebuildViews, nil
}

// rebuildMigrated refills the view tables a migration dropped.
func (a *App) rebuildMigrated(ctx context.Context, names []string) error {
	t0 := time.Now()
	rep, err := a.RebuildViews(ctx, RebuildOptions{All: true, Sinks: names})
	if err != nil {
		return fmt.Errorf("rebuild the views of the migrated sinks: %w", err)
	}
	var rows int64
	for _, r := range rep.Rows {
		rows += r.After
	}
	a.log.Info("rebuilt the views of the migrated warehouse", "sinks", strings.Join(names, ","), "views", len(rep.Rows),
		"rows", rows, "duration", time.Since(t0).Round(time.Millisecond).String())
	return nil
}

func (a *App) openSink(ctx context.Context, sc configs.Sink) (rebuild bool, err error) {
	open, ok := a.deps.Sinks[sc.Type]
	if !ok {
		return false, fmt.Errorf("sink %s: type %q is not built into this binary", sc.Name, sc.Type)
	}
	s, err := open(ctx, sc, sinks.Env{
		Name: sc.Name, Logger: a.log.With("sink", sc.Name), Alloc: a.pool, StagingBytes: int64(sc.StagingBytes),
	})
	if err != nil {
		return false, fmt.Errorf("sink %s: %w", sc.Name, err)
	}
	a.sinks[sc.Name] = s
	if rebuild, err = a.migrate(ctx, sc.Name, s); err != nil {
		return false, fmt.Errorf("sink %s: migrate: %w", sc.Name, err)
	}
	if err := s.Prepare(ctx, a.engine.Tables()); err != nil {
		return false, fmt.Errorf("sink %s: prepare tables: %w", sc.Name, err)
	}
	return rebuild, nil
}

// Config returns the configuration the App was built from.
func (a *App) Config() *configs.Config { return a.cfg }

// Engine returns the transform engine.
func (a *App) Engine() *transform.Engine { return a.engine }

// Sink returns the named sink.
func (a *App) Sink(name string) (sinks.Sink, bool) {
	s, ok := a.sinks[name]
	return s, ok
}

// SinksNamed returns the named sinks in the given order, or every sink in
// config order when names is empty.
func (a *App) SinksNamed(names []string) ([]sinks.Sink, error) {
	if len(names) == 0 {
		out := make([]sinks.Sink, 0, len(a.cfg.Sinks))
		for _, sc := range a.cfg.Sinks {
			out = append(out, a.sinks[sc.Name])
		}
		return out, nil
	}
	out := make([]sinks.Sink, 0, len(names))
	for _, n := range names {
		s, ok := a.sinks[n]
		if !ok {
			return nil, fmt.Errorf("no sink named %q in the config", n)
		}
		out = append(out, s)
	}
	return out, nil
}

// Close closes every sink; failures are logged.
func (a *App) Close() {
	for name, s := range a.sinks {
		if err := s.Close(); err != nil {
			a.log.Warn("closing sink", "sink", name, "err", err)
		}
	}
}

// Ping checks that every sink answers (the daemon's /readyz).
func (a *App) Ping(ctx context.Context) error {
	for name, s := range a.sinks {
		if _, _, err := s.Checkpoint(ctx, "_ping"); err != nil {
			return fmt.Errorf("sink %s: %w", name, err)
		}
	}
	return nil
}

// SourceNames lists the configured sources, or only the named one.
func (a *App) SourceNames(only string) ([]string, error) {
	if only != "" {
		if _, ok := a.cfg.Source(only); !ok {
			return nil, fmt.Errorf("no source named %q in the config", only)
		}
		return []string{only}, nil
	}
	names := make([]string, 0, len(a.cfg.Sources))
	for _, s := range a.cfg.Sources {
		names = append(names, s.Name)
	}
	if len(names) == 0 {
		return nil, errors.New("the config has no sources")
	}
	return names, nil
}

// Client builds the Bulk Data client of a configured source.
func (a *App) Client(ctx context.Context, src configs.Source) (*fetch.Client, error) {
	var obs fetch.Observer
	if a.deps.Observer != nil {
		obs = a.deps.Observer(src.Name)
	}
	return fetch.FromConfig(ctx, src, int64(a.cfg.Transform.MaxLineBytes), a.log.With("source", src.Name), obs)
}

// Runner builds the runner of one source's runs.
func (a *App) Runner(ctx context.Context, name string) (*Runner, error) {
	src, ok := a.cfg.Source(name)
	if !ok {
		return nil, fmt.Errorf("no source named %q in the config", name)
	}
	c, err := a.Client(ctx, src)
	if err != nil {
		return nil, err
	}
	var targets []sinks.Sink
	for _, sc := range a.cfg.SinksOf(src) {
		targets = append(targets, a.sinks[sc.Name])
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("source %s has no sinks", name)
	}
	r := a.runner(name, c, targets)
	r.Namespace = src.NamespaceOf()
	// The runner sets the request's _since from the sinks' checkpoints.
	r.Request, r.InitialSince = fetch.RequestFor(src), src.Export.Since
	r.DeleteAfter, r.FailOnErrorOutcomes = src.Export.DeleteAfter(), true
	if r.Request.Level == fetch.LevelGroup {
		r.Members = c
		r.Purge = src.Export.FormerMembers == configs.FormerPurge
	}
	return r, nil
}

func (a *App) runner(source string, c Exporter, targets []sinks.Sink) *Runner {
	return &Runner{
		Source: source, Client: c, Engine: a.engine, Sinks: targets, DataDir: a.cfg.DataDir,
		Logger: a.log, Hooks: a.deps.Hooks, Failpoint: a.deps.Failpoint,
		Workers: a.cfg.Transform.Workers, QueueDepth: a.cfg.Transform.QueueDepth,
	}
}

// RunSource performs one run of the named source: for a Group source with
// export.backfill_new_members, a run of the membership pattern (C49).
func (a *App) RunSource(ctx context.Context, name string) (*Result, error) {
	r, err := a.Runner(ctx, name)
	if err != nil {
		return nil, err
	}
	run := r.Run
	if src, _ := a.cfg.Source(name); src.Export.BackfillNewMembers {
		ml, ok := r.Client.(MemberLister)
		if !ok {
			return nil, fmt.Errorf("source %s: backfill_new_members needs a client that reads Group members", name)
		}
		run = (&Backfill{Runner: r, Members: ml}).Run
	}
	t0 := time.Now()
	res, err := run(ctx)
	if err != nil {
		return res, fmt.Errorf("source %s: %w (after %s)", name, err, time.Since(t0).Round(time.Millisecond))
	}
	return res, nil
}

// LoadOptions say what `fhirferry load` loads.
type LoadOptions struct {
	Dir string
	// Source records the data; "" is load-<folder name>.
	Source string
	// TransactionTime is recorded when the folder has no manifest.
	TransactionTime string
	// Namespace the folder's resources belong to: "" is the export's own
	// server (the base of the manifest's request URL), else the source.
	Namespace string
	// Sinks limits the load to these sinks (default: all).
	Sinks []string
}

// LoadDir applies an export folder to the sinks with a server run's rules.
func (a *App) LoadDir(ctx context.Context, o LoadOptions) (*Result, error) {
	source := o.Source
	if source == "" {
		abs, err := filepath.Abs(o.Dir)
		if err != nil {
			return nil, err
		}
		source = "load-" + sanitizeName(filepath.Base(abs))
	}
	targets, err := a.SinksNamed(o.Sinks)
	if err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, errors.New("the config has no sinks")
	}
	local := &LocalExport{Dir: o.Dir, TransactionTime: o.TransactionTime}
	r := a.runner(source, local, targets)
	r.Namespace = o.Namespace
	if r.Namespace == "" {
		r.Namespace = local.Namespace(source)
	}
	res, err := r.Run(ctx)
	if res == nil {
		res = &Result{Source: source}
	}
	return res, err
}

// sanitizeName keeps the characters a source name may have.
func sanitizeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, s)
}

// OldestCheckpoint is a source's next _since: the oldest checkpoint over
// its sinks, "" when a sink has none (or cannot be read now).
func (a *App) OldestCheckpoint(ctx context.Context, src configs.Source) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var oldest string
	var oldestT time.Time
	for _, sc := range a.cfg.SinksOf(src) {
		s := a.sinks[sc.Name]
		if s == nil {
			return ""
		}
		cp, ok, err := s.Checkpoint(ctx, src.Name)
		if err != nil || !ok {
			return ""
		}
		t, err := time.Parse(time.RFC3339Nano, cp.TransactionTime)
		if err != nil {
			return ""
		}
		if oldest == "" || t.Before(oldestT) {
			oldest, oldestT = cp.TransactionTime, t
		}
	}
	return oldest
}

// HasUnfinishedRun reports whether a source has a saved, unfinished run
// (the daemon resumes it at start).
func (a *App) HasUnfinishedRun(source string) bool {
	_, err := os.Stat(filepath.Join(a.cfg.DataDir, "state", source+".json"))
	return err == nil
}

// Rebuilders returns the configured sinks that can rebuild views, in config
// order, limited to only when given.
func (a *App) Rebuilders(only []string) ([]NamedRebuilder, error) {
	for _, n := range only {
		if _, ok := a.sinks[n]; !ok {
			return nil, fmt.Errorf("no sink named %q in the config", n)
		}
	}
	var out []NamedRebuilder
	for _, sc := range a.cfg.Sinks {
		if len(only) > 0 && !slices.Contains(only, sc.Name) {
			continue
		}
		if rb, ok := a.sinks[sc.Name].(sinks.Rebuilder); ok {
			out = append(out, NamedRebuilder{Name: sc.Name, Rebuilder: rb})
		}
	}
	return out, nil
}

// NamedRebuilder is a sink that can rebuild views, with its name.
type NamedRebuilder struct {
	Name string
	sinks.Rebuilder
}

// RunSources runs the named sources once each, at most
// daemon.max_concurrent_runs at a time (sources of different servers load
// side by side; runs on one sink take turns at its writer), and returns
// each source's result and error in the order given.
func (a *App) RunSources(ctx context.Context, names []string, done func(source string)) ([]*Result, []error) {
	results, errs := make([]*Result, len(names)), make([]error, len(names))
	sem := make(chan struct{}, max(a.cfg.Daemon.MaxConcurrentRuns, 1))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i], errs[i] = &Result{Source: n}, ctx.Err()
				return
			}
			defer func() { <-sem }()
			res, err := a.RunSource(ctx, n)
			if res == nil {
				res = &Result{Source: n}
			}
			results[i], errs[i] = res, err
			if done != nil {
				done(n)
			}
		}()
	}
	wg.Wait()
	return results, errs
}

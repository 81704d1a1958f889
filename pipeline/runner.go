package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/transform"
)

// Exporter is the Bulk Data client as the runner uses it (*fetch.Client).
type Exporter interface {
	KickOff(ctx context.Context, r fetch.Request) (statusURL string, err error)
	Wait(ctx context.Context, statusURL string) (*fetch.Manifest, error)
	Delete(ctx context.Context, statusURL string) error
	DownloadAll(ctx context.Context, m *fetch.Manifest, dir string, skip func(fetch.File) (fetch.Spooled, bool), done func(fetch.Spooled) error) error
}

// Transform turns spooled NDJSON files into batches (transform.Engine).
// It is safe for concurrent use: the runner calls ProcessFile from several
// workers, one file each.
type Transform interface {
	// Tables returns every table ProcessFile may emit to.
	Tables() []*schemas.Table
	// ProcessFile streams one file into batches passed to emit, which may
	// block (backpressure) and takes ownership of each batch. Bad lines
	// become reject rows; only I/O, ctx and emit errors end a file early.
	ProcessFile(ctx context.Context, origin transform.Origin, in transform.Input, emit func(schemas.Batch) error) (transform.FileStats, error)
}

// Hooks observe a run for metrics and progress. Every method must be cheap
// and safe for concurrent use; a nil Hooks is allowed.
type Hooks interface {
	// Phase reports the duration of a finished phase: kickoff, wait,
	// download_transform, commit.
	Phase(source, phase string, d time.Duration)
	// FileDone reports one loaded file.
	FileDone(source string, sp fetch.Spooled, st transform.FileStats)
	// Committed reports a sink's commit.
	Committed(source, sink string, d time.Duration)
	// Recorded reports what a sink's commit recorded of the run: the
	// Group membership and the purged former members' resources.
	Recorded(source, sink string, sum sinks.RunSummary)
	// Manifest reports the files to load, for progress.
	Manifest(source string, m *fetch.Manifest)
}

// Runner runs the exports of one source into its sinks.
type Runner struct {
	Source string
	// Namespace is the source's namespace (configs.Source.NamespaceOf):
	// the run's rows belong to it and its upserts and deletes touch only it.
	Namespace string
	Request   fetch.Request // Since is filled in by the runner
	// InitialSince is the _since of the first run (the sinks hold no checkpoint).
	InitialSince string
	Client       Exporter
	Engine       Transform
	Sinks        []sinks.Sink
	DataDir      string
	Logger       *slog.Logger
	Hooks        Hooks
	// Workers transform files in parallel; QueueDepth bounds the batches
	// in flight to the sinks (the backpressure on downloads).
	Workers     int
	QueueDepth  int
	DeleteAfter bool
	// FailOnErrorOutcomes fails the run when an error file reports an issue
	// of severity error or fatal (ARCHITECTURE invariant 5).
	FailOnErrorOutcomes bool
	// MaxKickOffs bounds re-kick-offs after an export vanished (404, expiry).
	MaxKickOffs int
	// Full makes every new run export from InitialSince whatever the
	// checkpoints say (the Group back-fill runs of C49, see Backfill).
	Full bool
	// Members, when set on a Group source's runner, makes every run record
	// the Group's membership in the sinks' group_member table: read before
	// the kick-off, else taken from the export's Group resource.
	Members MemberLister
	// Purge removes the data of patients who left the Group in the run's
	// transaction (export.former_members: purge); it needs Members.
	Purge bool
	// known is the membership a Backfill cycle already read for this run
	// ("Patient/<id>" references); nil makes the run read it.
	known []string
	// Failpoint, when set, is called as the run passes each named point:
	// polling (status URL saved, before the first poll), spooled (a file
	// stored), written (a batch written to the sinks) and committed (every
	// sink committed, before cleanup). The crash tests kill the process
	// there; production binaries leave it nil.
	Failpoint func(name string)
}

// namespace is the run's namespace: the configured one, else the source's
// name (a runner built without one, as in tests).
func (r *Runner) namespace() string {
	if r.Namespace != "" {
		return r.Namespace
	}
	return r.Source
}

func (r *Runner) failpoint(name string) {
	if r.Failpoint != nil {
		r.Failpoint(name)
	}
}

// Result summarises a finished run.
type Result struct {
	RunID           string
	Source          string
	ExportID        string
	Since           string
	TransactionTime string
	Started         time.Time
	Finished        time.Time
	Resumed         bool
	// Skipped lists the sinks that already held the export.
	Skipped []string
	// Deferred lists the sinks left out of a full export (no _since)
	// because they hold an older state of the source: a full export
	// carries no deleted entries, so it cannot bring them up to date. They
	// catch up in the next run, which starts at their checkpoint. Full
	// runners (back-fills) never defer.
	Deferred  []string
	Committed []string
	Stats     transform.FileStats
	Files     int
	WireBytes int64
	// NewMembers and RemovedMembers are the Group membership changes a
	// Backfill run found (C49); Backfill is the run that fetched the new
	// members' history, nil when none was needed.
	NewMembers     []string
	RemovedMembers []string
	Backfill       *Result
	// Members is the membership the run recorded, nil when it recorded
	// none; MembersFrom says how it was learnt (MembersFromRead, ...).
	Members     *sinks.Membership
	MembersFrom string
	// Purged counts the former members' resources the run removed, per
	// sink that committed it.
	Purged map[string]int64
}

func (r *Runner) log() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// Run performs one incremental run: it resumes the source's unfinished run
// when there is one, otherwise it kicks off a new export with _since = the
// oldest checkpoint of the sinks.
func (r *Runner) Run(ctx context.Context) (*Result, error) {
	store := newStateStore(r.DataDir, r.Source)
	st, err := store.load()
	if err != nil {
		return nil, err
	}
	res := &Result{Source: r.Source}
	if st != nil {
		res.Resumed = true
		r.log().Info("resuming run", "run_id", st.RunID, "source", r.Source, "phase", st.Phase)
	} else {
		since, err := r.since(ctx)
		if err != nil {
			return nil, err
		}
		st = &RunState{RunID: uuid.NewString(), Source: r.Source, Since: since, Started: time.Now().UTC()}
	}
	res.RunID, res.Since, res.Started = st.RunID, st.Since, st.Started
	log := r.log().With("run_id", st.RunID, "source", r.Source)
	if !res.Resumed {
		log.Info("run started", "since", st.Since)
	}

	if err := r.learnMembers(ctx, store, st, log); err != nil {
		return res, err
	}
	for attempt := 0; ; attempt++ {
		err = nil
		if st.Manifest == nil {
			err = r.export(ctx, store, st, log)
		}
		if err == nil {
			err = r.apply(ctx, store, st, res, log)
		}
		if errors.Is(err, fetch.ErrExportGone) && attempt < r.maxKickOffs() {
			// The server purged the export (or its files) before we held
			// it: export again from the same watermark.
			log.Warn("export gone before it was loaded; kicking off again", "since", st.Since)
			r.resetExport(store, st)
			continue
		}
		break
	}
	if err != nil {
		r.recordFailure(ctx, st, res, err)
		var fatal *jobFailure
		if errors.As(err, &fatal) {
			// The export itself is unusable: the next run starts a new one
			// from the same watermark.
			r.cleanup(context.WithoutCancel(ctx), store, st, log)
		}
		return res, err
	}
	res.Finished = time.Now().UTC()
	log.Info("run finished", "transaction_time", res.TransactionTime, "resources", res.Stats.Resources,
		"deleted", res.Stats.Deleted, "rejects", res.Stats.Rejects, "files", res.Files, "duration", res.Finished.Sub(res.Started).Round(time.Millisecond).String())
	return res, nil
}

// recordFailure writes the failed attempt to the runs table of every sink
// that can record it and did not commit the run. It must not hide err, so
// its own failures are only logged.
func (r *Runner) recordFailure(ctx context.Context, st *RunState, res *Result, err error) {
	outcome := "failed"
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		outcome = "cancelled"
	}
	info := sinks.RunInfo{RunID: st.RunID, Source: r.Source, Namespace: r.namespace(), ExportID: st.ExportID(), Since: st.Since, Started: st.Started}
	if st.Manifest != nil {
		info.TransactionTime = st.Manifest.TransactionTime
	}
	sum := sinks.RunSummary{Finished: time.Now().UTC(), Outcome: outcome, Files: int64(res.Files), Bytes: res.WireBytes,
		Resources: res.Stats.Resources, Deleted: res.Stats.Deleted, Rejects: res.Stats.Rejects, Outcomes: res.Stats.Outcomes}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, s := range r.Sinks {
		fr, ok := s.(sinks.FailureRecorder)
		if !ok || slices.Contains(res.Committed, s.Name()) {
			continue
		}
		if ferr := fr.RecordFailure(rctx, info, sum); ferr != nil {
			r.log().Warn("could not record the failed run", "sink", s.Name(), "run_id", st.RunID, "err", ferr)
		}
	}
}

func (r *Runner) maxKickOffs() int {
	if r.MaxKickOffs > 0 {
		return r.MaxKickOffs
	}
	return 3
}

// jobFailure marks errors that make the export itself unusable.
type jobFailure struct{ err error }

func (e *jobFailure) Error() string { return e.err.Error() }
func (e *jobFailure) Unwrap() error { return e.err }

// since is the oldest checkpoint over the sinks; a sink without one needs
// a full export (or the configured initial _since).
func (r *Runner) since(ctx context.Context) (string, error) {
	if r.Full {
		return r.InitialSince, nil
	}
	var oldest string
	var oldestT time.Time
	for _, s := range r.Sinks {
		cp, ok, err := s.Checkpoint(ctx, r.Source)
		if err != nil {
			return "", fmt.Errorf("read checkpoint of sink %s: %w", s.Name(), err)
		}
		if !ok || cp.TransactionTime == "" {
			return r.InitialSince, nil
		}
		t, err := time.Parse(time.RFC3339Nano, cp.TransactionTime)
		if err != nil {
			return "", fmt.Errorf("sink %s: checkpoint %q is not an instant: %w", s.Name(), cp.TransactionTime, err)
		}
		if oldest == "" || t.Before(oldestT) {
			oldest, oldestT = cp.TransactionTime, t
		}
	}
	if oldest == "" {
		return r.InitialSince, nil
	}
	return oldest, nil
}

// export kicks off (unless a status URL is saved) and waits for the manifest.
func (r *Runner) export(ctx context.Context, store *stateStore, st *RunState, log *slog.Logger) error {
	if st.StatusURL == "" {
		st.Phase = PhaseKickingOff
		if err := store.save(st); err != nil {
			return err
		}
		req := r.Request
		req.Since = st.Since
		t0 := time.Now()
		statusURL, err := r.Client.KickOff(ctx, req)
		if err != nil {
			_ = store.remove()
			return fmt.Errorf("kick-off: %w", err)
		}
		r.phase("kickoff", time.Since(t0))
		st.StatusURL, st.Phase = statusURL, PhasePolling
		st.KickOffs++
		if err := store.save(st); err != nil {
			return err
		}
		r.failpoint("polling")
	}
	t0 := time.Now()
	m, err := r.Client.Wait(ctx, st.StatusURL)
	if err != nil {
		if errors.Is(err, fetch.ErrExportGone) {
			return err
		}
		var je *fetch.JobError
		if errors.As(err, &je) || errors.Is(err, fetch.ErrExportTimeout) {
			return &jobFailure{err: fmt.Errorf("export: %w", err)}
		}
		return fmt.Errorf("wait for export: %w", err)
	}
	r.phase("wait", time.Since(t0))
	st.Manifest, st.Phase = m, PhaseLoading
	if st.Spooled == nil {
		st.Spooled = map[int]fetch.Spooled{}
	}
	log.Debug("export complete", "transaction_time", m.TransactionTime, "files", len(m.Files()))
	return store.save(st)
}

func (r *Runner) resetExport(store *stateStore, st *RunState) {
	_ = os.RemoveAll(r.spoolDir(st))
	st.StatusURL, st.Manifest, st.Spooled, st.Phase = "", nil, nil, ""
	_ = store.save(st)
}

func (r *Runner) spoolDir(st *RunState) string {
	return filepath.Join(r.DataDir, "spool", r.Source, st.RunID)
}

func (r *Runner) phase(name string, d time.Duration) {
	if r.Hooks != nil {
		r.Hooks.Phase(r.Source, name, d)
	}
}

// apply downloads the manifest's files (skipping those already spooled),
// streams them through the transform into every sink that does not hold
// the export yet, commits, and cleans up.
func (r *Runner) apply(ctx context.Context, store *stateStore, st *RunState, res *Result, log *slog.Logger) error {
	m := st.Manifest
	res.ExportID, res.TransactionTime = st.ExportID(), m.TransactionTime
	if r.Hooks != nil {
		r.Hooks.Manifest(r.Source, m)
	}
	info := sinks.RunInfo{RunID: st.RunID, Source: r.Source, Namespace: r.namespace(), ExportID: st.ExportID(), Since: st.Since,
		TransactionTime: m.TransactionTime, Started: st.Started}
	var todo []sinks.Sink
	for _, s := range r.Sinks {
		if slices.Contains(st.Committed, s.Name()) {
			res.Skipped = append(res.Skipped, s.Name())
			continue
		}
		cp, ok, err := s.Checkpoint(ctx, r.Source)
		if err != nil {
			return fmt.Errorf("read checkpoint of sink %s: %w", s.Name(), err)
		}
		if ok && cp.ExportID == info.ExportID {
			res.Skipped = append(res.Skipped, s.Name())
			continue
		}
		if ok && cp.TransactionTime != "" && st.Since == "" && !r.Full {
			log.Warn("sink holds an older state than a full export can update; it catches up in the next run",
				"sink", s.Name(), "checkpoint", cp.TransactionTime)
			res.Deferred = append(res.Deferred, s.Name())
			continue
		}
		todo = append(todo, s)
	}
	if len(todo) > 0 {
		sum, err := r.load(ctx, store, st, info, todo, res)
		if err != nil {
			return err
		}
		// The transform's batches and builders are garbage now. Handing
		// their memory back before the sinks commit (DuckDB's commit is
		// where it needs its memory_limit) keeps the process's peak at
		// the larger of the two phases rather than their sum.
		debug.FreeOSMemory()
		commitStart := time.Now()
		for _, s := range todo {
			t0 := time.Now()
			summary := sum.summary
			summary.Purged = sum.purged[s.Name()]
			if err := sum.txns[s.Name()].Commit(ctx, summary); err != nil {
				r.rollback(ctx, sum.txns)
				return fmt.Errorf("commit to sink %s: %w", s.Name(), err)
			}
			d := time.Since(t0)
			if r.Hooks != nil {
				r.Hooks.Committed(r.Source, s.Name(), d)
				r.Hooks.Recorded(r.Source, s.Name(), summary)
			}
			if summary.Purged > 0 {
				if res.Purged == nil {
					res.Purged = map[string]int64{}
				}
				res.Purged[s.Name()] = summary.Purged
			}
			st.Committed = append(st.Committed, s.Name())
			if err := store.save(st); err != nil {
				r.rollback(ctx, sum.txns)
				return err
			}
			res.Committed = append(res.Committed, s.Name())
		}
		r.phase("commit", time.Since(commitStart))
	}
	st.Phase = PhaseCommitted
	if err := store.save(st); err != nil {
		return err
	}
	r.failpoint("committed")
	r.cleanup(ctx, store, st, log)
	return nil
}

// cleanup releases the server's files (only now that every sink holds the
// export) and removes the spool and the state.
func (r *Runner) cleanup(ctx context.Context, store *stateStore, st *RunState, log *slog.Logger) {
	if r.DeleteAfter && st.StatusURL != "" {
		if err := r.Client.Delete(ctx, st.StatusURL); err != nil && !errors.Is(err, fetch.ErrExportGone) {
			log.Warn("could not release the export on the server", "err", err)
		}
	}
	if err := os.RemoveAll(r.spoolDir(st)); err != nil {
		log.Warn("could not remove the spool", "err", err)
	}
	if err := store.remove(); err != nil {
		log.Warn("could not remove the run state", "err", err)
	}
}

type loaded struct {
	txns    map[string]sinks.Txn
	summary sinks.RunSummary
	purged  map[string]int64 // per sink: Purged differs where sinks do
}

func (r *Runner) rollback(ctx context.Context, txns map[string]sinks.Txn) {
	for name, t := range txns {
		if err := t.Rollback(context.WithoutCancel(ctx)); err != nil {
			r.log().Warn("rollback failed", "sink", name, "err", err)
		}
	}
}

// load streams every file into one sinks.Txn per sink. Downloads, transform
// workers and the sink writer run concurrently, linked by bounded channels.
func (r *Runner) load(ctx context.Context, store *stateStore, st *RunState, info sinks.RunInfo, targets []sinks.Sink, res *Result) (*loaded, error) {
	t0 := time.Now()
	txns := map[string]sinks.Txn{}
	for _, s := range targets {
		txn, err := s.Begin(ctx, info)
		if err != nil {
			r.rollback(ctx, txns)
			return nil, fmt.Errorf("begin on sink %s: %w", s.Name(), err)
		}
		txns[s.Name()] = txn
	}
	ok := false
	defer func() {
		if !ok {
			r.rollback(ctx, txns)
		}
	}()
	spool := r.spoolDir(st)
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, err
	}
	workers := max(r.Workers, 1)
	ld := &loading{
		r: r, store: store, st: st, targets: targets, txns: txns,
		origin: transform.Origin{Namespace: info.Namespace, Source: r.Source, ExportID: info.ExportID, TransactionTime: info.TransactionTime},
		files:  make(chan fetch.Spooled, workers),
		// Bounded: a slow sink holds back the transform, and so the downloads.
		batches: make(chan schemas.Batch, max(r.QueueDepth, 1)),
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ld.download(gctx, spool) })
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		g.Go(func() error { defer wg.Done(); return ld.transform(gctx) })
	}
	go func() { wg.Wait(); close(ld.batches) }()
	g.Go(func() error { return ld.write(gctx) })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	r.phase("download_transform", time.Since(t0))
	total := ld.total
	res.Stats, res.Files, res.WireBytes = total, ld.nfiles, ld.wire
	if r.FailOnErrorOutcomes && total.ErrorIssues > 0 {
		return nil, &jobFailure{err: fmt.Errorf("the server reported %d error issue(s) in error files (first: %s); the watermark stays at %q",
			total.ErrorIssues, total.FirstIssue, st.Since)}
	}
	log := r.log().With("source", r.Source)
	res.Members, res.MembersFrom = r.membership(st, ld.exported, ld.foundGroup, log)
	var purged map[string]int64
	if r.Purge && res.Members != nil {
		t1 := time.Now()
		var err error
		if purged, err = r.purge(ctx, info, res.Members, targets, txns, log); err != nil {
			return nil, err
		}
		r.phase("purge", time.Since(t1))
	}
	ok = true
	return &loaded{txns: txns, purged: purged, summary: sinks.RunSummary{
		Outcome: "success", Files: int64(ld.nfiles), Bytes: ld.wire, Resources: total.Resources,
		Deleted: total.Deleted, Rejects: total.Rejects, Outcomes: total.Outcomes, Finished: time.Now().UTC(),
		Membership: res.Members, MembersFrom: res.MembersFrom,
	}}, nil
}

// loading is one run's load in flight: the downloader feeds files, the
// transform workers turn them into batches, and one writer hands the
// batches to every sink's Txn (so each Txn is used by one goroutine).
type loading struct {
	r       *Runner
	store   *stateStore
	st      *RunState
	targets []sinks.Sink
	txns    map[string]sinks.Txn
	origin  transform.Origin
	files   chan fetch.Spooled
	batches chan schemas.Batch

	mu    sync.Mutex // guards st.Spooled, the totals and the exported Group
	total transform.FileStats
	wire  int64
	// exported is the run's Group as the export's own Group file has it,
	// for a run whose server refused the Group read (foundGroup: seen).
	exported   []string
	foundGroup bool
	nfiles     int
}

// download fetches the files not spooled yet. Each stored file is recorded
// in the state before it is handed on, so a restart never fetches it again.
func (ld *loading) download(ctx context.Context, spool string) error {
	defer close(ld.files)
	skip := func(f fetch.File) (fetch.Spooled, bool) {
		ld.mu.Lock()
		sp, ok := ld.st.Spooled[f.Index]
		ld.mu.Unlock()
		if !ok {
			return fetch.Spooled{}, false
		}
		if _, err := os.Stat(sp.Path); err != nil {
			return fetch.Spooled{}, false
		}
		return sp, true
	}
	done := func(sp fetch.Spooled) error {
		ld.mu.Lock()
		if ld.st.Spooled == nil {
			ld.st.Spooled = map[int]fetch.Spooled{}
		}
		ld.st.Spooled[sp.File.Index] = sp
		ld.mu.Unlock()
		if err := ld.store.save(ld.st); err != nil {
			return err
		}
		ld.r.failpoint("spooled")
		select {
		case ld.files <- sp:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ld.r.Client.DownloadAll(ctx, ld.st.Manifest, spool, skip, done)
}

// transform is one worker: it streams files through the engine.
func (ld *loading) transform(ctx context.Context) error {
	emit := func(b schemas.Batch) error {
		select {
		case ld.batches <- b:
			return nil
		case <-ctx.Done():
			b.Release()
			return ctx.Err()
		}
	}
	for sp := range ld.files {
		in := transform.Input{Path: sp.Path, Name: fileName(sp.File), Kind: string(sp.File.Kind), Type: sp.File.Type, Index: sp.File.Index}
		if err := ld.findGroup(sp, in.Name); err != nil {
			return err
		}
		fs, err := ld.r.Engine.ProcessFile(ctx, ld.origin, in, emit)
		if err != nil {
			return fmt.Errorf("transform %s: %w", in.Name, err)
		}
		ld.mu.Lock()
		ld.total.Add(fs)
		ld.wire += sp.WireBytes
		ld.nfiles++
		ld.mu.Unlock()
		if ld.r.Hooks != nil {
			ld.r.Hooks.FileDone(ld.r.Source, sp, fs)
		}
	}
	return nil
}

// write hands every batch to the sinks until the workers are done. After
// an error it keeps draining (and releasing), so no worker blocks on a
// dead writer.
func (ld *loading) write(ctx context.Context) error {
	var err error
	for b := range ld.batches {
		if err != nil {
			b.Release()
			continue
		}
		err = ld.r.write(ctx, ld.targets, ld.txns, b)
		ld.r.failpoint("written")
	}
	return err
}

// write hands b to every sink; each extra sink gets its own reference.
func (r *Runner) write(ctx context.Context, targets []sinks.Sink, txns map[string]sinks.Txn, b schemas.Batch) error {
	for i, s := range targets {
		if i < len(targets)-1 {
			b.Rec.Retain()
		}
		if err := txns[s.Name()].Write(ctx, b); err != nil {
			for range targets[i+1:] {
				b.Release()
			}
			return fmt.Errorf("write %s to sink %s: %w", b.Table.Name, s.Name(), err)
		}
	}
	return nil
}

// fileName is a file's provenance name: never its URL, which may carry a
// signature.
func fileName(f fetch.File) string {
	if f.URL != "" && !strings.Contains(f.URL, "://") {
		return filepath.Base(f.URL)
	}
	return fmt.Sprintf("%s/%d.%s.ndjson", f.Kind, f.Index, f.Type)
}

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// RunFunc performs one resumable run of one source (the daemon's app wires
// it to a [Runner]). It must return soon after ctx is cancelled; a
// cancelled run is a safe point that the next run resumes.
type RunFunc func(ctx context.Context, source string) (*Result, error)

// RunObserver is told about every run the scheduler starts, finishes or
// skips (implemented by [Metrics]). Methods must not block.
type RunObserver interface {
	RunStarted(source string)
	RunFinished(source string, res *Result, err error)
	// RunSkipped reports a tick that did not start a run: reason is
	// "overlap" (the source is still running), "stopping" or "reloading".
	RunSkipped(source, reason string)
}

// Scheduler errors, returned by Trigger (and mapped to HTTP codes by the
// admin endpoint).
var (
	ErrUnknownSource = errors.New("unknown source")
	ErrRunInProgress = errors.New("a run of this source is already in progress")
	ErrNotAccepting  = errors.New("the scheduler is stopping or reloading")
	ErrStopTimeout   = errors.New("runs did not stop within the stop timeout")
)

// ScheduledSource is one source as the scheduler sees it.
type ScheduledSource struct {
	Name string
	// Schedule is a cron spec in [CheckSchedules] syntax; empty means
	// the source only runs when triggered (or resumed at start).
	Schedule string
	// TimeZone evaluates Schedule ("" = the process's local zone).
	TimeZone string
}

// SchedulerOptions configure a Scheduler.
type SchedulerOptions struct {
	Sources []ScheduledSource
	Run     RunFunc
	// MaxConcurrent bounds the runs in flight over all sources (default 1).
	MaxConcurrent int
	// Jitter delays each scheduled run by a random duration in [0, Jitter),
	// so many daemons on the same schedule do not hit a server together.
	// Triggered and resumed runs start without jitter.
	Jitter time.Duration
	// StopTimeout bounds the wait for cancelled runs to return (default 30s).
	StopTimeout time.Duration
	// Resume reports whether a source has a saved, unfinished run; such a
	// source is run as soon as the scheduler starts instead of waiting for
	// its schedule. nil resumes nothing.
	Resume   func(source string) bool
	Observer RunObserver
	Logger   *slog.Logger
	// rand draws the jitter in [0, n); tests replace it.
	rand func(n int64) int64
}

// SourceStatus is one source's entry in /status.
type SourceStatus struct {
	Name     string     `json:"name"`
	Schedule string     `json:"schedule,omitempty"`
	TimeZone string     `json:"timezone,omitempty"`
	NextRun  *time.Time `json:"next_run,omitempty"`
	// State is idle, queued (waiting for jitter or a run slot) or running.
	State        string     `json:"state"`
	RunningSince *time.Time `json:"running_since,omitempty"`
	// SkippedTicks counts ticks that found the source still running.
	SkippedTicks int64      `json:"skipped_ticks"`
	LastSuccess  *time.Time `json:"last_success,omitempty"`
	LastRun      *LastRun   `json:"last_run,omitempty"`
}

// LastRun summarises a source's most recent finished run.
type LastRun struct {
	RunID    string    `json:"run_id,omitempty"`
	Outcome  string    `json:"outcome"`
	Trigger  string    `json:"trigger"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Seconds  float64   `json:"duration_seconds"`
	Resumed  bool      `json:"resumed"`
	// Checkpoint is the transactionTime the run committed (the next _since).
	Checkpoint string `json:"checkpoint,omitempty"`
	Files      int    `json:"files"`
	Bytes      int64  `json:"bytes"`
	Resources  int64  `json:"resources"`
	Deleted    int64  `json:"deleted"`
	Rejects    int64  `json:"rejects"`
	Error      string `json:"error,omitempty"`
}

// Run outcomes, used in /status and as the outcome metric label.
const (
	OutcomeSuccess   = "success"
	OutcomeFailure   = "failure"
	OutcomeCancelled = "cancelled"
)

// Outcome classifies a run's error.
func Outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeSuccess
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeCancelled
	default:
		return OutcomeFailure
	}
}

type sourceState struct {
	cfg     ScheduledSource
	sched   cron.Schedule // nil: manual only
	entry   cron.EntryID
	busy    bool // queued or running
	running bool
	since   time.Time
	skipped int64
	last    *LastRun
	success *time.Time
}

// Scheduler runs each source on its own cron schedule, never overlapping a
// source with itself, with at most MaxConcurrent runs at once.
type Scheduler struct {
	opts SchedulerOptions
	log  *slog.Logger
	sem  chan struct{}

	mu        sync.Mutex
	sources   map[string]*sourceState
	order     []string
	run       RunFunc
	cron      *cron.Cron
	base      context.Context // set by Start; parent of every run
	accepting bool
	reloading bool
	inflight  sync.WaitGroup
	idle      *sync.Cond // signalled when a run ends
	nbusy     int
}

// NewScheduler checks every schedule and returns a scheduler that starts
// nothing until Run.
func NewScheduler(opts SchedulerOptions) (*Scheduler, error) {
	if opts.Run == nil {
		return nil, errors.New("scheduler: Run is nil")
	}
	if opts.MaxConcurrent < 1 {
		opts.MaxConcurrent = 1
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 30 * time.Second
	}
	if opts.rand == nil {
		opts.rand = rand.Int64N
	}
	s := &Scheduler{opts: opts, log: opts.Logger, sem: make(chan struct{}, opts.MaxConcurrent), run: opts.Run}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.idle = sync.NewCond(&s.mu)
	srcs, order, err := buildSources(opts.Sources)
	if err != nil {
		return nil, err
	}
	s.sources, s.order = srcs, order
	return s, nil
}

func buildSources(list []ScheduledSource) (map[string]*sourceState, []string, error) {
	srcs := map[string]*sourceState{}
	var order []string
	for _, c := range list {
		if _, dup := srcs[c.Name]; dup {
			return nil, nil, fmt.Errorf("scheduler: source %q is listed twice", c.Name)
		}
		st := &sourceState{cfg: c}
		if c.Schedule != "" {
			spec := c.Schedule
			if c.TimeZone != "" && !strings.HasPrefix(spec, "TZ=") && !strings.HasPrefix(spec, "CRON_TZ=") {
				spec = "CRON_TZ=" + c.TimeZone + " " + spec
			}
			sched, err := cronParser().Parse(spec)
			if err != nil {
				return nil, nil, fmt.Errorf("scheduler: source %q: schedule %q: %w", c.Name, c.Schedule, err)
			}
			st.sched = sched
		}
		srcs[c.Name] = st
		order = append(order, c.Name)
	}
	return srcs, order, nil
}

func (s *Scheduler) observer() RunObserver {
	if s.opts.Observer == nil {
		return nopObserver{}
	}
	return s.opts.Observer
}

type nopObserver struct{}

func (nopObserver) RunStarted(string)                  {}
func (nopObserver) RunFinished(string, *Result, error) {}
func (nopObserver) RunSkipped(string, string)          {}

// Run schedules runs until ctx is cancelled, then stops scheduling,
// cancels the runs in flight and waits up to StopTimeout for them. Sources
// with a saved run state are run at once. It returns nil after a clean
// stop and ErrStopTimeout when runs were still going at the deadline.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.cron != nil {
		s.mu.Unlock()
		return errors.New("scheduler: Run called twice")
	}
	s.base = ctx
	s.cron = cron.New(cron.WithParser(cronParser()))
	s.accepting = true
	s.addEntriesLocked()
	var resume []string
	if s.opts.Resume != nil {
		for _, name := range s.order {
			if s.opts.Resume(name) {
				resume = append(resume, name)
			}
		}
	}
	s.mu.Unlock()
	s.cron.Start()
	for _, name := range resume {
		s.log.Info("resuming the unfinished run found at start", "source", name)
		if err := s.start(name, "resume", 0); err != nil {
			s.log.Warn("could not resume", "source", name, "err", err)
		}
	}

	<-ctx.Done()
	s.mu.Lock()
	s.accepting = false
	s.mu.Unlock()
	<-s.cron.Stop().Done() // tick callbacks only spawn goroutines: this is quick
	// Runs derive from ctx, so they are already cancelled; wait for them.
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	t := time.NewTimer(s.opts.StopTimeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		s.mu.Lock()
		var still []string
		for _, n := range s.order {
			if s.sources[n].running {
				still = append(still, n)
			}
		}
		s.mu.Unlock()
		return fmt.Errorf("%w (%s): still running: %s", ErrStopTimeout, s.opts.StopTimeout, strings.Join(still, ", "))
	}
}

func (s *Scheduler) addEntriesLocked() {
	for _, name := range s.order {
		st := s.sources[name]
		if st.sched == nil {
			continue
		}
		st.entry = s.cron.Schedule(st.sched, cron.FuncJob(func() { s.tick(name) }))
	}
}

// tick is called by cron on a source's schedule.
func (s *Scheduler) tick(name string) {
	var d time.Duration
	if s.opts.Jitter > 0 {
		d = time.Duration(s.opts.rand(int64(s.opts.Jitter)))
	}
	err := s.start(name, "schedule", d)
	switch {
	case errors.Is(err, ErrRunInProgress):
		s.mu.Lock()
		if st := s.sources[name]; st != nil {
			st.skipped++
		}
		s.mu.Unlock()
		s.observer().RunSkipped(name, "overlap")
		s.log.Warn("schedule tick skipped: the previous run is still going", "source", name)
	case errors.Is(err, ErrNotAccepting):
		reason := "stopping"
		s.mu.Lock()
		if s.reloading {
			reason = "reloading"
		}
		s.mu.Unlock()
		s.observer().RunSkipped(name, reason)
	case err != nil:
		s.log.Warn("schedule tick skipped", "source", name, "err", err)
	}
}

// Trigger starts a run of source now (without jitter, but within the
// concurrency limit).
func (s *Scheduler) Trigger(source string) error {
	return s.start(source, "trigger", 0)
}

// start marks source busy and runs it in a goroutine after delay, once a
// run slot is free.
func (s *Scheduler) start(name, trigger string, delay time.Duration) error {
	s.mu.Lock()
	st, ok := s.sources[name]
	switch {
	case !ok:
		s.mu.Unlock()
		return fmt.Errorf("%w %q", ErrUnknownSource, name)
	case !s.accepting:
		s.mu.Unlock()
		return ErrNotAccepting
	case st.busy:
		s.mu.Unlock()
		return fmt.Errorf("source %q: %w", name, ErrRunInProgress)
	}
	st.busy = true
	s.nbusy++
	s.inflight.Add(1)
	ctx, run := s.base, s.run
	s.mu.Unlock()
	go s.execute(ctx, run, st, trigger, delay)
	return nil
}

func (s *Scheduler) execute(ctx context.Context, run RunFunc, st *sourceState, trigger string, delay time.Duration) {
	name := st.cfg.Name
	defer s.inflight.Done()
	defer func() {
		s.mu.Lock()
		st.busy, st.running = false, false
		s.nbusy--
		s.idle.Broadcast()
		s.mu.Unlock()
	}()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-s.sem }()
	if ctx.Err() != nil {
		return
	}
	started := time.Now()
	s.mu.Lock()
	st.running, st.since = true, started
	s.mu.Unlock()
	s.observer().RunStarted(name)
	res, err := s.safeRun(ctx, run, name)
	finished := time.Now()
	s.observer().RunFinished(name, res, err)

	lr := &LastRun{Outcome: Outcome(err), Trigger: trigger, Started: started, Finished: finished, Seconds: finished.Sub(started).Seconds()}
	if res != nil {
		lr.RunID, lr.Resumed = res.RunID, res.Resumed
		lr.Files, lr.Bytes = res.Files, res.WireBytes
		lr.Resources, lr.Deleted, lr.Rejects = res.Stats.Resources, res.Stats.Deleted, res.Stats.Rejects
		if err == nil {
			lr.Checkpoint = res.TransactionTime
		}
	}
	if err != nil {
		lr.Error = err.Error()
		runID := ""
		if res != nil {
			runID = res.RunID
		}
		if lr.Outcome == OutcomeCancelled {
			s.log.Info("run interrupted; the next start resumes it", "source", name, "run_id", runID)
		} else {
			s.log.Error("run failed", "source", name, "run_id", runID, "err", err)
		}
	}
	s.mu.Lock()
	st.last = lr
	if err == nil {
		st.success = &finished
	}
	s.mu.Unlock()
}

// safeRun turns a panicking run into a failed one, so one bad source does
// not take the daemon (and every other source) down.
func (s *Scheduler) safeRun(ctx context.Context, run RunFunc, name string) (res *Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("run of %s panicked: %v", name, p)
		}
	}()
	return run(ctx, name)
}

// Reload replaces the sources and the run function without stopping the
// daemon: it stops starting runs, waits for the runs in flight to finish
// on the old configuration (they are not cancelled), calls swap, and
// schedules the sources it returns. Ticks that fall in the pause are
// skipped. swap runs with no run in flight, so it may close what the old
// run function used. When swap fails the old sources and run function are
// kept and scheduling resumes; swap must then leave them usable. If ctx is
// cancelled while waiting, Reload returns ctx.Err() and leaves the rest to
// Run's stop.
func (s *Scheduler) Reload(ctx context.Context, swap func() ([]ScheduledSource, RunFunc, error)) error {
	s.mu.Lock()
	if s.cron == nil || !s.accepting {
		s.mu.Unlock()
		return ErrNotAccepting
	}
	s.accepting, s.reloading = false, true
	stopWait := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.idle.Broadcast()
		s.mu.Unlock()
	})
	defer stopWait()
	for s.nbusy > 0 && ctx.Err() == nil {
		s.idle.Wait()
	}
	if err := ctx.Err(); err != nil {
		s.reloading = false
		s.mu.Unlock()
		return err
	}
	s.mu.Unlock()

	list, run, swapErr := swap()
	var srcs map[string]*sourceState
	var order []string
	if swapErr == nil {
		var err error
		if srcs, order, err = buildSources(list); err != nil {
			swapErr = err
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.reloading = false
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.accepting = true
	if swapErr != nil {
		return swapErr
	}
	for _, st := range s.sources {
		if st.sched != nil {
			s.cron.Remove(st.entry)
		}
	}
	for name, st := range srcs {
		if old, ok := s.sources[name]; ok {
			st.skipped, st.last, st.success = old.skipped, old.last, old.success
		}
	}
	s.sources, s.order, s.run = srcs, order, run
	s.addEntriesLocked()
	return nil
}

// Status reports every source, in configuration order.
func (s *Scheduler) Status() []SourceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	out := make([]SourceStatus, 0, len(s.order))
	for _, name := range s.order {
		st := s.sources[name]
		ss := SourceStatus{Name: name, Schedule: st.cfg.Schedule, TimeZone: st.cfg.TimeZone, State: "idle", SkippedTicks: st.skipped}
		if st.sched != nil {
			next := st.sched.Next(now)
			if s.cron != nil && st.entry != 0 {
				if e := s.cron.Entry(st.entry); !e.Next.IsZero() {
					next = e.Next
				}
			}
			ss.NextRun = &next
		}
		if st.busy {
			ss.State = "queued"
		}
		if st.running {
			ss.State = "running"
			since := st.since
			ss.RunningSince = &since
		}
		if st.last != nil {
			lr := *st.last
			ss.LastRun = &lr
		}
		if st.success != nil {
			t := *st.success
			ss.LastSuccess = &t
		}
		out = append(out, ss)
	}
	return out
}

// Sources lists the scheduled source names, in configuration order.
func (s *Scheduler) Sources() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order)
}

package pipeline

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tracker is a fake RunFunc that records concurrency per source and overall.
type tracker struct {
	hold time.Duration // how long a run takes unless cancelled

	mu        sync.Mutex
	active    map[string]int
	maxPer    map[string]int
	total     int
	maxTotal  int
	runs      map[string]int
	cancelled int
	starts    []time.Time
}

func newTracker(hold time.Duration) *tracker {
	return &tracker{hold: hold, active: map[string]int{}, maxPer: map[string]int{}, runs: map[string]int{}}
}

func (tr *tracker) run(ctx context.Context, source string) (*Result, error) {
	tr.mu.Lock()
	tr.active[source]++
	tr.maxPer[source] = max(tr.maxPer[source], tr.active[source])
	tr.total++
	tr.maxTotal = max(tr.maxTotal, tr.total)
	tr.starts = append(tr.starts, time.Now())
	tr.mu.Unlock()
	defer func() {
		tr.mu.Lock()
		tr.active[source]--
		tr.total--
		tr.mu.Unlock()
	}()
	t := time.NewTimer(tr.hold)
	defer t.Stop()
	select {
	case <-t.C:
		tr.mu.Lock()
		tr.runs[source]++
		tr.mu.Unlock()
		return &Result{RunID: "r-" + source, Source: source, TransactionTime: "2025-01-01T00:00:00Z"}, nil
	case <-ctx.Done():
		tr.mu.Lock()
		tr.cancelled++
		tr.mu.Unlock()
		return &Result{RunID: "r-" + source, Source: source}, ctx.Err()
	}
}

func (tr *tracker) snapshot() (maxPer map[string]int, maxTotal int, runs map[string]int, cancelled int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	mp, rs := map[string]int{}, map[string]int{}
	for k, v := range tr.maxPer {
		mp[k] = v
	}
	for k, v := range tr.runs {
		rs[k] = v
	}
	return mp, tr.maxTotal, rs, tr.cancelled
}

// startScheduler runs s in the background; the returned stop cancels it
// and returns Run's error.
func startScheduler(t *testing.T, s *Scheduler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				err = errors.New("scheduler did not stop")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	// Wait until Run has set up cron, so Trigger is accepted.
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.accepting
	}, 2*time.Second, 5*time.Millisecond)
	return stop
}

type countingObserver struct {
	mu       sync.Mutex
	started  map[string]int
	finished map[string][]string
	skipped  map[string]int
}

func newCountingObserver() *countingObserver {
	return &countingObserver{started: map[string]int{}, finished: map[string][]string{}, skipped: map[string]int{}}
}

func (o *countingObserver) RunStarted(s string) { o.mu.Lock(); o.started[s]++; o.mu.Unlock() }
func (o *countingObserver) RunFinished(s string, _ *Result, err error) {
	o.mu.Lock()
	o.finished[s] = append(o.finished[s], Outcome(err))
	o.mu.Unlock()
}
func (o *countingObserver) RunSkipped(s, reason string) {
	o.mu.Lock()
	o.skipped[s+"/"+reason]++
	o.mu.Unlock()
}

func TestSchedulerNeverOverlapsASource(t *testing.T) {
	t.Parallel()
	tr := newTracker(2500 * time.Millisecond)
	obs := newCountingObserver()
	s, err := NewScheduler(SchedulerOptions{
		Sources:       []ScheduledSource{{Name: "a", Schedule: "@every 1s"}},
		Run:           tr.run,
		MaxConcurrent: 4,
		Observer:      obs,
	})
	require.NoError(t, err)
	stop := startScheduler(t, s)
	time.Sleep(4500 * time.Millisecond) // let about 4 ticks fire
	require.NoError(t, stop())

	maxPer, _, runs, _ := tr.snapshot()
	require.Equal(t, 1, maxPer["a"], "a source ran concurrently with itself")
	require.GreaterOrEqual(t, runs["a"], 1)
	obs.mu.Lock()
	skipped := obs.skipped["a/overlap"]
	obs.mu.Unlock()
	require.GreaterOrEqual(t, skipped, 1, "ticks during a run must be skipped and counted")
	st := s.Status()
	require.Equal(t, int64(skipped), st[0].SkippedTicks)
}

func TestSchedulerConcurrencyLimit(t *testing.T) {
	t.Parallel()
	tr := newTracker(1200 * time.Millisecond)
	s, err := NewScheduler(SchedulerOptions{
		Sources: []ScheduledSource{
			{Name: "a", Schedule: "@every 1s"}, {Name: "b", Schedule: "@every 1s"},
			{Name: "c", Schedule: "@every 1s"}, {Name: "d", Schedule: "@every 1s"},
		},
		Run:           tr.run,
		MaxConcurrent: 2,
	})
	require.NoError(t, err)
	stop := startScheduler(t, s)
	// Queued sources show as queued while the slots are taken.
	var queued bool
	require.Eventually(t, func() bool {
		for _, ss := range s.Status() {
			queued = queued || ss.State == "queued"
		}
		_, _, runs, _ := tr.snapshot()
		return runs["a"]+runs["b"]+runs["c"]+runs["d"] >= 4
	}, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	_, maxTotal, _, _ := tr.snapshot()
	require.Equal(t, 2, maxTotal, "runs in flight must reach but never exceed max_concurrent_runs")
	require.True(t, queued, "with 4 sources and 2 slots some source must wait")
}

func TestSchedulerTrigger(t *testing.T) {
	t.Parallel()
	tr := newTracker(300 * time.Millisecond)
	s, err := NewScheduler(SchedulerOptions{
		Sources: []ScheduledSource{{Name: "manual"}, {Name: "nightly", Schedule: "0 2 * * *"}},
		Run:     tr.run,
	})
	require.NoError(t, err)
	require.ErrorIs(t, s.Trigger("manual"), ErrNotAccepting, "before Run nothing starts")
	stop := startScheduler(t, s)

	require.NoError(t, s.Trigger("manual"))
	require.ErrorIs(t, s.Trigger("manual"), ErrRunInProgress)
	require.ErrorIs(t, s.Trigger("nope"), ErrUnknownSource)
	require.Eventually(t, func() bool {
		st := s.Status()
		return st[0].LastRun != nil && st[0].State == "idle"
	}, 3*time.Second, 10*time.Millisecond)
	st := s.Status()
	require.Equal(t, OutcomeSuccess, st[0].LastRun.Outcome)
	require.Equal(t, "trigger", st[0].LastRun.Trigger)
	require.Equal(t, "2025-01-01T00:00:00Z", st[0].LastRun.Checkpoint)
	require.NotNil(t, st[0].LastSuccess)
	require.Nil(t, st[0].NextRun, "a manual source has no next run")
	require.NotNil(t, st[1].NextRun)
	require.Nil(t, st[1].LastRun)

	require.NoError(t, stop())
	require.ErrorIs(t, s.Trigger("manual"), ErrNotAccepting, "after stop nothing starts")
	_, _, runs, _ := tr.snapshot()
	require.Equal(t, 1, runs["manual"])
	require.Equal(t, 0, runs["nightly"])
}

func TestSchedulerJitterDelaysScheduledRunsWithinBounds(t *testing.T) {
	t.Parallel()
	const jitter = 400 * time.Millisecond
	tr := newTracker(10 * time.Millisecond)
	var asked atomic.Int64
	var draw atomic.Int64
	s, err := NewScheduler(SchedulerOptions{
		Sources: []ScheduledSource{{Name: "a"}},
		Run:     tr.run,
		Jitter:  jitter,
	})
	require.NoError(t, err)
	s.opts.rand = func(n int64) int64 { asked.Store(n); return draw.Load() }
	startScheduler(t, s)

	for _, d := range []time.Duration{jitter - time.Nanosecond, 0, jitter / 2} {
		draw.Store(int64(d))
		tr.mu.Lock()
		n := len(tr.starts)
		tr.mu.Unlock()
		t0 := time.Now()
		s.tick("a")
		require.Eventually(t, func() bool {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			return len(tr.starts) > n
		}, 3*time.Second, time.Millisecond)
		tr.mu.Lock()
		delay := tr.starts[n].Sub(t0)
		tr.mu.Unlock()
		require.GreaterOrEqual(t, delay, d, "run started before its jitter")
		require.Less(t, delay, d+150*time.Millisecond, "run started long after its jitter")
		require.Equal(t, int64(jitter), asked.Load(), "jitter is drawn in [0, daemon.jitter)")
		require.Eventually(t, func() bool { return s.Status()[0].State == "idle" }, 2*time.Second, 5*time.Millisecond)
	}

	// A triggered run ignores the jitter.
	draw.Store(int64(jitter - time.Nanosecond))
	t0 := time.Now()
	require.NoError(t, s.Trigger("a"))
	require.Eventually(t, func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.starts) == 4
	}, 2*time.Second, time.Millisecond)
	tr.mu.Lock()
	require.Less(t, tr.starts[3].Sub(t0), jitter/2)
	tr.mu.Unlock()

	// The default draw stays in bounds.
	s2, err := NewScheduler(SchedulerOptions{Sources: []ScheduledSource{{Name: "a"}}, Run: tr.run, Jitter: jitter})
	require.NoError(t, err)
	for range 1000 {
		d := s2.opts.rand(int64(jitter))
		require.True(t, d >= 0 && d < int64(jitter), "draw %d out of [0, %d)", d, jitter)
	}
}

func TestSchedulerStopCancelsAndWaitsForRuns(t *testing.T) {
	t.Parallel()
	const rollback = 300 * time.Millisecond
	var returned atomic.Bool
	started := make(chan struct{}, 2)
	run := func(ctx context.Context, source string) (*Result, error) {
		started <- struct{}{}
		<-ctx.Done()
		// The runner rolls its transactions back after a cancel: slow.
		time.Sleep(rollback)
		returned.Store(true)
		return nil, ctx.Err()
	}
	obs := newCountingObserver()
	s, err := NewScheduler(SchedulerOptions{
		Sources:       []ScheduledSource{{Name: "a"}, {Name: "b"}},
		Run:           run,
		MaxConcurrent: 2,
		StopTimeout:   5 * time.Second,
		Observer:      obs,
	})
	require.NoError(t, err)
	stop := startScheduler(t, s)
	require.NoError(t, s.Trigger("a"))
	require.NoError(t, s.Trigger("b"))
	<-started
	<-started
	t0 := time.Now()
	require.NoError(t, stop())
	require.True(t, returned.Load(), "Run returned before the runs did")
	require.GreaterOrEqual(t, time.Since(t0), rollback)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	require.Equal(t, []string{OutcomeCancelled}, obs.finished["a"])
	require.Equal(t, []string{OutcomeCancelled}, obs.finished["b"])
	for _, ss := range s.Status() {
		require.Equal(t, OutcomeCancelled, ss.LastRun.Outcome)
	}
}

func TestSchedulerStopTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{})
	run := func(ctx context.Context, source string) (*Result, error) {
		close(started)
		<-release // ignores ctx: a stuck sink
		return nil, nil
	}
	s, err := NewScheduler(SchedulerOptions{Sources: []ScheduledSource{{Name: "stuck"}}, Run: run, StopTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	stop := startScheduler(t, s)
	require.NoError(t, s.Trigger("stuck"))
	<-started
	t0 := time.Now()
	err = stop()
	require.ErrorIs(t, err, ErrStopTimeout)
	require.ErrorContains(t, err, "stuck")
	require.Less(t, time.Since(t0), 2*time.Second)
}

func TestSchedulerResumesSavedRunsAtStart(t *testing.T) {
	t.Parallel()
	tr := newTracker(10 * time.Millisecond)
	s, err := NewScheduler(SchedulerOptions{
		Sources: []ScheduledSource{{Name: "pending", Schedule: "@daily"}, {Name: "clean", Schedule: "@daily"}},
		Run:     tr.run,
		Resume:  func(source string) bool { return source == "pending" },
	})
	require.NoError(t, err)
	startScheduler(t, s)
	require.Eventually(t, func() bool {
		_, _, runs, _ := tr.snapshot()
		return runs["pending"] == 1
	}, 3*time.Second, 5*time.Millisecond)
	st := s.Status()
	require.Equal(t, "resume", st[0].LastRun.Trigger)
	_, _, runs, _ := tr.snapshot()
	require.Zero(t, runs["clean"])
}

func TestSchedulerTimeZone(t *testing.T) {
	t.Parallel()
	s, err := NewScheduler(SchedulerOptions{
		Sources: []ScheduledSource{
			{Name: "ny", Schedule: "0 2 * * *", TimeZone: "America/New_York"},
			{Name: "tokyo", Schedule: "CRON_TZ=Asia/Tokyo 30 4 * * *"},
		},
		Run: newTracker(0).run,
	})
	require.NoError(t, err)
	ny, _ := time.LoadLocation("America/New_York")
	tk, _ := time.LoadLocation("Asia/Tokyo")
	st := s.Status()
	n := st[0].NextRun.In(ny)
	require.Equal(t, [2]int{2, 0}, [2]int{n.Hour(), n.Minute()})
	n = st[1].NextRun.In(tk)
	require.Equal(t, [2]int{4, 30}, [2]int{n.Hour(), n.Minute()})

	_, err = NewScheduler(SchedulerOptions{Sources: []ScheduledSource{{Name: "x", Schedule: "61 * * * *"}}, Run: newTracker(0).run})
	require.ErrorContains(t, err, `source "x"`)
	_, err = NewScheduler(SchedulerOptions{Sources: []ScheduledSource{{Name: "x", Schedule: "@daily", TimeZone: "Mars/Olympus"}}, Run: newTracker(0).run})
	require.Error(t, err)
}

func TestSchedulerPanickingRunFails(t *testing.T) {
	t.Parallel()
	s, err := NewScheduler(SchedulerOptions{
		Sources: []ScheduledSource{{Name: "p"}},
		Run:     func(context.Context, string) (*Result, error) { panic("boom") },
	})
	require.NoError(t, err)
	startScheduler(t, s)
	require.NoError(t, s.Trigger("p"))
	require.Eventually(t, func() bool { lr := s.Status()[0].LastRun; return lr != nil }, 2*time.Second, 5*time.Millisecond)
	lr := s.Status()[0].LastRun
	require.Equal(t, OutcomeFailure, lr.Outcome)
	require.Contains(t, lr.Error, "boom")
}

func TestSchedulerReloadWaitsForRunsAndSwaps(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var oldRuns, newRuns atomic.Int32
	oldRun := func(ctx context.Context, source string) (*Result, error) {
		<-release
		oldRuns.Add(1)
		return &Result{Source: source}, nil
	}
	newRun := func(ctx context.Context, source string) (*Result, error) {
		newRuns.Add(1)
		return &Result{Source: source}, nil
	}
	s, err := NewScheduler(SchedulerOptions{Sources: []ScheduledSource{{Name: "a"}}, Run: oldRun})
	require.NoError(t, err)
	startScheduler(t, s)
	require.NoError(t, s.Trigger("a"))

	var swapped atomic.Bool
	var atSwap atomic.Int32
	reloaded := make(chan error, 1)
	go func() {
		reloaded <- s.Reload(t.Context(), func() ([]ScheduledSource, RunFunc, error) {
			atSwap.Store(oldRuns.Load())
			swapped.Store(true)
			return []ScheduledSource{{Name: "a"}, {Name: "b", Schedule: "@hourly"}}, newRun, nil
		})
	}()
	require.Eventually(t, func() bool { return errors.Is(s.Trigger("a"), ErrNotAccepting) }, time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	require.False(t, swapped.Load(), "reload must wait for the run in flight")
	close(release)
	require.NoError(t, <-reloaded)
	require.True(t, swapped.Load())
	require.Equal(t, int32(1), atSwap.Load(), "swap ran while a run was in flight")

	st := s.Status()
	require.Len(t, st, 2)
	require.NotNil(t, st[0].LastRun, "a's history survives the reload")
	require.NotNil(t, st[1].NextRun)
	require.NoError(t, s.Trigger("b"))
	require.Eventually(t, func() bool { return newRuns.Load() == 1 }, 2*time.Second, 5*time.Millisecond)

	// A failing swap keeps the current sources.
	err = s.Reload(t.Context(), func() ([]ScheduledSource, RunFunc, error) { return nil, nil, errors.New("bad config") })
	require.ErrorContains(t, err, "bad config")
	require.Len(t, s.Status(), 2)
	require.Eventually(t, func() bool { return s.Trigger("b") == nil }, 2*time.Second, 5*time.Millisecond)
}

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fhirferry/fhirferry/configs"
)

// DaemonOptions configure RunDaemon.
type DaemonOptions struct {
	// ConfigPath is re-read on every Reload signal.
	ConfigPath string
	// Config is ConfigPath as loaded at start.
	Config *configs.Config
	// Deps build the sinks; the daemon sets Hooks and Observer to its
	// metrics.
	Deps Deps
	// Reload delivers a value for each reload request (SIGHUP); nil
	// never reloads.
	Reload <-chan os.Signal
	// Notifier reports to systemd; nil is a notifier that is off.
	Notifier *Notifier
	// Registry is where the daemon's metrics go; nil is a fresh registry
	// with the Go and process collectors.
	Registry *prometheus.Registry
}

// daemon holds what a config reload replaces.
type daemon struct {
	o       DaemonOptions
	log     *slog.Logger
	metrics *Metrics
	notify  *Notifier
	app     atomic.Pointer[App]
	sched   atomic.Pointer[Scheduler]
	// schedErr is what the scheduler's Run returned, once it has.
	schedErr error
}

// RunDaemon runs every source on its schedule until ctx ends, serving the
// admin endpoint and reloading the config on each Reload. Its actors (admin
// server, scheduler, watchdog, reloader, and ctx) run as one oklog/run
// group: the first to return stops the others. A cancelled ctx is a clean
// stop and returns nil.
func RunDaemon(ctx context.Context, o DaemonOptions) error {
	d := &daemon{o: o, log: o.Deps.Logger, notify: o.Notifier}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	var err error
	if d.metrics, err = NewMetrics(reg); err != nil {
		return err
	}
	d.o.Deps.Hooks, d.o.Deps.Observer = d.metrics, d.metrics.Observer
	cfg := o.Config

	// Bind first: a taken port fails the start before anything else.
	admin, err := ListenAdmin(ctx, cfg.Admin.Listen, NewAdminHandler(AdminOptions{
		Gatherer:   reg,
		Controller: d.controller,
		Ready:      d.ready,
		Logger:     d.log,
	}))
	if err != nil {
		return fmt.Errorf("admin.listen %s: %w", cfg.Admin.Listen, err)
	}
	_ = d.notify.Status("building sinks and views")
	a, err := Build(ctx, cfg, d.o.Deps)
	if err != nil {
		return errors.Join(err, admin.Close())
	}
	d.app.Store(a)
	d.logStaleViews(ctx, a)
	s, err := NewScheduler(d.schedulerOptions(ctx, a))
	if err != nil {
		a.Close()
		return errors.Join(err, admin.Close())
	}
	d.sched.Store(s)
	err = d.actors(ctx, admin, s).Run()
	if errors.Is(d.schedErr, ErrStopTimeout) {
		// Abandoned runs resume at the next start: the state on disk is
		// consistent after every step. The sinks stay open (a run may
		// still use them) until the process exits.
		d.log.Warn("runs did not stop in time; exiting anyway", "err", err)
		return nil
	}
	if cur := d.app.Load(); cur != nil {
		cur.Close()
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	d.log.Info("daemon stopped")
	return nil
}

// actors wires the daemon's goroutines into one run group.
func (d *daemon) actors(ctx context.Context, admin *AdminServer, s *Scheduler) *run.Group {
	var g run.Group
	runCtx, cancelRuns := context.WithCancel(context.WithoutCancel(ctx))
	schedDone := make(chan struct{})
	// The parent context: SIGTERM/SIGINT end it.
	stop := make(chan struct{})
	g.Add(func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return nil
		}
	}, func(error) { close(stop) })
	// The scheduler: cancelling runCtx cancels the runs in flight, which
	// roll back; Run waits for them up to the stop timeout.
	g.Add(func() error {
		defer close(schedDone)
		d.schedErr = s.Run(runCtx)
		if d.schedErr == nil {
			return context.Canceled // stopped by another actor
		}
		return d.schedErr
	}, func(error) {
		_ = d.notify.Stopping("stopping: cancelling runs in flight")
		d.log.Info("stopping: cancelling runs in flight", "stop_timeout", d.o.Config.Daemon.StopTimeout.D().String())
		cancelRuns()
	})
	// The admin endpoint answers until the scheduler has stopped, so
	// /status shows the runs winding down.
	adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	g.Add(func() error { return admin.Serve(adminCtx) }, func(error) {
		<-schedDone
		stopAdmin()
	})
	// The watchdog is petted only while the scheduler answers, so a
	// deadlocked scheduler gets the daemon restarted.
	wdCtx, stopWD := context.WithCancel(runCtx)
	g.Add(func() error {
		d.notify.Watchdog(wdCtx, func() bool { s.Status(); return true })
		<-wdCtx.Done()
		return nil
	}, func(error) { stopWD() })
	// Reloads: an error ends the daemon (systemd restarts it).
	reloadStop := make(chan struct{})
	g.Add(func() error { return d.reloads(runCtx, s, admin, reloadStop) }, func(error) { close(reloadStop) })

	_ = d.notify.Ready(fmt.Sprintf("scheduling %d source(s); admin on %s", len(s.Sources()), admin.Addr()))
	d.log.Info("daemon started", "sources", len(s.Sources()), "admin", admin.Addr(),
		"max_concurrent_runs", d.o.Config.Daemon.MaxConcurrentRuns)
	return &g
}

func (d *daemon) reloads(ctx context.Context, s *Scheduler, admin *AdminServer, stop <-chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		case <-d.o.Reload:
			_ = d.notify.Reloading("reloading " + d.o.ConfigPath)
			if err := d.reload(ctx, s); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				d.log.Error("reload failed; stopping", "err", err)
				return err
			}
			_ = d.notify.Ready(fmt.Sprintf("scheduling %d source(s); admin on %s", len(s.Sources()), admin.Addr()))
		}
	}
}

func (d *daemon) controller() Controller {
	if s := d.sched.Load(); s != nil {
		return s
	}
	return nil
}

func (d *daemon) ready(ctx context.Context) error {
	a := d.app.Load()
	if a == nil {
		return errors.New("reloading the configuration")
	}
	return a.Ping(ctx)
}

func (d *daemon) schedulerOptions(ctx context.Context, a *App) SchedulerOptions {
	return SchedulerOptions{
		Sources:       d.sources(ctx, a),
		Run:           a.RunSource,
		MaxConcurrent: a.cfg.Daemon.MaxConcurrentRuns,
		Jitter:        a.cfg.Daemon.Jitter.D(),
		StopTimeout:   a.cfg.Daemon.StopTimeout.D(),
		Resume:        a.HasUnfinishedRun,
		Observer:      d.metrics,
		Logger:        d.log,
	}
}

// sources lists the scheduled sources and seeds their metrics with the
// sinks' checkpoints, so the lag is known before the first run.
func (d *daemon) sources(ctx context.Context, a *App) []ScheduledSource {
	var out []ScheduledSource
	for _, src := range a.cfg.Sources {
		out = append(out, ScheduledSource{Name: src.Name, Schedule: src.Schedule, TimeZone: src.TimeZone})
		d.metrics.AddSource(src.Name, a.OldestCheckpoint(ctx, src))
	}
	return out
}

// reload re-reads the config. An invalid file changes nothing. Otherwise
// the scheduler drains (runs in flight finish on the old config), the old
// sinks close, the new app is built and scheduled. If the new app cannot
// be built the old config is rebuilt; if that fails too, reload returns an
// error and the daemon exits (systemd restarts it).
func (d *daemon) reload(ctx context.Context, s *Scheduler) error {
	old := d.app.Load()
	next, err := LoadConfig(d.o.ConfigPath)
	if err != nil {
		d.log.Error("config reload rejected; keeping the running config", "err", err)
		return nil
	}
	if next.Admin.Listen != old.cfg.Admin.Listen || next.Log != old.cfg.Log || next.Daemon != old.cfg.Daemon {
		d.log.Warn("admin, log and daemon settings change only at restart; the rest is reloaded")
	}
	d.log.Info("reloading the config; runs in flight finish first", "config", d.o.ConfigPath)
	err = s.Reload(ctx, func() ([]ScheduledSource, RunFunc, error) {
		d.app.Store(nil)
		old.Close()
		a, err := Build(ctx, next, d.o.Deps)
		if err != nil {
			d.log.Error("config reload failed; going back to the previous config", "err", err)
			if a, err = Build(ctx, old.cfg, d.o.Deps); err != nil {
				return nil, nil, fmt.Errorf("rebuilding the previous config: %w", err)
			}
		}
		d.app.Store(a)
		// While no run is in flight: the check may record definitions.
		d.logStaleViews(ctx, a)
		return d.sources(ctx, a), a.RunSource, nil
	})
	if err != nil {
		return err
	}
	d.log.Info("config reloaded", "sources", len(s.Sources()))
	return nil
}

// logStaleViews logs the views whose tables miss rows (App.LogStaleViews).
func (d *daemon) logStaleViews(ctx context.Context, a *App) {
	a.LogStaleViews(ctx, d.log, d.o.ConfigPath)
}

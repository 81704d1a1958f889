package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/pipeline"
)

func init() { register(newDaemonCmd) }

func newDaemonCmd(g *globals) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run every source on its schedule and serve metrics, health and status",
		Long: `daemon runs each source on its cron schedule (never overlapping a source with
itself, at most daemon.max_concurrent_runs at once), resumes at start any run a
previous process left unfinished, and serves /metrics, /healthz, /readyz,
/status and POST /runs/{source} on admin.listen.

SIGTERM or SIGINT stops scheduling, cancels the runs in flight (a cancelled
run rolls back and is resumed by the next start) and waits up to
daemon.stop_timeout; the exit code is then 0. SIGHUP reloads the config file:
runs in flight finish on the old config, then sources, schedules, sinks and
views switch to the new one (admin, log and daemon settings need a restart).
An invalid file is rejected and the running config kept.
Under systemd (Type=notify) it reports READY, STOPPING, RELOADING, STATUS and
pets the watchdog.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			return runDaemon(cmd.Context(), g, fl.Changed("log-level"), fl.Changed("log-format"), cfgPath)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "/etc/fhirferry/config.yaml", "configuration file")
	return cmd
}

// daemon holds what a config reload replaces.
type daemon struct {
	cfgPath string
	log     *slog.Logger
	metrics *pipeline.Metrics
	app     atomic.Pointer[app]
}

func runDaemon(ctx context.Context, g *globals, levelSet, formatSet bool, cfgPath string) error {
	cfg, err := configs.Load(cfgPath)
	if err != nil {
		return err
	}
	lg := *g
	if !levelSet {
		lg.logLevel = cfg.Log.Level
	}
	if !formatSet {
		lg.logFormat = cfg.Log.Format
	}
	log := lg.logger()
	notify := pipeline.NewNotifier()
	// Catch SIGHUP from the start: its default action would kill us.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := pipeline.NewMetrics(reg)
	if err != nil {
		return err
	}
	d := &daemon{cfgPath: cfgPath, log: log, metrics: metrics}

	// Bind first: a taken port fails the start before anything else.
	var sched atomic.Pointer[pipeline.Scheduler]
	admin, err := pipeline.ListenAdmin(ctx, cfg.Admin.Listen, pipeline.NewAdminHandler(pipeline.AdminOptions{
		Gatherer: reg,
		Controller: func() pipeline.Controller {
			if s := sched.Load(); s != nil {
				return s
			}
			return nil
		},
		Ready: func(ctx context.Context) error {
			a := d.app.Load()
			if a == nil {
				return errors.New("reloading the configuration")
			}
			return a.ping(ctx)
		},
		Logger: log,
	}))
	if err != nil {
		return fmt.Errorf("admin.listen %s: %w", cfg.Admin.Listen, err)
	}
	adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAdmin()
	adminDone := make(chan error, 1)
	go func() { adminDone <- admin.Serve(adminCtx) }()

	_ = notify.Status("building sinks and views")
	a, err := buildApp(ctx, cfgPath, log, metrics, metrics.Observer)
	if err != nil {
		return err
	}
	d.app.Store(a)
	logStaleViews(ctx, log, a, cfgPath)
	s, err := pipeline.NewScheduler(d.schedulerOptions(ctx, a))
	if err != nil {
		a.close()
		return err
	}
	sched.Store(s)

	runCtx, cancelRuns := context.WithCancel(ctx)
	defer cancelRuns()
	schedDone := make(chan error, 1)
	go func() { schedDone <- s.Run(runCtx) }()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The watchdog is petted only while the scheduler answers, so a
		// deadlocked scheduler gets the daemon restarted.
		notify.Watchdog(runCtx, func() bool { s.Status(); return true })
	}()
	_ = notify.Ready(fmt.Sprintf("scheduling %d source(s); admin on %s", len(a.cfg.Sources), admin.Addr()))
	log.Info("daemon started", "sources", len(a.cfg.Sources), "admin", admin.Addr(),
		"max_concurrent_runs", a.cfg.Daemon.MaxConcurrentRuns)

	var fatal error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-schedDone:
			// Run only returns early on a programming error.
			schedDone <- err
			fatal = err
			break loop
		case <-hup:
			_ = notify.Reloading("reloading " + cfgPath)
			if err := d.reload(runCtx, s); err != nil {
				if ctx.Err() != nil {
					break loop
				}
				log.Error("reload failed; stopping", "err", err)
				fatal = err
				break loop
			}
			_ = notify.Ready(fmt.Sprintf("scheduling %d source(s); admin on %s", len(s.Sources()), admin.Addr()))
		}
	}

	_ = notify.Stopping("stopping: cancelling runs in flight")
	log.Info("stopping: cancelling runs in flight", "stop_timeout", cfg.Daemon.StopTimeout.D().String())
	cancelRuns()
	stopErr := <-schedDone
	wg.Wait()
	if errors.Is(stopErr, pipeline.ErrStopTimeout) {
		// Abandoned runs resume at the next start: the state on disk is
		// consistent after every step. The sinks stay open (a run may
		// still use them) until the process exits.
		log.Warn("runs did not stop in time; exiting anyway", "err", stopErr)
	} else if cur := d.app.Load(); cur != nil {
		cur.close()
	}
	stopAdmin()
	if err := <-adminDone; err != nil {
		log.Warn("admin endpoint", "err", err)
	}
	if fatal != nil {
		return fatal
	}
	log.Info("daemon stopped")
	return nil
}

func (d *daemon) schedulerOptions(ctx context.Context, a *app) pipeline.SchedulerOptions {
	return pipeline.SchedulerOptions{
		Sources:       d.sources(ctx, a),
		Run:           a.runSource,
		MaxConcurrent: a.cfg.Daemon.MaxConcurrentRuns,
		Jitter:        a.cfg.Daemon.Jitter.D(),
		StopTimeout:   a.cfg.Daemon.StopTimeout.D(),
		Resume: func(source string) bool {
			_, err := os.Stat(filepath.Join(a.cfg.DataDir, "state", source+".json"))
			return err == nil
		},
		Observer: d.metrics,
		Logger:   d.log,
	}
}

// sources lists the scheduled sources and seeds their metrics with the
// sinks' checkpoints, so the lag is known before the first run.
func (d *daemon) sources(ctx context.Context, a *app) []pipeline.ScheduledSource {
	var out []pipeline.ScheduledSource
	for _, src := range a.cfg.Sources {
		out = append(out, pipeline.ScheduledSource{Name: src.Name, Schedule: src.Schedule, TimeZone: src.TimeZone})
		d.metrics.AddSource(src.Name, oldestCheckpoint(ctx, a, src))
	}
	return out
}

// oldestCheckpoint is the source's next _since: the oldest over its sinks,
// "" when a sink has none (or cannot be read now).
func oldestCheckpoint(ctx context.Context, a *app, src configs.Source) string {
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

// reload re-reads the config. An invalid file changes nothing. Otherwise
// the scheduler drains (runs in flight finish on the old config), the old
// sinks close, the new app is built and scheduled. If the new app cannot
// be built the old config is rebuilt; if that fails too, reload returns an
// error and the daemon exits (systemd restarts it).
func (d *daemon) reload(ctx context.Context, s *pipeline.Scheduler) error {
	old := d.app.Load()
	next, err := configs.Load(d.cfgPath)
	if err != nil {
		d.log.Error("config reload rejected; keeping the running config", "err", err)
		return nil
	}
	if next.Admin.Listen != old.cfg.Admin.Listen || next.Log != old.cfg.Log || next.Daemon != old.cfg.Daemon {
		d.log.Warn("admin, log and daemon settings change only at restart; the rest is reloaded")
	}
	d.log.Info("reloading the config; runs in flight finish first", "config", d.cfgPath)
	err = s.Reload(ctx, func() ([]pipeline.ScheduledSource, pipeline.RunFunc, error) {
		d.app.Store(nil)
		old.close()
		a, err := buildAppFromConfig(ctx, next, d.log, d.metrics, d.metrics.Observer)
		if err != nil {
			d.log.Error("config reload failed; going back to the previous config", "err", err)
			if a, err = buildAppFromConfig(ctx, old.cfg, d.log, d.metrics, d.metrics.Observer); err != nil {
				return nil, nil, fmt.Errorf("rebuilding the previous config: %w", err)
			}
		}
		d.app.Store(a)
		// While no run is in flight: the check may record definitions.
		logStaleViews(ctx, d.log, a, d.cfgPath)
		return d.sources(ctx, a), a.runSource, nil
	})
	if err != nil {
		return err
	}
	d.log.Info("config reloaded", "sources", len(s.Sources()))
	return nil
}

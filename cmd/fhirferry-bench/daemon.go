package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks/builtin"
)

// childRebuild times `fhirferry views rebuild --all` on the database the
// load child wrote (work holds its config's data_dir, so the same state).
func childRebuild(ctx context.Context, loaded, work, views string, tune benchTune) (benchResult, error) {
	r := benchResult{Name: "fhirferry views rebuild"}
	cfg, err := pipeline.ParseConfig([]byte(tune.config(work, loaded, views, "")))
	if err != nil {
		return r, err
	}
	rss := startRSSSampler()
	t0 := time.Now()
	a, err := pipeline.Build(ctx, cfg, pipeline.Deps{Sinks: builtin.Factories(), Logger: warnLog()})
	if err != nil {
		rss.close()
		return r, err
	}
	rss.cut("open")
	report, err := a.RebuildViews(ctx, pipeline.RebuildOptions{All: true})
	rss.cut("rebuild")
	a.Close()
	rss.cut("close")
	r.Seconds = time.Since(t0).Seconds()
	r.Note = "(" + rss.close() + ")"
	r.setMemory(cfg.Memory())
	r.Budget = int64(cfg.MemoryBudget)
	if err != nil {
		return r, err
	}
	for _, row := range report.Rows {
		r.Rows += row.After
	}
	return r, nil
}

// childDaemon runs the daemon against the test server at baseURL, every
// second, until it has finished runs runs (the first a full export, the
// rest incremental while the parent advances the server's clock), and
// reports the whole process's peak.
func childDaemon(ctx context.Context, work, views, baseURL string, runs int, tune benchTune) (benchResult, error) {
	r := benchResult{Name: fmt.Sprintf("fhirferry daemon (%d runs)", runs)}
	src := fmt.Sprintf(`sources:
  - name: bench
    base_url: %q
    schedule: "@every 1s"
    http: {min_wait: 50ms, max_wait: 1s, parallel: 2}
`, baseURL)
	path := filepath.Join(work, "config.yaml")
	if err := os.WriteFile(path, []byte(tune.config(work, filepath.Join(work, "bench.duckdb"), views, src)), 0o600); err != nil {
		return r, err
	}
	cfg, err := pipeline.LoadConfig(path)
	if err != nil {
		return r, err
	}
	r.setMemory(cfg.Memory())
	r.Budget = int64(cfg.MemoryBudget)
	reg := prometheus.NewRegistry()
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	t0 := time.Now()
	go func() {
		errc <- pipeline.RunDaemon(dctx, pipeline.DaemonOptions{ConfigPath: path, Config: cfg, Registry: reg,
			Deps: pipeline.Deps{Sinks: builtin.Factories(), Logger: warnLog()}})
	}()
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case err := <-errc:
			return r, fmt.Errorf("daemon stopped before %d runs: %w", runs, err)
		case <-tk.C:
		}
		done, failed := countRuns(reg)
		if failed > 0 {
			cancel()
			return r, errors.Join(errors.New("a daemon run failed (see its log)"), <-errc)
		}
		if done >= runs {
			break
		}
	}
	cancel()
	if err := <-errc; err != nil {
		return r, err
	}
	r.Seconds = time.Since(t0).Seconds()
	r.Resources = int64(sumCounter(reg, "fhirferry_transform_resources_total"))
	r.Bytes = int64(sumCounter(reg, "fhirferry_fetch_received_bytes_total"))
	return r, nil
}

// countRuns reads the scheduler's finished runs from the registry.
func countRuns(reg *prometheus.Registry) (ok, failed int) {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "fhirferry_scheduler_runs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "outcome" {
					continue
				}
				n := int(m.GetCounter().GetValue())
				if l.GetValue() == pipeline.OutcomeSuccess {
					ok += n
				} else {
					failed += n
				}
			}
		}
	}
	return ok, failed
}

func sumCounter(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// warnLog is the daemon child's logger: warnings, or the level in
// FHIRFERRY_BENCH_LOG (debug shows each commit step and its duration).
func warnLog() *slog.Logger {
	level := slog.LevelWarn
	if v := os.Getenv("FHIRFERRY_BENCH_LOG"); v != "" {
		_ = level.UnmarshalText([]byte(v))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// benchDaemon runs the daemon child while the server changes: every two
// seconds, new patients and updates and deletes of about 1/3000 of the
// resources (about 1% a minute), so that each incremental run has work
// in proportion to how long the previous run took, as a nightly export's
// changes are to a day.
func benchDaemon(ctx context.Context, f *benchFlags, srv *bulktest.Server, gs genStats, work string,
	run func(...string) (benchResult, error), common []string) error {
	actx, stop := context.WithCancel(ctx)
	defer stop()
	n := int(max(gs.lines/3000, 1))
	go srv.AdvanceEvery(actx, 2*time.Second, bulktest.Mutation{NewPatients: max(n/100, 1), UpdatedResources: n, DeletedResources: max(n/10, 1)})
	_, err := run(append([]string{"daemon", "--base-url", srv.BaseURL(), "--work", work, "--runs", strconv.Itoa(f.daemon)}, common...)...)
	return err
}

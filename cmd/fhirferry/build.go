package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/auth"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
	"github.com/fhirferry/fhirferry/sinks/parquet"
	"github.com/fhirferry/fhirferry/sinks/postgres"
	"github.com/fhirferry/fhirferry/transform"
)

// app is a configuration turned into components: the transform engine and
// the sinks, shared by every source's runs.
type app struct {
	cfg    *configs.Config
	log    *slog.Logger
	engine *transform.Engine
	sinks  map[string]pipeline.Sink
	hooks  pipeline.Hooks
	obs    func(source string) fetch.Observer
}

// buildApp loads the config and builds the engine and sinks. hooks and obs
// may be nil.
func buildApp(ctx context.Context, cfgPath string, log *slog.Logger, hooks pipeline.Hooks, obs func(string) fetch.Observer) (*app, error) {
	cfg, err := configs.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	return buildAppFromConfig(ctx, cfg, log, hooks, obs)
}

func buildAppFromConfig(ctx context.Context, cfg *configs.Config, log *slog.Logger, hooks pipeline.Hooks, obs func(string) fetch.Observer) (*app, error) {
	a := &app{cfg: cfg, log: log, sinks: map[string]pipeline.Sink{}, hooks: hooks, obs: obs}
	if cfg.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		// The environment wins, as it does for the Go runtime itself.
		debug.SetMemoryLimit(int64(cfg.MemoryLimit))
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	views, err := transform.LoadViews(cfg.Views.DefaultsOn(), cfg.Views.Dir)
	if err != nil {
		return nil, err
	}
	a.engine, err = transform.New(transform.Options{
		Views:        views,
		BatchRows:    cfg.Transform.BatchRows,
		BatchBytes:   int(cfg.Transform.BatchBytes),
		MaxLineBytes: int(cfg.Transform.MaxLineBytes),
	})
	if err != nil {
		return nil, err
	}
	for _, sc := range cfg.Sinks {
		s, err := newSink(ctx, sc, log.With("sink", sc.Name))
		if err != nil {
			a.close()
			return nil, fmt.Errorf("sink %s: %w", sc.Name, err)
		}
		a.sinks[sc.Name] = s
		if err := s.Prepare(ctx, a.engine.Tables()); err != nil {
			a.close()
			return nil, fmt.Errorf("sink %s: prepare tables: %w", sc.Name, err)
		}
	}
	return a, nil
}

func newSink(ctx context.Context, sc configs.Sink, log *slog.Logger) (pipeline.Sink, error) {
	switch sc.Type {
	case configs.SinkDuckDB:
		return duckdb.New(sc.DuckDB, sc.Name, log)
	case configs.SinkPostgres:
		return postgres.New(ctx, sc.Postgres, sc.Name, log)
	case configs.SinkParquet:
		return parquet.New(sc.Parquet, sc.Name, log)
	}
	return nil, fmt.Errorf("unknown sink type %q", sc.Type)
}

func (a *app) close() {
	for name, s := range a.sinks {
		if err := s.Close(); err != nil {
			a.log.Warn("closing sink", "sink", name, "err", err)
		}
	}
}

// ping checks every sink answers (the daemon's /readyz).
func (a *app) ping(ctx context.Context) error {
	for name, s := range a.sinks {
		if _, _, err := s.Checkpoint(ctx, "_ping"); err != nil {
			return fmt.Errorf("sink %s: %w", name, err)
		}
	}
	return nil
}

// httpClient builds the source's HTTP client: TLS 1.2+ (C01) with an
// optional extra CA bundle.
func httpClient(h configs.HTTP) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if h.CAFile != "" {
		pem, err := os.ReadFile(h.CAFile)
		if err != nil {
			return nil, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no certificates found", h.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	tr.ResponseHeaderTimeout = h.RequestTimeout.D()
	return &http.Client{Transport: tr}, nil
}

// client builds the Bulk Data client of a source.
func (a *app) client(ctx context.Context, src configs.Source) (*fetch.Client, error) {
	hc, err := httpClient(src.HTTP)
	if err != nil {
		return nil, err
	}
	ts, err := auth.FromConfig(ctx, src.Auth, src.BaseURL, hc, a.log.With("source", src.Name))
	if err != nil {
		return nil, fmt.Errorf("source %s: auth: %w", src.Name, err)
	}
	o := fetch.Options{
		BaseURL: src.BaseURL, HTTPClient: hc,
		Parallel: src.HTTP.Parallel, Retries: src.HTTP.Retries,
		MinWait: src.HTTP.MinWait.D(), MaxWait: src.HTTP.MaxWait.D(), RequestTimeout: src.HTTP.RequestTimeout.D(),
		ExportTimeout: src.Export.Timeout.D(), MaxLineBytes: int64(a.cfg.Transform.MaxLineBytes),
		UserAgent: src.HTTP.UserAgent, Logger: a.log.With("source", src.Name),
	}
	if ts != nil {
		o.Auth = ts
	}
	if a.obs != nil {
		o.Observer = a.obs(src.Name)
	}
	return fetch.New(o)
}

// request maps a source's export settings to a kick-off request.
func request(src configs.Source) fetch.Request {
	e := src.Export
	return fetch.Request{
		Level: src.Level, GroupID: src.GroupID, Until: e.Until,
		Types: e.Types, Elements: e.Elements, TypeFilters: e.TypeFilters, Patients: e.Patients,
		IncludeAssociatedData: e.IncludeAssociatedData, OutputFormat: e.OutputFormat,
		AllowPartialManifests: e.AllowPartialManifests, OrganizeOutputBy: e.OrganizeOutputBy,
		Lenient: e.Lenient, Method: e.Method, Compat: e.Compat,
	}
}

// runner builds the runner of one source's runs.
func (a *app) runner(ctx context.Context, name string) (*pipeline.Runner, error) {
	src, ok := a.cfg.Source(name)
	if !ok {
		return nil, fmt.Errorf("no source named %q in the config", name)
	}
	c, err := a.client(ctx, src)
	if err != nil {
		return nil, err
	}
	var sinks []pipeline.Sink
	for _, sc := range a.cfg.SinksOf(src) {
		sinks = append(sinks, a.sinks[sc.Name])
	}
	if len(sinks) == 0 {
		return nil, fmt.Errorf("source %s has no sinks", name)
	}
	return &pipeline.Runner{
		Source: name, Request: request(src), InitialSince: src.Export.Since,
		Client: c, Engine: a.engine, Sinks: sinks, DataDir: a.cfg.DataDir,
		Logger: a.log, Hooks: a.hooks, Workers: a.cfg.Transform.Workers, QueueDepth: a.cfg.Transform.QueueDepth,
		DeleteAfter: src.Export.DeleteAfter(), FailOnErrorOutcomes: true,
	}, nil
}

// runSource performs one run of the named source: for a Group source with
// export.backfill_new_members, a run of the membership pattern (C49).
func (a *app) runSource(ctx context.Context, name string) (*pipeline.Result, error) {
	r, err := a.runner(ctx, name)
	if err != nil {
		return nil, err
	}
	run, err := a.runFunc(name, r)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	res, err := run(ctx)
	if err != nil {
		return res, fmt.Errorf("source %s: %w (after %s)", name, err, time.Since(t0).Round(time.Millisecond))
	}
	return res, nil
}

// runFunc picks how a source runs: plainly, or wrapped in the Group
// membership pattern when the config asks for it.
func (a *app) runFunc(name string, r *pipeline.Runner) (func(context.Context) (*pipeline.Result, error), error) {
	src, _ := a.cfg.Source(name)
	if !src.Export.BackfillNewMembers {
		return r.Run, nil
	}
	ml, ok := r.Client.(pipeline.MemberLister)
	if !ok {
		return nil, fmt.Errorf("source %s: backfill_new_members needs a client that reads Group members", name)
	}
	b := &pipeline.Backfill{Runner: r, Members: ml}
	return b.Run, nil
}

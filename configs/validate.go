package configs

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

// Check is a validation a package above this one adds to Load, Parse and
// Validate (the scheduler checks the cron schedules): it returns one
// message per problem, reported with the others.
type Check func(*Config) []string

// SourceAt names a source in a problem message.
func SourceAt(i int, s Source) string { return fmt.Sprintf("sources[%d] (%s)", i, s.Name) }

// Validate checks the whole configuration and reports every problem it
// finds, those of checks included.
func (c *Config) Validate(checks ...Check) error {
	var p problems
	for _, check := range checks {
		p = append(p, check(c)...)
	}
	c.validateProcess(&p)
	sinkNames := c.validateSinks(&p)
	srcNames := map[string]bool{}
	for i, s := range c.Sources {
		at := SourceAt(i, s)
		if srcNames[s.Name] {
			p.add("%s: duplicate source name", at)
		}
		srcNames[s.Name] = true
		s.validate(&p, at, sinkNames)
	}
	c.validatePurge(&p)
	return p.err()
}

// validatePurge refuses former_members: purge where a system- or
// Patient-level source exports the same server into the same namespace:
// its data includes the leavers', which a purge would take from it.
func (c *Config) validatePurge(p *problems) {
	for i, s := range c.Sources {
		if s.Export.FormerMembers != FormerPurge {
			continue
		}
		for _, o := range c.Sources {
			if o.Level != LevelGroup && o.NamespaceOf() == s.NamespaceOf() {
				p.add("%s: export.former_members: purge would remove data that source %s (level %s) exports into the same namespace %s; keep, or give the sources their own namespaces",
					SourceAt(i, s), o.Name, o.Level, s.NamespaceOf())
			}
		}
	}
}

// validateProcess checks the settings of the process as a whole.
func (c *Config) validateProcess(p *problems) {
	if c.DataDir == "" {
		p.add("data_dir must not be empty")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		p.add("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		p.add("log.format: %q is not text or json", c.Log.Format)
	}
	t := c.Transform
	if t.BatchRows < 1 || t.Workers < 1 || t.QueueDepth < 1 {
		p.add("transform: batch_rows, workers and queue_depth must be positive")
	}
	if t.BatchBytes < 64<<10 {
		p.add("transform.batch_bytes: %d is too small (at least 64KiB)", t.BatchBytes)
	}
	if t.MaxLineBytes < 1<<10 {
		p.add("transform.max_line_bytes: %d is too small (at least 1KiB)", t.MaxLineBytes)
	}
	if c.MemoryBudget < MinMemoryBudget {
		p.add("memory_budget: %s is too small (at least %s)", c.MemoryBudget, MinMemoryBudget)
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < 32<<20 {
		p.add("memory_limit: %d is too small (at least 32MiB)", c.MemoryLimit)
	}
	if c.Daemon.MaxConcurrentRuns < 1 {
		p.add("daemon.max_concurrent_runs must be positive")
	}
	if c.Daemon.StopTimeout <= 0 || c.Daemon.Jitter < 0 {
		p.add("daemon.stop_timeout must be positive and daemon.jitter not negative")
	}
}

// validateSinks checks every sink and returns their names.
func (c *Config) validateSinks(p *problems) map[string]bool {
	names := map[string]bool{}
	for i, k := range c.Sinks {
		at := fmt.Sprintf("sinks[%d] (%s)", i, k.Name)
		if !nameRE.MatchString(k.Name) {
			p.add("%s: name %q must match %s", at, k.Name, nameRE)
		}
		if names[k.Name] {
			p.add("%s: duplicate sink name", at)
		}
		names[k.Name] = true
		switch k.Type {
		case SinkDuckDB:
			if k.DuckDB.Threads < 0 || k.DuckDB.StreamThreads < 0 {
				p.add("%s: duckdb.threads and duckdb.stream_threads must not be negative", at)
			}
		case SinkPostgres:
			if k.Postgres.DSN == "" {
				p.add("%s: postgres.dsn is required", at)
			}
			if k.Postgres.Schema == "" {
				p.add("%s: postgres.schema must not be empty", at)
			}
		case SinkParquet:
			if k.Parquet.Dir == "" {
				p.add("%s: parquet.dir is required", at)
			}
			if !slices.Contains([]string{"zstd", "snappy", "gzip", "none"}, k.Parquet.Compression) {
				p.add("%s: parquet.compression %q is not zstd, snappy, gzip or none", at, k.Parquet.Compression)
			}
		default:
			p.add("%s: type %q is not duckdb, postgres or parquet", at, k.Type)
		}
	}
	return names
}

// validate checks one source; at names it in messages.
func (s Source) validate(p *problems, at string, sinkNames map[string]bool) {
	if !nameRE.MatchString(s.Name) {
		p.add("%s: name %q must match %s", at, s.Name, nameRE)
	}
	if u, err := url.Parse(s.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add("%s: base_url %q is not an absolute http(s) URL", at, s.BaseURL)
	}
	if s.Namespace != "" && !namespaceRE.MatchString(s.Namespace) {
		p.add("%s: namespace %q must match %s (a stable name such as ehr_a)", at, s.Namespace, namespaceRE)
	}
	switch s.Level {
	case LevelSystem, LevelPatient:
		if s.GroupID != "" {
			p.add("%s: group_id is only for level group", at)
		}
	case LevelGroup:
		if s.GroupID == "" {
			p.add("%s: level group needs group_id", at)
		}
	default:
		p.add("%s: level %q is not system, patient or group", at, s.Level)
	}
	if _, err := time.LoadLocation(s.TimeZone); err != nil {
		p.add("%s: timezone %q: %v", at, s.TimeZone, err)
	}
	for _, n := range s.Sinks {
		if !sinkNames[n] {
			p.add("%s: sink %q is not defined under sinks", at, n)
		}
	}
	s.Export.validate(p, at, s.Level)
	s.HTTP.validate(p, at)
	s.Auth.validate(p, at)
}

func (e Export) validate(p *problems, at, level string) {
	if !slices.Contains([]string{"auto", "get", "post"}, e.Method) {
		p.add("%s: export.method %q is not auto, get or post", at, e.Method)
	}
	if len(e.Patients) > 0 && e.Method == "get" {
		p.add("%s: export.patients needs POST (the patient parameter is POST-only)", at)
	}
	if len(e.Patients) > 0 && level == LevelSystem {
		p.add("%s: export.patients is not valid for a system-level export", at)
	}
	if e.BackfillNewMembers && level != LevelGroup {
		p.add("%s: export.backfill_new_members is only for level group", at)
	}
	switch {
	case e.FormerMembers != FormerKeep && e.FormerMembers != FormerPurge:
		p.add("%s: export.former_members %q is not keep or purge", at, e.FormerMembers)
	case e.FormerMembers == FormerPurge && level != LevelGroup:
		p.add("%s: export.former_members: purge is only for level group", at)
	}
	if e.Compat != "" && e.Compat != "2018-draft" {
		p.add("%s: export.compat %q is not \"\" or \"2018-draft\"", at, e.Compat)
	}
	if e.Timeout <= 0 {
		p.add("%s: export.timeout must be positive", at)
	}
	for _, f := range e.TypeFilters {
		typ, q, ok := strings.Cut(f, "?")
		if !ok || typ == "" || q == "" {
			p.add("%s: type_filter %q is not Type?query", at, f)
			continue
		}
		for _, banned := range []string{"_include", "_revinclude", "_sort", "_elements", "_count", "_summary"} {
			if strings.Contains(q, banned+"=") {
				p.add("%s: type_filter %q uses the result parameter %s (C16)", at, f, banned)
			}
		}
	}
	for _, ts := range []struct{ k, v string }{{"since", e.Since}, {"until", e.Until}} {
		if ts.v != "" {
			if _, err := time.Parse(time.RFC3339Nano, ts.v); err != nil {
				p.add("%s: export.%s %q is not a FHIR instant", at, ts.k, ts.v)
			}
		}
	}
}

func (h HTTP) validate(p *problems, at string) {
	if h.Parallel < 1 || h.Parallel > 32 {
		p.add("%s: http.parallel %d is outside 1..32", at, h.Parallel)
	}
	if h.Retries < 0 {
		p.add("%s: http.retries must not be negative", at)
	}
	if h.MinWait <= 0 || h.RequestTimeout <= 0 {
		p.add("%s: http.min_wait and http.request_timeout must be positive", at)
	}
	if h.MinWait > h.MaxWait {
		p.add("%s: http.min_wait is above http.max_wait", at)
	}
}

func (a Auth) validate(p *problems, at string) {
	switch a.Type {
	case AuthNone:
	case AuthSMART:
		if a.ClientID == "" {
			p.add("%s: auth.client_id is required for smart", at)
		}
		if a.PrivateKeyFile == "" {
			p.add("%s: auth.private_key_file is required for smart", at)
		}
		if a.Alg != "ES384" && a.Alg != "RS384" {
			p.add("%s: auth.alg %q is not ES384 or RS384", at, a.Alg)
		}
	case AuthClientSecret:
		if a.ClientID == "" || a.ClientSecret == "" {
			p.add("%s: auth.client_id and auth.client_secret are required for client_secret", at)
		}
	case AuthBearer:
		if (a.Token == "") == (a.TokenFile == "") {
			p.add("%s: auth bearer needs exactly one of token or token_file", at)
		}
	default:
		p.add("%s: auth.type %q is not none, smart, client_secret or bearer", at, a.Type)
	}
}

type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return &Error{Problems: p}
}

// Error is every problem found in a config, each naming its line or key.
type Error struct{ Problems []string }

func (e *Error) Error() string { return "invalid config:\n  - " + strings.Join(e.Problems, "\n  - ") }

package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestExamplesLoad(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := Load(f)
			require.NoError(t, err)
			require.NotEmpty(t, cfg.Sources)
			require.NotEmpty(t, cfg.Sinks)
		})
	}
}

func TestUnknownKeyNamesLine(t *testing.T) {
	_, err := Parse([]byte("data_dir: x\nsources:\n  - name: a\n    base_url: http://h/fhir\n    bogus: 1\n"))
	require.Error(t, err)
	require.Contains(t, err.Error(), `line 5: unknown key "bogus" in sources[0]`)
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte("sources:\n  - name: a\n    base_url: http://h/fhir\nsinks:\n  - type: duckdb\n"))
	require.NoError(t, err)
	s := cfg.Sources[0]
	require.Equal(t, LevelSystem, s.Level)
	require.Equal(t, 5, s.HTTP.Parallel)
	require.Equal(t, 2*time.Second, s.HTTP.MinWait.D())
	require.True(t, s.Export.DeleteAfter())
	require.Equal(t, "duckdb", cfg.Sinks[0].Name)
	require.Equal(t, "fhirferry-data/warehouse.duckdb", filepath.Clean(cfg.Sinks[0].DuckDB.Path))
	require.True(t, cfg.Views.DefaultsOn())
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("FF_SECRET", "s3cr3t")
	cfg, err := Parse([]byte("sources:\n  - name: a\n    base_url: http://h/fhir\n    auth:\n      type: client_secret\n      client_id: c\n      client_secret: ${FF_SECRET}\n"))
	require.NoError(t, err)
	require.Equal(t, "s3cr3t", cfg.Sources[0].Auth.ClientSecret)

	os.Unsetenv("FF_MISSING")
	_, err = Parse([]byte("data_dir: x\nsources:\n  - name: a\n    base_url: ${FF_MISSING}\n"))
	require.ErrorContains(t, err, "line 4: environment variable FF_MISSING is not set")

	cfg, err = Parse([]byte("data_dir: ${FF_MISSING:-/tmp/d}\n"))
	require.NoError(t, err)
	require.Equal(t, "/tmp/d", cfg.DataDir)
}

func TestValidateReportsEveryProblem(t *testing.T) {
	extra := func(*Config) []string { return []string{"a check of a package above"} }
	_, err := Parse([]byte(`
log: {level: loud}
sources:
  - name: a
    base_url: ftp://x
    level: group
    schedule: "not cron"
    sinks: [nope]
    export:
      patients: [Patient/1]
      method: get
      type_filters: ["Observation?_sort=date"]
    auth: {type: smart}
sinks:
  - {name: w, type: mysql}
`), extra)
	require.Error(t, err)
	for _, want := range []string{
		"log.level", "base_url", "needs group_id", "a check of a package above", `sink "nope"`, "patient parameter is POST-only",
		"_sort", "auth.client_id", "auth.private_key_file", `type "mysql"`,
	} {
		require.Contains(t, err.Error(), want)
	}
	require.GreaterOrEqual(t, strings.Count(err.Error(), "\n  - "), 10)
}

func TestDurationAndSize(t *testing.T) {
	cfg, err := Parse([]byte("transform: {max_line_bytes: 16MiB}\ndaemon: {jitter: 90s}\n"))
	require.NoError(t, err)
	require.Equal(t, ByteSize(16<<20), cfg.Transform.MaxLineBytes)
	require.Equal(t, 90*time.Second, cfg.Daemon.Jitter.D())
	_, err = Parse([]byte("daemon: {jitter: soon}\n"))
	require.ErrorContains(t, err, "not a duration")
}

func TestMemoryLimit(t *testing.T) {
	cfg, err := Parse([]byte("memory_limit: 128MiB\n"))
	require.NoError(t, err)
	require.Equal(t, ByteSize(128<<20), cfg.MemoryLimit)
	_, err = Parse([]byte("memory_limit: 1MiB\n"))
	require.ErrorContains(t, err, "memory_limit")
}

// TestExplicitValuesAreHonoured: a key the file sets keeps its value, zero
// included where zero means something; a zero that means nothing is an
// error, never silently replaced by the default.
func TestExplicitValuesAreHonoured(t *testing.T) {
	cfg, err := Parse([]byte(`
sources:
  - {name: a, base_url: "http://h/fhir", http: {retries: 0}}
  - {name: b, base_url: "http://h/fhir"}
sinks:
  - {type: postgres, postgres: {dsn: "postgres://x"}}
  - {name: pg2, type: postgres, postgres: {dsn: "postgres://x", schema: warehouse}}
`))
	require.NoError(t, err)
	require.Equal(t, 0, cfg.Sources[0].HTTP.Retries, "retries: 0 is no retries")
	require.Equal(t, DefaultRetries, cfg.Sources[1].HTTP.Retries)
	require.Equal(t, DefaultParallel, cfg.Sources[0].HTTP.Parallel, "the keys the entry leaves out keep their defaults")
	require.Equal(t, DefaultPostgresSchema, cfg.Sinks[0].Postgres.Schema)
	require.Equal(t, "warehouse", cfg.Sinks[1].Postgres.Schema)

	_, err = Parse([]byte(`
sources:
  - {name: a, base_url: "http://h/fhir", http: {min_wait: 0s, parallel: 0}, export: {timeout: 0s}}
sinks:
  - {type: postgres, postgres: {dsn: "postgres://x", schema: ""}}
`))
	require.ErrorContains(t, err, "http.min_wait and http.request_timeout must be positive")
	require.ErrorContains(t, err, "http.parallel 0 is outside 1..32")
	require.ErrorContains(t, err, "export.timeout must be positive")
	require.ErrorContains(t, err, "postgres.schema must not be empty")
}

func TestNamespaces(t *testing.T) {
	for in, want := range map[string]string{
		"https://EHR.example.org:443/fhir/": "https://ehr.example.org/fhir",
		"http://127.0.0.1:8080/fhir":        "http://127.0.0.1:8080/fhir",
		"http://h:80/r4?x=1#f":              "http://h/r4",
		"https://user:pw@h.example/fhir":    "https://h.example/fhir",
		"http://[::1]:9000/fhir":            "http://[::1]:9000/fhir",
	} {
		require.Equal(t, want, NormalizeBaseURL(in), in)
	}
	cfg, err := Parse([]byte(`
sources:
  - {name: a, base_url: "https://EHR.example.org/fhir/"}
  - {name: b, base_url: "https://ehr.example.org/fhir", level: group, group_id: g}
  - {name: c, base_url: "https://ehr.example.org/fhir", namespace: ehr_main}
`))
	require.NoError(t, err)
	require.Equal(t, cfg.Sources[0].NamespaceOf(), cfg.Sources[1].NamespaceOf(), "one server, one namespace")
	require.Equal(t, "ehr_main", cfg.Sources[2].NamespaceOf())

	_, err = Parse([]byte(`
sources:
  - {name: a, base_url: "https://h/fhir", namespace: "https://h/fhir"}
  - {name: a, base_url: "https://h/fhir"}
`))
	require.ErrorContains(t, err, `namespace "https://h/fhir" must match`)
	require.ErrorContains(t, err, "duplicate source name")
}

// TestPathsAreRelativeToTheConfig: a config means the same whatever the
// working directory: its relative paths are taken from its own folder.
func TestPathsAreRelativeToTheConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "fhirferry.yaml")
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(`
data_dir: ./data
views: {dir: views}
sources:
  - name: a
    base_url: https://h/fhir
    http: {ca_file: ca.pem}
    auth: {type: smart, client_id: c, private_key_file: keys/k.pem}
sinks:
  - {type: duckdb}
  - {name: mem, type: duckdb, duckdb: {path: ":memory:"}}
  - {name: lake, type: parquet, parquet: {dir: /abs/lake}}
`), 0o600))
	cfg, err := Load(p)
	require.NoError(t, err)
	base := filepath.Join(dir, "sub")
	require.Equal(t, filepath.Join(base, "data"), cfg.DataDir)
	require.Equal(t, filepath.Join(base, "views"), cfg.Views.Dir)
	require.Equal(t, filepath.Join(base, "keys/k.pem"), cfg.Sources[0].Auth.PrivateKeyFile)
	require.Equal(t, filepath.Join(base, "ca.pem"), cfg.Sources[0].HTTP.CAFile)
	require.Equal(t, filepath.Join(base, "data", DefaultDuckDBFile), cfg.Sinks[0].DuckDB.Path)
	require.Equal(t, ":memory:", cfg.Sinks[1].DuckDB.Path)
	require.Equal(t, "/abs/lake", cfg.Sinks[2].Parquet.Dir)
}

func TestFormerMembers(t *testing.T) {
	cfg, err := Parse([]byte("sources:\n  - {name: g, base_url: 'https://ehr/fhir', level: group, group_id: c}\n"))
	require.NoError(t, err)
	require.Equal(t, FormerKeep, cfg.Sources[0].Export.FormerMembers, "keep by default")

	_, err = Parse([]byte("sources:\n  - {name: g, base_url: 'https://ehr/fhir', level: group, group_id: c, export: {former_members: purge}}\n" +
		"  - {name: h, base_url: 'https://ehr/fhir', level: group, group_id: d}\n"))
	require.NoError(t, err, "two Groups of one server may share a namespace: a purge spares the other's members")

	_, err = Parse([]byte("sources:\n  - {name: g, base_url: 'https://ehr/fhir', level: group, group_id: c, export: {former_members: drop}}\n" +
		"  - {name: s, base_url: 'https://ehr/fhir', export: {former_members: purge}}\n"))
	require.ErrorContains(t, err, `former_members "drop" is not keep or purge`)
	require.ErrorContains(t, err, "sources[1] (s): export.former_members: purge is only for level group")

	_, err = Parse([]byte("sources:\n  - {name: g, base_url: 'https://ehr/fhir', level: group, group_id: c, export: {former_members: purge}}\n" +
		"  - {name: s, base_url: 'https://ehr/fhir/'}\n"))
	require.ErrorContains(t, err, "purge would remove data that source s (level system) exports into the same namespace")

	_, err = Parse([]byte("sources:\n  - {name: g, base_url: 'https://ehr/fhir', level: group, group_id: c, export: {former_members: purge}}\n" +
		"  - {name: s, base_url: 'https://ehr/fhir', namespace: ehr_all}\n"))
	require.NoError(t, err, "a system source in its own namespace does not share the data")
}

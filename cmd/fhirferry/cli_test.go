package main

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

// cli runs the command line in-process as main does and returns the exit
// code, stdout and stderr.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	code := execute(context.Background(), root, &errOut)
	return code, out.String(), errOut.String()
}

func examples(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "configs", "examples", "*.yaml"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 3)
	return files
}

// Every shipped example passes `config check` as shipped: what a user must
// fill in has a ${VAR:-default}.
func TestExamplesPassConfigCheck(t *testing.T) {
	for _, f := range examples(t) {
		code, out, errOut := cli(t, "config", "check", f)
		require.Equal(t, 0, code, "%s\n%s%s", f, out, errOut)
		require.Contains(t, out, f+": ok")
	}
}

// config check lists every problem of a file at once, creates nothing and
// exits 2.
func TestConfigCheckReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`data_dir: `+data+`
bogus_key: 1
views: {dir: ./no-such-views}
sources:
  - name: a
    base_url: ${FHIRFERRY_TEST_UNSET_VAR}
    schedule: "every tuesday"
    auth: {type: smart, client_id: x, private_key_file: ./missing.pem}
sinks:
  - {name: s, type: duckdb}
  - {name: t, type: oracle}
`), 0o600))
	code, out, _ := cli(t, "config", "check", cfg)
	require.Equal(t, 2, code, out)
	for _, want := range []string{"bogus_key", "FHIRFERRY_TEST_UNSET_VAR", "schedule", "oracle"} {
		require.Contains(t, out, want)
	}
	require.NoFileExists(t, data)
	_, err := os.Stat(data)
	require.ErrorIs(t, err, os.ErrNotExist, "config check creates nothing")

	// A config that decodes: the views and the missing key file are found.
	require.NoError(t, os.WriteFile(cfg, []byte(`data_dir: `+data+`
views: {dir: ./no-such-views}
sources:
  - {name: a, base_url: "http://127.0.0.1:1/fhir", auth: {type: smart, client_id: x, private_key_file: ./missing.pem}}
sinks:
  - {name: s, type: duckdb}
`), 0o600))
	code, out, _ = cli(t, "config", "check", cfg)
	require.Equal(t, 2, code, out)
	require.Contains(t, out, "no-such-views")
	require.Contains(t, out, "warning: sources[0] (a): auth.private_key_file")
	require.NoDirExists(t, data)
}

// A start that fails (here a sink that cannot open) removes the data
// folder and warehouse file it created.
func TestFailedStartCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "c.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`data_dir: `+data+`
sources:
  - {name: a, base_url: "http://127.0.0.1:1/fhir"}
sinks:
  - {name: local, type: duckdb}
  - {name: dw, type: postgres, postgres: {dsn: "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"}}
`), 0o600))
	code, _, errOut := cli(t, "run", "--config", cfg)
	require.Equal(t, 1, code, errOut)
	require.NoDirExists(t, data)
}

// testserver.yaml runs as shipped against the test server (its base URL
// and data folder from the environment, as its comments say).
func TestTestserverExampleRuns(t *testing.T) {
	srv, err := bulktest.NewServer(bulktest.Options{Patients: 5, Seed: 3})
	require.NoError(t, err)
	defer srv.Close()
	data := t.TempDir()
	t.Setenv("FHIRFERRY_BASE_URL", srv.BaseURL())
	t.Setenv("FHIRFERRY_DATA_DIR", data)
	code, out, errOut := cli(t, "run", "--config", filepath.Join("..", "..", "configs", "examples", "testserver.yaml"))
	require.Equal(t, 0, code, out+errOut)
	require.Contains(t, out, "testserver")
	db, err := sql.Open("duckdb", filepath.Join(data, "warehouse.duckdb")+"?access_mode=READ_ONLY")
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM patient`).Scan(&n))
	require.Positive(t, n)
}

// Flags and arguments are checked before anything runs; errors print once,
// usage errors with a pointer to the command's help; exit codes 0/1/2.
func TestCLIErrorsAndExitCodes(t *testing.T) {
	code, _, errOut := cli(t, "--log-level=bogus", "version")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `--log-level "bogus"`)
	require.Contains(t, errOut, "see 'fhirferry version --help'")

	code, _, errOut = cli(t, "--log-format=xml", "version")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--log-format")

	code, _, errOut = cli(t, "run", "--bogus")
	require.Equal(t, 2, code)
	require.Equal(t, 1, strings.Count(errOut, "fhirferry:"), errOut)
	require.Contains(t, errOut, "see 'fhirferry run --help'")

	code, _, errOut = cli(t, "views", "describe")
	require.Equal(t, 2, code, errOut)

	code, _, _ = cli(t, "nosuch")
	require.Equal(t, 2, code)

	// A run that fails: exit 1, the error once.
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`data_dir: `+filepath.Join(t.TempDir(), "d")+`
sources:
  - {name: gone, base_url: "http://127.0.0.1:1/fhir", http: {retries: 0, request_timeout: 2s}}
sinks:
  - {name: local, type: duckdb}
`), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := newRoot()
	var out, errBuf bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errBuf)
	root.SetArgs([]string{"run", "--config", cfg})
	code = execute(ctx, root, &errBuf)
	require.Equal(t, 1, code, errBuf.String())
	require.Equal(t, 1, strings.Count(out.String()+errBuf.String(), "kick-off http://"), "the run's error is printed once:\n%s%s", out.String(), errBuf.String())
	require.NotContains(t, errBuf.String(), "--help")

	code, out2, _ := cli(t, "--version")
	require.Equal(t, 0, code)
	require.True(t, strings.HasPrefix(out2, "fhirferry "), out2)
}

// Every command shows an example in its --help.
func TestEveryCommandHasAnExample(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() != "help" && c.Name() != "completion" && !c.Hidden {
			require.NotEmpty(t, c.Example, "fhirferry %s has no example in its --help", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot())
}

// The config's log settings apply to every command that reads one, unless
// a flag says otherwise.
func TestConfigLogSettingsApply(t *testing.T) {
	g := &globals{logLevel: "info", logFormat: "text"}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("log: {level: debug, format: json}\n"), 0o600))
	_, err := loadConfig(g, cfg)
	require.NoError(t, err)
	require.Equal(t, "debug", g.logLevel)
	require.Equal(t, "json", g.logFormat)
	g = &globals{logLevel: "warn", logFormat: "text", levelSet: true}
	_, err = loadConfig(g, cfg)
	require.NoError(t, err)
	require.Equal(t, "warn", g.logLevel, "the flag wins")
	require.Equal(t, "json", g.logFormat)
}

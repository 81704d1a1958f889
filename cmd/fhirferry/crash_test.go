package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/transform"
)

// crashPoints are the failpoints of pipeline/failpoint.go at which a real
// `fhirferry run` kills itself with SIGKILL: right after the status URL is
// saved, after the 3rd file is spooled (mid-download), after the 5th batch
// is written (mid-load), and after every sink committed (before cleanup).
var crashPoints = []struct {
	spec  string
	phase string // the state's phase the kill must leave
}{
	{"polling", pipeline.PhasePolling},
	{"spooled:3", pipeline.PhaseLoading},
	{"written:5", pipeline.PhaseLoading},
	{"committed", pipeline.PhaseCommitted},
}

// crashWarehouse is the sink a crash scenario's child writes, seen from
// the test: the YAML of its config and ways to read it back.
type crashWarehouse struct {
	yaml string
	// open reads the tables; nil when nothing was ever published.
	open func(t *testing.T) *sql.DB
	// checkpoint is a source's checkpoint transactionTime ("" for none).
	checkpoint func(t *testing.T, source string) string
	// garbage lists leftovers of unfinished runs, when the sink can tell.
	garbage func(t *testing.T) []string
}

func sqlCheckpoint(open func(t *testing.T) *sql.DB) func(t *testing.T, source string) string {
	return func(t *testing.T, source string) string {
		db := open(t)
		if db == nil {
			return ""
		}
		defer db.Close()
		var tt string
		err := db.QueryRow(`SELECT transaction_time FROM checkpoints WHERE source = $1`, source).Scan(&tt)
		if errors.Is(err, sql.ErrNoRows) || err != nil && strings.Contains(err.Error(), "does not exist") {
			return "" // no run committed yet (no table before the first run)
		}
		require.NoError(t, err)
		return tt
	}
}

// TestCrashRecovery kills a real fhirferry process with SIGKILL at each
// failpoint, in an initial and in an incremental run, restarts it without
// the failpoint, and checks nothing was lost or doubled. Two sources load
// at once (daemon.max_concurrent_runs: 2) from two servers started with the
// same seed, so their resources share every id and only the namespace
// keeps them apart. After the restart each namespace equals its server's
// ground truth (raw and views), each checkpoint is its manifest's
// transactionTime, each server saw one kick-off per export and no spooled
// file twice, a killed load is invisible, and the state and spool are
// gone. The servers live in the test process, so they survive their
// client's deaths.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and kills it 48 times")
	}
	bin := filepath.Join(t.TempDir(), "fhirferry")
	t0 := time.Now()
	out, err := exec.Command("go", "build", "-tags", "failpoints", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	t.Logf("built fhirferry in %s", time.Since(t0).Round(time.Millisecond))
	views, err := transform.LoadViews(true, "")
	require.NoError(t, err)

	for _, sk := range crashSinks {
		t.Run(sk.kind, func(t *testing.T) {
			for i, cp := range crashPoints {
				t.Run(strings.ReplaceAll(cp.spec, ":", "@"), func(t *testing.T) {
					t.Parallel()
					dir := t.TempDir()
					wh := sk.make(t, dir)
					crashScenario(t, bin, dir, wh, views, int64(100+i), cp.spec, cp.phase)
				})
				t.Run("group@"+strings.ReplaceAll(cp.spec, ":", "@"), func(t *testing.T) {
					t.Parallel()
					dir := t.TempDir()
					crashMembers(t, bin, dir, sk.make(t, dir), int64(200+i), cp.spec, cp.phase)
				})
			}
		})
	}
}

// crashSinks are the warehouses the crash tests kill a run of.
var crashSinks = []struct {
	kind string
	make func(t *testing.T, dir string) crashWarehouse
}{
	{"duckdb", func(t *testing.T, dir string) crashWarehouse {
		path := filepath.Join(dir, "warehouse.duckdb")
		open := func(t *testing.T) *sql.DB {
			if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
				return nil // before the first run
			}
			return e2e.OpenDuckDB(t, path)
		}
		return crashWarehouse{
			yaml: fmt.Sprintf("    type: duckdb\n    duckdb:\n      path: %s\n", path),
			open: open, checkpoint: sqlCheckpoint(open),
			garbage: func(t *testing.T) []string {
				left, _ := filepath.Glob(path + ".spool/*")
				return left
			},
		}
	}},
	{"postgres", func(t *testing.T, _ string) crashWarehouse {
		dsn, schema := e2e.PostgresSchema(t)
		open := func(t *testing.T) *sql.DB { return e2e.OpenPostgres(t, dsn, schema) }
		return crashWarehouse{
			yaml: fmt.Sprintf("    type: postgres\n    postgres:\n      dsn: %q\n      schema: %s\n", dsn, schema),
			open: open, checkpoint: sqlCheckpoint(open),
		}
	}},
	{"parquet", func(t *testing.T, dir string) crashWarehouse {
		lake := filepath.Join(dir, "lake")
		return crashWarehouse{
			yaml:       fmt.Sprintf("    type: parquet\n    parquet:\n      dir: %s\n      compression: snappy\n", lake),
			open:       func(t *testing.T) *sql.DB { return e2e.OpenLakeDir(t, lake) },
			checkpoint: func(t *testing.T, source string) string { return e2e.LakeCheckpoint(t, lake, source) },
			garbage:    func(t *testing.T) []string { return e2e.LakeGarbage(t, lake) },
		}
	}},
}

// crashSource is one source of a scenario and the server it exports.
type crashSource struct {
	name string
	srv  *bulktest.Server
	ns   string
}

// crashEnv is one scenario: the servers, a data dir and a config.
type crashEnv struct {
	t       *testing.T
	bin     string
	cfg     string
	dataDir string
	sources []crashSource
	wh      crashWarehouse
	views   []transform.View
}

func crashScenario(t *testing.T, bin, dir string, wh crashWarehouse, views []transform.View, seed int64, spec, phase string) {
	e := &crashEnv{t: t, bin: bin, dataDir: filepath.Join(dir, "data"), wh: wh, views: views,
		cfg: filepath.Join(dir, "config.yaml")}
	var yaml strings.Builder
	for _, name := range []string{"ehr", "ehr2"} {
		srv, err := bulktest.NewServer(bulktest.Options{
			Patients: 6, Seed: seed, FileMaxResources: 40, PollsBeforeComplete: 2, RetryAfter: "1",
		})
		require.NoError(t, err)
		t.Cleanup(srv.Close)
		e.sources = append(e.sources, crashSource{name: name, srv: srv, ns: configs.NormalizeBaseURL(srv.BaseURL())})
		fmt.Fprintf(&yaml, `  - name: %s
    base_url: %s
    level: system
    http:
      parallel: 2
      min_wait: 50ms
      max_wait: 2s
`, name, srv.BaseURL())
	}
	require.NoError(t, os.WriteFile(e.cfg, []byte(fmt.Sprintf(`data_dir: %s
log:
  level: info
daemon:
  max_concurrent_runs: 2
transform:
  batch_rows: 100
  workers: 2
  queue_depth: 2
sources:
%ssinks:
  - name: warehouse
%s`, e.dataDir, yaml.String(), wh.yaml)), 0o600))

	t.Run("initial", func(t *testing.T) { e.crashAndRecover(t, spec, phase, nil) })
	prev := map[string]e2e.Truth{}
	for i, src := range e.sources {
		prev[src.name] = src.srv.Truth("system", "", nil)
		// The servers change differently: the same ids, other versions.
		mut := src.srv.Advance(24*time.Hour, bulktest.Mutation{NewPatients: 1, UpdatedResources: 20 - 5*i, DeletedResources: 8 - 3*i, RecreatedResources: 2})
		require.NotEmpty(t, mut.Deleted)
	}
	t.Run("incremental", func(t *testing.T) { e.crashAndRecover(t, spec, phase, prev) })
}

// crashAndRecover runs the child with the failpoint, requires it was
// killed where asked, restarts it and checks the outcome. prev is the
// truth each source's namespace held before (nil: empty).
func (e *crashEnv) crashAndRecover(t *testing.T, spec, phase string, prev map[string]e2e.Truth) {
	kicks, since := map[string]int{}, map[string]string{}
	for _, src := range e.sources {
		kicks[src.name] = src.srv.Stats().KickOffs
		since[src.name] = e.wh.checkpoint(t, src.name)
	}

	// 1. The crash.
	stdout, stderr, err := e.run(t, "FHIRFERRY_FAILPOINT="+spec)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "the child was not killed at %s; stdout:\n%s\nstderr:\n%s", spec, stdout, stderr)
	ws, ok := ee.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "child ended with %v, not SIGKILL; stderr:\n%s", ee, stderr)

	states := map[string]*pipeline.RunState{}
	spooled := map[string]map[string]bool{}
	atPhase := false
	for _, src := range e.sources {
		st := e.state(t, src.name)
		if st == nil {
			continue
		}
		states[src.name] = st
		atPhase = atPhase || st.Phase == phase
		require.Equal(t, since[src.name], st.Since, "%s: _since is the checkpoint, verbatim", src.name)
		spooled[src.name] = map[string]bool{}
		for _, sp := range st.Spooled {
			spooled[src.name][urlPath(t, sp.File.URL)] = true
		}
		if spec == "spooled:3" && st.Phase == phase && len(st.Spooled) >= 3 {
			require.Less(t, len(st.Spooled), len(st.Manifest.Files()), "killed mid-download")
		}
	}
	require.True(t, atPhase, "no run was killed at phase %s", phase)
	e.requireKilledLoadInvisible(t, states, since, prev)

	// 2. The restart.
	stdout, stderr, err = e.run(t)
	require.NoError(t, err, "restart failed; stdout:\n%s\nstderr:\n%s", stdout, stderr)
	for name, st := range states {
		require.Regexp(t, `resuming run.*`+st.RunID, stderr, "the restart resumes the killed run of %s", name)
	}
	for _, src := range e.sources {
		stats := src.srv.Stats()
		want := kicks[src.name] + 1
		if st := states[src.name]; st != nil && st.StatusURL == "" && stats.KickOffs == want+1 {
			// Killed while the other run's failpoint fired between this
			// run's kick-off and saving its status URL: the server's
			// answer was lost with the process, so the restart kicks off
			// again. The window is the one HTTP exchange.
			want++
		}
		require.Equal(t, want, stats.KickOffs, "%s: one kick-off for the export, whatever the crash", src.name)
		for p := range spooled[src.name] {
			require.Equal(t, 1, stats.Downloads[p], "%s: file %s was spooled before the kill and downloaded again", src.name, p)
		}
		require.Nil(t, e.state(t, src.name), "the state file is removed after the run")
	}
	e.requireSpoolEmpty(t)
	if e.wh.garbage != nil {
		require.Empty(t, e.wh.garbage(t), "the killed run's staging is left behind")
	}
	db := e.wh.open(t)
	require.NotNil(t, db)
	defer db.Close()
	var total int
	for _, src := range e.sources {
		cp := e.wh.checkpoint(t, src.name)
		if st := states[src.name]; st != nil && st.Manifest != nil {
			require.Equal(t, st.Manifest.TransactionTime, cp, "the checkpoint is the manifest's transactionTime")
		}
		tt, err := time.Parse(time.RFC3339Nano, cp)
		require.NoError(t, err)
		require.True(t, tt.Equal(src.srv.Now()), "checkpoint %s is not the server's clock %s", cp, src.srv.Now())
		require.Contains(t, stdout, cp, "the summary shows the transactionTime")
		truth := src.srv.Truth("system", "", nil)
		e2e.RequireNamespaceMatchesTruth(t, db, src.ns, e.views, truth)
		total += len(truth)
	}
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM fhir_resources`).Scan(&n))
	require.Equal(t, total, n, "each namespace's resources once, nothing else")
}

// requireKilledLoadInvisible checks what the warehouse shows after the
// kill: a source whose run committed holds its new export, any other the
// state before the run (nothing, on a first run).
func (e *crashEnv) requireKilledLoadInvisible(t *testing.T, states map[string]*pipeline.RunState, since map[string]string, prev map[string]e2e.Truth) {
	db := e.wh.open(t)
	if db != nil {
		defer db.Close()
	}
	for _, src := range e.sources {
		st := states[src.name]
		cp := e.wh.checkpoint(t, src.name)
		// A sink can commit and the process die before the state records
		// it: the checkpoint says what the warehouse holds.
		committed := cp != since[src.name]
		if st != nil && slices.Contains(st.Committed, "warehouse") {
			require.True(t, committed, "%s: the state says committed, the checkpoint did not move", src.name)
		}
		switch {
		case committed:
			require.NotNil(t, db)
			if st != nil && st.Manifest != nil {
				require.Equal(t, st.Manifest.TransactionTime, cp)
			}
			e2e.RequireNamespaceMatchesTruth(t, db, src.ns, e.views, src.srv.Truth("system", "", nil))
		case prev == nil:
			if db != nil {
				var n int
				require.NoError(t, db.QueryRow(`SELECT count(*) FROM fhir_resources WHERE namespace = $1`, src.ns).Scan(&n))
				require.Zero(t, n, "%s: a killed first run left rows behind", src.name)
			}
		default:
			require.Equal(t, since[src.name], cp, "%s: a killed run moved the checkpoint", src.name)
			e2e.RequireNamespaceMatchesTruth(t, db, src.ns, e.views, prev[src.name])
		}
	}
}

// run runs `fhirferry run` to its end with extra environment variables.
func (e *crashEnv) run(t *testing.T, env ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, "run", "--config", e.cfg)
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	cmd.Env = append(os.Environ(), env...)
	err = cmd.Run()
	require.NoError(t, ctx.Err(), "fhirferry run timed out; stderr:\n%s", s.String())
	return o.String(), s.String(), err
}

// state reads a source's run state; nil when there is none.
func (e *crashEnv) state(t *testing.T, source string) *pipeline.RunState {
	b, err := os.ReadFile(filepath.Join(e.dataDir, "state", source+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	var st pipeline.RunState
	require.NoError(t, json.Unmarshal(b, &st))
	return &st
}

// requireSpoolEmpty checks no file is left under data_dir/spool.
func (e *crashEnv) requireSpoolEmpty(t *testing.T) {
	var left []string
	err := filepath.WalkDir(filepath.Join(e.dataDir, "spool"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return err
	})
	require.NoError(t, err)
	require.Empty(t, left, "spooled files left after the run")
}

// urlPath is the server-side path of a file URL (Stats.Downloads' key).
func urlPath(t *testing.T, raw string) string {
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u.Path
}

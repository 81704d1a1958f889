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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
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
	// checkpoint is the source's checkpoint transactionTime.
	checkpoint func(t *testing.T) string
	// garbage lists leftovers of unfinished runs, when the sink can tell.
	garbage func(t *testing.T) []string
}

func sqlCheckpoint(open func(t *testing.T) *sql.DB) func(t *testing.T) string {
	return func(t *testing.T) string {
		db := open(t)
		defer db.Close()
		return e2e.Checkpoint(t, db, "ehr")
	}
}

// TestCrashRecovery kills a real fhirferry process with SIGKILL at each
// failpoint, in an initial and in an incremental run, restarts it without
// the failpoint, and checks nothing was lost or doubled: the warehouse
// equals the server's ground truth (raw and views), the checkpoint is the
// manifest's transactionTime, the server saw one kick-off per export and
// no spooled file twice, a killed load is invisible, and the state and
// spool are gone. The bulktest server lives in the test process, so it
// survives its client's deaths.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and kills it 24 times")
	}
	bin := filepath.Join(t.TempDir(), "fhirferry")
	t0 := time.Now()
	out, err := exec.Command("go", "build", "-tags", "failpoints", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	t.Logf("built fhirferry in %s", time.Since(t0).Round(time.Millisecond))
	views, err := transform.LoadViews(true, "")
	require.NoError(t, err)

	sinks := []struct {
		kind string
		make func(t *testing.T, dir string) crashWarehouse
	}{
		{"duckdb", func(t *testing.T, dir string) crashWarehouse {
			path := filepath.Join(dir, "warehouse.duckdb")
			open := func(t *testing.T) *sql.DB { return e2e.OpenDuckDB(t, path) }
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
				checkpoint: func(t *testing.T) string { return e2e.LakeCheckpoint(t, lake, "ehr") },
				garbage:    func(t *testing.T) []string { return e2e.LakeGarbage(t, lake) },
			}
		}},
	}
	for _, sk := range sinks {
		t.Run(sk.kind, func(t *testing.T) {
			for i, cp := range crashPoints {
				t.Run(strings.ReplaceAll(cp.spec, ":", "@"), func(t *testing.T) {
					t.Parallel()
					dir := t.TempDir()
					wh := sk.make(t, dir)
					crashScenario(t, bin, dir, wh, views, int64(100+i), cp.spec, cp.phase)
				})
			}
		})
	}
}

// crashEnv is one scenario: a server, a data dir and a config.
type crashEnv struct {
	t       *testing.T
	bin     string
	cfg     string
	dataDir string
	srv     *bulktest.Server
	wh      crashWarehouse
	views   []transform.View
}

func crashScenario(t *testing.T, bin, dir string, wh crashWarehouse, views []transform.View, seed int64, spec, phase string) {
	srv, err := bulktest.NewServer(bulktest.Options{
		Patients: 8, Seed: seed, FileMaxResources: 40, PollsBeforeComplete: 2, RetryAfter: "1",
	})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	e := &crashEnv{t: t, bin: bin, dataDir: filepath.Join(dir, "data"), srv: srv, wh: wh, views: views,
		cfg: filepath.Join(dir, "config.yaml")}
	require.NoError(t, os.WriteFile(e.cfg, []byte(fmt.Sprintf(`data_dir: %s
log:
  level: info
transform:
  batch_rows: 100
  workers: 2
  queue_depth: 2
sources:
  - name: ehr
    base_url: %s
    level: system
    http:
      parallel: 2
      min_wait: 50ms
      max_wait: 2s
sinks:
  - name: warehouse
%s`, e.dataDir, srv.BaseURL(), wh.yaml)), 0o600))

	t.Run("initial", func(t *testing.T) { e.crashAndRecover(t, spec, phase, nil, "") })
	before := srv.Truth("system", "", nil)
	cp := wh.checkpoint(t)
	mut := srv.Advance(24*time.Hour, bulktest.Mutation{NewPatients: 1, UpdatedResources: 20, DeletedResources: 8, RecreatedResources: 2})
	require.NotEmpty(t, mut.Deleted)
	t.Run("incremental", func(t *testing.T) { e.crashAndRecover(t, spec, phase, before, cp) })
}

// crashAndRecover runs the child with the failpoint, requires it was
// killed where asked, restarts it and checks the outcome. prev is the
// truth the warehouse held before (nil: empty); since the run's expected
// _since.
func (e *crashEnv) crashAndRecover(t *testing.T, spec, phase string, prev e2e.Truth, since string) {
	kicks := e.srv.Stats().KickOffs

	// 1. The crash.
	stdout, stderr, err := e.run(t, "FHIRFERRY_FAILPOINT="+spec)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "the child was not killed at %s; stdout:\n%s\nstderr:\n%s", spec, stdout, stderr)
	ws, ok := ee.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "child ended with %v, not SIGKILL; stderr:\n%s", ee, stderr)

	st := e.state(t)
	require.NotNil(t, st, "a killed run leaves its state")
	require.Equal(t, phase, st.Phase)
	require.Equal(t, since, st.Since, "_since is the checkpoint, verbatim")
	require.NotEmpty(t, st.StatusURL, "the status URL is saved before polling")
	spooled := map[string]bool{}
	for _, sp := range st.Spooled {
		spooled[urlPath(t, sp.File.URL)] = true
	}
	switch spec {
	case "spooled:3":
		require.GreaterOrEqual(t, len(st.Spooled), 3)
		require.Less(t, len(st.Spooled), len(st.Manifest.Files()), "killed mid-download")
	}
	if phase == pipeline.PhaseCommitted {
		require.Equal(t, []string{"warehouse"}, st.Committed)
	} else {
		require.Empty(t, st.Committed)
	}

	// A killed load is invisible; a killed cleanup is after the commit.
	db := e.wh.open(t)
	switch {
	case phase == pipeline.PhaseCommitted:
		require.Equal(t, st.Manifest.TransactionTime, e.wh.checkpoint(t))
		e2e.RequireRawMatches(t, db, e.srv.Truth("system", "", nil))
	case prev == nil:
		if db != nil {
			var n int
			require.NoError(t, db.QueryRow(`SELECT count(*) FROM fhir_resources`).Scan(&n))
			require.Zero(t, n, "a killed first run left rows behind")
		}
	default:
		require.Equal(t, since, e.wh.checkpoint(t), "a killed run moved the checkpoint")
		e2e.RequireRawMatches(t, db, prev)
	}
	if db != nil {
		require.NoError(t, db.Close())
	}

	// 2. The restart.
	stdout, stderr, err = e.run(t)
	require.NoError(t, err, "restart failed; stdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.Regexp(t, `resuming run.*`+st.RunID, stderr, "the restart resumes the killed run")

	stats := e.srv.Stats()
	require.Equal(t, kicks+1, stats.KickOffs, "one kick-off for the export, whatever the crash")
	for p := range spooled {
		require.Equal(t, 1, stats.Downloads[p], "file %s was spooled before the kill and downloaded again", p)
	}
	require.Nil(t, e.state(t), "the state file is removed after the run")
	e.requireSpoolEmpty(t)

	if e.wh.garbage != nil {
		require.Empty(t, e.wh.garbage(t), "the killed run's staging is left behind")
	}
	db = e.wh.open(t)
	require.NotNil(t, db)
	defer db.Close()
	cp := e.wh.checkpoint(t)
	if st.Manifest != nil {
		require.Equal(t, st.Manifest.TransactionTime, cp, "the checkpoint is the manifest's transactionTime")
	}
	tt, err := time.Parse(time.RFC3339Nano, cp)
	require.NoError(t, err)
	require.True(t, tt.Equal(e.srv.Now()), "checkpoint %s is not the server's clock %s", cp, e.srv.Now())
	require.Contains(t, stdout, cp, "the summary shows the transactionTime")
	e2e.RequireMatchesTruth(t, db, e.views, e.srv.Truth("system", "", nil))
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

// state reads the source's run state; nil when there is none.
func (e *crashEnv) state(t *testing.T) *pipeline.RunState {
	b, err := os.ReadFile(filepath.Join(e.dataDir, "state", "ehr.json"))
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

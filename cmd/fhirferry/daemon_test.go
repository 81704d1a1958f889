package main

import (
	"bufio"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/transform"
)

// daemonProc is one `fhirferry daemon` process.
type daemonProc struct {
	cmd   *exec.Cmd
	admin string
	logf  string
	done  chan error
}

func startDaemon(t *testing.T, bin, cfgPath, admin, logPath string) *daemonProc {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	cmd := exec.Command(bin, "daemon", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=") // not under systemd here
	require.NoError(t, cmd.Start())
	p := &daemonProc{cmd: cmd, admin: "http://" + admin, logf: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); _ = lf.Close() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			err := <-p.done
			require.Error(t, err, "the daemon was killed")
		}
	})
	require.Eventually(t, func() bool {
		code, _ := httpGet(p.admin + "/readyz")
		return code == http.StatusOK
	}, 90*time.Second, 100*time.Millisecond, "daemon never became ready; log:\n%s", readFile(logPath))
	return p
}

// stop sends SIGTERM and requires a clean exit (code 0) within limit.
func (p *daemonProc) stop(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		require.NoError(t, err, "daemon did not exit 0 after SIGTERM; log:\n%s", readFile(p.logf))
	case <-time.After(limit):
		t.Fatalf("daemon still running %s after SIGTERM; log:\n%s", limit, readFile(p.logf))
	}
	return time.Since(t0)
}

func (p *daemonProc) status(t *testing.T) pipeline.SourceStatus {
	t.Helper()
	code, body := httpGet(p.admin + "/status")
	require.Equal(t, http.StatusOK, code)
	var doc pipeline.StatusDoc
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	require.Len(t, doc.Sources, 1)
	return doc.Sources[0]
}

func (p *daemonProc) metrics(t *testing.T) string {
	t.Helper()
	code, body := httpGet(p.admin + "/metrics")
	require.Equal(t, http.StatusOK, code)
	return body
}

func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func readFile(p string) string { b, _ := os.ReadFile(p); return string(b) }

// metricSum adds the samples of name whose labels include every want pair.
func metricSum(body, name string, want ...string) (float64, bool) {
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			if !strings.Contains(line, want[i]+`="`+want[i+1]+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// TestDaemonEndToEnd builds the binary, runs the daemon on a short schedule
// against the bulktest server, watches runs through /status and /metrics,
// stops it with SIGTERM in the middle of a run, restarts it, and checks the
// run resumed (same run id, same export, no re-download of spooled files)
// and the DuckDB tables equal the server's ground truth.
func TestDaemonEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two daemons")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fhirferry")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	srv, err := bulktest.NewServer(bulktest.Options{Patients: 12, Seed: 11, FileMaxResources: 40, RetryAfter: "1"})
	require.NoError(t, err)
	defer srv.Close()

	admin := freePort(t)
	dataDir := filepath.Join(dir, "data")
	duckPath := filepath.Join(dataDir, "warehouse.duckdb")
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`data_dir: %s
log:
  level: info
  format: json
admin:
  listen: %s
daemon:
  stop_timeout: 30s
sources:
  - name: ehr
    base_url: %s
    level: group
    group_id: cohort
    schedule: "@every 3s"
    http:
      parallel: 1
      min_wait: 100ms
      max_wait: 2s
sinks:
  - name: warehouse
    type: duckdb
    duckdb:
      path: %s
`, dataDir, admin, srv.BaseURL(), duckPath)), 0o600))
	logPath := filepath.Join(dir, "daemon.log")

	// 1. Two completed runs, observed through /status and /metrics.
	p := startDaemon(t, bin, cfgPath, admin, logPath)
	require.Eventually(t, func() bool {
		v, _ := metricSum(p.metrics(t), "fhirferry_scheduler_runs_total", "source", "ehr", "outcome", "success")
		return v >= 2
	}, 90*time.Second, 200*time.Millisecond, "log:\n%s", readFile(logPath))
	// Read a consistent picture: /status, /metrics, /status with the same last run.
	var st pipeline.SourceStatus
	var m string
	require.Eventually(t, func() bool {
		st = p.status(t)
		m = p.metrics(t)
		st2 := p.status(t)
		return st.LastRun != nil && st2.LastRun != nil && st.LastRun.Started.Equal(st2.LastRun.Started) && st.State == "idle" && st2.State == "idle"
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, pipeline.OutcomeSuccess, st.LastRun.Outcome, st.LastRun.Error)
	require.NotNil(t, st.NextRun)
	require.Equal(t, "@every 3s", st.Schedule)
	succ, _ := metricSum(m, "fhirferry_scheduler_runs_total", "source", "ehr", "outcome", "success")
	fail, _ := metricSum(m, "fhirferry_scheduler_runs_total", "source", "ehr", "outcome", "failure")
	require.GreaterOrEqual(t, succ, 2.0)
	require.Zero(t, fail, "log:\n%s", readFile(logPath))
	kick, _ := metricSum(m, "fhirferry_fetch_http_responses_total", "source", "ehr", "kind", "kickoff", "code", "2xx")
	require.Equal(t, succ, kick, "one kick-off per finished run")
	truth := srv.Truth("group", "cohort", nil)
	res, _ := metricSum(m, "fhirferry_transform_resources_total", "source", "ehr")
	require.GreaterOrEqual(t, res, float64(len(truth)), "the first run loads every resource")
	cpTS, ok := metricSum(m, "fhirferry_checkpoint_timestamp_seconds", "source", "ehr")
	require.True(t, ok)
	cp, err := time.Parse(time.RFC3339Nano, st.LastRun.Checkpoint)
	require.NoError(t, err)
	require.InDelta(t, float64(cp.UnixNano())/1e9, cpTS, 0.001)
	_, ok = metricSum(m, "fhirferry_checkpoint_lag_seconds", "source", "ehr")
	require.True(t, ok)
	_, ok = metricSum(m, "go_goroutines")
	require.True(t, ok, "Go collector registered")
	_, ok = metricSum(m, "process_resident_memory_bytes")
	require.True(t, ok, "process collector registered")

	// 2. Change the server's data and slow its files down; SIGTERM while
	// the next run is loading.
	srv.Advance(24*time.Hour, bulktest.Mutation{NewPatients: 2, UpdatedResources: 20, DeletedResources: 8})
	srv.SetFaults(bulktest.Faults{SlowFirstByte: 1500 * time.Millisecond})
	statePath := filepath.Join(dataDir, "state", "ehr.json")
	var saved pipeline.RunState
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(statePath)
		if err != nil || json.Unmarshal(b, &saved) != nil {
			return false
		}
		return saved.Phase == pipeline.PhaseLoading && len(saved.Spooled) >= 1 && len(saved.Spooled) < len(saved.Manifest.Files())
	}, 90*time.Second, 20*time.Millisecond, "no run reached the loading phase; log:\n%s", readFile(logPath))
	took := p.stop(t, 40*time.Second)
	t.Logf("graceful stop mid-run took %s", took)
	require.Contains(t, readFile(logPath), "run interrupted")
	b, err := os.ReadFile(statePath)
	require.NoError(t, err, "the interrupted run's state must survive the stop")
	var after pipeline.RunState
	require.NoError(t, json.Unmarshal(b, &after))
	require.Equal(t, saved.RunID, after.RunID)
	require.Empty(t, after.Committed, "a cancelled run commits nothing")
	spooledPaths := map[string]bool{}
	for _, sp := range after.Spooled {
		spooledPaths[sp.File.URL] = true
	}

	// 3. Restart: the saved run resumes at once (same run id, same export,
	// spooled files not fetched again).
	srv.SetFaults(bulktest.Faults{})
	p = startDaemon(t, bin, cfgPath, admin, logPath)
	cpAtStart, ok := metricSum(p.metrics(t), "fhirferry_checkpoint_timestamp_seconds", "source", "ehr")
	require.True(t, ok, "the checkpoint gauge is seeded from the sinks at start")
	require.InDelta(t, cpTS, cpAtStart, 0.001)
	var resumed pipeline.SourceStatus
	require.Eventually(t, func() bool {
		resumed = p.status(t)
		return resumed.LastRun != nil && resumed.LastRun.Trigger == "resume"
	}, 90*time.Second, 50*time.Millisecond)
	require.Equal(t, pipeline.OutcomeSuccess, resumed.LastRun.Outcome, resumed.LastRun.Error)
	require.Equal(t, saved.RunID, resumed.LastRun.RunID, "the restart must resume the interrupted run")
	require.True(t, resumed.LastRun.Resumed)
	require.Contains(t, readFile(logPath), `"msg":"resuming run","run_id":"`+saved.RunID+`"`)
	stats := srv.Stats()
	for path := range spooledPaths {
		u := path
		if i := strings.Index(u, "://"); i >= 0 {
			u = u[i+3:]
			u = u[strings.Index(u, "/"):]
		}
		if i := strings.Index(u, "?"); i >= 0 {
			u = u[:i]
		}
		require.Equal(t, 1, stats.Downloads[u], "spooled file %s downloaded again after the restart", u)
	}

	// Let the resumed run finish (and maybe a scheduled one), then stop and
	// compare the warehouse with the server.
	require.Eventually(t, func() bool {
		s := p.status(t)
		return s.State == "idle" && s.LastRun != nil && s.LastRun.Outcome == pipeline.OutcomeSuccess
	}, 90*time.Second, 50*time.Millisecond)

	// 4. SIGHUP reloads the config: a broken file is rejected, a good one
	// swaps the schedule (and reopens the sinks) without a restart.
	good := readFile(cfgPath)
	require.NoError(t, os.WriteFile(cfgPath, []byte(good+"bogus_key: 1\n"), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(readFile(logPath), "config reload rejected") }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, "@every 3s", p.status(t).Schedule)
	require.NoError(t, os.WriteFile(cfgPath, []byte(strings.Replace(good, `"@every 3s"`, `"@hourly"`, 1)), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return p.status(t).Schedule == "@hourly" }, 30*time.Second, 50*time.Millisecond, "log:\n%s", readFile(logPath))
	require.Eventually(t, func() bool { code, _ := httpGet(p.admin + "/readyz"); return code == http.StatusOK }, 10*time.Second, 50*time.Millisecond)
	p.stop(t, 40*time.Second)
	_, err = os.Stat(statePath)
	require.ErrorIs(t, err, os.ErrNotExist, "no unfinished run after a clean stop between runs")
	assertWarehouseMatches(t, duckPath, srv.Truth("group", "cohort", nil))
	if testing.Verbose() {
		t.Logf("daemon log:\n%s", readFile(logPath))
	}
}

func assertWarehouseMatches(t *testing.T, path string, truth map[bulktest.Key]bulktest.TruthRow) {
	t.Helper()
	views, err := transform.LoadViews(true, "")
	require.NoError(t, err)
	e2e.RequireMatchesTruth(t, e2e.OpenDuckDB(t, path), views, truth)
}

// TestReadersWhileDaemonRuns: an analyst's read-only DuckDB session works
// at any time while the daemon keeps the warehouse fresh, and each read
// sees the state of one commit: the checkpoint and the row counts of the
// raw landing and a view agree with the server's state at that checkpoint,
// never a mix of two runs.
func TestReadersWhileDaemonRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a daemon")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fhirferry")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	srv, err := bulktest.NewServer(bulktest.Options{Patients: 10, Seed: 12, FileMaxResources: 60, PollsBeforeComplete: 1, RetryAfter: "1"})
	require.NoError(t, err)
	defer srv.Close()
	type counts struct{ raw, patients int }
	var mu sync.Mutex
	states := map[time.Time]counts{{}: {}} // the zero time: before the first run
	snapshot := func() {
		truth := srv.Truth("system", "", nil)
		c := counts{raw: len(truth)}
		for k := range truth {
			if k.Type == "Patient" {
				c.patients++
			}
		}
		mu.Lock()
		states[srv.Now().UTC()] = c
		mu.Unlock()
	}
	snapshot()
	admin := freePort(t)
	duckPath := filepath.Join(dir, "warehouse.duckdb")
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`data_dir: %s
admin: {listen: %s}
sources:
  - name: ehr
    base_url: %s
    schedule: "@every 1s"
    http: {min_wait: 50ms, max_wait: 1s}
sinks:
  - {name: warehouse, type: duckdb, duckdb: {path: %s}}
`, filepath.Join(dir, "data"), admin, srv.BaseURL(), duckPath)), 0o600))
	logPath := filepath.Join(dir, "daemon.log")
	p := startDaemon(t, bin, cfgPath, admin, logPath)

	read := func() (time.Time, counts, error) {
		db, err := sql.Open("duckdb", duckPath+"?access_mode=READ_ONLY")
		if err != nil {
			return time.Time{}, counts{}, err
		}
		defer db.Close()
		db.SetMaxOpenConns(1) // one connection: one file, one state
		var tt sql.NullString
		var c counts
		err = db.QueryRow(`SELECT (SELECT transaction_time FROM checkpoints WHERE source = 'ehr'),
			(SELECT count(*) FROM fhir_resources), (SELECT count(*) FROM patient)`).Scan(&tt, &c.raw, &c.patients)
		if err != nil || !tt.Valid {
			return time.Time{}, c, err // !Valid: published before the first run
		}
		ts, err := time.Parse(time.RFC3339Nano, tt.String)
		return ts.UTC(), c, err
	}
	seen := map[time.Time]bool{}
	reads := 0
	deadline := time.Now().Add(90 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		if _, err := os.Stat(duckPath); errors.Is(err, fs.ErrNotExist) {
			time.Sleep(20 * time.Millisecond) // before the first commit is published
			continue
		}
		tt, c, err := read()
		require.NoError(t, err, "a read while the daemon runs failed (read %d)", reads)
		reads++
		mu.Lock()
		want, ok := states[tt]
		mu.Unlock()
		require.True(t, ok, "checkpoint %s is no state of the server", tt)
		require.Equal(t, want, c, "at checkpoint %s the tables hold another run's rows", tt)
		if !tt.IsZero() && !seen[tt] {
			seen[tt] = true
			// The next run has something new to load.
			srv.Advance(time.Hour, bulktest.Mutation{NewPatients: 1, UpdatedResources: 5, DeletedResources: 2})
			snapshot()
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.Len(t, seen, 3, "the daemon did not publish three runs in time; log:\n%s", readFile(logPath))
	t.Logf("%d reads, all of them consistent, across %d published runs", reads, len(seen))
	p.stop(t, 40*time.Second)
}

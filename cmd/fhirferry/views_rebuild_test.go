package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/builtin"
)

// Views before the change: pt (one row per Patient) and pt_name (one row
// per name).
const rebuildPtV1 = `{"resourceType":"ViewDefinition","name":"pt","resource":"Patient",
  "select":[{"column":[{"name":"id","path":"getResourceKey()","type":"string"},{"name":"gender","path":"gender","type":"code"}]}]}`

const rebuildPtName = `{"resourceType":"ViewDefinition","name":"pt_name","resource":"Patient",
  "select":[{"column":[{"name":"id","path":"getResourceKey()","type":"string"}]},
            {"forEach":"name","column":[{"name":"family","path":"family","type":"string"}]}]}`

// After the change pt gains a filter and a column, and obs is new.
const rebuildPtV2 = `{"resourceType":"ViewDefinition","name":"pt","resource":"Patient",
  "where":[{"path":"active = true"}],
  "select":[{"column":[{"name":"id","path":"getResourceKey()","type":"string"},{"name":"gender","path":"gender","type":"code"},
                       {"name":"family","path":"name.first().family","type":"string"}]}]}`

const rebuildObs = `{"resourceType":"ViewDefinition","name":"obs","resource":"Observation",
  "select":[{"column":[{"name":"id","path":"getResourceKey()","type":"string"},{"name":"status","path":"status","type":"code"}]}]}`

// Two exports: the second updates p2 (now active, one name).
var rebuildExports = []map[string]string{{
	"Patient.ndjson": `{"resourceType":"Patient","id":"p1","meta":{"lastUpdated":"2025-01-01T00:00:00Z"},"active":true,"gender":"female","name":[{"family":"Ash"}]}
{"resourceType":"Patient","id":"p2","meta":{"lastUpdated":"2025-01-01T00:00:00Z"},"active":false,"gender":"male","name":[{"family":"Birch"},{"family":"Beech"}]}
{"resourceType":"Patient","id":"p3","meta":{"lastUpdated":"2025-01-01T00:00:00Z"},"active":false}
{"resourceType":"Patient","id":"p4","meta":{"lastUpdated":"2025-01-01T00:00:00Z"},"active":true,"gender":"male","name":[{"family":"Cedar"}]}
`,
	"Observation.ndjson": `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"a"}}
{"resourceType":"Observation","id":"o2","status":"preliminary","code":{"text":"b"}}
`}, {
	"Patient.ndjson": `{"resourceType":"Patient","id":"p2","meta":{"lastUpdated":"2025-02-01T00:00:00Z"},"active":true,"gender":"male","name":[{"family":"Birch"}]}
`}}

// rebuildEnv is one warehouse: a config over a views folder and sinks.
type rebuildEnv struct {
	t     *testing.T
	dir   string
	views string
	cfg   string
}

func newRebuildEnv(t *testing.T, sinks func(dir string) string, views ...string) *rebuildEnv {
	dir := t.TempDir()
	e := &rebuildEnv{t: t, dir: dir, views: filepath.Join(dir, "views")}
	require.NoError(t, os.Mkdir(e.views, 0o755))
	e.setViews(views...)
	e.cfg = write(t, dir, "config.yaml", fmt.Sprintf("data_dir: %s\nviews:\n  defaults: false\n  dir: %s\nsinks:\n%s",
		filepath.Join(dir, "data"), e.views, sinks(dir)))
	return e
}

// setViews makes the views folder hold exactly views.
func (e *rebuildEnv) setViews(views ...string) {
	old, _ := filepath.Glob(filepath.Join(e.views, "*.json"))
	for _, f := range old {
		require.NoError(e.t, os.Remove(f))
	}
	for i, v := range views {
		write(e.t, e.views, fmt.Sprintf("v%d.json", i), v)
	}
}

// load loads every export in order with `fhirferry load`.
func (e *rebuildEnv) load() {
	for i, files := range rebuildExports {
		d := filepath.Join(e.dir, fmt.Sprint("export", i))
		require.NoError(e.t, os.MkdirAll(d, 0o755))
		for n, body := range files {
			write(e.t, d, n, body)
		}
		cmd := newLoadCmd(&globals{logLevel: "error"})
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs([]string{d, "--config", e.cfg, "--source", "s", "--transaction-time", fmt.Sprintf("2025-0%d-15T00:00:00Z", i+1)})
		require.NoError(e.t, cmd.ExecuteContext(e.t.Context()))
	}
}

var durationRE = regexp.MustCompile(`(?m)  [0-9.]+(ns|µs|ms|s)$`)

// rebuild runs `fhirferry views rebuild` and returns its output with the
// durations replaced by "DUR".
func (e *rebuildEnv) rebuild(args ...string) (string, error) {
	out, _, err := runViews(e.t, append([]string{"rebuild", "--config", e.cfg}, args...)...)
	return durationRE.ReplaceAllString(out, "  DUR"), err
}

// dump returns every row of each table of every sink, sorted, with the
// column names first.
func (e *rebuildEnv) dump(tables ...string) map[string][]string {
	ctx := e.t.Context()
	a, err := testApp(ctx, e.cfg)
	require.NoError(e.t, err)
	defer a.Close()
	out := map[string][]string{}
	for _, sc := range a.Config().Sinks {
		s, _ := a.Sink(sc.Name)
		q := s.(sinks.Querier)
		held, err := q.Tables(ctx)
		require.NoError(e.t, err)
		for _, tbl := range tables {
			key := sc.Name + "." + tbl
			if !slices.ContainsFunc(held, func(ti sinks.TableInfo) bool { return ti.Name == tbl && ti.Rows > 0 }) {
				out[key] = nil
				continue
			}
			rows, err := q.Query(ctx, `SELECT * FROM "`+tbl+`"`)
			require.NoError(e.t, err)
			cols, err := rows.Columns()
			require.NoError(e.t, err)
			var lines []string
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				require.NoError(e.t, rows.Scan(ptrs...))
				lines = append(lines, fmt.Sprint(vals...))
			}
			require.NoError(e.t, rows.Err())
			require.NoError(e.t, rows.Close())
			slices.Sort(lines)
			out[key] = append([]string{strings.Join(cols, ",")}, lines...)
		}
	}
	return out
}

// staleWarnings returns what `fhirferry run` prints about stale views.
func (e *rebuildEnv) staleWarnings() string {
	a, err := testApp(e.t.Context(), e.cfg)
	require.NoError(e.t, err)
	defer a.Close()
	var b bytes.Buffer
	warnStaleViews(e.t.Context(), &b, a, "CONFIG")
	return b.String()
}

// staleLog returns what the daemon logs about stale views (text lines,
// time left out).
func (e *rebuildEnv) staleLog() string {
	a, err := testApp(e.t.Context(), e.cfg)
	require.NoError(e.t, err)
	defer a.Close()
	var b bytes.Buffer
	log := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: func(_ []string, at slog.Attr) slog.Attr {
		if at.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return at
	}}))
	a.LogStaleViews(e.t.Context(), log, "CONFIG")
	return b.String()
}

// testDeps builds the binary's sinks with a logger that discards.
// testApp builds the app of a config file with testDeps.
func testApp(ctx context.Context, cfgPath string) (*pipeline.App, error) {
	cfg, err := pipeline.LoadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	return pipeline.Build(ctx, cfg, testDeps())
}

func testDeps() pipeline.Deps {
	return pipeline.Deps{Sinks: builtin.Factories(), Logger: slog.New(slog.DiscardHandler)}
}

// perSink repeats a block of output lines (with %[1]s for the sink name)
// for each sink; the sink names of a test have equal lengths, so the
// columns line up the same.
func perSink(block string, sinks ...string) string {
	var b strings.Builder
	for _, s := range sinks {
		fmt.Fprintf(&b, block, s)
	}
	return b.String()
}

// testRebuildScenario loads two exports under the old views, changes one
// view and adds another, rebuilds, and checks the warehouse equals a
// fresh load under the new views.
func testRebuildScenario(t *testing.T, sinks func(dir string) string, names ...string) {
	e := newRebuildEnv(t, sinks, rebuildPtV1, rebuildPtName)
	e.load()

	// Loading into the empty warehouse recorded the definitions it loaded
	// with (as `run` does), so nothing is stale and a later run does not
	// warn about tables that have every row.
	require.Empty(t, e.staleWarnings())
	out, err := e.rebuild()
	require.NoError(t, err)
	require.Equal(t, perSink("sink %[1]s: all 2 views are up to date\n", names...), out)

	// Change pt (a filter and a column), add obs, keep pt_name.
	e.setViews(rebuildPtV2, rebuildPtName, rebuildObs)
	require.Equal(t, perSink("warning: sink %[1]s: views obs, pt are new or changed since their tables were built,"+
		" so the tables only have rows for resources loaded since; run `fhirferry views rebuild --config CONFIG` to rebuild them from the raw landing\n",
		names...), e.staleWarnings())
	require.Equal(t, perSink(`level=WARN msg="view tables only have rows for resources loaded since their view was added or changed"`+
		` sink=%[1]s views=obs,pt fix="fhirferry views rebuild --config CONFIG"`+"\n", names...), e.staleLog(), "the daemon's log says the same")
	out, err = e.rebuild()
	require.NoError(t, err)
	require.Equal(t, "SINK  VIEW  RESOURCE     ROWS BEFORE  ROWS AFTER  ERRORS  DURATION\n"+perSink(
		"%[1]s  obs   Observation  0            2           0       DUR\n"+
			"%[1]s  pt    Patient      4            3           0       DUR\n", names...), out)

	fresh := newRebuildEnv(t, sinks, rebuildPtV2, rebuildPtName, rebuildObs)
	fresh.load()
	got, want := e.dump("pt", "pt_name", "obs"), fresh.dump("pt", "pt_name", "obs")
	require.Equal(t, want, got)
	require.Len(t, got[names[0]+".pt"], 1+3, "header and the three active patients")
	require.Equal(t, "namespace,source,_resource_id,id,gender,family", got[names[0]+".pt"][0])

	// --view and --all rebuild regardless of the recorded hashes.
	out, err = e.rebuild("--view", "pt_name")
	require.NoError(t, err)
	require.Equal(t, "SINK  VIEW     RESOURCE  ROWS BEFORE  ROWS AFTER  ERRORS  DURATION\n"+perSink(
		"%[1]s  pt_name  Patient   3            3           0       DUR\n", names...), out)
	out, err = e.rebuild("--all", "--sink", names[0])
	require.NoError(t, err)
	require.Equal(t, 1+3, strings.Count(out, "\n"), out)
	require.Equal(t, want, e.dump("pt", "pt_name", "obs"))

	_, err = e.rebuild("--view", "nope")
	require.ErrorContains(t, err, `no view named "nope"`)
	_, err = e.rebuild("--sink", "nope")
	require.ErrorContains(t, err, `no sink named "nope"`)
}

func TestViewsRebuildDuckDBAndLake(t *testing.T) {
	testRebuildScenario(t, func(dir string) string {
		return fmt.Sprintf("  - name: duck\n    type: duckdb\n    duckdb:\n      path: %s\n"+
			"  - name: lake\n    type: parquet\n    parquet:\n      dir: %s\n",
			filepath.Join(dir, "w.duckdb"), filepath.Join(dir, "lake"))
	}, "duck", "lake")
}

func TestViewsRebuildPostgres(t *testing.T) {
	dsn := os.Getenv("FHIRFERRY_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("FHIRFERRY_TEST_POSTGRES is not set")
	}
	var schemas []string
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		defer conn.Close(ctx)
		for _, s := range schemas {
			_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE")
			require.NoError(t, err)
		}
	})
	testRebuildScenario(t, func(string) string {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		s := "fftest_" + hex.EncodeToString(b)
		schemas = append(schemas, s)
		return fmt.Sprintf("  - name: pgdb\n    type: postgres\n    postgres:\n      dsn: %q\n      schema: %s\n", dsn, s)
	}, "pgdb")
}

// TestViewsRebuildFailure makes one sink fail one view: the command names
// both and exits 1, the other tables are rebuilt and recorded, and the
// next rebuild retries only the failed one.
func TestViewsRebuildFailure(t *testing.T) {
	sinks := func(dir string) string {
		return fmt.Sprintf("  - name: duck\n    type: duckdb\n    duckdb:\n      path: %s\n"+
			"  - name: lake\n    type: parquet\n    parquet:\n      dir: %s\n",
			filepath.Join(dir, "w.duckdb"), filepath.Join(dir, "lake"))
	}
	e := newRebuildEnv(t, sinks, rebuildPtV1)
	e.load()
	_, err := e.rebuild()
	require.NoError(t, err)
	e.setViews(rebuildPtV2, rebuildObs)
	// A file where the lake wants obs's folder.
	write(t, filepath.Join(e.dir, "lake"), "obs", "in the way")
	out, err := e.rebuild()
	require.Error(t, err)
	var ec interface{ ExitCode() int }
	require.ErrorAs(t, err, &ec)
	require.Equal(t, 1, ec.ExitCode())
	require.Regexp(t, `^views rebuild: sink lake: view obs: parquet sink lake: replace obs: .*not a directory$`, err.Error())
	require.Equal(t, `SINK  VIEW  RESOURCE     ROWS BEFORE  ROWS AFTER  ERRORS  DURATION
duck  obs   Observation  0            2           0       DUR
duck  pt    Patient      4            3           0       DUR
lake  obs   Observation  0            failed      -       DUR
lake  pt    Patient      4            3           0       DUR
`, out)

	require.NoError(t, os.Remove(filepath.Join(e.dir, "lake", "obs")))
	out, err = e.rebuild()
	require.NoError(t, err)
	require.Equal(t, `SINK  VIEW  RESOURCE     ROWS BEFORE  ROWS AFTER  ERRORS  DURATION
lake  obs   Observation  0            2           0       DUR
sink duck: all 2 views are up to date
`, out)
}

package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"gopkg.in/yaml.v3"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/builtin"
	"github.com/fhirferry/fhirferry/transform"
)

// benchFlags are the flags of `fhirferry bench`; the tuning ones are passed
// on to the child that runs the pipeline.
type benchFlags struct {
	patients int
	size     string
	views    string
	mode     string
	dir      string
	keep     bool
	export   bool
	variants bool
	floor    bool
	rebuild  bool
	daemon   int
	baseline bool
	seed     int64
	tune     benchTune
}

// benchTune is the pipeline's configuration in a benchmark child. Every
// field left empty (or 0) is left out of the child's config, so that the
// config's own default applies: by default the bench measures what a user
// gets with no tuning, everything derived from memory_budget.
type benchTune struct {
	Budget      string // memory_budget
	MemoryLimit string // the DuckDB sink's memory_limit
	Threads     int    // the DuckDB sink's threads
	Workers     int
	QueueDepth  int
	BatchRows   int
	BatchBytes  string
	Staging     string // the DuckDB sink's staging_bytes
	GoMemLimit  string // GOMEMLIMIT of the child ("": the config's memory_limit)
}

func (t benchTune) args() []string {
	return []string{
		"--budget", t.Budget, "--memory-limit", t.MemoryLimit, "--threads", strconv.Itoa(t.Threads),
		"--workers", strconv.Itoa(t.Workers), "--queue-depth", strconv.Itoa(t.QueueDepth),
		"--batch-rows", strconv.Itoa(t.BatchRows), "--batch-bytes", t.BatchBytes, "--staging", t.Staging, "--go-memory-limit", t.GoMemLimit,
	}
}

func (t *benchTune) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&t.Budget, "budget", "", "memory_budget of the pipeline (default: the config default, 512MiB)")
	f.StringVar(&t.MemoryLimit, "memory-limit", "", "memory_limit of the DuckDB sink (default: derived from the budget)")
	f.IntVar(&t.Threads, "threads", 0, "threads of the DuckDB sink (default: derived)")
	f.IntVar(&t.Workers, "workers", 0, "transform workers (transform.workers; default: derived)")
	f.IntVar(&t.QueueDepth, "queue-depth", 0, "batches in flight to the sink (transform.queue_depth; default: derived)")
	f.IntVar(&t.BatchRows, "batch-rows", 0, "rows per record batch (transform.batch_rows; default: the config default)")
	f.StringVar(&t.BatchBytes, "batch-bytes", "", "bytes per record batch (transform.batch_bytes; default: derived)")
	f.StringVar(&t.Staging, "staging", "", "staging_bytes of the DuckDB sink (default: derived)")
	f.StringVar(&t.GoMemLimit, "go-memory-limit", "", `GOMEMLIMIT of the pipeline process (default: none, so the config's derived memory_limit applies)`)
}

// config is the child's config text: data_dir under work, the DuckDB sink
// at db, the tuning set, and src (a sources section) appended.
func (t benchTune) config(work, db, views, src string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %q\nlog: {level: warn}\nviews: {defaults: %t}\nadmin: {listen: \"127.0.0.1:0\"}\n",
		filepath.Join(work, "data"), views == "default")
	if t.Budget != "" {
		fmt.Fprintf(&b, "memory_budget: %q\n", t.Budget)
	}
	var tr []string
	for _, kv := range []struct {
		key string
		set bool
		val any
	}{{"workers", t.Workers > 0, t.Workers}, {"queue_depth", t.QueueDepth > 0, t.QueueDepth},
		{"batch_rows", t.BatchRows > 0, t.BatchRows}, {"batch_bytes", t.BatchBytes != "", strconv.Quote(t.BatchBytes)}} {
		if kv.set {
			tr = append(tr, fmt.Sprintf("%s: %v", kv.key, kv.val))
		}
	}
	if len(tr) > 0 {
		fmt.Fprintf(&b, "transform: {%s}\n", strings.Join(tr, ", "))
	}
	duck := []string{fmt.Sprintf("path: %q", db)}
	if t.MemoryLimit != "" {
		duck = append(duck, fmt.Sprintf("memory_limit: %q", t.MemoryLimit))
	}
	if t.Threads > 0 {
		duck = append(duck, fmt.Sprintf("threads: %d", t.Threads))
	}
	fmt.Fprintf(&b, "sinks:\n  - name: duck\n    type: duckdb\n    duckdb: {%s}\n", strings.Join(duck, ", "))
	if t.Staging != "" {
		fmt.Fprintf(&b, "    staging_bytes: %q\n", t.Staging)
	}
	b.WriteString(src)
	return b.String()
}

func newBenchCmd() *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "fhirferry-bench [--patients N | --size 500MB] [--views default|none] [--mode pipeline|onefile]",
		Short: "Measure load throughput and peak memory against DuckDB's own read_json",
		Long: `bench generates Synthea-like NDJSON with the built-in test server, writes it to
--dir, then in the same run:

  1. loads the files with the fhirferry pipeline (the 'fhirferry load' path:
     transform, raw landing plus views, staging, one committed run) into a fresh
     DuckDB file, in a child process whose peak RSS (ru_maxrss) is reported;
  2. loads the same files with DuckDB's own
     CREATE TABLE t AS SELECT * FROM read_json('DIR/*.ndjson', format='newline_delimited', union_by_name=true)
     into another fresh DuckDB file with DuckDB's default settings (also in a child);
  3. with --export, runs a full $export from the in-process test server over
     loopback into a third DuckDB file (the server stays in the parent process,
     so it does not count in the pipeline's memory);
  4. with --floor (and --views default), copies the view rows of (1) out to
     Parquet, untimed, and times DuckDB alone inserting them into a fresh file
     whose tables the DuckDB sink created, with one thread as the sink's loader
     runs: the share of a views load no change to fhirferry's Go side can remove.

The headline ratio is (1) / (2): the same files from the same disk.

--mode onefile streams one large Observation file (>= 1 GB by default) through the
pipeline, with prefixes of 100 MB and 500 MB of the same file, to show that peak
memory does not grow with the input.`,
		Example: `  fhirferry bench --size 500MB --views none
  fhirferry bench --size 500MB --views default --export
  fhirferry bench --size 500MB --views default --floor
  fhirferry bench --mode onefile --size 1GB --dir /tmp/bench --keep`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.patients, "patients", 0, "patients to generate (default: enough for --size)")
	fl.StringVar(&f.size, "size", "500MB", "NDJSON to generate when --patients is not set (e.g. 500MB, 1GB)")
	fl.StringVar(&f.views, "views", "default", "default (the embedded view pack) or none (raw landing only)")
	fl.StringVar(&f.mode, "mode", "pipeline", "pipeline (a whole export) or onefile (one large Observation file)")
	fl.StringVar(&f.dir, "dir", "", "working folder (default: a temporary folder)")
	fl.BoolVar(&f.keep, "keep", false, "keep the generated files and databases")
	fl.BoolVar(&f.export, "export", false, "also run a full $export from the test server over loopback")
	fl.BoolVar(&f.variants, "variants", false, "also time read_ndjson_objects and read_json with explicit columns")
	fl.BoolVar(&f.floor, "floor", false, "with --views default, also time DuckDB alone inserting the load's view rows")
	fl.BoolVar(&f.baseline, "baseline", true, "also load the files with DuckDB's read_json (the headline ratio)")
	fl.BoolVar(&f.rebuild, "rebuild", false, "also time `views rebuild --all` on the loaded warehouse")
	fl.IntVar(&f.daemon, "daemon", 0, "also run the daemon for this many runs (a full export, then incremental ones while the server changes)")
	fl.Int64Var(&f.seed, "seed", 1, "data seed")
	f.tune.register(cmd)
	return cmd
}

// benchResult is what a child reports on stdout (one JSON object), plus
// what the parent measures of it.
type benchResult struct {
	Name      string             `json:"name"`
	Seconds   float64            `json:"seconds"` // wall time of the measured work
	Bytes     int64              `json:"bytes"`   // NDJSON bytes read
	Resources int64              `json:"resources"`
	Rows      int64              `json:"rows"` // rows in the target table(s)
	Phases    map[string]float64 `json:"phases,omitempty"`
	Note      string             `json:"note,omitempty"`
	Err       string             `json:"error,omitempty"`
	// WorkCPU is the CPU time of the measured work alone, for a child
	// that also does untimed set-up (view_floor).
	WorkCPU float64 `json:"work_cpu,omitempty"`
	// Budget is the pipeline's memory_budget, and Memory its settings as
	// derived from it (fhirferry children only).
	Budget int64  `json:"budget,omitempty"`
	Memory string `json:"memory,omitempty"`

	PeakRSS int64   `json:"-"` // bytes, ru_maxrss of the child
	CPU     float64 `json:"-"` // user+system seconds of the child
}

func (r *benchResult) setMemory(summary, over string) {
	r.Memory = summary
	if over != "" {
		r.Memory += " (" + over + ")"
	}
}

func (r benchResult) mbps() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Seconds
}

func (r benchResult) rps() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Resources) / r.Seconds
}

func parseSize(s string) (int64, error) {
	var b configs.ByteSize
	if err := yaml.Unmarshal([]byte(strconv.Quote(s)), &b); err != nil {
		return 0, fmt.Errorf("--size %q: use e.g. 500MB, 1GB, 512MiB", s)
	}
	return int64(b), nil
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func runBench(ctx context.Context, f *benchFlags, out, errw io.Writer) error {
	if f.views != "default" && f.views != "none" {
		return fmt.Errorf("--views %q: want default or none", f.views)
	}
	if f.mode != "pipeline" && f.mode != "onefile" {
		return fmt.Errorf("--mode %q: want pipeline or onefile", f.mode)
	}
	size, err := parseSize(f.size)
	if err != nil {
		return err
	}
	dir := f.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "fhirferry-bench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !f.keep {
		defer os.RemoveAll(filepath.Join(dir, "work"))
		if f.dir == "" {
			defer os.RemoveAll(dir)
		}
	}
	logf := func(format string, a ...any) { fmt.Fprintf(errw, "bench: "+format+"\n", a...) }
	fmt.Fprintf(out, "fhirferry bench: mode=%s views=%s, %d CPUs, %s, load average at start %s\n",
		f.mode, f.views, runtime.NumCPU(), runtime.Version(), loadAvg())
	if f.mode == "onefile" {
		return benchOneFile(ctx, f, size, dir, out, logf)
	}
	return benchPipeline(ctx, f, size, dir, out, logf)
}

// benchServer starts the in-process test server.
func benchServer(patients int, seed int64, fileMax int) (*bulktest.Server, error) {
	return bulktest.NewServer(bulktest.Options{
		Patients: patients, Seed: seed, PollsBeforeComplete: -1, FileMaxResources: fileMax,
	})
}

// calibrate measures the NDJSON bytes per patient of a small export.
func calibrate(ctx context.Context, seed int64, types []string) (float64, error) {
	const n = 40
	srv, err := benchServer(n, seed, 0)
	if err != nil {
		return 0, err
	}
	defer srv.Close()
	tmp, err := os.MkdirTemp("", "fhirferry-calibrate-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	st, err := writeExport(ctx, srv, tmp, types)
	if err != nil {
		return 0, err
	}
	return float64(st.bytes) / n, nil
}

type genStats struct {
	files        []string
	bytes, lines int64
}

// writeExport runs one system $export on srv and writes its output files to
// dir as plain NDJSON, <n>.<Type>.ndjson (the names `fhirferry load` reads).
func writeExport(ctx context.Context, srv *bulktest.Server, dir string, types []string) (genStats, error) {
	var gs genStats
	c, err := fetch.New(fetch.Options{BaseURL: srv.BaseURL(), MinWait: 50 * time.Millisecond, MaxWait: time.Second})
	if err != nil {
		return gs, err
	}
	status, err := c.KickOff(ctx, fetch.Request{Level: fetch.LevelSystem, Types: types})
	if err != nil {
		return gs, err
	}
	m, err := c.Wait(ctx, status)
	if err != nil {
		return gs, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for i, file := range m.Output {
		path := filepath.Join(dir, fmt.Sprintf("%03d.%s.ndjson", i, file.Type))
		g.Go(func() error {
			n, lines, err := fetchFile(gctx, hc, file.URL, path)
			if err != nil {
				return fmt.Errorf("generate %s: %w", filepath.Base(path), err)
			}
			mu.Lock()
			gs.files = append(gs.files, path)
			gs.bytes += n
			gs.lines += lines
			mu.Unlock()
			return nil
		})
	}
	err = g.Wait()
	sort.Strings(gs.files)
	return gs, err
}

func fetchFile(ctx context.Context, hc *http.Client, url, path string) (n, lines int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET file: HTTP %d", resp.StatusCode)
	}
	fo, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	cw := &lineCounter{w: bufio.NewWriterSize(fo, 1<<20)}
	if _, err := io.Copy(cw, resp.Body); err != nil {
		fo.Close()
		return 0, 0, err
	}
	if err := cw.w.(*bufio.Writer).Flush(); err != nil {
		fo.Close()
		return 0, 0, err
	}
	return cw.n, cw.lines, fo.Close()
}

type lineCounter struct {
	w        io.Writer
	n, lines int64
}

func (c *lineCounter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' {
			c.lines++
		}
	}
	c.n += int64(len(p))
	return c.w.Write(p)
}

// runChild runs `fhirferry-bench child args...` and returns its report
// with its peak RSS and CPU time.
func runChild(ctx context.Context, goMemLimit string, args ...string) (benchResult, error) {
	if goMemLimit == "off" {
		goMemLimit = ""
	}
	var r benchResult
	exe, err := os.Executable() // this binary: its child command is the worker
	if err != nil {
		return r, err
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"child"}, args...)...)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	// The child's Go runtime gets the benchmark's GOMEMLIMIT (the way a
	// user would run fhirferry load), not whatever the parent inherited.
	cmd.Env = append(os.Environ(), "GOGC=", "GOMEMLIMIT="+goMemLimit)
	runErr := cmd.Run()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru != nil {
		r.PeakRSS = ru.Maxrss * 1024 // kilobytes on Linux
	}
	r.CPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	line := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if line != "" {
		peak, cpu := r.PeakRSS, r.CPU
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return r, fmt.Errorf("child %s: bad report %q: %w", args[0], line, err)
		}
		r.PeakRSS, r.CPU = peak, cpu
	}
	if r.Err != "" {
		return r, fmt.Errorf("child %s: %s", args[0], r.Err)
	}
	if runErr != nil {
		return r, fmt.Errorf("child %s: %w", args[0], runErr)
	}
	return r, nil
}

// generate writes the benchmark's export into dir/data (sized by
// --patients or --size) and empties dir/work. The caller closes srv, which
// the export child reads from.
func generate(ctx context.Context, f *benchFlags, size int64, dir string, out io.Writer, logf func(string, ...any)) (srv *bulktest.Server, gs genStats, err error) {
	patients := f.patients
	if patients <= 0 {
		per, err := calibrate(ctx, f.seed, nil)
		if err != nil {
			return nil, gs, fmt.Errorf("calibrate: %w", err)
		}
		patients = int(float64(size)/per*1.02) + 1
		logf("%.1f KB of NDJSON per patient: generating %d patients for %s", per/1e3, patients, f.size)
	}
	data := filepath.Join(dir, "data")
	for _, d := range []string{data, filepath.Join(dir, "work")} {
		if err := os.RemoveAll(d); err != nil {
			return nil, gs, err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, gs, err
		}
	}
	if srv, err = benchServer(patients, f.seed, 0); err != nil {
		return nil, gs, err
	}
	t0 := time.Now()
	if gs, err = writeExport(ctx, srv, data, nil); err != nil {
		srv.Close()
		return nil, gs, err
	}
	fmt.Fprintf(out, "generated %d patients: %d files, %.1f MB, %d resources in %s (%s)\n",
		patients, len(gs.files), float64(gs.bytes)/1e6, gs.lines, time.Since(t0).Round(time.Millisecond), data)
	return srv, gs, nil
}

func benchPipeline(ctx context.Context, f *benchFlags, size int64, dir string, out io.Writer, logf func(string, ...any)) error {
	srv, gs, err := generate(ctx, f, size, dir, out, logf)
	if err != nil {
		return err
	}
	defer srv.Close()
	data, work := filepath.Join(dir, "data"), filepath.Join(dir, "work")

	var results []benchResult
	run := func(args ...string) (benchResult, error) {
		logf("running %s (load average %s)", args[0], loadAvg())
		r, err := runChild(ctx, f.tune.GoMemLimit, args...)
		if err == nil {
			results = append(results, r)
		}
		return r, err
	}
	common := append([]string{"--views", f.views}, f.tune.args()...)
	ours, err := run(append([]string{"load", "--data", data, "--work", filepath.Join(work, "load")}, common...)...)
	if err != nil {
		return err
	}
	var theirs benchResult
	if f.baseline {
		if theirs, err = run("read_json", "--data", data, "--work", filepath.Join(work, "read_json")); err != nil {
			return err
		}
	}
	if f.variants {
		for _, v := range []string{"read_ndjson_objects", "read_json_columns"} {
			if _, err := run(v, "--data", data, "--work", filepath.Join(work, v)); err != nil {
				logf("%s: %v", v, err)
			}
		}
	}
	if f.export {
		if _, err := run(append([]string{"export", "--base-url", srv.BaseURL(), "--work", filepath.Join(work, "export")}, common...)...); err != nil {
			return err
		}
	}
	var floor benchResult
	if f.floor && f.views == "default" {
		logf("running view_floor (load average %s)", loadAvg())
		floor, err = runChild(ctx, f.tune.GoMemLimit, append([]string{"view_floor",
			"--data", filepath.Join(work, "load", "bench.duckdb"), "--work", filepath.Join(work, "floor")}, f.tune.args()...)...)
		if err != nil {
			return err
		}
	}
	if f.rebuild {
		if _, err := run(append([]string{"rebuild", "--data", filepath.Join(work, "load", "bench.duckdb"), "--work", filepath.Join(work, "load")}, common...)...); err != nil {
			return partial(out, results, err)
		}
	}
	if f.daemon > 0 {
		if err := benchDaemon(ctx, f, srv, gs, filepath.Join(work, "daemon"), run, common); err != nil {
			return partial(out, results, err)
		}
	}
	printResults(out, results)
	printBudget(out, results)
	if f.baseline {
		ratio := ours.mbps() / theirs.mbps()
		fmt.Fprintf(out, "\nheadline: fhirferry load %.1f MB/s vs DuckDB read_json %.1f MB/s on the same %.1f MB: ratio %.2f (views=%s, target >= %s)\n",
			ours.mbps(), theirs.mbps(), float64(gs.bytes)/1e6, ratio, f.views, map[string]string{"none": "2", "default": "1.5"}[f.views])
	}
	if floor.Rows > 0 {
		fmt.Fprintf(out, "floor: DuckDB alone inserts the load's %d view rows in %.2f s, %.1f CPU-s %s: %.0f%% of the load's %.1f CPU-s\n",
			floor.Rows, floor.Seconds, floor.WorkCPU, floor.Note, 100*floor.WorkCPU/ours.CPU, ours.CPU)
	}
	fmt.Fprintf(out, "the same load by hand: fhirferry load %s --config <a duckdb sink; %s>\n", data, ours.Memory)
	fmt.Fprintf(out, "load average at end: %s\n", loadAvg())
	return nil
}

func benchOneFile(ctx context.Context, f *benchFlags, size int64, dir string, out io.Writer, logf func(string, ...any)) error {
	types := []string{"Observation"}
	patients := f.patients
	if patients <= 0 {
		per, err := calibrate(ctx, f.seed, types)
		if err != nil {
			return fmt.Errorf("calibrate: %w", err)
		}
		patients = int(float64(size)/per*1.02) + 1
		logf("%.1f KB of Observations per patient: generating %d patients for %s", per/1e3, patients, f.size)
	}
	work := filepath.Join(dir, "work")
	gen := filepath.Join(work, "gen")
	for _, d := range []string{work, gen} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	srv, err := benchServer(patients, f.seed, 1<<24)
	if err != nil {
		return err
	}
	t0 := time.Now()
	gs, err := writeExport(ctx, srv, gen, types)
	srv.Close()
	if err != nil {
		return err
	}
	if len(gs.files) != 1 {
		return fmt.Errorf("expected one Observation file, the server wrote %d", len(gs.files))
	}
	big := gs.files[0]
	fmt.Fprintf(out, "generated one Observation file: %.1f MB, %d resources in %s\n",
		float64(gs.bytes)/1e6, gs.lines, time.Since(t0).Round(time.Millisecond))

	var results []benchResult
	for _, want := range []int64{100e6, 500e6, gs.bytes} {
		if want > gs.bytes {
			continue
		}
		label := fmt.Sprintf("%dMB", want/1e6)
		data := filepath.Join(work, "in-"+label)
		if err := os.MkdirAll(data, 0o755); err != nil {
			return err
		}
		dst := filepath.Join(data, "1.Observation.ndjson")
		if want == gs.bytes {
			if err := os.Rename(big, dst); err != nil {
				return err
			}
			big = dst
		} else if err := copyPrefix(big, dst, want); err != nil {
			return err
		}
		logf("loading %s (load average %s)", label, loadAvg())
		r, err := runChild(ctx, f.tune.GoMemLimit, append([]string{"load", "--data", data, "--work", filepath.Join(work, "load-"+label), "--views", f.views}, f.tune.args()...)...)
		if err != nil {
			return err
		}
		r.Name = "fhirferry load " + label
		results = append(results, r)
		if want != gs.bytes {
			_ = os.RemoveAll(data)
		}
	}
	printResults(out, results)
	var lo, hi int64 = 1 << 62, 0
	for _, r := range results {
		lo, hi = min(lo, r.PeakRSS), max(hi, r.PeakRSS)
	}
	fmt.Fprintf(out, "\npeak RSS from %s to %s over a %.0fx larger input (target <= 256 MiB); DuckDB sink memory_limit %s, GOMEMLIMIT %s\n",
		mib(lo), mib(hi), float64(results[len(results)-1].Bytes)/float64(max(results[0].Bytes, 1)), f.tune.MemoryLimit, f.tune.GoMemLimit)
	fmt.Fprintf(out, "load average at end: %s\n", loadAvg())
	return nil
}

// copyPrefix copies the whole lines of src that fit in n bytes.
func copyPrefix(src, dst string, n int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fo, err := os.Create(dst)
	if err != nil {
		return err
	}
	br := bufio.NewReaderSize(in, 1<<20)
	bw := bufio.NewWriterSize(fo, 1<<20)
	var written int64
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return errors.Join(fmt.Errorf("%s: line longer than 1 MiB", src), fo.Close())
		}
		if len(line) == 0 || written+int64(len(line)) > n {
			break
		}
		if _, werr := bw.Write(line); werr != nil {
			return errors.Join(werr, fo.Close())
		}
		written += int64(len(line))
		if err != nil {
			break
		}
	}
	return errors.Join(bw.Flush(), fo.Close())
}

// partial prints the runs that finished before err, which it returns: a
// failed rebuild or daemon leaves the load's figures worth having.
func partial(out io.Writer, rs []benchResult, err error) error {
	printResults(out, rs)
	printBudget(out, rs)
	return err
}

// printBudget sets each fhirferry run's peak RSS against its memory budget.
func printBudget(out io.Writer, rs []benchResult) {
	fmt.Fprintln(out)
	for _, r := range rs {
		if r.Budget == 0 {
			continue
		}
		verdict := "within"
		if float64(r.PeakRSS) > 1.1*float64(r.Budget) {
			verdict = "OVER"
		}
		fmt.Fprintf(out, "%s: peak RSS %s of memory_budget %s: %.0f%% (%s the budget + 10%%)\n",
			r.Name, mib(r.PeakRSS), mib(r.Budget), 100*float64(r.PeakRSS)/float64(r.Budget), verdict)
	}
	for _, r := range rs {
		if r.Memory != "" {
			fmt.Fprintf(out, "settings: %s\n", r.Memory)
			break
		}
	}
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func printResults(out io.Writer, rs []benchResult) {
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "RUN\tMB\tRESOURCES\tROWS\tSECONDS\tMB/s\tRESOURCES/s\tCPU s\tPEAK RSS\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%.1f\t%d\t%d\t%.2f\t%.1f\t%.0f\t%.1f\t%s\t\n", r.Name, float64(r.Bytes)/1e6, r.Resources, r.Rows,
			r.Seconds, r.mbps(), r.rps(), r.CPU, mib(r.PeakRSS))
	}
	tw.Flush()
	for _, r := range rs {
		if len(r.Phases) > 0 || r.Note != "" {
			var ph []string
			for k, v := range r.Phases {
				ph = append(ph, fmt.Sprintf("%s %.2fs", k, v))
			}
			sort.Strings(ph)
			fmt.Fprintf(out, "  %s: %s %s\n", r.Name, strings.Join(ph, ", "), r.Note)
		}
	}
}

// newBenchChildCmd is the hidden worker of `fhirferry bench`: one
// measured load per process, so its peak RSS is its own.
func newBenchChildCmd() *cobra.Command {
	var (
		data, work, views, baseURL, cpuProfile string
		tune                                   benchTune
		runs                                   int
	)
	cmd := &cobra.Command{
		Use:    "child load|export|read_json|read_ndjson_objects|read_json_columns|view_floor|rebuild|daemon",
		Short:  "One measured load of fhirferry-bench (internal)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			// rebuild works on the load's own folder (its warehouse and
			// state); every other child starts from an empty one.
			if args[0] != "rebuild" {
				if err := os.RemoveAll(work); err != nil {
					return err
				}
			}
			if err := os.MkdirAll(work, 0o755); err != nil {
				return err
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			var r benchResult
			var err error
			switch args[0] {
			case "load", "export":
				r, err = childPipeline(ctx, args[0], data, work, views, baseURL, tune)
			case "read_json", "read_ndjson_objects", "read_json_columns":
				r, err = childDuckDB(ctx, args[0], data, work)
			case "view_floor":
				r, err = childViewFloor(ctx, data, work, tune)
			case "rebuild":
				r, err = childRebuild(ctx, data, work, views, tune)
			case "daemon":
				r, err = childDaemon(ctx, work, views, baseURL, runs, tune)
			default:
				err = fmt.Errorf("unknown child %q", args[0])
			}
			if err != nil {
				r.Err = err.Error()
			}
			return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&data, "data", "", "folder of NDJSON files (view_floor: the loaded database)")
	fl.StringVar(&work, "work", "", "folder for the database and state (emptied first)")
	fl.StringVar(&views, "views", "default", "default or none")
	fl.StringVar(&baseURL, "base-url", "", "test server (export)")
	fl.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the child (go tool pprof)")
	fl.IntVar(&runs, "runs", 3, "daemon: runs to finish")
	tune.register(cmd)
	return cmd
}

// benchHooks records phase durations and, with an rssSampler, the peak
// RSS of each phase.
type benchHooks struct {
	mu     sync.Mutex
	phases map[string]float64
	rss    *rssSampler
}

func (h *benchHooks) Phase(_, phase string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d > 0 {
		h.phases[phase] += d.Seconds()
	}
	if h.rss != nil {
		h.rss.cut(phase)
	}
}

// rssSampler reads VmRSS every 20 ms and keeps the peak of each phase, so
// the report shows which phase sets the process's ru_maxrss.
type rssSampler struct {
	mu    sync.Mutex
	cur   int64
	peaks map[string]int64
	order []string
	stop  chan struct{}
	done  chan struct{}
}

func startRSSSampler() *rssSampler {
	s := &rssSampler{peaks: map[string]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) sample() {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			s.mu.Lock()
			s.cur = max(s.cur, kb<<10)
			s.mu.Unlock()
		}
	}
}

// cut closes a phase: its peak is the highest sample since the last cut.
func (s *rssSampler) cut(phase string) {
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.peaks[phase]; !ok {
		s.order = append(s.order, phase)
	}
	s.peaks[phase] = max(s.peaks[phase], s.cur)
	s.cur = 0
}

func (s *rssSampler) close() string {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for _, p := range s.order {
		parts = append(parts, p+" "+mib(s.peaks[p]))
	}
	return "peak RSS by phase: " + strings.Join(parts, ", ")
}
func (*benchHooks) Committed(string, string, time.Duration)             {}
func (*benchHooks) Recorded(string, string, sinks.RunSummary)           {}
func (*benchHooks) FileDone(string, fetch.Spooled, transform.FileStats) {}
func (*benchHooks) Manifest(string, *fetch.Manifest)                    {}

func childPipeline(ctx context.Context, what, data, work, views, baseURL string, tune benchTune) (benchResult, error) {
	r := benchResult{Name: "fhirferry " + what}
	var src string
	if what == "export" {
		src = fmt.Sprintf(`
sources:
  - name: bench
    base_url: %q
    http: {min_wait: 50ms, max_wait: 1s, parallel: 2}
    export: {delete_after_download: false}
`, baseURL)
	}
	cfg, err := pipeline.ParseConfig([]byte(tune.config(work, filepath.Join(work, "bench.duckdb"), views, src)))
	if err != nil {
		return r, err
	}
	hooks := &benchHooks{phases: map[string]float64{}, rss: startRSSSampler()}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t0 := time.Now()
	a, err := pipeline.Build(ctx, cfg, pipeline.Deps{Sinks: builtin.Factories(), Logger: log, Hooks: hooks})
	if err != nil {
		hooks.rss.close()
		return r, err
	}
	hooks.rss.cut("open")
	var res *pipeline.Result
	if what == "export" {
		res, err = a.RunSource(ctx, "bench")
	} else {
		res, err = a.LoadDir(ctx, pipeline.LoadOptions{Dir: data, Source: "bench", TransactionTime: "2025-01-01T00:00:00Z"})
	}
	var rows int64
	if err == nil {
		duck, _ := a.Sink("duck")
		rows, err = duck.(sinks.Rebuilder).Rows(ctx, schemas.RawTable)
	}
	if err != nil {
		a.Close()
		hooks.rss.close()
		return r, err
	}
	tc := time.Now()
	a.Close() // checkpoints the database: part of the load
	hooks.rss.cut("close")
	byPhase := hooks.rss.close()
	r.Phases = hooks.phases
	r.Phases["close"] = time.Since(tc).Seconds()
	r.Seconds = time.Since(t0).Seconds()
	r.Bytes, r.Resources, r.Rows = res.Stats.Bytes, res.Stats.Resources, rows
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.Note = fmt.Sprintf("(%s; Go runtime sys %s, rejects %d, files %d)", byPhase, mib(int64(ms.Sys)), res.Stats.Rejects, res.Files)
	r.setMemory(cfg.Memory())
	r.Budget = int64(cfg.MemoryBudget)
	return r, nil
}

// childDuckDB times DuckDB's own load of the files into a fresh database
// with DuckDB's default settings (threads, memory limit).
func childDuckDB(ctx context.Context, what, data, work string) (benchResult, error) {
	r := benchResult{Name: "duckdb " + what}
	glob := filepath.Join(data, "*.ndjson")
	var bytes int64
	files, _ := filepath.Glob(glob)
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			bytes += fi.Size()
		}
	}
	var q string
	switch what {
	case "read_json":
		q = "CREATE TABLE t AS SELECT * FROM read_json(" + sqlLit(glob) + ", format='newline_delimited', union_by_name=true)"
	case "read_ndjson_objects":
		// Each line as one JSON value: the closest DuckDB analogue of
		// fhirferry's raw landing.
		q = "CREATE TABLE t AS SELECT json FROM read_ndjson_objects(" + sqlLit(glob) + ")"
	case "read_json_columns":
		q = "CREATE TABLE t AS SELECT * FROM read_json(" + sqlLit(glob) + ", format='newline_delimited', " +
			"columns={resourceType: 'VARCHAR', id: 'VARCHAR', meta: 'STRUCT(versionId VARCHAR, lastUpdated TIMESTAMPTZ)'})"
	}
	t0 := time.Now()
	conn, err := duckdb.NewConnector(filepath.Join(work, "duckdb.duckdb"), nil)
	if err != nil {
		return r, err
	}
	db := sql.OpenDB(conn)
	if _, err := db.ExecContext(ctx, q); err != nil {
		db.Close()
		return r, err
	}
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&r.Rows); err != nil {
		db.Close()
		return r, err
	}
	var threads, memLimit string
	_ = db.QueryRowContext(ctx, "SELECT current_setting('threads')::VARCHAR, current_setting('memory_limit')").Scan(&threads, &memLimit)
	if err := db.Close(); err != nil {
		return r, err
	}
	r.Seconds = time.Since(t0).Seconds()
	r.Bytes, r.Resources = bytes, r.Rows
	r.Note = fmt.Sprintf("(DuckDB %s threads, memory_limit %s)", threads, memLimit)
	return r, nil
}

func sqlLit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func sqlIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

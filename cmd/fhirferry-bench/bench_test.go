package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"500MB": 500e6, "1GB": 1e9, "64MiB": 64 << 20, "1234": 1234} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := parseSize("lots")
	require.ErrorContains(t, err, `--size "lots"`)
}

// TestCopyPrefix keeps whole lines only, never more than n bytes.
func TestCopyPrefix(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "in.ndjson")
	require.NoError(t, os.WriteFile(src, []byte("{\"a\":1}\n{\"b\":22}\n{\"c\":333}\n"), 0o644))
	for n, want := range map[int64]string{0: "", 8: "{\"a\":1}\n", 16: "{\"a\":1}\n", 17: "{\"a\":1}\n{\"b\":22}\n", 1000: "{\"a\":1}\n{\"b\":22}\n{\"c\":333}\n"} {
		dst := filepath.Join(dir, "out.ndjson")
		require.NoError(t, copyPrefix(src, dst, n))
		got, err := os.ReadFile(dst)
		require.NoError(t, err)
		require.Equal(t, want, string(got), "n=%d", n)
	}
}

// TestBenchEndToEnd builds the binary and runs a small benchmark: both
// loads must see every generated resource, the child's peak RSS must be
// measured, the headline must be the ratio of the two printed rates, and
// --floor must time the re-insert of the load's view rows.
func TestBenchEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and loads ~2 MB three times")
	}
	bin := filepath.Join(t.TempDir(), "fhirferry-bench")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), bin, "--patients", "25", "--views", "default", "--export", "--floor", "--dir", dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.Output()
	require.NoError(t, err)
	text := string(stdout)
	gen := regexp.MustCompile(`generated 25 patients: \d+ files, [\d.]+ MB, (\d+) resources`).FindStringSubmatch(text)
	require.NotNil(t, gen, text)
	rows := map[string][]string{}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 11 && (f[0] == "fhirferry" || f[0] == "duckdb") {
			rows[f[0]+" "+f[1]] = f[2:]
		}
	}
	require.Len(t, rows, 3, text)
	var rates []float64
	for _, name := range []string{"fhirferry load", "duckdb read_json", "fhirferry export"} {
		r := rows[name]
		require.NotNil(t, r, "%s missing:\n%s", name, text)
		require.Equal(t, gen[1], r[1], "%s: resources", name)
		require.Equal(t, gen[1], r[2], "%s: rows in the warehouse", name)
		rss, err := strconv.Atoi(r[7])
		require.NoError(t, err)
		require.Greater(t, rss, 10, "%s: peak RSS in MiB", name)
		// Resources/s: MB/s is printed to one decimal, too coarse for a
		// 2 MB load; both loads read the same files, so the ratios agree.
		rate, err := strconv.ParseFloat(r[5], 64)
		require.NoError(t, err)
		rates = append(rates, rate)
	}
	m := regexp.MustCompile(`ratio ([\d.]+) \(views=default`).FindStringSubmatch(text)
	require.NotNil(t, m, text)
	ratio, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	require.InDelta(t, rates[0]/rates[1], ratio, 0.05*ratio+0.02)
	// The floor child fails unless it inserted every view row the load
	// wrote; here the line must report them and the CPU they took.
	fl := regexp.MustCompile(`floor: DuckDB alone inserts the load's (\d+) view rows in ([\d.]+) s, ([\d.]+) CPU-s`).FindStringSubmatch(text)
	require.NotNil(t, fl, text)
	viewRows, err := strconv.Atoi(fl[1])
	require.NoError(t, err)
	require.Greater(t, viewRows, 0)
	floorCPU, err := strconv.ParseFloat(fl[3], 64)
	require.NoError(t, err)
	require.Greater(t, floorCPU, 0.0)
	_, err = os.Stat(filepath.Join(dir, "work"))
	require.True(t, os.IsNotExist(err), "without --keep the databases are removed")
}

// TestViewFloorNeedsALoad: the floor child reads the views of a finished
// load, and says so when there is none.
func TestViewFloorNeedsALoad(t *testing.T) {
	dir := t.TempDir()
	_, err := childViewFloor(t.Context(), filepath.Join(dir, "missing.duckdb"), dir, benchTune{MemoryLimit: "64MB"})
	require.ErrorContains(t, err, "copy the views out of "+filepath.Join(dir, "missing.duckdb"))
}

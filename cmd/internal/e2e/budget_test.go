package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks/builtin"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
)

// TestBuildAppliesTheMemoryBudget: a config that sets only memory_budget
// starts a process whose Go soft limit and DuckDB memory_limit and threads
// are the budget's shares.
func TestBuildAppliesTheMemoryBudget(t *testing.T) {
	if os.Getenv("GOMEMLIMIT") != "" {
		t.Skip("GOMEMLIMIT is set: it wins over the config, as for the Go runtime")
	}
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	dir := t.TempDir()
	cfg, err := pipeline.ParseConfig([]byte("memory_budget: 2GiB\ndata_dir: " + filepath.Join(dir, "data") +
		"\nsinks:\n  - {name: duck, type: duckdb, duckdb: {path: " + filepath.Join(dir, "w.duckdb") + "}}\n"))
	require.NoError(t, err)
	a, err := pipeline.Build(context.Background(), cfg, pipeline.Deps{Sinks: builtin.Factories()})
	require.NoError(t, err)
	defer a.Close()

	require.EqualValues(t, 512<<20, debug.SetMemoryLimit(-1), "a quarter of the budget")
	s, ok := a.Sink("duck")
	require.True(t, ok)
	var limit string
	var threads int
	require.NoError(t, s.(*duckdb.Sink).DB().QueryRowContext(context.Background(),
		"SELECT current_setting('memory_limit'), current_setting('threads')").Scan(&limit, &threads))
	require.Equal(t, "512.0 MiB", limit, "a quarter of the budget")
	require.Equal(t, min(runtime.GOMAXPROCS(0), 16), threads, "the cores, at most one per 32 MiB")
}

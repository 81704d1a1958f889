package configs

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBudgetDerivesEverySetting: with nothing set, every memory and
// parallelism setting comes from the default budget, and the defaults of
// the packages' own Options equal it.
func TestBudgetDerivesEverySetting(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	cfg, err := Parse([]byte(`
sinks:
  - {name: duck, type: duckdb}
`))
	require.NoError(t, err)
	require.Equal(t, DefaultMemoryBudget, cfg.MemoryBudget)
	require.Equal(t, ByteSize(128<<20), cfg.MemoryLimit)
	require.Equal(t, TransformConfig{
		BatchRows: DefaultBatchRows, BatchBytes: DefaultBatchBytes, Workers: 2, QueueDepth: 4, MaxLineBytes: DefaultMaxLineBytes,
	}, cfg.Transform)
	k := cfg.Sinks[0]
	require.Equal(t, "128MiB", k.DuckDB.MemoryLimit)
	require.Equal(t, "192MiB", k.DuckDB.CommitMemoryLimit, "half the Go share is free while a run commits")
	require.Equal(t, 2, k.DuckDB.Threads)
	require.Equal(t, ByteSize(8<<20), k.StagingBytes)

	s := SplitBudget(DefaultMemoryBudget, 2, 1, 1)
	require.EqualValues(t, DefaultBatchBytes, s.BatchBytes)
	require.EqualValues(t, DefaultMaxLineBytes, s.MaxLine)
	sum, over := cfg.Memory()
	require.Empty(t, over)
	require.Equal(t, "memory_budget 512MiB: Go soft limit 128MiB; duck: DuckDB memory_limit 128MiB (192MiB while a run commits), 2 threads; duck: staging 8MiB; "+
		"transform: 2 workers, batches of 256KiB, 4 in flight, lines up to 32MiB", sum)
}

// TestBudgetScales: the shares follow the budget and the cores, and are
// divided among the sinks that take them.
func TestBudgetScales(t *testing.T) {
	for _, tc := range []struct {
		name                string
		budget              ByteSize
		procs, duck, staged int
		want                Split
	}{
		{"one core", 512 << 20, 1, 1, 1, Split{Budget: 512 << 20, GoLimit: 128 << 20, DuckDB: 128 << 20, DuckDBThreads: 1,
			Staging: 8 << 20, BatchBytes: 256 << 10, QueueDepth: 4, Workers: 1, MaxLine: 32 << 20}},
		{"many cores, small budget", 256 << 20, 32, 1, 1, Split{Budget: 256 << 20, GoLimit: 64 << 20, DuckDB: MinDuckDBMemory, DuckDBThreads: 4,
			Staging: 4 << 20, BatchBytes: 128 << 10, QueueDepth: 2, Workers: 4, MaxLine: 16 << 20}},
		{"below the minimum", 1 << 20, 1, 0, 0, Split{Budget: MinMemoryBudget, GoLimit: 64 << 20,
			BatchBytes: 128 << 10, QueueDepth: 2, Workers: 1, MaxLine: 16 << 20}},
		{"large host", 8 << 30, 16, 1, 1, Split{Budget: 8 << 30, GoLimit: 2 << 30, DuckDB: 2 << 30, DuckDBThreads: 16,
			Staging: 128 << 20, BatchBytes: 4 << 20, QueueDepth: 8, Workers: 16, MaxLine: 512 << 20}},
		{"two DuckDB sinks and a lake", 1 << 30, 4, 2, 3, Split{Budget: 1 << 30, GoLimit: 256 << 20, DuckDB: 128 << 20, DuckDBThreads: 4,
			Staging: 16 << 20 / 3, BatchBytes: 512 << 10, QueueDepth: 8, Workers: 4, MaxLine: 64 << 20}},
		{"PostgreSQL only", 512 << 20, 2, 0, 0, Split{Budget: 512 << 20, GoLimit: 128 << 20,
			BatchBytes: 256 << 10, QueueDepth: 4, Workers: 2, MaxLine: 32 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, SplitBudget(tc.budget, tc.procs, tc.duck, tc.staged))
		})
	}
}

// TestBudgetKeepsExplicitSettings: a key the file sets wins over the
// budget, and settings that add up to more than it are reported.
func TestBudgetKeepsExplicitSettings(t *testing.T) {
	cfg, err := Parse([]byte(`
memory_budget: 1GiB
memory_limit: 900MiB
transform: {workers: 7, batch_bytes: 1MiB, queue_depth: 3, max_line_bytes: 8MiB}
sinks:
  - {name: duck, type: duckdb, staging_bytes: 1MiB, duckdb: {memory_limit: 1GB, threads: 3}}
  - {name: lake, type: parquet, parquet: {dir: lake}}
  - {name: pg, type: postgres, postgres: {dsn: "postgres://x"}}
`))
	require.NoError(t, err)
	require.Equal(t, ByteSize(900<<20), cfg.MemoryLimit)
	require.Equal(t, TransformConfig{BatchRows: DefaultBatchRows, BatchBytes: 1 << 20, Workers: 7, QueueDepth: 3, MaxLineBytes: 8 << 20}, cfg.Transform)
	require.Equal(t, "1GB", cfg.Sinks[0].DuckDB.MemoryLimit)
	require.Equal(t, fmt.Sprintf("%dMiB", (1e9+450<<20)>>20), cfg.Sinks[0].DuckDB.CommitMemoryLimit, "the explicit limit plus the Go share")
	require.Equal(t, 3, cfg.Sinks[0].DuckDB.Threads)
	require.Equal(t, ByteSize(1<<20), cfg.Sinks[0].StagingBytes)
	require.Equal(t, ByteSize(1<<30/64/2), cfg.Sinks[1].StagingBytes, "the lake's share of the budget")
	require.Zero(t, cfg.Sinks[2].StagingBytes, "PostgreSQL stages nothing in memory")
	_, over := cfg.Memory()
	require.Contains(t, over, "over memory_budget 1GiB")

	_, err = Parse([]byte("memory_budget: 128MiB\n"))
	require.ErrorContains(t, err, "memory_budget: 128MiB is too small (at least 256MiB)")
}

func TestByteSizeString(t *testing.T) {
	for in, want := range map[ByteSize]string{0: "0B", 512 << 20: "512MiB", 1536 << 10: "1536KiB", 3 << 30: "3GiB", 1000: "1000B"} {
		require.Equal(t, want, in.String())
	}
}

package configs

import (
	"fmt"
	"runtime"
	"strings"
)

// DefaultMemoryBudget is the memory the process is sized for when the
// config does not say: every memory setting below is derived from it.
const DefaultMemoryBudget ByteSize = 512 << 20

// MinMemoryBudget is the smallest budget accepted: below it DuckDB's
// floor (MinDuckDBMemory) and the Go heap of the default views do not fit
// together.
const MinMemoryBudget ByteSize = 256 << 20

// MinDuckDBMemory is the least memory_limit a DuckDB sink is given. At
// COMMIT DuckDB merges each table's appended rows into the table's last
// row group, a block per column of every table the run wrote, which it
// cannot spill: a run of 100 changed resources into the 53 tables of the
// default views failed to commit under 64 and 96 MiB ("could not
// allocate block") and committed at 128 MiB with 16,000 rows per table.
const MinDuckDBMemory ByteSize = 128 << 20

// Split is how a memory budget is shared by the parts of the process. The
// parts that are not listed (the binary's own pages, about 120 MiB with
// DuckDB's library, and DuckDB's memory outside its buffer pool: allocator
// caches, per-thread state) get what is left, about half.
//
// The shares were measured, not guessed (see the README's "Memory"
// section): a larger Go limit or staging budget than these made the
// default views no faster on two cores, only larger.
type Split struct {
	Budget ByteSize
	// GoLimit is the Go runtime's soft memory limit (memory_limit): the
	// transform, the staged row groups and every sink's Go side.
	GoLimit ByteSize
	// DuckDB is each DuckDB sink's memory_limit: together they get a
	// quarter of the budget, and never less than MinDuckDBMemory each.
	// While a run commits, the transform is done and most of the Go
	// side's share is free: DuckDB then gets half of it too
	// (commit_memory_limit), since COMMIT needed more memory than 128 MiB
	// from the second incremental run on a 1 GB warehouse ("failed to pin
	// block").
	DuckDB ByteSize
	// DuckDBThreads is each DuckDB sink's threads: one per core the process
	// may use, at most one per 32 MiB of its memory_limit (a DuckDB
	// thread's working set is outside the buffer pool).
	DuckDBThreads int
	// Staging is each staging sink's budget for the Arrow row groups it
	// holds before writing them (duckdb, parquet: staging_bytes).
	// PostgreSQL streams every batch straight into COPY and holds none.
	Staging ByteSize
	// Transform settings: batches of BatchBytes, QueueDepth of them in
	// flight to the sinks, Workers parallel files, lines up to MaxLine.
	BatchBytes ByteSize
	QueueDepth int
	Workers    int
	MaxLine    ByteSize
}

// SplitBudget shares budget among the process's parts for a process that
// may use procs cores (GOMAXPROCS: Go sets it from the container's CPU
// limit) and has duckdbSinks DuckDB sinks and stagingSinks sinks that
// stage row groups in memory.
func SplitBudget(budget ByteSize, procs, duckdbSinks, stagingSinks int) Split {
	if budget < MinMemoryBudget {
		budget = MinMemoryBudget
	}
	procs = max(procs, 1)
	s := Split{
		Budget:     budget,
		GoLimit:    budget / 4,
		BatchBytes: max(budget/2048, 64<<10),
		QueueDepth: clamp(int(budget/(128<<20)), 2, 8),
		// A worker holds a batch builder per table (raw plus every view)
		// and a parsed line: a 64th of the budget each at most.
		Workers: min(procs, max(int(budget/(64<<20)), 1)),
		// A line is held about three times while it is parsed and landed
		// (the line, its parse, the raw column), all in the Go heap.
		MaxLine: budget / 16,
	}
	if duckdbSinks > 0 {
		s.DuckDB = max(budget/4/ByteSize(duckdbSinks), MinDuckDBMemory)
		s.DuckDBThreads = min(procs, max(int(s.DuckDB/(32<<20)), 1))
	}
	if stagingSinks > 0 {
		// 8 MiB at the default budget: 32 MiB cost 50 MiB more peak RSS
		// for no speed on the default views.
		s.Staging = max(budget/64/ByteSize(stagingSinks), 4<<20)
	}
	return s
}

func clamp(v, lo, hi int) int { return min(max(v, lo), hi) }

// Memory describes the effective memory settings, derived or explicit,
// as `fhirferry config check` prints them, and says when explicit ones add
// up to more than the budget (over is then non-empty).
func (c *Config) Memory() (summary, over string) {
	var b strings.Builder
	fmt.Fprintf(&b, "memory_budget %s: Go soft limit %s", c.MemoryBudget, c.MemoryLimit)
	total := c.MemoryLimit
	for _, k := range c.Sinks {
		if k.Type == SinkDuckDB {
			lim, err := ParseByteSize(k.DuckDB.MemoryLimit)
			if err == nil {
				total += lim
			}
			fmt.Fprintf(&b, "; %s: DuckDB memory_limit %s (%s while a run commits), %d threads",
				k.Name, k.DuckDB.MemoryLimit, k.DuckDB.CommitMemoryLimit, k.DuckDB.Threads)
		}
		if Stages(k.Type) {
			total += k.StagingBytes
			fmt.Fprintf(&b, "; %s: staging %s", k.Name, k.StagingBytes)
		}
	}
	t := c.Transform
	fmt.Fprintf(&b, "; transform: %d workers, batches of %s, %d in flight, lines up to %s",
		t.Workers, t.BatchBytes, t.QueueDepth, t.MaxLineBytes)
	if total > c.MemoryBudget {
		over = fmt.Sprintf("memory: the Go limit, DuckDB memory_limits and staging set here total %s, over memory_budget %s (the process will use more than its budget)",
			total, c.MemoryBudget)
	}
	return b.String(), over
}

// Stages reports whether a sink of this type holds staged row groups in
// memory (and so takes a staging share).
func Stages(sinkType string) bool { return sinkType == SinkDuckDB || sinkType == SinkParquet }

// sinkCounts counts the DuckDB sinks and the sinks that stage in memory.
func (c *Config) sinkCounts() (duck, staging int) {
	for _, k := range c.Sinks {
		if k.Type == SinkDuckDB {
			duck++
		}
		if Stages(k.Type) {
			staging++
		}
	}
	return duck, staging
}

// applyBudget fills every memory and parallelism setting the file left
// unset from the budget's split; a setting the file gives is kept.
func (c *Config) applyBudget() {
	if c.MemoryBudget == 0 {
		c.MemoryBudget = DefaultMemoryBudget
	}
	duckdbSinks, staging := c.sinkCounts()
	s := SplitBudget(c.MemoryBudget, runtime.GOMAXPROCS(0), duckdbSinks, staging)
	if c.MemoryLimit == 0 {
		c.MemoryLimit = s.GoLimit
	}
	t := &c.Transform
	setZero(&t.BatchBytes, s.BatchBytes)
	setZero(&t.MaxLineBytes, s.MaxLine)
	setZero(&t.QueueDepth, s.QueueDepth)
	setZero(&t.Workers, s.Workers)
	for i := range c.Sinks {
		k := &c.Sinks[i]
		if Stages(k.Type) {
			setZero(&k.StagingBytes, s.Staging)
		}
		if k.Type != SinkDuckDB {
			continue
		}
		if k.DuckDB.MemoryLimit == "" {
			// MiB: DuckDB reads "MB" as 10^6 bytes.
			k.DuckDB.MemoryLimit = fmt.Sprintf("%dMiB", s.DuckDB>>20)
		}
		if k.DuckDB.CommitMemoryLimit == "" {
			if lim, err := ParseByteSize(k.DuckDB.MemoryLimit); err == nil {
				k.DuckDB.CommitMemoryLimit = fmt.Sprintf("%dMiB", (lim+c.MemoryLimit/2/ByteSize(duckdbSinks))>>20)
			}
		}
		setZero(&k.DuckDB.Threads, s.DuckDBThreads)
	}
}

func setZero[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

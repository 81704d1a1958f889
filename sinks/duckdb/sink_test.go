package duckdb

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/sinktest"
)

func open(t *testing.T, mode stageMode) *Sink {
	t.Helper()
	return openTuned(t, func(stg *staging) { stg.mode = mode })
}

// openTuned opens a test warehouse whose staging tune changes first.
func openTuned(t *testing.T, tune func(*staging)) *Sink {
	t.Helper()
	s, err := New(configs.DuckDBSink{Path: filepath.Join(t.TempDir(), "w.duckdb"), Threads: 2, MemoryLimit: "1GB"}, sinks.Env{Name: "test"})
	require.NoError(t, err)
	tune(&s.stg)
	return s
}

// rows formats every row of table as its cols joined by "|".
func rows(t *testing.T, s *Sink, table string, cols ...string) []string {
	t.Helper()
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = quote(c)
	}
	rs, err := s.DB().QueryContext(t.Context(), "SELECT "+strings.Join(q, ", ")+" FROM "+quote(table))
	require.NoError(t, err)
	defer rs.Close()
	var out []string
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rs.Scan(ptrs...))
		cells := make([]string, len(cols))
		for i, v := range vals {
			switch v := v.(type) {
			case nil:
				cells[i] = "NULL"
			case time.Time:
				cells[i] = v.UTC().Format(time.RFC3339Nano)
			default:
				cells[i] = fmt.Sprint(v)
			}
		}
		out = append(out, strings.Join(cells, "|"))
	}
	require.NoError(t, rs.Err())
	return out
}

func harness(mode stageMode) sinktest.Harness {
	return tunedHarness(func(stg *staging) { stg.mode = mode })
}

func tunedHarness(tune func(*staging)) sinktest.Harness {
	return sinktest.Harness{
		Open: func(t *testing.T) sinks.Sink { return openTuned(t, tune) },
		Rows: func(t *testing.T, s sinks.Sink, table string, cols ...string) []string {
			return rows(t, s.(*Sink), table, cols...)
		},
	}
}

func TestSemanticsPlain(t *testing.T) { sinktest.Run(t, harness(stageParquetPlain)) }

// TestSemanticsRewrittenViews runs the suite with every view a commit
// removes rows from rewritten instead (what a commit does when its
// deletes would not fit DuckDB's memory, see planDeletes).
func TestSemanticsRewrittenViews(t *testing.T) {
	var opened []*Sink
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T) sinks.Sink {
			s := open(t, stageParquetPlain)
			s.rewriteAll = true
			opened = append(opened, s)
			return s
		},
		Rows: func(t *testing.T, s sinks.Sink, table string, cols ...string) []string {
			return rows(t, s.(*Sink), table, cols...)
		},
	})
	var n int64
	for _, s := range opened {
		n += s.rewrites.Load()
	}
	require.Greater(t, n, int64(5), "views rewritten")
}

func TestSemanticsSnappy(t *testing.T) { sinktest.Run(t, harness(stageParquetSnappy)) }

// TestSemanticsStreamedViews runs the suite with every staged view file
// loaded into its (empty) table during the run rather than at Commit, so
// that Commit's fix-up of losing and deleted resources is what keeps the
// views right.
func TestSemanticsStreamedViews(t *testing.T) {
	var streamed atomic.Int64
	sinktest.Run(t, tunedHarness(func(stg *staging) {
		stg.mode, stg.partBytes, stg.wait, stg.streamed = stageParquetPlain, 1, true, &streamed
	}))
	require.Greater(t, streamed.Load(), int64(10), "view files streamed")
}

package e2e_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
	"github.com/fhirferry/fhirferry/sinks/parquet"
	"github.com/fhirferry/fhirferry/sinks/postgres"
	"github.com/fhirferry/fhirferry/transform"
)

// e2eSink is a real sink plus a way to read its tables back through SQL.
type e2eSink struct {
	sink sinks.Sink
	// read opens a database/sql view of the sink's current tables; the
	// returned func closes it.
	read func(t *testing.T) (*sql.DB, func())
}

// sinkKinds open each sink type on fresh storage; postgres skips the test
// when FHIRFERRY_TEST_POSTGRES is unset.
var sinkKinds = []struct {
	kind string
	open func(t *testing.T, name string) e2eSink
}{
	{"duckdb", openDuckSink},
	{"parquet", openLakeSink},
	{"postgres", openPGSink},
}

func openDuckSink(t *testing.T, name string) e2eSink {
	t.Helper()
	s, err := duckdb.New(configs.DuckDBSink{Path: filepath.Join(t.TempDir(), name+".duckdb")}, sinks.Env{Name: name})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return e2eSink{sink: s, read: func(*testing.T) (*sql.DB, func()) { return s.DB(), func() {} }}
}

func openLakeSink(t *testing.T, name string) e2eSink {
	t.Helper()
	s, err := parquet.New(configs.ParquetSink{Dir: filepath.Join(t.TempDir(), name), Compression: "snappy"}, sinks.Env{Name: name})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return e2eSink{sink: s, read: func(t *testing.T) (*sql.DB, func()) {
		db := e2e.OpenLake(t, s)
		return db, func() { db.Close() }
	}}
}

func openPGSink(t *testing.T, name string) e2eSink {
	t.Helper()
	dsn, schema := e2e.PostgresSchema(t)
	s, err := postgres.New(context.Background(), configs.PostgresSink{DSN: dsn, Schema: schema}, sinks.Env{Name: name})
	require.NoError(t, err)
	db := e2e.OpenPostgres(t, dsn, schema)
	// Cleanups run last-registered first: close both before the schema drop.
	t.Cleanup(func() { db.Close(); require.NoError(t, s.Close()) })
	return e2eSink{sink: s, read: func(*testing.T) (*sql.DB, func()) { return db, func() {} }}
}

// defaultViews compiles the embedded default view pack once per test.
func defaultViews(t *testing.T) []transform.View {
	t.Helper()
	v, err := transform.LoadViews(true, "")
	require.NoError(t, err)
	require.NotEmpty(t, v)
	return v
}

// e2eRunner wires srv, the fetch client, a transform engine with the
// default views and sinks (each prepared) into a Runner over dataDir.
func e2eRunner(t *testing.T, srv *bulktest.Server, views []transform.View, dataDir, level, group string, sinks ...sinks.Sink) *pipeline.Runner {
	t.Helper()
	eng, err := transform.New(transform.Options{Views: views, BatchRows: 500})
	require.NoError(t, err)
	for _, s := range sinks {
		require.NoError(t, s.Prepare(context.Background(), eng.Tables()))
	}
	c, err := fetch.New(fetch.Options{BaseURL: srv.BaseURL(), MinWait: 5 * time.Millisecond, MaxWait: 100 * time.Millisecond, Parallel: 3})
	require.NoError(t, err)
	return &pipeline.Runner{
		Source: "src", Request: fetch.Request{Level: level, GroupID: group},
		Client: c, Engine: eng, Sinks: sinks, DataDir: dataDir,
		Workers: 2, QueueDepth: 2, DeleteAfter: true, FailOnErrorOutcomes: true,
	}
}

func requireSinkMatches(t *testing.T, s e2eSink, views []transform.View, truth e2e.Truth) {
	t.Helper()
	db, done := s.read(t)
	defer done()
	e2e.RequireMatchesTruth(t, db, views, truth)
}

func sinkCheckpoint(t *testing.T, s sinks.Sink) sinks.Checkpoint {
	t.Helper()
	cp, ok, err := s.Checkpoint(context.Background(), "src")
	require.NoError(t, err)
	require.True(t, ok, "sink %s holds no checkpoint", s.Name())
	return cp
}

// TestIncrementalRunsOnEverySink is TestIncrementalRunsMatchGroundTruth on
// each sink type: a full export, an incremental one with new, updated and
// deleted resources, delete-then-recreate, and a run with no change; after
// each, the raw landing equals the server's truth and every view table
// holds exactly the rows the views compute from the current resources.
func TestIncrementalRunsOnEverySink(t *testing.T) {
	views := defaultViews(t)
	for _, k := range sinkKinds {
		for _, tc := range []struct{ level, group string }{{"system", ""}, {"group", "cohort"}} {
			if tc.level == "group" && k.kind != "parquet" {
				// The level changes what is exported, not how a sink
				// applies it: one sink proves group runs (DuckDB's is
				// TestIncrementalRunsMatchGroundTruth).
				continue
			}
			t.Run(k.kind+"/"+tc.level, func(t *testing.T) {
				t.Parallel()
				srv, err := bulktest.NewServer(bulktest.Options{
					Patients: 10, Seed: 5, FileMaxResources: 150, PollsBeforeComplete: -1,
					TransactionTimeOffset: time.FixedZone("", -5*3600),
				})
				require.NoError(t, err)
				t.Cleanup(srv.Close)
				s := k.open(t, "wh")
				r := e2eRunner(t, srv, views, t.TempDir(), tc.level, tc.group, s.sink)
				run := func() *pipeline.Result {
					t.Helper()
					res, err := r.Run(context.Background())
					require.NoError(t, err)
					require.Equal(t, []string{"wh"}, res.Committed)
					require.Equal(t, res.TransactionTime, sinkCheckpoint(t, s.sink).TransactionTime,
						"checkpoint is the manifest's transactionTime, verbatim")
					requireSinkMatches(t, s, views, srv.Truth(tc.level, tc.group, nil))
					return res
				}

				res1 := run()
				require.Empty(t, res1.Since)
				require.Regexp(t, `-05:00$`, res1.TransactionTime)
				require.Zero(t, res1.Stats.Rejects)

				mut := srv.Advance(24*time.Hour, bulktest.Mutation{NewPatients: 2, UpdatedResources: 25, DeletedResources: 9})
				require.NotEmpty(t, mut.Updated)
				require.NotEmpty(t, mut.Deleted)
				res2 := run()
				require.Equal(t, res1.TransactionTime, res2.Since)
				require.Positive(t, res2.Stats.Deleted)
				require.Less(t, res2.Stats.Resources, res1.Stats.Resources)

				// Delete then recreate under the old ids, in separate runs
				// and within one run.
				srv.Advance(time.Hour, bulktest.Mutation{DeletedResources: 4})
				run()
				rec := srv.Advance(time.Hour, bulktest.Mutation{RecreatedResources: 3, DeletedResources: 2})
				require.NotEmpty(t, rec.Recreated)
				run()

				srv.Advance(time.Hour, bulktest.Mutation{})
				res5 := run()
				require.Zero(t, res5.Stats.Deleted)
				require.Zero(t, res5.Stats.Resources)
				st := srv.Stats()
				require.Equal(t, 5, st.KickOffs)
			})
		}
	}
}

// TestANSILimitRejectedOnEverySink: a user view declares gender
// VARCHAR(4), which "female" does not fit. On every sink the run still
// commits: each such patient is a reject naming the view and the type,
// and its row is left out of that view only (PostgreSQL once failed the
// whole commit on the cast).
func TestANSILimitRejectedOnEverySink(t *testing.T) {
	views := userView(t, `{"resourceType":"ViewDefinition",
	  "name":"short_gender","resource":"Patient","status":"active","select":[{"column":[
	  {"name":"id","path":"getResourceKey()"},
	  {"name":"gender","path":"gender","type":"code","tag":[{"name":"ansi/type","value":"VARCHAR(4)"}]}]}]}`)
	for _, k := range sinkKinds {
		t.Run(k.kind, func(t *testing.T) {
			t.Parallel()
			srv, err := bulktest.NewServer(bulktest.Options{Patients: 10, Seed: 5, PollsBeforeComplete: -1})
			require.NoError(t, err)
			t.Cleanup(srv.Close)
			s := k.open(t, "wh")
			res, err := e2eRunner(t, srv, views, t.TempDir(), "system", "", s.sink).Run(context.Background())
			require.NoError(t, err)
			require.Equal(t, []string{"wh"}, res.Committed)
			require.Positive(t, res.Stats.Rejects)

			db, done := s.read(t)
			defer done()
			count := func(q string) (n int64) {
				require.NoError(t, db.QueryRow(q).Scan(&n), q)
				return n
			}
			require.Equal(t, res.Stats.Rejects, count(`SELECT count(*) FROM rejects
				WHERE resource_type = 'Patient' AND reason LIKE '%view short_gender%' AND reason LIKE '%VARCHAR(4)%'`))
			require.Positive(t, count(`SELECT count(*) FROM short_gender WHERE gender = 'male'`))
			require.Zero(t, count(`SELECT count(*) FROM short_gender WHERE length(gender) > 4`))
			require.Equal(t, count(`SELECT count(*) FROM fhir_resources WHERE resource_type = 'Patient'`),
				count(`SELECT count(*) FROM short_gender`)+res.Stats.Rejects, "every patient is a row or a reject")
		})
	}
}

// TestTaggedTypesOnEverySink: ansi/type tags that ask for exact decimals,
// times and dates load into every sink with those types and values.
func TestTaggedTypesOnEverySink(t *testing.T) {
	views := userView(t, `{"resourceType":"ViewDefinition",
	  "name":"tagged","resource":"Observation","status":"active","select":[{"column":[
	  {"name":"id","path":"getResourceKey()"},
	  {"name":"exact","path":"value.ofType(Quantity).value","type":"decimal","tag":[{"name":"ansi/type","value":"DECIMAL(18,4)"}]},
	  {"name":"as_double","path":"value.ofType(Quantity).value","type":"decimal"},
	  {"name":"day","path":"effective.ofType(dateTime)","type":"dateTime","tag":[{"name":"ansi/type","value":"DATE"}]},
	  {"name":"at_time","path":"effective.ofType(dateTime).toString().substring(11, 8)","type":"time","tag":[{"name":"ansi/type","value":"TIME"}]}]}]}`)
	for _, k := range sinkKinds {
		t.Run(k.kind, func(t *testing.T) {
			t.Parallel()
			srv, err := bulktest.NewServer(bulktest.Options{Patients: 5, Seed: 5, PollsBeforeComplete: -1})
			require.NoError(t, err)
			t.Cleanup(srv.Close)
			s := k.open(t, "wh")
			res, err := e2eRunner(t, srv, views, t.TempDir(), "system", "", s.sink).Run(context.Background())
			require.NoError(t, err)
			require.Equal(t, []string{"wh"}, res.Committed)
			require.Zero(t, res.Stats.Rejects)
			db, done := s.read(t)
			defer done()
			var n, exactDiffers int64
			require.NoError(t, db.QueryRow(`SELECT count(*), count(*) FILTER (WHERE abs(CAST(exact AS DOUBLE PRECISION) - as_double) > 1e-9)
				FROM tagged WHERE exact IS NOT NULL`).Scan(&n, &exactDiffers))
			require.Positive(t, n)
			require.Zero(t, exactDiffers)
			var typ string
			require.NoError(t, db.QueryRow(`SELECT CAST(typeof_exact AS VARCHAR) FROM (SELECT `+map[string]string{
				"postgres": `pg_typeof(exact)`, "duckdb": `typeof(exact)`, "parquet": `typeof(exact)`}[k.kind]+` AS typeof_exact FROM tagged LIMIT 1) t`).Scan(&typ))
			require.Contains(t, []string{"DECIMAL(18,4)", "numeric"}, typ)
			var days, times int64
			require.NoError(t, db.QueryRow(`SELECT count(day), count(at_time) FROM tagged WHERE day > DATE '1900-01-01' AND at_time >= TIME '00:00:00'`).Scan(&days, &times))
			require.Positive(t, days)
			require.Positive(t, times)
		})
	}
}

// userView compiles one ViewDefinition as a user's views.dir would hold it,
// without the default pack.
func userView(t *testing.T, def string) []transform.View {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "view.json"), []byte(def), 0o644))
	views, err := transform.LoadViews(false, dir)
	require.NoError(t, err)
	return views
}

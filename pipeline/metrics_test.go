package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/transform"
)

func newTestMetrics(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	require.NoError(t, err)
	return m, reg
}

func TestMetricsLintAndCounts(t *testing.T) {
	m, reg := newTestMetrics(t)
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	m.AddSource("ehr", "")

	// Drive a run through the hooks, as the runner and the client do.
	m.RunStarted("ehr")
	require.Equal(t, 1.0, testutil.ToFloat64(m.inProgress.WithLabelValues("ehr")))
	obs := m.Observer("ehr")
	obs.HTTPStatus("kickoff", 202)
	obs.HTTPStatus("status", 202)
	obs.HTTPStatus("status", 429)
	obs.HTTPStatus("status", 200)
	obs.HTTPStatus("file", 200)
	obs.HTTPStatus("file", 503)
	obs.Retry("429")
	obs.Retry("5xx")
	obs.Retry("5xx")
	obs.Retry("made-up reason")
	obs.Bytes("file", 1000)
	obs.Bytes("file", 500)
	obs.Progress("https://ehr/status/secret-job", "50%")
	m.Manifest("ehr", &fetch.Manifest{Output: make([]fetch.File, 3), Deleted: make([]fetch.File, 1), Error: make([]fetch.File, 1)})
	m.Phase("ehr", "kickoff", 200*time.Millisecond)
	m.Phase("ehr", "wait", 3*time.Second)
	m.FileDone("ehr", fetch.Spooled{File: fetch.File{Kind: fetch.KindOutput, Type: "Patient"}}, transform.FileStats{Resources: 10, Rejects: 2})
	m.FileDone("ehr", fetch.Spooled{File: fetch.File{Kind: fetch.KindOutput, Type: "Patient"}}, transform.FileStats{Resources: 5})
	m.FileDone("ehr", fetch.Spooled{File: fetch.File{Kind: fetch.KindOutput, Type: "Observation"}}, transform.FileStats{Resources: 7})
	m.FileDone("ehr", fetch.Spooled{File: fetch.File{Kind: fetch.KindDeleted, Type: "Bundle"}},
		transform.FileStats{Deleted: 4, DeletedByType: map[string]int64{"Patient": 3, "Observation": 1}})
	m.FileDone("ehr", fetch.Spooled{File: fetch.File{Kind: fetch.KindError, Type: "OperationOutcome"}}, transform.FileStats{Outcomes: 4, ErrorIssues: 1})
	m.FileDone("ehr", fetch.Spooled{File: fetch.File{Kind: fetch.KindOutput, Type: "evil label{}"}}, transform.FileStats{Resources: 1})
	m.Committed("ehr", "warehouse", 40*time.Millisecond)
	m.Recorded("ehr", "warehouse", sinks.RunSummary{Purged: 12, Membership: &sinks.Membership{Group: "g", Patients: []string{"a", "b", "c"}}})
	m.Recorded("ehr", "lake", sinks.RunSummary{Purged: 12})
	m.Recorded("ehr", "warehouse", sinks.RunSummary{Purged: 3})
	m.Phase("ehr", "download_transform", 2*time.Second)
	now = now.Add(90 * time.Second)
	m.RunFinished("ehr", &Result{TransactionTime: "2025-03-01T11:00:00Z"}, nil)

	m.RunStarted("ehr")
	m.RunFinished("ehr", nil, errors.New("kick-off: 500"))
	m.RunStarted("ehr")
	m.RunFinished("ehr", nil, context.Canceled)
	m.RunSkipped("ehr", "overlap")

	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)

	require.Equal(t, 1.0, testutil.ToFloat64(m.runs.WithLabelValues("ehr", OutcomeSuccess)))
	require.Equal(t, 15.0, testutil.ToFloat64(m.purged.WithLabelValues("ehr", "warehouse")))
	require.Equal(t, 12.0, testutil.ToFloat64(m.purged.WithLabelValues("ehr", "lake")))
	require.Equal(t, 3.0, testutil.ToFloat64(m.members.WithLabelValues("ehr")), "a run that learnt no membership leaves the gauge")
	require.Equal(t, 1.0, testutil.ToFloat64(m.runs.WithLabelValues("ehr", OutcomeFailure)))
	require.Equal(t, 1.0, testutil.ToFloat64(m.runs.WithLabelValues("ehr", OutcomeCancelled)))
	require.Equal(t, 0.0, testutil.ToFloat64(m.inProgress.WithLabelValues("ehr")))
	require.Equal(t, 15.0, testutil.ToFloat64(m.resources.WithLabelValues("ehr", "Patient")))
	require.Equal(t, 7.0, testutil.ToFloat64(m.resources.WithLabelValues("ehr", "Observation")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.resources.WithLabelValues("ehr", "other")))
	require.Equal(t, 3.0, testutil.ToFloat64(m.deleted.WithLabelValues("ehr", "Patient")), "by the deleted resource's type")
	require.Equal(t, 1.0, testutil.ToFloat64(m.deleted.WithLabelValues("ehr", "Observation")))
	require.Equal(t, 0.0, testutil.ToFloat64(m.deleted.WithLabelValues("ehr", "Bundle")), "never the deleted file's type")
	require.Equal(t, 2.0, testutil.ToFloat64(m.rejects.WithLabelValues("ehr", "Patient")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.outcomes.WithLabelValues("ehr", "error")))
	require.Equal(t, 3.0, testutil.ToFloat64(m.outcomes.WithLabelValues("ehr", "other")))
	require.Equal(t, 2.0, testutil.ToFloat64(m.retries.WithLabelValues("ehr", "5xx")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.retries.WithLabelValues("ehr", "other")))
	require.Equal(t, 2.0, testutil.ToFloat64(m.responses.WithLabelValues("ehr", "status", "2xx")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.responses.WithLabelValues("ehr", "status", "4xx")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.responses.WithLabelValues("ehr", "file", "5xx")))
	require.Equal(t, 1500.0, testutil.ToFloat64(m.bytes.WithLabelValues("ehr", "file")))
	require.Equal(t, 4.0, testutil.ToFloat64(m.files.WithLabelValues("ehr", "output")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.files.WithLabelValues("ehr", "error")))
	require.Equal(t, 3.0, testutil.ToFloat64(m.manifestFiles.WithLabelValues("ehr", "output")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.skipped.WithLabelValues("ehr", "overlap")))

	// Gauges: checkpoint, its lag at scrape time, last success.
	cp := time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC)
	require.Equal(t, float64(cp.Unix()), testutil.ToFloat64(m.checkpointTS.WithLabelValues("ehr")))
	require.Equal(t, float64(now.Unix()), testutil.ToFloat64(m.lastSuccess.WithLabelValues("ehr")))
	lag := func() float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "fhirferry_checkpoint_lag_seconds" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no lag metric")
		return 0
	}
	require.Equal(t, 3690.0, lag()) // 12:01:30 - 11:00:00
	now = now.Add(time.Hour)
	require.Equal(t, 3690.0+3600, lag(), "the lag grows while no run succeeds")

	// Histograms count their observations.
	require.Equal(t, 1, testutil.CollectAndCount(m.commit, "fhirferry_sink_commit_duration_seconds"))
	require.Equal(t, 3, testutil.CollectAndCount(m.runDuration))
	require.Equal(t, 3, testutil.CollectAndCount(m.phaseDuration))

	// Progress text and status URLs never become label values.
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				require.NotContains(t, lp.GetValue(), "secret-job")
				require.NotContains(t, lp.GetValue(), "evil")
			}
		}
	}
}

func TestMetricsBoundsResourceTypes(t *testing.T) {
	m, _ := newTestMetrics(t)
	for i := range maxResourceTypes + 50 {
		typ := "Type" + strings.Repeat("x", i%60) + string(rune('A'+i/60))
		m.FileDone("s", fetch.Spooled{File: fetch.File{Kind: fetch.KindOutput, Type: typ}}, transform.FileStats{Resources: 1})
	}
	require.LessOrEqual(t, testutil.CollectAndCount(m.resources), maxResourceTypes+1)
	require.Equal(t, 50.0, testutil.ToFloat64(m.resources.WithLabelValues("s", "other")))
}

func TestMetricsRegisterTwiceFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := NewMetrics(reg)
	require.NoError(t, err)
	_, err = NewMetrics(reg)
	require.Error(t, err, "a second registration on the same registry must be refused")
}

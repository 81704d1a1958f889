package pipeline

import (
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/transform"
)

// Metrics is fhirferry's Prometheus instrumentation. It observes runs
// ([Hooks]), the scheduler ([RunObserver]) and the Bulk Data client
// ([fetch.Observer], one per source). Labels are bounded: source, sink,
// phase, outcome, reason, kind, status class and resource type (capped, see
// maxResourceTypes). Register it on an injected registry, never the global one.
type Metrics struct {
	runs          *prometheus.CounterVec
	skipped       *prometheus.CounterVec
	inProgress    *prometheus.GaugeVec
	runDuration   *prometheus.HistogramVec
	phaseDuration *prometheus.HistogramVec
	lastSuccess   *prometheus.GaugeVec
	checkpointTS  *prometheus.GaugeVec
	manifestFiles *prometheus.GaugeVec

	bytes     *prometheus.CounterVec
	retries   *prometheus.CounterVec
	responses *prometheus.CounterVec

	files     *prometheus.CounterVec
	resources *prometheus.CounterVec
	deleted   *prometheus.CounterVec
	rejects   *prometheus.CounterVec
	outcomes  *prometheus.CounterVec

	commit  *prometheus.HistogramVec
	purged  *prometheus.CounterVec
	members *prometheus.GaugeVec

	mu          sync.Mutex
	checkpoints map[string]time.Time // source -> committed transactionTime
	started     map[string]time.Time
	types       map[string]bool
	now         func() time.Time
	lagDesc     *prometheus.Desc
}

// maxResourceTypes caps the resource_type label values: FHIR R4 has about
// 150 types, and a misbehaving server must not blow up the series count.
const maxResourceTypes = 200

var resourceTypeRE = regexp.MustCompile(`^[A-Z][A-Za-z]{0,63}$`)

// runBuckets span a few seconds to a day: exports wait on the server.
var runBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400}

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	sl := []string{"source"}
	m := &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_scheduler_runs_total",
			Help: "Finished runs by outcome (success, failure, cancelled)."}, []string{"source", "outcome"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_scheduler_skipped_ticks_total",
			Help: "Schedule ticks that started no run, by reason (overlap, stopping, reloading)."}, []string{"source", "reason"}),
		inProgress: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fhirferry_scheduler_runs_in_progress",
			Help: "Runs executing now (1 or 0 per source)."}, sl),
		runDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fhirferry_run_duration_seconds",
			Help: "Wall time of finished runs, by outcome.", Buckets: runBuckets}, []string{"source", "outcome"}),
		phaseDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fhirferry_run_phase_duration_seconds",
			Help: "Duration of run phases (kickoff, wait, download_transform, commit).", Buckets: runBuckets}, []string{"source", "phase"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fhirferry_run_last_success_timestamp_seconds",
			Help: "Unix time the source's last successful run finished."}, sl),
		checkpointTS: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fhirferry_checkpoint_timestamp_seconds",
			Help: "The committed transactionTime (the next _since) as Unix time."}, sl),
		manifestFiles: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fhirferry_run_manifest_files",
			Help: "Files listed in the current or last export manifest, by kind."}, []string{"source", "kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_fetch_received_bytes_total",
			Help: "Bytes received from Bulk Data servers on the wire, by request kind."}, []string{"source", "kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_fetch_retries_total",
			Help: "HTTP retries by reason (429, 5xx, network, auth, truncated, expired)."}, []string{"source", "reason"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_fetch_http_responses_total",
			Help: "HTTP responses by request kind and status class (2xx, 4xx...)."}, []string{"source", "kind", "code"}),
		files: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_transform_files_total",
			Help: "Export files loaded, by kind (output, deleted, error)."}, []string{"source", "kind"}),
		resources: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_transform_resources_total",
			Help: "Resources loaded from output files, by type."}, []string{"source", "resource_type"}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_transform_deleted_total",
			Help: "Deletions read from deleted files, by type."}, []string{"source", "resource_type"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_transform_rejects_total",
			Help: "Lines rejected (malformed, wrong type, value not fitting), by the file's type."}, []string{"source", "resource_type"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_transform_operation_outcome_issues_total",
			Help: "OperationOutcome issues read from error files, by severity class (error covers error and fatal)."}, []string{"source", "severity"}),
		commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fhirferry_sink_commit_duration_seconds",
			Help: "Duration of a sink's commit of one run.", Buckets: prometheus.ExponentialBuckets(0.01, 4, 10)}, []string{"source", "sink"}),
		purged: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirferry_sink_purged_resources_total",
			Help: "Resources of former Group members removed (export.former_members: purge), by sink."}, []string{"source", "sink"}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fhirferry_group_members",
			Help: "Members of a Group source's Group at its last committed run that learnt them."}, []string{"source"}),
		checkpoints: map[string]time.Time{},
		started:     map[string]time.Time{},
		types:       map[string]bool{},
		now:         time.Now,
		lagDesc: prometheus.NewDesc("fhirferry_checkpoint_lag_seconds",
			"Age of the committed transactionTime at scrape time: how far the warehouse trails the server.", sl, nil),
	}
	for _, c := range []prometheus.Collector{m.runs, m.skipped, m.inProgress, m.runDuration, m.phaseDuration,
		m.lastSuccess, m.checkpointTS, m.manifestFiles, m.bytes, m.retries, m.responses, m.files, m.resources,
		m.deleted, m.rejects, m.outcomes, m.commit, m.purged, m.members, lagCollector{m}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// AddSource creates the per-source series that should read 0 rather than
// be absent before the first run (so rate() and alerts see them), and
// seeds the checkpoint (an RFC 3339 transactionTime, "" when none).
func (m *Metrics) AddSource(source, checkpoint string) {
	for _, o := range []string{OutcomeSuccess, OutcomeFailure, OutcomeCancelled} {
		m.runs.WithLabelValues(source, o)
	}
	m.skipped.WithLabelValues(source, "overlap")
	m.inProgress.WithLabelValues(source).Set(0)
	if checkpoint != "" {
		m.setCheckpoint(source, checkpoint)
	}
}

func (m *Metrics) setCheckpoint(source, tt string) {
	t, err := time.Parse(time.RFC3339Nano, tt)
	if err != nil {
		return
	}
	m.checkpointTS.WithLabelValues(source).Set(float64(t.UnixNano()) / 1e9)
	m.mu.Lock()
	m.checkpoints[source] = t
	m.mu.Unlock()
}

// RunStarted implements RunObserver.
func (m *Metrics) RunStarted(source string) {
	m.inProgress.WithLabelValues(source).Set(1)
	m.mu.Lock()
	m.started[source] = m.now()
	m.mu.Unlock()
}

// RunFinished implements RunObserver.
func (m *Metrics) RunFinished(source string, res *Result, err error) {
	outcome := Outcome(err)
	now := m.now()
	m.mu.Lock()
	t0, ok := m.started[source]
	delete(m.started, source)
	m.mu.Unlock()
	m.inProgress.WithLabelValues(source).Set(0)
	m.runs.WithLabelValues(source, outcome).Inc()
	if ok {
		m.runDuration.WithLabelValues(source, outcome).Observe(now.Sub(t0).Seconds())
	}
	if err == nil {
		m.lastSuccess.WithLabelValues(source).Set(float64(now.UnixNano()) / 1e9)
		if res != nil {
			m.setCheckpoint(source, res.TransactionTime)
		}
	}
}

// RunSkipped implements RunObserver.
func (m *Metrics) RunSkipped(source, reason string) {
	m.skipped.WithLabelValues(source, reason).Inc()
}

// Phase implements Hooks.
func (m *Metrics) Phase(source, phase string, d time.Duration) {
	m.phaseDuration.WithLabelValues(source, phase).Observe(d.Seconds())
}

// FileDone implements Hooks.
func (m *Metrics) FileDone(source string, sp fetch.Spooled, st transform.FileStats) {
	kind := string(sp.File.Kind)
	switch sp.File.Kind {
	case fetch.KindOutput, fetch.KindDeleted, fetch.KindError:
	default:
		kind = "other"
	}
	m.files.WithLabelValues(source, kind).Inc()
	rt := m.resourceType(sp.File.Type)
	if st.Resources > 0 {
		m.resources.WithLabelValues(source, rt).Add(float64(st.Resources))
	}
	// Labelled by the deleted resource's type, not the file's (Bundle).
	for typ, n := range st.DeletedByType {
		m.deleted.WithLabelValues(source, m.resourceType(typ)).Add(float64(n))
	}
	if st.Rejects > 0 {
		m.rejects.WithLabelValues(source, rt).Add(float64(st.Rejects))
	}
	if st.ErrorIssues > 0 {
		m.outcomes.WithLabelValues(source, "error").Add(float64(st.ErrorIssues))
	}
	if other := st.Outcomes - st.ErrorIssues; other > 0 {
		m.outcomes.WithLabelValues(source, "other").Add(float64(other))
	}
}

// resourceType bounds the label: odd names and types beyond the cap
// become "other"; a file without a type is "any".
func (m *Metrics) resourceType(t string) string {
	if t == "" {
		return "any"
	}
	if !resourceTypeRE.MatchString(t) {
		return "other"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.types[t] {
		return t
	}
	if len(m.types) >= maxResourceTypes {
		return "other"
	}
	m.types[t] = true
	return t
}

// Committed implements Hooks.
func (m *Metrics) Committed(source, sink string, d time.Duration) {
	m.commit.WithLabelValues(source, sink).Observe(d.Seconds())
}

// Recorded implements Hooks.
func (m *Metrics) Recorded(source, sink string, sum sinks.RunSummary) {
	m.purged.WithLabelValues(source, sink).Add(float64(sum.Purged))
	if sum.Membership != nil {
		m.members.WithLabelValues(source).Set(float64(len(sum.Membership.Patients)))
	}
}

// Manifest implements Hooks.
func (m *Metrics) Manifest(source string, man *fetch.Manifest) {
	m.manifestFiles.WithLabelValues(source, string(fetch.KindOutput)).Set(float64(len(man.Output)))
	m.manifestFiles.WithLabelValues(source, string(fetch.KindDeleted)).Set(float64(len(man.Deleted)))
	m.manifestFiles.WithLabelValues(source, string(fetch.KindError)).Set(float64(len(man.Error)))
}

// Observer returns the Bulk Data client's observer for source.
func (m *Metrics) Observer(source string) fetch.Observer { return sourceObserver{m: m, source: source} }

type sourceObserver struct {
	m      *Metrics
	source string
}

var retryReasons = map[string]bool{"429": true, "5xx": true, "network": true, "auth": true, "truncated": true, "expired": true}
var requestKinds = map[string]bool{"kickoff": true, "status": true, "file": true, "delete": true, "attachment": true, "token": true, "group": true}

func bounded(v string, allowed map[string]bool) string {
	if allowed[v] {
		return v
	}
	return "other"
}

func (o sourceObserver) Retry(reason string) {
	o.m.retries.WithLabelValues(o.source, bounded(reason, retryReasons)).Inc()
}

func (o sourceObserver) HTTPStatus(kind string, code int) {
	class := "other"
	if code >= 100 && code < 600 {
		class = strconv.Itoa(code/100) + "xx"
	}
	o.m.responses.WithLabelValues(o.source, bounded(kind, requestKinds), class).Inc()
}

func (o sourceObserver) Bytes(kind string, n int64) {
	o.m.bytes.WithLabelValues(o.source, bounded(kind, requestKinds)).Add(float64(n))
}

// Progress is informational (its text and URL are unbounded): not a metric.
func (o sourceObserver) Progress(string, string) {}

// lagCollector computes the checkpoint lag at scrape time, so the value
// keeps growing while runs fail or stall.
type lagCollector struct{ m *Metrics }

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.lagDesc }

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	now := c.m.now()
	for src, t := range c.m.checkpoints {
		ch <- prometheus.MustNewConstMetric(c.m.lagDesc, prometheus.GaugeValue, now.Sub(t).Seconds(), src)
	}
}

var (
	_ Hooks          = (*Metrics)(nil)
	_ RunObserver    = (*Metrics)(nil)
	_ fetch.Observer = sourceObserver{}
)

package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/transform"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, url string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Post(url, "", nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body
}

// serveAdmin runs the admin server on a real 127.0.0.1 port.
func serveAdmin(t *testing.T, o AdminOptions) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	srv, err := ListenAdmin(ctx, "127.0.0.1:0", NewAdminHandler(o))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return "http://" + srv.Addr()
}

func TestAdminEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	require.NoError(t, err)
	m.AddSource("ehr", "2025-01-01T00:00:00Z")

	release := make(chan struct{})
	s, err := NewScheduler(SchedulerOptions{
		Sources: []ScheduledSource{{Name: "ehr", Schedule: "@hourly"}},
		Run: func(ctx context.Context, source string) (*Result, error) {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return &Result{RunID: "run-1", TransactionTime: "2025-02-01T00:00:00Z", Stats: transform.FileStats{Resources: 42}}, nil
		},
		Observer: m,
	})
	require.NoError(t, err)
	var ctl atomic.Pointer[Scheduler]
	var pingFails atomic.Bool
	pingFails.Store(true)
	base := serveAdmin(t, AdminOptions{
		Gatherer: reg,
		Controller: func() Controller {
			if c := ctl.Load(); c != nil {
				return c
			}
			return nil
		},
		Ready: func(ctx context.Context) error {
			if pingFails.Load() {
				return errors.New("sink warehouse: connection refused")
			}
			return nil
		},
	})

	code, _ := get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	code, body := get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, "no scheduler yet: not ready")
	require.Contains(t, body, "starting")
	code, _ = post(t, base+"/runs/ehr")
	require.Equal(t, http.StatusServiceUnavailable, code)

	ctl.Store(s)
	startScheduler(t, s)
	code, body = get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "connection refused")
	pingFails.Store(false)
	code, _ = get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)

	code, resp := post(t, base+"/runs/ehr")
	require.Equal(t, http.StatusAccepted, code)
	require.Equal(t, "ehr", resp["source"])
	code, resp = post(t, base+"/runs/ehr")
	require.Equal(t, http.StatusConflict, code)
	require.Contains(t, resp["error"], "already in progress")
	code, _ = post(t, base+"/runs/nope")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, base+"/runs/ehr")
	require.Equal(t, http.StatusMethodNotAllowed, code)

	var doc StatusDoc
	require.Eventually(t, func() bool {
		_, body := get(t, base+"/status")
		require.NoError(t, json.Unmarshal([]byte(body), &doc))
		return doc.Sources[0].State == "running"
	}, 2*time.Second, 10*time.Millisecond)
	require.NotNil(t, doc.Sources[0].NextRun)
	require.Equal(t, "@hourly", doc.Sources[0].Schedule)
	close(release)
	require.Eventually(t, func() bool {
		_, body := get(t, base+"/status")
		require.NoError(t, json.Unmarshal([]byte(body), &doc))
		return doc.Sources[0].LastRun != nil
	}, 2*time.Second, 10*time.Millisecond)
	lr := doc.Sources[0].LastRun
	require.Equal(t, OutcomeSuccess, lr.Outcome)
	require.Equal(t, "run-1", lr.RunID)
	require.Equal(t, int64(42), lr.Resources)
	require.Equal(t, "2025-02-01T00:00:00Z", lr.Checkpoint)

	code, body = get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `fhirferry_scheduler_runs_total{outcome="success",source="ehr"} 1`)
	require.Contains(t, body, `fhirferry_checkpoint_timestamp_seconds{source="ehr"} 1.738368e+09`)
	require.Contains(t, body, `fhirferry_checkpoint_lag_seconds{source="ehr"}`)
}

func TestListenAdminPortTaken(t *testing.T) {
	srv, err := ListenAdmin(t.Context(), "127.0.0.1:0", http.NotFoundHandler())
	require.NoError(t, err)
	_, err = ListenAdmin(t.Context(), srv.Addr(), http.NotFoundHandler())
	require.Error(t, err, "a taken admin port must fail the start")
	require.NoError(t, srv.ln.Close())
}

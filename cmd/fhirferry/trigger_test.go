package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/transform"
)

func TestTriggerCommand(t *testing.T) {
	var fail atomic.Bool
	release := make(chan struct{}, 10)
	s, err := pipeline.NewScheduler(pipeline.SchedulerOptions{
		Sources: []pipeline.ScheduledSource{{Name: "ehr"}},
		Run: func(ctx context.Context, source string) (*pipeline.Result, error) {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if fail.Load() {
				return &pipeline.Result{RunID: "r2"}, errors.New("kick-off: 500 Internal Server Error")
			}
			return &pipeline.Result{RunID: "r1", TransactionTime: "2025-01-02T00:00:00Z", Stats: transform.FileStats{Resources: 12}}, nil
		},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	srv := httptest.NewServer(pipeline.NewAdminHandler(pipeline.AdminOptions{Controller: func() pipeline.Controller { return s }}))
	defer srv.Close()
	require.Eventually(t, func() bool { return !errors.Is(s.Trigger("nope"), pipeline.ErrNotAccepting) }, time.Second, 5*time.Millisecond)

	var out bytes.Buffer
	release <- struct{}{}
	require.NoError(t, runTrigger(t.Context(), &out, srv.URL, "ehr", true, 10*time.Millisecond))
	require.Contains(t, out.String(), "run r1 of ehr: success")
	require.Contains(t, out.String(), "12 resources")

	// Already running: 409.
	out.Reset()
	require.NoError(t, runTrigger(t.Context(), &out, srv.Listener.Addr().String(), "ehr", false, 0))
	err = runTrigger(t.Context(), &out, srv.URL, "ehr", false, 0)
	require.ErrorContains(t, err, "409")
	fail.Store(true)
	release <- struct{}{}
	require.Eventually(t, func() bool { return s.Status()[0].State == "idle" }, 2*time.Second, 5*time.Millisecond)

	// A failed run fails --wait with the run's error.
	release <- struct{}{}
	err = runTrigger(t.Context(), &out, srv.URL, "ehr", true, 10*time.Millisecond)
	require.ErrorContains(t, err, "run of ehr: failure")
	require.ErrorContains(t, err, "500 Internal Server Error")

	err = runTrigger(t.Context(), &out, srv.URL, "nope", false, 0)
	require.ErrorContains(t, err, "404")
	err = runTrigger(t.Context(), &out, "127.0.0.1:1", "ehr", false, 0)
	require.ErrorContains(t, err, "is the daemon running")
}

func TestHealthCommand(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(pipeline.NewAdminHandler(pipeline.AdminOptions{
		Controller: func() pipeline.Controller { return nil },
		Ready: func(context.Context) error {
			if !ready.Load() {
				return errors.New("sink down")
			}
			return nil
		},
	}))
	defer srv.Close()
	run := func(args ...string) error {
		root := newRoot()
		root.SetArgs(append([]string{"health", "--admin", srv.URL}, args...))
		root.SetOut(io.Discard)
		return root.ExecuteContext(t.Context())
	}
	require.NoError(t, run())
	err := run("--ready")
	require.ErrorContains(t, err, "503")
	srv.Close()
	require.Error(t, run(), "a daemon that does not answer is not healthy")
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/pipeline"
)

// newHealthCmd is a probe for images without curl (distroless): it exits
// 0 when the daemon's /healthz (or /readyz with --ready) answers 200.
func newHealthCmd(_ *globals) *cobra.Command {
	var addr string
	var ready bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:     "health",
		Example: "  fhirferry health\n  fhirferry health --ready --admin 127.0.0.1:9464",
		Short:   "Exit 0 when a running daemon is alive (or ready, with --ready)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/healthz"
			if ready {
				path = "/readyz"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, adminBase(addr)+path, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "admin", "127.0.0.1:9464", "the daemon's admin address (host:port or URL)")
	cmd.Flags().BoolVar(&ready, "ready", false, "check /readyz (sinks reachable) instead of /healthz")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "request timeout")
	return cmd
}

func newTriggerCmd(_ *globals) *cobra.Command {
	var addr string
	var wait bool
	var poll time.Duration
	cmd := &cobra.Command{
		Use:     "trigger SOURCE",
		Example: "  fhirferry trigger ehr\n  fhirferry trigger ehr --wait",
		Short:   "Ask a running daemon to run a source now",
		Long: `trigger sends POST /runs/SOURCE to a running daemon's admin endpoint. The run
starts at once (no jitter) when a run slot is free. It fails when the source is
unknown (404) or already running (409). With --wait it follows /status until
the run ends and fails unless the run succeeded.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTrigger(cmd.Context(), cmd.OutOrStdout(), addr, args[0], wait, poll)
		},
	}
	cmd.Flags().StringVar(&addr, "admin", "127.0.0.1:9464", "the daemon's admin address (host:port or URL)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the run to finish and report its outcome")
	cmd.Flags().DurationVar(&poll, "poll", time.Second, "status polling interval with --wait")
	return cmd
}

func adminBase(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/")
	}
	return "http://" + addr
}

func runTrigger(ctx context.Context, out io.Writer, addr, source string, wait bool, poll time.Duration) error {
	base := adminBase(addr)
	hc := &http.Client{Timeout: 30 * time.Second}
	// The run we start is the first whose start differs from the last one.
	var before time.Time
	if wait {
		st, err := fetchStatus(ctx, hc, base, source)
		if err != nil {
			return fmt.Errorf("is the daemon running? %w", err)
		}
		if st.LastRun != nil {
			before = st.LastRun.Started
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/runs/"+url.PathEscape(source), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("is the daemon running? %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return fmt.Errorf("trigger %s: %s: %s", source, resp.Status, e.Error)
	}
	fmt.Fprintf(out, "run of %s started\n", source)
	if !wait {
		return nil
	}
	tick := time.NewTicker(max(poll, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		st, err := fetchStatus(ctx, hc, base, source)
		if err != nil {
			return err
		}
		lr := st.LastRun
		if st.State != "idle" || lr == nil || lr.Started.Equal(before) {
			continue
		}
		fmt.Fprintf(out, "run %s of %s: %s in %.1fs; %d resources, %d deleted, %d rejects; checkpoint %s\n",
			lr.RunID, source, lr.Outcome, lr.Seconds, lr.Resources, lr.Deleted, lr.Rejects, lr.Checkpoint)
		if lr.Outcome != pipeline.OutcomeSuccess {
			return fmt.Errorf("run of %s: %s: %s", source, lr.Outcome, lr.Error)
		}
		return nil
	}
}

func fetchStatus(ctx context.Context, hc *http.Client, base, source string) (*pipeline.SourceStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status: %s", resp.Status)
	}
	var doc pipeline.StatusDoc
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	for i := range doc.Sources {
		if doc.Sources[i].Name == source {
			return &doc.Sources[i], nil
		}
	}
	return nil, errors.New("status: the daemon does not list " + source)
}

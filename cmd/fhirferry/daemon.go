package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/pipeline"
)

func newDaemonCmd(g *globals) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:     "daemon",
		Example: "  fhirferry daemon --config /etc/fhirferry/config.yaml\n  systemctl reload fhirferry   # SIGHUP: reload the config",
		Short:   "Run every source on its schedule and serve metrics, health and status",
		Long: `daemon runs each source on its cron schedule (never overlapping a source with
itself, at most daemon.max_concurrent_runs at once), resumes at start any run a
previous process left unfinished, and serves /metrics, /healthz, /readyz,
/status and POST /runs/{source} on admin.listen.

SIGTERM or SIGINT stops scheduling, cancels the runs in flight (a cancelled
run rolls back and is resumed by the next start) and waits up to
daemon.stop_timeout; the exit code is then 0. SIGHUP reloads the config file:
runs in flight finish on the old config, then sources, schedules, sinks and
views switch to the new one (admin, log and daemon settings need a restart).
An invalid file is rejected and the running config kept.
Under systemd (Type=notify) it reports READY, STOPPING, RELOADING, STATUS and
pets the watchdog.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(g, cfgPath)
			if err != nil {
				return err
			}
			// Catch SIGHUP from the start: its default action would kill us.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			return pipeline.RunDaemon(cmd.Context(), pipeline.DaemonOptions{
				ConfigPath: cfgPath, Config: cfg, Deps: g.deps(nil, nil),
				Reload: hup, Notifier: pipeline.NewNotifier(),
			})
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "/etc/fhirferry/config.yaml", "configuration file")
	return cmd
}

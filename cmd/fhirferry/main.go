// Command fhirferry moves FHIR Bulk Data exports into analytics warehouses.
//
// This package holds the command line only: flags, wiring of the
// components pipeline.Build assembles, and printing. What a command does
// lives in pipeline (runs, the daemon, view rebuilds, exports to a folder)
// and in the stages it orchestrates.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks/builtin"
)

// globals are the flags every subcommand shares.
type globals struct {
	logLevel  string
	logFormat string
}

// logger builds the process logger. Commands never log tokens, keys or
// resource contents; see ARCHITECTURE.md, invariant 6.
func (g *globals) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if g.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// deps wires the binary's sink types and the run's observers (either may
// be nil) into what pipeline.Build needs.
func (g *globals) deps(hooks pipeline.Hooks, obs func(string) fetch.Observer) pipeline.Deps {
	return pipeline.Deps{
		Sinks: builtin.Factories(), Logger: g.logger(), Hooks: hooks, Observer: obs, Failpoint: failpointHook(),
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "fhirferry",
		Short:         "Move FHIR Bulk Data exports into analytics warehouses",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "text or json")
	root.AddCommand(
		newRunCmd(g), newLoadCmd(g), newExportCmd(g), newDaemonCmd(g), newTriggerCmd(g), newHealthCmd(g),
		newViewsCmd(g), newDemoCmd(g), newTestServerCmd(g), newKeysCmd(g), newVersionCmd(g),
	)
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRoot().ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fhirferry:", err)
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

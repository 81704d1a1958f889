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
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks/builtin"
)

// globals are the flags every subcommand shares.
type globals struct {
	logLevel  string
	logFormat string
	// levelSet and formatSet say the command line set them; otherwise a
	// command that reads a config file takes its log settings.
	levelSet, formatSet bool
}

// adopt takes the config file's log settings the command line left open.
func (g *globals) adopt(l configs.Log) {
	if !g.levelSet && l.Level != "" {
		g.logLevel = l.Level
	}
	if !g.formatSet && l.Format != "" {
		g.logFormat = l.Format
	}
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

// checkFlags validates the global flags before any command runs.
func (g *globals) checkFlags(cmd *cobra.Command) error {
	fl := cmd.Flags()
	g.levelSet, g.formatSet = fl.Changed("log-level"), fl.Changed("log-format")
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, g.logLevel) {
		return usageErrorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	if g.logFormat != "text" && g.logFormat != "json" {
		return usageErrorf("--log-format %q: want text or json", g.logFormat)
	}
	return nil
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
		Use:   "fhirferry",
		Short: "Move FHIR Bulk Data exports into analytics warehouses",
		Long: `fhirferry moves FHIR Bulk Data ($export) exports into analytics warehouses:
incremental exports on a schedule, a lossless raw landing and SQL-on-FHIR views,
loaded into DuckDB, PostgreSQL or a Parquet lake with updates and deletes applied.

Exit codes: 0 success, 1 a run (or another operation) failed, 2 a usage or
configuration error (nothing was run).`,
		Example: `  fhirferry demo                                  # end to end on the built-in test server
  fhirferry config check fhirferry.yaml
  fhirferry run --config fhirferry.yaml
  fhirferry daemon --config /etc/fhirferry/config.yaml`,
		Version:           versionString(),
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return g.checkFlags(cmd) },
	}
	root.SetVersionTemplate("fhirferry {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error (default: the config's log.level)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "text or json (default: the config's log.format)")
	root.AddCommand(
		newRunCmd(g), newLoadCmd(g), newExportCmd(g), newDaemonCmd(g), newTriggerCmd(g), newHealthCmd(g),
		newViewsCmd(g), newValueSetsCmd(g), newConfigCmd(g), newDemoCmd(g), newTestServerCmd(g), newKeysCmd(g), newVersionCmd(g),
	)
	usageArgs(root)
	return root
}

// usageArgs makes every command's argument errors usage errors (exit 2).
func usageArgs(c *cobra.Command) {
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return &usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
}

// usageError is a command line the command cannot run (exit 2); its
// message is followed by a pointer to the command's help.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }
func (e *usageError) ExitCode() int { return 2 }

func usageErrorf(format string, a ...any) error { return &usageError{fmt.Errorf(format, a...)} }

// execute runs the command line and prints its error once: usage errors
// with a pointer to the command's help. It returns the exit code.
func execute(ctx context.Context, root *cobra.Command, stderr io.Writer) int {
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	code := 1
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	var ue *usageError
	usage := errors.As(err, &ue)
	// Cobra's own: an unknown command, a required flag left out.
	if strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "required flag") {
		code, usage = 2, true
	}
	fmt.Fprintln(stderr, "fhirferry:", err)
	if usage && cmd != nil {
		fmt.Fprintf(stderr, "see '%s --help'\n", cmd.CommandPath())
	}
	return code
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, newRoot(), os.Stderr)
	stop()
	os.Exit(code)
}

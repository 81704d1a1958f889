// Command fhirferry-bench measures fhirferry's load throughput and peak
// memory against DuckDB's own read_json on generated Synthea-like data. It
// is a developer's tool, kept out of the fhirferry binary users run.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newBenchCmd()
	root.SilenceUsage, root.SilenceErrors = true, true
	root.AddCommand(newBenchChildCmd())
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "fhirferry-bench:", err)
		os.Exit(1)
	}
}

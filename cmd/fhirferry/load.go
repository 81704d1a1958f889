package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/pipeline"
)

func init() { register(newLoadCmd) }

func newLoadCmd(g *globals) *cobra.Command {
	var cfgPath, source, txTime string
	var sinkNames []string
	cmd := &cobra.Command{
		Use:   "load DIR --config FILE",
		Short: "Load an export folder (NDJSON files, with or without a manifest) into the sinks",
		Long: `load applies an export folder written by 'fhirferry export' or by another bulk
client to the configured sinks, with the same upsert, delete and checkpoint rules as a
server run. Files are found by manifest.json when present, otherwise by name
(<Type>.ndjson or <n>.<Type>.ndjson, optionally gzip-compressed; names containing
"deleted" or "error" are deleted and error files). A folder is loaded once per source:
loading it again is a no-op.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			dir := args[0]
			log := g.logger()
			prog := newProgress(cmd.ErrOrStderr())
			a, err := buildApp(ctx, cfgPath, log, prog, nil)
			if err != nil {
				return err
			}
			defer a.close()
			warnStaleViews(ctx, cmd.ErrOrStderr(), a, cfgPath)
			if source == "" {
				abs, _ := filepath.Abs(dir)
				source = "load-" + sanitize(filepath.Base(abs))
			}
			var sinks []pipeline.Sink
			if len(sinkNames) == 0 {
				for _, sc := range a.cfg.Sinks {
					sinks = append(sinks, a.sinks[sc.Name])
				}
			}
			for _, n := range sinkNames {
				s, ok := a.sinks[n]
				if !ok {
					return fmt.Errorf("no sink named %q in the config", n)
				}
				sinks = append(sinks, s)
			}
			if len(sinks) == 0 {
				return errors.New("the config has no sinks")
			}
			r := &pipeline.Runner{
				Source: source, Client: &pipeline.LocalExport{Dir: dir, TransactionTime: txTime},
				Engine: a.engine, Sinks: sinks, DataDir: a.cfg.DataDir, Logger: log, Hooks: prog,
				Workers: a.cfg.Transform.Workers, QueueDepth: a.cfg.Transform.QueueDepth,
			}
			res, err := r.Run(ctx)
			prog.finish()
			if res == nil {
				res = &pipeline.Result{Source: source}
			}
			printSummary(cmd.OutOrStdout(), []*pipeline.Result{res}, []error{err})
			return err
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration file (required)")
	cmd.Flags().StringVar(&source, "source", "", "source name the data is recorded under (default load-<folder>)")
	cmd.Flags().StringVar(&txTime, "transaction-time", "", "transactionTime to record when the folder has no manifest")
	cmd.Flags().StringSliceVar(&sinkNames, "sink", nil, "load into these sinks only (default all)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

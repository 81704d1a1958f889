package main

import (
	"github.com/spf13/cobra"

	"github.com/fhirferry/fhirferry/pipeline"
)

func newLoadCmd(g *globals) *cobra.Command {
	var cfgPath string
	var o pipeline.LoadOptions
	cmd := &cobra.Command{
		Use:     "load DIR --config FILE",
		Example: "  fhirferry load ./dl --config fhirferry.yaml\n  fhirferry load ./dl --config fhirferry.yaml --source ehr --sink warehouse",
		Short:   "Load an export folder (NDJSON files, with or without a manifest) into the sinks",
		Long: `load applies an export folder written by 'fhirferry export' or by another bulk
client to the configured sinks, with the same upsert, delete and checkpoint rules as a
server run. Files are found by manifest.json when present, otherwise by name
(<Type>.ndjson or <n>.<Type>.ndjson, optionally gzip-compressed; names containing
"deleted" or "error" are deleted and error files). A folder is loaded once per source:
loading it again is a no-op.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			o.Dir = args[0]
			prog := newProgress(cmd.ErrOrStderr())
			a, err := buildApp(ctx, g, cfgPath, prog, nil)
			if err != nil {
				return err
			}
			defer a.Close()
			warnStaleViews(ctx, cmd.ErrOrStderr(), a, cfgPath)
			res, err := a.LoadDir(ctx, o)
			prog.finish()
			if res != nil {
				printSummary(cmd.OutOrStdout(), []*pipeline.Result{res}, []error{err})
			}
			return err
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration file (required)")
	cmd.Flags().StringVar(&o.Source, "source", "", "source name the data is recorded under (default load-<folder>)")
	cmd.Flags().StringVar(&o.TransactionTime, "transaction-time", "", "transactionTime to record when the folder has no manifest")
	cmd.Flags().StringVar(&o.Namespace, "namespace", "", "namespace of the resources (default: the server of the manifest's request URL, else the source name)")
	cmd.Flags().StringSliceVar(&o.Sinks, "sink", nil, "load into these sinks only (default all)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks"
	"github.com/fhirferry/fhirferry/transform"
)

func newRunCmd(g *globals) *cobra.Command {
	var cfgPath, source string
	cmd := &cobra.Command{
		Use:     "run --config FILE [--source NAME]",
		Example: "  fhirferry run --config fhirferry.yaml\n  fhirferry run --config fhirferry.yaml --source ehr --log-level debug",
		Short:   "Run one incremental export per source into the configured sinks",
		Long: `run performs one run of each configured source (or of --source): it resumes
an unfinished run if there is one, otherwise kicks off an export with _since set to
the oldest checkpoint of the source's sinks, loads it, and commits; at most
daemon.max_concurrent_runs sources run at once. It prints a summary and exits
non-zero if any source failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			prog := newProgress(cmd.ErrOrStderr())
			a, err := buildApp(ctx, g, cfgPath, prog, prog.observer)
			if err != nil {
				return err
			}
			defer a.Close()
			warnStaleViews(ctx, cmd.ErrOrStderr(), a, cfgPath)
			names, err := a.SourceNames(source)
			if err != nil {
				return err
			}
			results, errs := a.RunSources(ctx, names, func(string) { prog.finish() })
			printSummary(cmd.OutOrStdout(), results, errs)
			return runFailures(errs)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration file (required)")
	cmd.Flags().StringVar(&source, "source", "", "run only this source")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// printSummary writes one line per run.
// buildApp loads the config file and builds its components, logging as
// the config says unless --log-level or --log-format was given. A config
// that does not load is a configuration error (exit 2).
func buildApp(ctx context.Context, g *globals, cfgPath string, hooks pipeline.Hooks, obs func(string) fetch.Observer) (*pipeline.App, error) {
	cfg, err := loadConfig(g, cfgPath)
	if err != nil {
		return nil, err
	}
	return pipeline.Build(ctx, cfg, g.deps(hooks, obs))
}

// loadConfig loads the config file and adopts its log settings where the
// command line set none.
func loadConfig(g *globals, cfgPath string) (*configs.Config, error) {
	cfg, err := pipeline.LoadConfig(cfgPath)
	if err != nil {
		return nil, &exitError{2, err}
	}
	g.adopt(cfg.Log)
	return cfg, nil
}

// warnStaleViews prints, once per sink, the views whose tables miss rows
// because their definition is new or changed, and how to fix that. It is
// advice, so a failure to check is a warning too.
func warnStaleViews(ctx context.Context, w io.Writer, a *pipeline.App, cfgPath string) {
	stale, err := a.StaleViews(ctx)
	if err != nil {
		fmt.Fprintf(w, "warning: checking view definitions: %v\n", err)
	}
	for _, sink := range slices.Sorted(maps.Keys(stale)) {
		v := stale[sink]
		msg := "view %s is new or changed since its table was built, so the table only has rows for resources loaded since; " +
			"run `fhirferry views rebuild --config %s` to rebuild it from the raw landing"
		if len(v) > 1 {
			msg = "views %s are new or changed since their tables were built, so the tables only have rows for resources loaded since; " +
				"run `fhirferry views rebuild --config %s` to rebuild them from the raw landing"
		}
		fmt.Fprintf(w, "warning: sink %s: "+msg+"\n", sink, strings.Join(v, ", "), cfgPath)
	}
}

func printSummary(w io.Writer, results []*pipeline.Result, errs []error) {
	// A Group back-fill (C49) is shown as its own line before its source's.
	var rows []*pipeline.Result
	var rowErrs []error
	for i, r := range results {
		if r.Backfill != nil {
			rows, rowErrs = append(rows, r.Backfill), append(rowErrs, nil)
		}
		rows, rowErrs = append(rows, r), append(rowErrs, errs[i])
	}
	results, errs = rows, rowErrs
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tOUTCOME\tSINCE\tTRANSACTION TIME\tFILES\tRESOURCES\tDELETED\tREJECTS\tDURATION")
	for i, r := range results {
		outcome := "success"
		switch {
		case errs[i] != nil:
			outcome = "failed"
		case len(r.Committed) == 0 && len(r.Skipped) > 0:
			outcome = "already loaded"
		}
		if r.Resumed && errs[i] == nil {
			outcome += " (resumed)"
		}
		dur := ""
		if !r.Finished.IsZero() {
			dur = r.Finished.Sub(r.Started).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", r.Source, outcome, orDash(r.Since), orDash(r.TransactionTime),
			r.Files, r.Stats.Resources, r.Stats.Deleted, r.Stats.Rejects, dur)
	}
	tw.Flush()
	for _, r := range results {
		printMembers(w, r)
		if len(r.Deferred) > 0 {
			fmt.Fprintf(w, "%s: sinks %v hold an older state than this full export can update; they catch up in the next run\n", r.Source, r.Deferred)
		}
	}
}

// printMembers says what a Group source's run recorded in group_member
// and what became of the members who left.
func printMembers(w io.Writer, r *pipeline.Result) {
	if r.Members == nil && len(r.NewMembers) == 0 && len(r.RemovedMembers) == 0 {
		return
	}
	fmt.Fprintf(w, "%s: Group membership", r.Source)
	if r.Members != nil {
		fmt.Fprintf(w, ": %d members of Group/%s in group_member", len(r.Members.Patients), r.Members.Group)
	}
	if len(r.NewMembers) > 0 || len(r.RemovedMembers) > 0 {
		var purged int64
		for _, n := range r.Purged {
			purged = max(purged, n)
		}
		fate := "their data is kept"
		if purged > 0 {
			fate = fmt.Sprintf("%d resources of theirs purged", purged)
		}
		fmt.Fprintf(w, "; %d new member(s) back-filled, %d left the Group (%s)", len(r.NewMembers), len(r.RemovedMembers), fate)
	}
	fmt.Fprintln(w)
}

// runFailures is the error of the runs that failed, one line per run
// (main prints it once, after the summary); nil if every run succeeded.
func runFailures(errs []error) error {
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err) // it names its source
		}
	}
	if len(out) == 0 {
		return nil
	}
	return &exitError{1, errors.Join(out...)}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// progress shows files loaded on a terminal and stays silent otherwise. It
// is the run's pipeline.Hooks.
type progress struct {
	mu  sync.Mutex
	w   io.Writer
	tty bool
	bar *progressbar.ProgressBar
}

func newProgress(w io.Writer) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progress{w: w, tty: tty}
}

func (p *progress) Phase(string, string, time.Duration) {}

func (p *progress) Committed(string, string, time.Duration) {}

func (p *progress) Recorded(string, string, sinks.RunSummary) {}

func (p *progress) Manifest(source string, m *fetch.Manifest) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar = progressbar.NewOptions(len(m.Files()),
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(source+": loading files"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionClearOnFinish(),
	)
}

func (p *progress) FileDone(_ string, sp fetch.Spooled, st transform.FileStats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("%s (%d resources)", sp.File.Type, st.Resources))
		_ = p.bar.Add(1)
	}
}

// observer shows the server's X-Progress while an export is prepared; the
// other client events are for metrics.
func (p *progress) observer(source string) fetch.Observer { return waitProgress{p: p, source: source} }

type waitProgress struct {
	p      *progress
	source string
}

func (w waitProgress) Retry(string)           {}
func (w waitProgress) HTTPStatus(string, int) {}
func (w waitProgress) Bytes(string, int64)    {}
func (w waitProgress) Progress(_, text string) {
	if !w.p.tty {
		return
	}
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.p.bar == nil { // only while waiting, before files load
		fmt.Fprintf(w.p.w, "\r\033[K%s: export in progress: %.80s", w.source, text)
	}
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}

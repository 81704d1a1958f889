package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/pipeline"
)

// exportFlags are the flags of `fhirferry export`.
type exportFlags struct {
	cfgPath, source                   string
	out, statusURL                    string
	src                               configs.Source
	maxLine                           int64
	noDelete, attachments, progressOn bool
}

func newExportCmd(g *globals) *cobra.Command {
	f := &exportFlags{}
	s := &f.src
	cmd := &cobra.Command{
		Use:   "export --base-url URL [flags]",
		Short: "Download one Bulk Data export into a folder (NDJSON files, manifest, log)",
		Long: `export runs one FHIR Bulk Data $export and downloads it into --out, like the SMART
reference client: <n>.<Type>.ndjson per output file, deleted/ and error/ subfolders,
manifest.json, and log.ndjson (events only: never tokens or resource contents).

The status URL is written to status-url.txt before polling starts; if the command is
killed, run it again with --status-url $(cat DIR/status-url.txt) to resume the same
export instead of starting another. Files already in the folder are not fetched again.
After every file is stored the export is DELETEd on the server (--no-delete keeps it).

Settings come from flags, or from a config file's source (--config FILE --source NAME),
with flags given on the command line overriding the config.`,
		Example: `  fhirferry export --base-url https://bulk-data.smarthealthit.org/fhir --type Patient,Observation --out ./dl
  fhirferry export --base-url https://ehr.example/fhir --level group --group diabetes --since 2025-01-01T00:00:00Z \
      --auth-client-id my-app --auth-private-key key.pem --out ./dl
  fhirferry export --config fhirferry.yaml --source ehr --out ./dl
  fhirferry export --base-url https://ehr.example/fhir --status-url "$(cat ./dl/status-url.txt)" --out ./dl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.resolve(cmd); err != nil {
				return err
			}
			return runExport(cmd.Context(), g, f, cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.cfgPath, "config", "", "config file to take the source from")
	fl.StringVar(&f.source, "source", "", "source name in --config")
	fl.StringVar(&s.BaseURL, "base-url", "", "FHIR base URL of the Bulk Data server")
	fl.StringVar(&s.Level, "level", configs.DefaultLevel, "export level: system, patient or group")
	fl.StringVar(&s.GroupID, "group", "", "Group id (with --level group)")
	fl.StringSliceVar(&s.Export.Types, "type", nil, "resource types (_type), comma-separated or repeated")
	fl.StringVar(&s.Export.Since, "since", "", "_since instant, sent verbatim (e.g. a previous transactionTime)")
	fl.StringVar(&s.Export.Until, "until", "", "_until instant (STU3 servers only)")
	fl.StringArrayVar(&s.Export.TypeFilters, "type-filter", nil, "_typeFilter query, e.g. Observation?category=laboratory (repeatable)")
	fl.StringSliceVar(&s.Export.Elements, "elements", nil, "_elements")
	fl.StringSliceVar(&s.Export.Patients, "patient", nil, "patient ids (sent with POST)")
	fl.StringSliceVar(&s.Export.IncludeAssociatedData, "include-associated-data", nil, "includeAssociatedData values")
	fl.StringVar(&s.Export.OutputFormat, "output-format", "", "_outputFormat (omitted by default)")
	fl.BoolVar(&s.Export.Lenient, "lenient", false, "send Prefer: handling=lenient")
	fl.BoolVar(&s.Export.AllowPartialManifests, "allow-partial-manifests", false, "ask for paged manifests (STU3)")
	fl.StringVar(&s.Export.OrganizeOutputBy, "organize-output-by", "", "organizeOutputBy (STU3)")
	fl.StringVar(&s.Export.Method, "method", configs.DefaultExportMethod, "kick-off method: auto, get or post")
	fl.StringVar(&s.Export.Compat, "compat", "", `"2018-draft" for servers on the 2018 draft`)
	fl.DurationVar((*time.Duration)(&s.Export.Timeout), "timeout", configs.DefaultExportTimeout, "overall export deadline; the job is DELETEd when it passes")
	fl.StringVar(&f.out, "out", "", "output folder (default ./export-<time>)")
	fl.StringVar(&f.statusURL, "status-url", "", "resume polling this status URL instead of kicking off")
	fl.IntVar(&s.HTTP.Parallel, "parallel", configs.DefaultParallel, "parallel downloads")
	fl.IntVar(&s.HTTP.Retries, "retries", configs.DefaultRetries, "retries per request")
	fl.DurationVar((*time.Duration)(&s.HTTP.MinWait), "min-wait", configs.DefaultMinWait, "shortest wait between polls or retries")
	fl.DurationVar((*time.Duration)(&s.HTTP.MaxWait), "max-wait", configs.DefaultMaxWait, "longest wait between polls or retries")
	fl.DurationVar((*time.Duration)(&s.HTTP.RequestTimeout), "request-timeout", configs.DefaultRequestTimeout, "per-request timeout (idle timeout for downloads)")
	fl.Int64Var(&f.maxLine, "max-line-bytes", configs.DefaultMaxLineBytes, "longest accepted NDJSON line")
	fl.BoolVar(&f.noDelete, "no-delete", false, "do not DELETE the export on the server after downloading")
	fl.BoolVar(&f.attachments, "attachments", false, "also fetch Attachment.url contents into attachments/")
	fl.BoolVar(&f.progressOn, "progress", true, "show progress bars (only on a terminal)")
	a := &s.Auth
	fl.StringVar(&a.Type, "auth-type", "", "none, smart, client_secret or bearer (default: inferred from the other --auth flags)")
	fl.StringVar(&a.Token, "auth-token", "", "static bearer token (prefer --auth-token-file)")
	fl.StringVar(&a.TokenFile, "auth-token-file", "", "file holding a bearer token (re-read after a 401)")
	fl.StringVar(&a.ClientID, "auth-client-id", "", "client_id (SMART Backend Services or client secret)")
	fl.StringVar(&a.PrivateKeyFile, "auth-private-key", "", "private key file (PEM, JWK or JWKS) for SMART Backend Services")
	fl.StringVar(&a.KeyID, "auth-kid", "", "key id for the assertion header")
	fl.StringVar(&a.Alg, "auth-alg", "", "ES384 (default) or RS384")
	fl.StringVar(&a.TokenURL, "auth-token-url", "", "token endpoint (default: discovered)")
	fl.StringSliceVar(&a.Scopes, "auth-scope", nil, "scopes to request (default system/*.rs)")
	fl.StringVar(&a.ClientSecret, "auth-client-secret", "", "client secret (prefer a config file with ${ENV})")
	return cmd
}

// resolve merges --config/--source with the flags the user actually set.
func (f *exportFlags) resolve(cmd *cobra.Command) error {
	if f.cfgPath != "" {
		if f.source == "" {
			return errors.New("--config needs --source NAME")
		}
		cfg, err := pipeline.LoadConfig(f.cfgPath)
		if err != nil {
			return &exitError{2, err}
		}
		src, ok := cfg.Source(f.source)
		if !ok {
			return fmt.Errorf("%s: no source named %q", f.cfgPath, f.source)
		}
		flagSrc := f.src
		f.src = src
		if !cmd.Flags().Changed("max-line-bytes") {
			f.maxLine = int64(cfg.Transform.MaxLineBytes)
		}
		override := func(name string, apply func()) {
			if cmd.Flags().Changed(name) {
				apply()
			}
		}
		e, fe := &f.src.Export, flagSrc.Export
		override("base-url", func() { f.src.BaseURL = flagSrc.BaseURL })
		override("level", func() { f.src.Level = flagSrc.Level })
		override("group", func() { f.src.GroupID = flagSrc.GroupID })
		override("type", func() { e.Types = fe.Types })
		override("since", func() { e.Since = fe.Since })
		override("until", func() { e.Until = fe.Until })
		override("type-filter", func() { e.TypeFilters = fe.TypeFilters })
		override("elements", func() { e.Elements = fe.Elements })
		override("patient", func() { e.Patients = fe.Patients })
		override("include-associated-data", func() { e.IncludeAssociatedData = fe.IncludeAssociatedData })
		override("output-format", func() { e.OutputFormat = fe.OutputFormat })
		override("lenient", func() { e.Lenient = fe.Lenient })
		override("allow-partial-manifests", func() { e.AllowPartialManifests = fe.AllowPartialManifests })
		override("organize-output-by", func() { e.OrganizeOutputBy = fe.OrganizeOutputBy })
		override("method", func() { e.Method = fe.Method })
		override("compat", func() { e.Compat = fe.Compat })
		override("timeout", func() { e.Timeout = fe.Timeout })
		h, fh := &f.src.HTTP, flagSrc.HTTP
		override("parallel", func() { h.Parallel = fh.Parallel })
		override("retries", func() { h.Retries = fh.Retries })
		override("min-wait", func() { h.MinWait = fh.MinWait })
		override("max-wait", func() { h.MaxWait = fh.MaxWait })
		override("request-timeout", func() { h.RequestTimeout = fh.RequestTimeout })
		for _, n := range []string{"auth-type", "auth-token", "auth-token-file", "auth-client-id", "auth-private-key",
			"auth-kid", "auth-alg", "auth-token-url", "auth-scope", "auth-client-secret"} {
			if cmd.Flags().Changed(n) {
				f.src.Auth = flagSrc.Auth // auth flags replace the config's auth as a whole
				break
			}
		}
	}
	if f.src.BaseURL == "" {
		return errors.New("--base-url (or --config with --source) is required")
	}
	if f.src.Level == configs.LevelGroup && f.src.GroupID == "" {
		return errors.New("--level group needs --group ID")
	}
	a := &f.src.Auth
	if a.Type == "" {
		switch {
		case a.PrivateKeyFile != "":
			a.Type = configs.AuthSMART
		case a.ClientSecret != "":
			a.Type = configs.AuthClientSecret
		case a.Token != "" || a.TokenFile != "":
			a.Type = configs.AuthBearer
		default:
			a.Type = configs.AuthNone
		}
	}
	if a.Type == configs.AuthSMART && a.Alg == "" {
		a.Alg = configs.DefaultSMARTAlg
	}
	if f.out == "" {
		f.out = "export-" + time.Now().UTC().Format("20060102T150405Z")
	}
	return nil
}

func runExport(ctx context.Context, g *globals, f *exportFlags, stderr io.Writer) error {
	res, err := pipeline.ExportDir(ctx, pipeline.ExportDirOptions{
		Source: f.src, Out: f.out, StatusURL: f.statusURL, NoDelete: f.noDelete, Attachments: f.attachments,
		MaxLineBytes: f.maxLine, Logger: g.logger(), Progress: newExportProgress(stderr, f.progressOn),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "exported %d files (%d resources) to %s; transactionTime %s\n", res.Files, res.Lines, f.out, res.TransactionTime)
	if res.ErrorFiles > 0 {
		fmt.Fprintf(stderr, "warning: the server reported %d error file(s) in %s: the export is partial\n", res.ErrorFiles, filepath.Join(f.out, "error"))
	}
	return nil
}

// exportProgress shows a spinner while the server prepares the export
// (described by X-Progress) and a bytes bar while files download. It is a
// fetch.Observer and prints nothing when stderr is not a terminal.
type exportProgress struct {
	w     io.Writer
	on    bool
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	total int
	done  atomic.Int64
}

func newExportProgress(w io.Writer, want bool) *exportProgress {
	on := false
	if f, ok := w.(*os.File); ok && want {
		on = term.IsTerminal(int(f.Fd()))
	}
	return &exportProgress{w: w, on: on}
}

// Waiting implements pipeline.ExportDirProgress.
func (p *exportProgress) Waiting() {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar = progressbar.NewOptions(-1, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription("waiting for the server"),
		progressbar.OptionSpinnerType(14), progressbar.OptionSetElapsedTime(true), progressbar.OptionClearOnFinish())
}

// Downloading implements pipeline.ExportDirProgress.
func (p *exportProgress) Downloading(files int) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = files
	p.bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(p.w), progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription(fmt.Sprintf("files 0/%d", files)), progressbar.OptionSetElapsedTime(true),
		progressbar.OptionClearOnFinish())
}

// FileDone implements pipeline.ExportDirProgress.
func (p *exportProgress) FileDone() {
	n := p.done.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("files %d/%d", n, p.total))
	}
}

// Finish implements pipeline.ExportDirProgress.
func (p *exportProgress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}

// Retry implements fetch.Observer.
func (p *exportProgress) Retry(string) {}

// HTTPStatus implements fetch.Observer.
func (p *exportProgress) HTTPStatus(string, int) {}

// Bytes implements fetch.Observer.
func (p *exportProgress) Bytes(kind string, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil && kind == "file" {
		_ = p.bar.Add64(n)
	}
}

// Progress implements fetch.Observer.
func (p *exportProgress) Progress(_, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Describe("server: " + text)
	}
}

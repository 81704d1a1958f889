package main

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/valyala/fastjson"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
	"github.com/fhirferry/fhirferry/sinks/postgres"
	"github.com/fhirferry/fhirferry/transform"
	"github.com/fhirferry/fhirferry/transform/view"
)

func newViewsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "views",
		Example: "  fhirferry views list\n  fhirferry views describe observation",
		Short:   "List, validate and try SQL-on-FHIR ViewDefinitions",
		Long: `views works with the SQL-on-FHIR v2 ViewDefinitions that become warehouse
tables: the embedded default pack and the folder named by the config's views.dir.`,
	}
	cmd.AddCommand(newViewsListCmd(g), newViewsDescribeCmd(g), newViewsValidateCmd(g), newViewsRunCmd(g), newViewsRebuildCmd(g))
	return cmd
}

// exitError carries a process exit code through cobra to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

func newViewsListCmd(g *globals) *cobra.Command {
	var cfgPath, dir string
	cmd := &cobra.Command{
		Use:     "list [--config FILE] [--dir DIR]",
		Example: "  fhirferry views list\n  fhirferry views list --config fhirferry.yaml",
		Short:   "List the views a run evaluates, with resource type and column count",
		Long: `list shows the default view pack, or with --config the views that config selects
(views.defaults and views.dir). A view in the folder that has a default view's name
replaces that default. Views that do not compile are listed with "-" columns and
make the command fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			defaults, dir, err := viewSource(g, cfgPath, dir)
			if err != nil {
				return err
			}
			files, err := schemas.ResolveViews(defaults, dir)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tRESOURCE\tCOLUMNS\tSOURCE")
			var errs []error
			for _, f := range files {
				v, err := view.Compile(f.JSON)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", f.Source, err))
					fmt.Fprintf(tw, "%s\t%s\t-\t%s\n", f.Name, resourceOf(f.JSON), f.Source)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", f.Name, v.Resource, len(v.Columns()), f.Source)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(errs) > 0 {
				return &exitError{1, fmt.Errorf("%d of %d views do not compile:\n%w", len(errs), len(files), errors.Join(errs...))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config file whose views section selects the views")
	cmd.Flags().StringVar(&dir, "dir", "", "folder of your own ViewDefinition JSON files (overrides views.dir)")
	return cmd
}

func newViewsDescribeCmd(g *globals) *cobra.Command {
	var cfgPath, dir string
	cmd := &cobra.Command{
		Use:   "describe NAME [--config FILE] [--dir DIR]",
		Short: "Print a view table's columns with their SQL types and descriptions",
		Long: `describe prints the table a view becomes in the warehouse: every column (the
namespace and source fhirferry adds, the view's own, and the <column>_precision
companions of date and dateTime columns) with its DuckDB and PostgreSQL type, its
FHIR type and its description. The same descriptions are the tables' and columns'
COMMENT in DuckDB and PostgreSQL.`,
		Example: `  fhirferry views describe observation
  fhirferry views describe my_view --config fhirferry.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			defaults, dir, err := viewSource(g, cfgPath, dir)
			if err != nil {
				return err
			}
			views, err := transform.LoadViews(defaults, dir)
			if err != nil {
				return err
			}
			eng, err := transform.New(transform.Options{Views: views})
			if err != nil {
				return err
			}
			for _, t := range eng.Tables() {
				if t.Kind == schemas.KindView && t.Name == args[0] {
					return describeTable(cmd.OutOrStdout(), t)
				}
			}
			names := make([]string, len(views))
			for i, v := range views {
				names[i] = v.Name
			}
			return &exitError{2, fmt.Errorf("no view named %q (views: %s)", args[0], strings.Join(names, ", "))}
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config file whose views section selects the views")
	cmd.Flags().StringVar(&dir, "dir", "", "folder of your own ViewDefinition JSON files (overrides views.dir)")
	return cmd
}

func describeTable(w io.Writer, t *schemas.Table) error {
	fmt.Fprintf(w, "%s (%s)\n", t.Name, t.ResourceType)
	if t.Description != "" {
		fmt.Fprintf(w, "%s\n", t.Description)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COLUMN\tDUCKDB\tPOSTGRESQL\tFHIR\tDESCRIPTION")
	for _, f := range t.StoredFields() {
		dt, err := duckdb.ColumnType(f)
		if err != nil {
			return err
		}
		pt, err := postgres.ColumnType(f)
		if err != nil {
			return err
		}
		ft, _ := f.Metadata.GetValue(view.MetaFHIRType)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Name, dt, pt, ft, schemas.Description(f))
	}
	return tw.Flush()
}

// viewSource is the views a command looks at: the default pack, or the
// ones cfgPath's views section selects; dir (--dir) overrides views.dir.
func viewSource(g *globals, cfgPath, dir string) (defaults bool, viewDir string, err error) {
	if cfgPath == "" {
		return true, dir, nil
	}
	cfg, err := loadConfig(g, cfgPath)
	if err != nil {
		return false, "", err
	}
	if dir == "" {
		dir = cfg.Views.Dir
	}
	return cfg.Views.DefaultsOn(), dir, nil
}

// resourceOf reads a view's resource for listing a view that does not compile.
func resourceOf(b []byte) string {
	var h struct {
		Resource any `json:"resource"`
	}
	if json.Unmarshal(b, &h) != nil {
		return "-"
	}
	if s, ok := h.Resource.(string); ok && s != "" {
		return s
	}
	return "-"
}

func newViewsValidateCmd(*globals) *cobra.Command {
	return &cobra.Command{
		Use:     "validate FILE|DIR...",
		Example: "  fhirferry views validate my-views/\n  fhirferry views validate my-views/bmi.json",
		Short:   "Compile ViewDefinitions and report every static error",
		Long: `validate compiles each ViewDefinition file (each *.json of a folder) as a run would
and prints every static validation error (bad FHIRPath, duplicate or invalid column
names, unionAll mismatches, undefined constants, ...) with the file and view name.
It exits with status 1 when any view is invalid.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			var files []string
			for _, a := range args {
				st, err := os.Stat(a)
				if err != nil {
					return err
				}
				if !st.IsDir() {
					files = append(files, a)
					continue
				}
				m, err := filepath.Glob(filepath.Join(a, "*.json"))
				if err != nil {
					return err
				}
				files = append(files, m...)
			}
			bad := 0
			for _, p := range files {
				problems := validateViewFile(p)
				if len(problems) == 0 {
					continue
				}
				bad++
				for _, pr := range problems {
					fmt.Fprintln(out, pr)
				}
			}
			if bad > 0 {
				return &exitError{1, fmt.Errorf("%d of %d views are invalid", bad, len(files))}
			}
			fmt.Fprintf(out, "%d views are valid\n", len(files))
			return nil
		},
	}
}

// validateViewFile returns one line per problem of the view at p, each
// starting with the file and, once known, the view's name.
func validateViewFile(p string) []string {
	b, err := os.ReadFile(p)
	if err != nil {
		return []string{err.Error()}
	}
	name := ""
	vf, err := schemas.ParseViewFile(p, b)
	var out []string
	if err != nil {
		out = append(out, err.Error())
	} else {
		name = vf.Name
	}
	if _, err := view.Compile(b); err != nil {
		prefix := p + ": "
		if name != "" {
			prefix = fmt.Sprintf("%s: view %s: ", p, name)
		}
		var ce *view.CompileError
		if !errors.As(err, &ce) {
			return append(out, prefix+err.Error())
		}
		if name == "" && ce.View != "" {
			prefix = fmt.Sprintf("%s: view %s: ", p, ce.View)
		}
		for _, pr := range ce.Problems {
			out = append(out, prefix+pr)
		}
	}
	return out
}

func newViewsRunCmd(*globals) *cobra.Command {
	var viewPath, format string
	var limit int
	cmd := &cobra.Command{
		Use:     "run --view FILE INPUT.ndjson[.gz] [--format table|csv|json|ndjson]",
		Example: "  fhirferry views run --view bmi.json Observation.ndjson --limit 10\n  fhirferry views run --view bmi.json Observation.ndjson.gz --format csv > bmi.csv",
		Short:   "Evaluate a view over an NDJSON file and print the rows",
		Long: `run evaluates one ViewDefinition over the resources of an NDJSON file (plain or
gzip) and prints its rows: table (aligned text for a terminal), csv (with a header),
json (one array) or ndjson (one object per line). Resources of other types are skipped.
A line that is not JSON, or a value a column cannot hold, stops the run with the
file and line.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(viewPath)
			if err != nil {
				return err
			}
			v, err := view.Compile(b)
			if err != nil {
				return fmt.Errorf("%s: %w", viewPath, err)
			}
			w, err := newRowWriter(format, cmd.OutOrStdout(), columnNames(v))
			if err != nil {
				return err
			}
			n, runErr := runView(cmd, v, args[0], limit, w)
			if err := w.close(); err != nil && runErr == nil {
				runErr = err
			}
			if runErr != nil {
				return runErr
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d rows\n", n)
			return nil
		},
	}
	cmd.Flags().StringVar(&viewPath, "view", "", "ViewDefinition JSON file (required)")
	cmd.Flags().StringVar(&format, "format", "table", "table, csv, json or ndjson")
	cmd.Flags().IntVar(&limit, "limit", 0, "stop after this many rows (0: all)")
	_ = cmd.MarkFlagRequired("view")
	return cmd
}

func columnNames(v *view.View) []string {
	cols := v.Columns()
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.Name
	}
	return out
}

// errLimit stops the evaluation once --limit rows are out.
var errLimit = errors.New("row limit reached")

func runView(cmd *cobra.Command, v *view.View, input string, limit int, w rowWriter) (int, error) {
	ctx := cmd.Context()
	f, err := transform.Open(input)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	lr := transform.NewLineReader(bufio.NewReaderSize(f, 1<<16), 256<<20)
	var p fastjson.Parser
	n := 0
	for {
		if ctx != nil && ctx.Err() != nil {
			return n, ctx.Err()
		}
		line, no, err := lr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("%s: line %d: %w", input, no, err)
		}
		res, err := p.ParseBytes(line)
		if err != nil {
			return n, fmt.Errorf("%s: line %d: invalid JSON: %w", input, no, err)
		}
		err = v.Eval(res, func(row []view.Value) error {
			if limit > 0 && n >= limit {
				return errLimit
			}
			n++
			return w.write(row)
		})
		if errors.Is(err, errLimit) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("%s: line %d: %w", input, no, err)
		}
	}
}

// rowWriter prints view rows in one output format.
type rowWriter interface {
	write(row []view.Value) error
	close() error
}

func newRowWriter(format string, w io.Writer, cols []string) (rowWriter, error) {
	switch format {
	case "table":
		return &tableWriter{w: w, cols: cols}, nil
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.Write(cols); err != nil {
			return nil, err
		}
		return &csvWriter{w: cw}, nil
	case "json", "ndjson":
		return &jsonWriter{w: bufio.NewWriter(w), cols: cols, array: format == "json"}, nil
	}
	return nil, fmt.Errorf("--format %q: want table, csv, json or ndjson", format)
}

type csvWriter struct {
	w   *csv.Writer
	rec []string
}

func (c *csvWriter) write(row []view.Value) error {
	c.rec = c.rec[:0]
	for _, v := range row {
		s, _ := cellText(v)
		c.rec = append(c.rec, s)
	}
	return c.w.Write(c.rec)
}

func (c *csvWriter) close() error { c.w.Flush(); return c.w.Error() }

type jsonWriter struct {
	w     *bufio.Writer
	cols  []string
	array bool
	n     int
}

func (j *jsonWriter) write(row []view.Value) error {
	switch {
	case j.array && j.n == 0:
		j.w.WriteString("[\n")
	case j.array:
		j.w.WriteString(",\n")
	}
	j.n++
	j.w.WriteByte('{')
	for i, v := range row {
		if i > 0 {
			j.w.WriteByte(',')
		}
		k, _ := json.Marshal(j.cols[i])
		j.w.Write(k)
		j.w.WriteByte(':')
		j.w.Write(cellJSON(v))
	}
	j.w.WriteByte('}')
	if !j.array {
		j.w.WriteByte('\n')
	}
	return nil
}

func (j *jsonWriter) close() error {
	if j.array {
		if j.n == 0 {
			j.w.WriteString("[")
		}
		j.w.WriteString("\n]\n")
	}
	return j.w.Flush()
}

// tableWriter buffers the rows to align the columns; use --limit on big
// inputs.
type tableWriter struct {
	w    io.Writer
	cols []string
	rows [][]string
}

func (t *tableWriter) write(row []view.Value) error {
	r := make([]string, len(row))
	for i, v := range row {
		s, null := cellText(v)
		if null {
			s = "NULL"
		}
		r[i] = strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
	}
	t.rows = append(t.rows, r)
	return nil
}

func (t *tableWriter) close() error {
	width := make([]int, len(t.cols))
	for i, c := range t.cols {
		width[i] = utf8.RuneCountInString(c)
	}
	for _, r := range t.rows {
		for i, s := range r {
			width[i] = max(width[i], utf8.RuneCountInString(s))
		}
	}
	bw := bufio.NewWriter(t.w)
	line := func(cells []string) {
		var sb strings.Builder
		for i, s := range cells {
			if i > 0 {
				sb.WriteString("  ")
			}
			sb.WriteString(s)
			if i < len(cells)-1 {
				sb.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(s)))
			}
		}
		bw.WriteString(strings.TrimRight(sb.String(), " "))
		bw.WriteByte('\n')
	}
	line(t.cols)
	dashes := make([]string, len(t.cols))
	for i := range dashes {
		dashes[i] = strings.Repeat("-", width[i])
	}
	line(dashes)
	for _, r := range t.rows {
		line(r)
	}
	return bw.Flush()
}

// cellText renders a value as text (CSV, table); null reports a SQL NULL.
func cellText(v view.Value) (s string, null bool) {
	switch x := any(v).(type) {
	case nil:
		return "", true
	case string:
		return x, false
	case bool:
		return strconv.FormatBool(x), false
	case int64:
		return strconv.FormatInt(x, 10), false
	}
	return string(cellJSON(v)), false
}

// cellJSON renders a value as JSON.
func cellJSON(v view.Value) []byte {
	b, err := json.Marshal(any(v))
	if err != nil {
		b, _ = json.Marshal(fmt.Sprint(v))
	}
	return b
}

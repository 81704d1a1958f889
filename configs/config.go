// Package configs is fhirferry's configuration model: YAML decoded strictly
// (an unknown key is an error that names its line), ${ENV} expansion for
// secrets, defaults, and one validation pass that reports every problem.
package configs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config is a whole fhirferry configuration file.
type Config struct {
	// DataDir holds run state, spooled files and the default DuckDB file.
	DataDir string `yaml:"data_dir"`
	// MemoryBudget is the memory the whole process is sized for (default
	// 512MiB): the Go soft limit, every DuckDB sink's memory_limit and
	// threads, the transform's batches, queue and workers and each sink's
	// staging are derived from it (SplitBudget) unless set explicitly.
	MemoryBudget ByteSize `yaml:"memory_budget"`
	// MemoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT, which
	// wins when set); 0 derives it from MemoryBudget.
	MemoryLimit ByteSize        `yaml:"memory_limit"`
	Log         Log             `yaml:"log"`
	Admin       Admin           `yaml:"admin"`
	Views       Views           `yaml:"views"`
	Measures    Measures        `yaml:"measures"`
	Transform   TransformConfig `yaml:"transform"`
	Daemon      Daemon          `yaml:"daemon"`
	Sources     []Source        `yaml:"sources"`
	Sinks       []Sink          `yaml:"sinks"`
}

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Admin is the daemon's HTTP endpoint: /metrics, /healthz, /readyz, /status
// and the local trigger API. It binds to localhost unless told otherwise.
type Admin struct {
	Listen string `yaml:"listen"`
}

// Measures configures the quality-measure pack.
type Measures struct {
	// ValueSets is a file or folder of FHIR ValueSet expansions, loaded
	// into every sink's valueset_code table before measures are computed.
	ValueSets string `yaml:"valuesets"`
}

// Views selects the SQL-on-FHIR ViewDefinitions the pipeline evaluates.
type Views struct {
	// Defaults turns the embedded default pack on (the default).
	Defaults *bool `yaml:"defaults"`
	// Dir is a folder of the user's own ViewDefinition JSON files.
	Dir string `yaml:"dir"`
}

// DefaultsOn reports whether the embedded view pack is used.
func (v Views) DefaultsOn() bool { return v.Defaults == nil || *v.Defaults }

// TransformConfig bounds the streaming transform's memory and parallelism.
// A zero BatchBytes, Workers, QueueDepth or MaxLineBytes is derived from
// the memory budget and the cores the process may use.
type TransformConfig struct {
	BatchRows    int      `yaml:"batch_rows"`
	BatchBytes   ByteSize `yaml:"batch_bytes"`
	Workers      int      `yaml:"workers"`
	QueueDepth   int      `yaml:"queue_depth"`
	MaxLineBytes ByteSize `yaml:"max_line_bytes"`
}

// Daemon configures the scheduler of `fhirferry daemon`.
type Daemon struct {
	MaxConcurrentRuns int      `yaml:"max_concurrent_runs"`
	Jitter            Duration `yaml:"jitter"`
	StopTimeout       Duration `yaml:"stop_timeout"`
}

// Export levels.
const (
	LevelSystem  = "system"
	LevelPatient = "patient"
	LevelGroup   = "group"
)

// Source is one Bulk Data server (and export level) to pull from.
type Source struct {
	Name    string `yaml:"name"`
	BaseURL string `yaml:"base_url"`
	// Namespace is where the source's resources live: their identity is
	// (namespace, type, id), since ids are unique only within one server.
	// It defaults to the normalised base URL (NamespaceOf), so sources of
	// one server share rows and different servers never collide; set it to
	// a stable name that survives a base-URL change.
	Namespace string   `yaml:"namespace"`
	Level     string   `yaml:"level"`
	GroupID   string   `yaml:"group_id"`
	Schedule  string   `yaml:"schedule"`
	TimeZone  string   `yaml:"timezone"`
	Sinks     []string `yaml:"sinks"` // names; empty means every sink
	Export    Export   `yaml:"export"`
	HTTP      HTTP     `yaml:"http"`
	Auth      Auth     `yaml:"auth"`
}

// Export holds the kick-off parameters and export-level behaviour.
type Export struct {
	Types                 []string `yaml:"types"`
	TypeFilters           []string `yaml:"type_filters"`
	Elements              []string `yaml:"elements"`
	Patients              []string `yaml:"patients"`
	IncludeAssociatedData []string `yaml:"include_associated_data"`
	// Since is the _since of the first run, when the sinks have no checkpoint.
	Since string `yaml:"since"`
	Until string `yaml:"until"`
	// OutputFormat is sent only when set (the spec default is fhir+ndjson).
	OutputFormat          string `yaml:"output_format"`
	AllowPartialManifests bool   `yaml:"allow_partial_manifests"`
	OrganizeOutputBy      string `yaml:"organize_output_by"`
	Lenient               bool   `yaml:"lenient"`
	// Method is auto (GET unless patient is set), get, or post.
	Method string `yaml:"method"`
	// Compat is "" or "2018-draft" for servers on the first Connectathon draft.
	Compat string `yaml:"compat"`
	// DeleteAfterDownload sends DELETE to the status URL once every file is stored.
	DeleteAfterDownload *bool    `yaml:"delete_after_download"`
	Timeout             Duration `yaml:"timeout"`
	Attachments         bool     `yaml:"attachments"`
	// BackfillNewMembers runs the Group membership pattern (C49).
	BackfillNewMembers bool `yaml:"backfill_new_members"`
	// FormerMembers is what becomes of the data of patients who leave a
	// Group: FormerKeep (default) or FormerPurge.
	FormerMembers string `yaml:"former_members"`
}

// What export.former_members may say.
const (
	FormerKeep  = "keep"
	FormerPurge = "purge"
)

// DeleteAfter reports whether the export is DELETEd after download (default true).
func (e Export) DeleteAfter() bool { return e.DeleteAfterDownload == nil || *e.DeleteAfterDownload }

// HTTP tunes the Bulk Data client.
type HTTP struct {
	Parallel       int      `yaml:"parallel"`
	RequestTimeout Duration `yaml:"request_timeout"`
	Retries        int      `yaml:"retries"`
	MinWait        Duration `yaml:"min_wait"`
	MaxWait        Duration `yaml:"max_wait"`
	CAFile         string   `yaml:"ca_file"`
	UserAgent      string   `yaml:"user_agent"`
}

// Auth types.
const (
	AuthNone         = "none"
	AuthSMART        = "smart"
	AuthClientSecret = "client_secret"
	AuthBearer       = "bearer"
)

// Auth configures how fhirferry authorizes to a source.
type Auth struct {
	Type string `yaml:"type"`
	// TokenURL overrides discovery through /.well-known/smart-configuration.
	TokenURL       string   `yaml:"token_url"`
	ClientID       string   `yaml:"client_id"`
	PrivateKeyFile string   `yaml:"private_key_file"` // PEM, JWK or JWKS
	KeyID          string   `yaml:"kid"`
	Alg            string   `yaml:"alg"` // ES384 or RS384
	JKU            string   `yaml:"jku"`
	Scopes         []string `yaml:"scopes"`
	ClientSecret   string   `yaml:"client_secret"`
	Token          string   `yaml:"token"`
	TokenFile      string   `yaml:"token_file"`
}

// Sink types.
const (
	SinkDuckDB   = "duckdb"
	SinkPostgres = "postgres"
	SinkParquet  = "parquet"
)

// Sink is one destination; exactly the section matching Type is used.
type Sink struct {
	Name     string       `yaml:"name"`
	Type     string       `yaml:"type"`
	DuckDB   DuckDBSink   `yaml:"duckdb"`
	Postgres PostgresSink `yaml:"postgres"`
	Parquet  ParquetSink  `yaml:"parquet"`
	// StagingBytes bounds the Arrow row groups a duckdb or parquet sink
	// holds in memory across all its tables before writing them; 0
	// derives it from the memory budget.
	StagingBytes ByteSize `yaml:"staging_bytes"`
}

// DuckDBSink configures the embedded DuckDB warehouse.
type DuckDBSink struct {
	// Path is the warehouse analysts open. With Snapshot (the default) it
	// is a read-only copy the sink publishes after each commit, and the
	// sink writes Path+".writer" (WriterPath).
	Path string `yaml:"path"`
	// Snapshot publishes the copy at Path, so that readers never meet the
	// writer's lock; false makes Path the file the sink writes (one process
	// at a time may open it).
	Snapshot    *bool  `yaml:"snapshot"`
	Threads     int    `yaml:"threads"`
	MemoryLimit string `yaml:"memory_limit"`
	// StreamThreads is DuckDB's thread count while a run's raw rows
	// stream in alongside the transform (0: 1); Commit runs with Threads.
	StreamThreads int `yaml:"stream_threads"`
	// CommitMemoryLimit is DuckDB's memory_limit while an incremental run
	// commits, when the transform is done and most of the Go side's share
	// is free ("": the memory_limit plus half the Go soft limit's share,
	// see Split).
	CommitMemoryLimit string `yaml:"commit_memory_limit"`
}

// SnapshotOn reports whether readers get a published copy (the default).
func (d DuckDBSink) SnapshotOn() bool { return d.Snapshot == nil || *d.Snapshot }

// WriterPath is the file the sink writes: Path, or with SnapshotOn the
// working copy beside it.
func (d DuckDBSink) WriterPath() string {
	if d.SnapshotOn() && d.Path != ":memory:" {
		return d.Path + ".writer"
	}
	return d.Path
}

// PostgresSink configures the PostgreSQL warehouse.
type PostgresSink struct {
	DSN    string `yaml:"dsn"`
	Schema string `yaml:"schema"`
}

// ParquetSink configures the Parquet lake.
type ParquetSink struct {
	Dir         string `yaml:"dir"`
	Compression string `yaml:"compression"`
}

// Load reads, expands, decodes and validates the file at path. Relative
// paths in it (data_dir, views.dir, key, token and CA files, the DuckDB
// file, the lake) are relative to the file's folder.
func Load(path string, checks ...Check) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(data, checks...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	cfg.resolvePaths(abs)
	return cfg, nil
}

// Parse decodes YAML strictly, applies defaults and validates. Every
// problem found is reported in one error.
func Parse(data []byte, checks ...Check) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	cfg := Default()
	var p problems
	if len(root.Content) > 0 {
		doc := root.Content[0]
		// Unknown keys are found on the node tree, where lines are the user's;
		// yaml.v3 enforces KnownFields only on a Decoder, not on Node.Decode.
		p = append(p, unknownKeys(doc, reflect.TypeOf(cfg), "")...)
		p = append(p, expandEnv(doc)...)
		if err := doc.Decode(&cfg); err != nil {
			return nil, append(p, err.Error()).err()
		}
	}
	cfg.applyDefaults()
	var ve *Error
	if err := cfg.Validate(checks...); errors.As(err, &ve) {
		p = append(p, ve.Problems...)
	} else if err != nil {
		return nil, err
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// unknownKeys lists every mapping key of n that has no field in t.
func unknownKeys(n *yaml.Node, t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				out = append(out, fmt.Sprintf("line %d: unknown key %q in %s", k.Line, k.Value, orRoot(path)))
				continue
			}
			out = append(out, unknownKeys(v, ft, join(path, k.Value))...)
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, c := range n.Content {
			out = append(out, unknownKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandEnv replaces ${NAME} and ${NAME:-default} in scalar values. An
// unset variable without a default is a problem naming the line, so a
// missing secret is caught at start-up rather than sent as "".
func expandEnv(n *yaml.Node) []string {
	var problems []string
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
			n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
				sub := envRef.FindStringSubmatch(m)
				if v, ok := os.LookupEnv(sub[1]); ok {
					return v
				}
				if sub[2] != "" {
					return sub[3]
				}
				problems = append(problems, fmt.Sprintf("line %d: environment variable %s is not set", n.Line, sub[1]))
				return ""
			})
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return problems
}

// Default is the configuration of an empty file: every top-level default
// set, no sources and no sinks.
func Default() Config {
	return Config{
		DataDir: DefaultDataDir,
		Log:     Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Admin:   Admin{Listen: DefaultAdminListen},
		Transform: TransformConfig{
			// The rest is derived from the memory budget (applyBudget).
			BatchRows: DefaultBatchRows,
		},
		Daemon: Daemon{MaxConcurrentRuns: DefaultMaxConcurrentRuns, StopTimeout: Duration(DefaultStopTimeout)},
	}
}

// DefaultSource is a source entry before its keys are decoded onto it.
func DefaultSource() Source {
	return Source{
		Level: DefaultLevel, TimeZone: DefaultTimeZone,
		Export: Export{Method: DefaultExportMethod, Timeout: Duration(DefaultExportTimeout), FormerMembers: FormerKeep},
		HTTP: HTTP{
			Parallel: DefaultParallel, Retries: DefaultRetries, MinWait: Duration(DefaultMinWait),
			MaxWait: Duration(DefaultMaxWait), RequestTimeout: Duration(DefaultRequestTimeout), UserAgent: DefaultUserAgent,
		},
		Auth: Auth{Type: AuthNone},
	}
}

// DefaultSink is a sink entry before its keys are decoded onto it.
func DefaultSink() Sink {
	return Sink{
		Postgres: PostgresSink{Schema: DefaultPostgresSchema},
		Parquet:  ParquetSink{Compression: DefaultParquetCompression},
	}
}

// UnmarshalYAML decodes a source onto DefaultSource, so a key the file
// sets is kept as written (http.retries: 0 is no retries) and only absent
// keys take their default.
func (s *Source) UnmarshalYAML(n *yaml.Node) error {
	*s = DefaultSource()
	type plain Source
	return n.Decode((*plain)(s))
}

// UnmarshalYAML decodes a sink onto DefaultSink (see Source.UnmarshalYAML).
func (k *Sink) UnmarshalYAML(n *yaml.Node) error {
	*k = DefaultSink()
	type plain Sink
	return n.Decode((*plain)(k))
}

// applyDefaults sets the defaults that depend on other keys: they are
// applied after decoding, to what the file left empty (an empty value is
// never a valid setting of these).
func (c *Config) applyDefaults() {
	for i := range c.Sources {
		a := &c.Sources[i].Auth
		if a.Type == AuthSMART && a.Alg == "" {
			a.Alg = DefaultSMARTAlg
		}
		if a.Type == AuthSMART && len(a.Scopes) == 0 {
			a.Scopes = []string{DefaultSMARTScope}
		}
	}
	for i := range c.Sinks {
		k := &c.Sinks[i]
		if k.Name == "" {
			k.Name = k.Type
		}
		if k.Type == SinkDuckDB && k.DuckDB.Path == "" {
			k.DuckDB.Path = c.DataDir + "/" + DefaultDuckDBFile
		}
	}
	c.applyBudget()
}

// SinksOf returns the sinks a source writes to.
func (c *Config) SinksOf(s Source) []Sink {
	if len(s.Sinks) == 0 {
		return c.Sinks
	}
	var out []Sink
	for _, k := range c.Sinks {
		for _, n := range s.Sinks {
			if k.Name == n {
				out = append(out, k)
			}
		}
	}
	return out
}

// Source returns the named source.
func (c *Config) Source(name string) (Source, bool) {
	for _, s := range c.Sources {
		if s.Name == name {
			return s, true
		}
	}
	return Source{}, false
}

// resolvePaths makes the config's relative paths relative to base (the
// config file's folder), so a config means the same from any working
// directory.
func (c *Config) resolvePaths(base string) {
	abs := func(p *string) {
		if *p != "" && *p != ":memory:" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	abs(&c.DataDir)
	abs(&c.Views.Dir)
	abs(&c.Measures.ValueSets)
	for i := range c.Sources {
		a, h := &c.Sources[i].Auth, &c.Sources[i].HTTP
		abs(&a.PrivateKeyFile)
		abs(&a.TokenFile)
		abs(&h.CAFile)
	}
	for i := range c.Sinks {
		abs(&c.Sinks[i].DuckDB.Path)
		abs(&c.Sinks[i].Parquet.Dir)
	}
}

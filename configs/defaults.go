package configs

import "time"

// The defaults of every setting, in one place: the config file's defaults
// (applied where a key is absent) and the zero-value defaults of the
// packages' own Options (fetch.Options, transform.Options) are these.
// A key the user sets is honoured as written, zero included where zero
// means something (http.retries: 0 is no retries).
const (
	DefaultDataDir     = "./fhirferry-data"
	DefaultLogLevel    = "info"
	DefaultLogFormat   = "text"
	DefaultAdminListen = "127.0.0.1:9464"

	// The transform's defaults where no config applies (a package's own
	// zero Options); a config derives them from memory_budget instead.
	DefaultBatchRows = 8192
	// (SplitBudget of DefaultMemoryBudget: a test keeps them equal).
	DefaultBatchBytes   = 256 << 10
	DefaultMaxLineBytes = 32 << 20

	DefaultMaxConcurrentRuns = 1
	DefaultStopTimeout       = 30 * time.Second

	DefaultLevel         = LevelSystem
	DefaultTimeZone      = "UTC"
	DefaultExportMethod  = "auto"
	DefaultExportTimeout = 6 * time.Hour

	DefaultParallel       = 5
	DefaultRetries        = 5
	DefaultMinWait        = 2 * time.Second
	DefaultMaxWait        = 15 * time.Minute
	DefaultRequestTimeout = 5 * time.Minute
	DefaultUserAgent      = "fhirferry"

	DefaultSMARTAlg   = "ES384"
	DefaultSMARTScope = "system/*.rs"

	// DefaultDuckDBFile is the DuckDB file's name in data_dir.
	DefaultDuckDBFile         = "warehouse.duckdb"
	DefaultPostgresSchema     = "fhir"
	DefaultParquetCompression = "zstd"
)

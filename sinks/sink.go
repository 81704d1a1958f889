// Package sinks is the contract between the pipeline and the warehouses it
// loads: a [Sink] stores runs, a [Txn] is one run's write, and the optional
// [Rebuilder] and [FailureRecorder] capabilities serve `views rebuild` and
// the runs table. One sub-package implements it per warehouse (duckdb,
// postgres, parquet); each owns its SQL, its transaction and its
// reading-back. This package imports only the leaves (schemas, configs).
package sinks

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/schemas/mempool"
)

// Env is what every sink is built with besides its config section.
type Env struct {
	// Name is the sink's configured name: its metrics label and log attribute.
	Name string
	// Logger is tagged with the sink; nil discards.
	Logger *slog.Logger
	// Alloc is the process's shared Arrow buffer pool (mempool), from which
	// sinks that write Parquet draw page buffers; nil gives the sink a
	// private pool.
	Alloc memory.Allocator
	// StagingBytes bounds the Arrow bytes a sink holds in memory for row
	// groups not yet written, across all its tables (configs.Sink's
	// staging_bytes, derived from the memory budget); 0 lets the sink pick.
	StagingBytes int64
}

// Log returns e.Logger, or a logger that discards when it is nil.
func (e Env) Log() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

// Allocator returns e.Alloc, or a fresh pool when it is nil.
func (e Env) Allocator() memory.Allocator {
	if e.Alloc == nil {
		return mempool.NewPoolAllocator(mempool.DefaultBytes)
	}
	return e.Alloc
}

// Factory builds a sink from its config section. It validates and opens
// what the sink needs; a returned error names the sink.
type Factory func(ctx context.Context, cfg configs.Sink, env Env) (Sink, error)

// RunInfo identifies the export a run applies. It is handed to every sink's
// Begin and stored with the sink's checkpoint.
type RunInfo struct {
	RunID  string
	Source string
	// Namespace is the source's namespace: every row of the run belongs to
	// it (schemas.ColNamespace), and the run's upserts, deletes and view
	// replacements touch only rows of it.
	Namespace string
	// ExportID identifies the export (its status URL, or a digest of a
	// loaded folder). A sink whose checkpoint already has this ExportID
	// holds the run and skips it.
	ExportID string
	// Since is the _since the export was started with ("" for a full export).
	Since string
	// TransactionTime is the manifest's transactionTime, verbatim: the next _since.
	TransactionTime string
	Started         time.Time
}

// RunSummary is what a sink records about a run in its runs table.
type RunSummary struct {
	Finished  time.Time
	Outcome   string // "success" for a committed run
	Files     int64
	Bytes     int64
	Resources int64
	Deleted   int64
	Rejects   int64
	Outcomes  int64 // OperationOutcome issues from error files
	// Membership is the Group's membership as the run saw it; nil when the
	// run did not learn it (not a Group source, or a server that neither
	// reads Groups nor exports them). The sink applies it to its
	// group_member table in the run's transaction.
	Membership *Membership
	// MembersFrom says how a Group source's run learnt the membership
	// ("group read", "export", or "omitted" when the server gave it no
	// way); "" for other sources. Recorded in the runs table.
	MembersFrom string
	// Purged counts the resources of former Group members the run removed
	// (export.former_members: purge), among them deletions the run wrote as
	// schemas.Deleted rows. Recorded in the runs table.
	Purged int64
}

// Membership is one Group's members at a run. Applying it to the
// group_member table (schemas.GroupMemberTable) of the run's namespace and
// source opens a row (joined_at = At) for each patient without an open one,
// and closes the open rows (left_at = At) of patients no longer listed: a
// member who leaves and rejoins has two rows.
type Membership struct {
	Group string
	// Patients are the active members' Patient ids (no "Patient/"),
	// sorted and distinct. Empty is an empty Group: everyone left.
	Patients []string
	// At is when the run saw it: the export's transactionTime.
	At time.Time
}

// Checkpoint is the last export a sink committed for a source.
type Checkpoint struct {
	Source          string
	TransactionTime string // verbatim from the manifest
	ExportID        string
	CommittedAt     time.Time
}

// Sink stores runs durably. A Sink serves one Txn at a time; Close is called
// once, after the last Txn has ended.
type Sink interface {
	// Name is the sink's configured name, used in metrics and logs.
	Name() string
	// Prepare creates the metadata tables and the given tables, adding
	// columns a table lacks. It is called before the first Begin and again
	// when the set of views changes.
	Prepare(ctx context.Context, tables []*schemas.Table) error
	// Checkpoint returns the source's checkpoint; ok is false when the sink
	// has never committed a run of the source.
	Checkpoint(ctx context.Context, source string) (cp Checkpoint, ok bool, err error)
	// Begin starts the write of one run.
	Begin(ctx context.Context, run RunInfo) (Txn, error)
	Close() error
}

// Txn is one run's write to one sink. Its methods are called from one
// goroutine; after Commit or Rollback it must not be reused.
type Txn interface {
	// Write stages a batch. It takes ownership of b and releases it, also
	// when it returns an error.
	Write(ctx context.Context, b schemas.Batch) error
	// Commit applies everything staged, records the run and stores the
	// checkpoint (run.TransactionTime, run.ExportID) in one transaction.
	// Nothing of the run is visible before Commit returns nil.
	Commit(ctx context.Context, sum RunSummary) error
	// Rollback discards the run. It is safe after a failed Commit and
	// after Commit (then it does nothing).
	Rollback(ctx context.Context) error
}

// ErrTxnDone is returned by a Txn used after Commit or Rollback.
var ErrTxnDone = errors.New("sinks: transaction already ended")

// Rebuilder is implemented by sinks that can rebuild a view table from their
// raw landing, so a new or changed view gets rows for every stored resource
// without a new export (`fhirferry views rebuild`).
type Rebuilder interface {
	// ScanRaw streams the current raw resources of one type, ordered by
	// namespace and source. r.JSON is valid only during the call to fn; an
	// error from fn stops the scan and is returned.
	ScanRaw(ctx context.Context, resourceType string, fn func(r schemas.RawResource) error) error
	// ReplaceTable atomically replaces a table's rows with the batches
	// produce emits (creating or altering the table to t's schema). emit
	// takes ownership of each batch and releases it, also on error; produce
	// must return emit's error. Batches have t.Schema (ColSeq included, not
	// stored). On any error the table keeps its previous rows. ScanRaw may
	// be called from produce, and then reads the landing as it was when
	// ReplaceTable started: no run of this process commits in between.
	ReplaceTable(ctx context.Context, t *schemas.Table, produce func(emit func(schemas.Batch) error) error) error
	// Rows counts a table's rows: 0 when the sink has no such table.
	Rows(ctx context.Context, table string) (int64, error)
	// HasResources reports whether the raw landing holds a resource of the type.
	HasResources(ctx context.Context, resourceType string) (bool, error)
	// ViewDefinitions reads the schemas.ViewDefinitions table by view name
	// (empty when the sink has none yet). It is written with ReplaceTable.
	ViewDefinitions(ctx context.Context) (map[string]StoredView, error)
}

// StoredView is one row of a sink's view_definitions table: the definition
// a view table was last built from.
type StoredView struct {
	ResourceType string
	Hash         string
	UpdatedAt    time.Time
}

// TableInfo is one table a sink holds, with its row count.
type TableInfo struct {
	Name string
	Rows int64
}

// Querier is implemented by sinks an analyst reads with SQL (the DuckDB
// file, PostgreSQL): Query runs a read-only statement in the sink's own
// dialect, with the sink's tables on the search path.
type Querier interface {
	Query(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	// Tables lists the sink's tables with their row counts, by name.
	Tables(ctx context.Context) ([]TableInfo, error)
}

// SchemaVersion is the shape of the tables this build writes. Version 2
// keys every row by namespace (schemas.ColNamespace), stamps the source on
// view rows and types the view columns; tables of version 1 are migrated
// on first start (Migrator).
const SchemaVersion = 2

// Migration is what a sink needs to bring tables an older fhirferry wrote
// up to SchemaVersion.
type Migration struct {
	// Namespaces maps the configured sources to their namespaces. Rows of
	// a source not listed (a `fhirferry load` folder, a removed source)
	// get the source's name as their namespace.
	Namespaces map[string]string
}

// NamespaceOf is the namespace Migrate gives the rows of source.
func (m Migration) NamespaceOf(source string) string {
	if ns, ok := m.Namespaces[source]; ok && ns != "" {
		return ns
	}
	return source
}

// MigrationReport says what Migrate did.
type MigrationReport struct {
	From, To int
	// Collisions describes sources of different namespaces that wrote the
	// warehouse before namespaces existed: where their resources had the
	// same type and id, one overwrote the other, which a migration cannot
	// undo (re-export the source to recover its resources).
	Collisions []string
	// RebuildViews: the view tables were dropped and must be rebuilt from
	// the raw landing before the next run.
	RebuildViews bool
}

// Migrator is implemented by sinks whose tables carry a schema version.
// Migrate is called before Prepare; on a fresh warehouse it only records
// SchemaVersion. It is idempotent: a crash mid-way is repeated.
type Migrator interface {
	Migrate(ctx context.Context, m Migration) (MigrationReport, error)
}

// Flusher is implemented by sinks that make their writes visible to
// outside readers in a step of their own (the DuckDB sink publishes a
// read-only copy). A Commit flushes on its own; the pipeline calls Flush
// after writes outside a run (a views rebuild, a migration).
type Flusher interface {
	Flush(ctx context.Context) error
}

// FailureRecorder is implemented by sinks that record runs which did not
// commit (outcome "failed" or "cancelled") in their runs table, so analysts
// see every attempt, not only the successes. A run that later succeeds
// under the same RunID replaces its failure row.
type FailureRecorder interface {
	RecordFailure(ctx context.Context, run RunInfo, sum RunSummary) error
}

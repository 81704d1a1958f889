package pipeline

import (
	"context"
	"errors"
	"time"
)

// RunInfo identifies the export a run applies. It is handed to every sink's
// Begin and stored with the sink's checkpoint.
type RunInfo struct {
	RunID  string
	Source string
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
	Prepare(ctx context.Context, tables []*Table) error
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
	Write(ctx context.Context, b Batch) error
	// Commit applies everything staged, records the run and stores the
	// checkpoint (run.TransactionTime, run.ExportID) in one transaction.
	// Nothing of the run is visible before Commit returns nil.
	Commit(ctx context.Context, sum RunSummary) error
	// Rollback discards the run. It is safe after a failed Commit and
	// after Commit (then it does nothing).
	Rollback(ctx context.Context) error
}

// ErrTxnDone is returned by a Txn used after Commit or Rollback.
var ErrTxnDone = errors.New("pipeline: transaction already ended")

// Rebuilder is implemented by sinks that can rebuild a view table from their
// raw landing, so a new or changed view gets rows for every stored resource
// without a new export (`fhirferry views rebuild`).
type Rebuilder interface {
	// ScanRaw streams the current raw resources of one type (the resource
	// JSON and its id). resource is valid only during the call to fn; an
	// error from fn stops the scan and is returned.
	ScanRaw(ctx context.Context, resourceType string, fn func(id string, resource []byte) error) error
	// ReplaceTable atomically replaces a table's rows with the batches
	// produce emits (creating or altering the table to t's schema). emit
	// takes ownership of each batch and releases it, also on error; produce
	// must return emit's error. Batches have t.Schema (ColSeq included, not
	// stored). On any error the table keeps its previous rows. ScanRaw may
	// be called from produce, and then reads the landing as it was when
	// ReplaceTable started: no run of this process commits in between.
	ReplaceTable(ctx context.Context, t *Table, produce func(emit func(Batch) error) error) error
}

// FailureRecorder is implemented by sinks that record runs which did not
// commit (outcome "failed" or "cancelled") in their runs table, so analysts
// see every attempt, not only the successes. A run that later succeeds
// under the same RunID replaces its failure row.
type FailureRecorder interface {
	RecordFailure(ctx context.Context, run RunInfo, sum RunSummary) error
}

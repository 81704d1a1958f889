// Package pipeline defines the stages of an incremental Bulk Data export run
// and the runner that connects them.
//
// # Data flow
//
// A run kicks off (or resumes) an export with a [Fetcher], spools every file
// of its manifest on disk, turns each NDJSON line into Arrow rows for the raw
// landing table and for every view of the resource's type, and writes those
// rows to every [sinks.Sink] through one [sinks.Txn] per sink. A sink applies the run
// (upserts guarded by meta.lastUpdated, deletes, view-row replacement) and
// stores the manifest's transactionTime as its checkpoint in the same
// transaction as the data, so a sink never claims data it does not hold.
//
// # Ownership
//
// A [schemas.Batch] owns one reference to an Arrow record. Whoever receives a schemas.Batch
// (a sinks.Txn's Write) releases it, also on error.
package pipeline

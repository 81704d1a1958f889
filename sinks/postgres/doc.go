// Package postgres is the PostgreSQL warehouse sink.
//
// Every table lives in one schema (default "fhir"): the raw landing
// fhir_resources (resource as jsonb, primary key (resource_type, id)), one
// table per SQL-on-FHIR view (typed columns, indexed on _resource_id), and
// the metadata tables runs, checkpoints, rejects and operation_outcomes.
//
// A run is one PostgreSQL transaction. Batches are streamed with binary COPY
// into TEMP staging tables (ON COMMIT DROP) as they arrive; Commit then
// applies them set-based: the per-key winner of the run is picked with
// DISTINCT ON, upserted with ON CONFLICT guarded by meta.lastUpdated and the
// SUBSETTED rule, deletes are applied, each view's rows of a winner are
// replaced as a whole, rejects and outcomes appended, and the runs row and
// the checkpoint written — all before the one COMMIT, so readers see the
// whole run or nothing. Runs of the same source are serialized with a
// transaction-scoped advisory lock.
//
// Type mapping: utf8→text, int32→integer, int64→bigint, float64→double
// precision, bool→boolean, date32→date, timestamp[us,UTC]→timestamptz,
// list<primitive>→array, nested lists/structs and JSON-marked text→jsonb. A
// field's "ansi/type" metadata, when it names a SQL type, becomes the stored
// column type; values are cast from the staged type at commit.
package postgres

// Package parquet is the Parquet lake sink: a directory (or, behind
// [Store], an object store) with one folder per table and one metadata
// object, _lake.json.
//
// # Layout and atomicity
//
//	_lake.json              version, checkpoints per source, runs, live files per table
//	views.sql               one DuckDB view per table over exactly its live files
//	fhir_resources/<run>-N.parquet
//	<view>/<run>-N.parquet
//	rejects/… operation_outcomes/…
//	_staging/<run>/…        a run's staged rows; never read by readers
//
// Files are immutable and named after the run that wrote them (zstd by
// default). A commit writes every new file, then a new _lake.json under a
// run-scoped name, and renames it over _lake.json: that rename is the only
// step that changes what readers see, so a run is visible whole or not at
// all. Readers must read only the files _lake.json lists; anything else is
// garbage of an unfinished run, removed at the next start. Files a commit
// made obsolete are deleted right after the publish (no history is kept, so
// a reader still scanning the previous file list may see files vanish).
// One process writes a lake at a time.
//
// # Current state
//
// Each table holds the current state only. At commit, for each touched table,
// stored files that contain a resource the run replaces or deletes are
// rewritten without those rows, untouched files are kept, and the run's
// winning rows are added as a new file; a table with more than 16 live files
// is compacted into one new file set. The rules are the sink contract's:
// per key the run's row with the greatest (last_updated, _seq) wins within
// the run; it replaces the stored row unless that one is newer or it is
// SUBSETTED over a full one; deleted entries remove the resource unless a
// newer version is stored; a winner's view rows replace the resource's rows.
//
// Memory: the run's distinct resource keys and deleted keys are indexed in
// memory (about 100 bytes per key); everything else streams, one read batch
// (16Ki rows) and one buffered row group (at most 128Ki rows or 32 MiB of
// Arrow data) at a time, whatever the size of the lake. Each commit reads
// the key columns of the touched tables' files and rewrites only the files
// holding affected keys.
//
// # Querying from DuckDB
//
// Run the generated views.sql, then query the tables by name:
//
//	duckdb -c ".read /data/lake/views.sql" -c "SELECT count(*) FROM patient"
//
// or read the files a table lists in _lake.json directly:
//
//	SELECT * FROM read_parquet(['/data/lake/patient/run-1-ab12cd34-0.parquet'], union_by_name = true);
//
// Re-run views.sql after each commit: old files are deleted. The runs and
// checkpoints live in _lake.json:
//
//	SELECT unnest(runs, recursive := true) FROM read_json('/data/lake/_lake.json');
package parquet

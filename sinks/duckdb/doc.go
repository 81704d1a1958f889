// Package duckdb implements the embedded default warehouse: a
// [sinks.Sink] that applies each export run to one DuckDB file.
//
// # Loading
//
// A run opens one DuckDB transaction and its batches are written through
// as they arrive, never held in Go memory:
//
//   - raw landing rows stream into the raw table while the transform is
//     still running: batches go to uncompressed Parquet parts of 128 MiB
//     in the run's folder under Path + ".spool", and a loader goroutine
//     INSERTs each finished part (read_parquet) inside the open
//     transaction while the next is written. The rows carry the run's id
//     and their _seq (columns run_id and _seq, which only the DuckDB raw
//     table has), so Commit can tell them from the stored rows. Readers see
//     none of them before Commit; a crash or Rollback leaves no trace.
//   - every other table (views, deleted entries, rejects, outcomes) is
//     staged to uncompressed Parquet, a few files per table, and read at
//     Commit. A table's batches are held (not copied) until they make a
//     row group of 2 MiB, which is then written in one call; all tables
//     together hold at most the sink's staging budget (staging_bytes).
//   - a view whose table was empty when the run began (a first load, a
//     backfill, a new view) is also streamed: once its staged file holds
//     streamPartBytes and the loader is idle, the file is closed and the
//     loader INSERTs it into the view table inside the transaction; the
//     stage goes on in a new file. Only an empty table qualifies, because
//     Commit could not tell the run's streamed rows from stored ones when
//     it deletes replaced resources. The staged files keep _seq, so
//     Commit's fix-up (below) can still drop the rows of losing versions.
//
// JSON columns carry Parquet's JSON logical type, so DuckDB reads them as
// JSON (validating them) without a cast. The database file is attached
// with ROW_GROUP_SIZE 16384 rather than DuckDB's 122,880 (see
// rowGroupSize), and while raw rows stream in DuckDB runs with
// stream_threads (default 1) threads, giving the cores to the transform;
// under a memory_limit Commit keeps that count (see Txn.streamThreads).
// Nothing needs the duckdb_arrow build tag.
//
// # Commit
//
// Commit finishes the raw stream, then applies the rest of the run in the
// same transaction, with set-based statements only:
//
//  1. winners: per (resource_type, id), the run's row with the greatest
//     (last_updated NULLS LAST, _seq), kept (QUALIFY row_number()) unless
//     the stored row is newer or the incoming row is SUBSETTED and the
//     stored one is not; the stored rows of winners are deleted, and so
//     are the run's rows that did not win (a step skipped when every row
//     of the run won, the usual case);
//  2. deleted entries: the raw rows deleted, except those whose stored
//     last_updated is after the run's transactionTime (anti join);
//  3. each view: rows of winners and deleted resources of its resource type
//     deleted (skipped when the run replaced or deleted no stored
//     resource), then the staged rows whose (_resource_id, _seq) is a
//     winner's (semi join, or all of them when every row won) inserted, so
//     a resource's rows are replaced as a whole by those of the version
//     that won. A streamed view has no stored rows to delete; instead,
//     unless every row won, the resources with a streamed row of a
//     version that is not a winner (an older duplicate, a version older
//     than the stored one, a resource the run also deleted) lose all
//     their streamed rows and get back those of the winning version from
//     the streamed files (the fix-up). A resource the run both sent and
//     deleted is not a winner;
//  4. rejects and operation_outcomes appended;
//  5. a runs row inserted and the source's checkpoint upserted, with the
//     transactionTime verbatim.
//
// A failure or a cancelled context at any step, the raw stream's included,
// rolls back the transaction; then, or after Rollback, the connection is
// discarded (taking its TEMP objects with it), so the sink is usable
// again. After a crash DuckDB's WAL holds no trace of an uncommitted run,
// and New clears the spool directory a crashed run left.
//
// No index is created: every Commit statement is a hash join over whole
// tables, which an ART index does not speed up, while maintaining one on
// (resource_type, id) slows every load.
//
// # Measured load paths
//
// On the 511 MB `fhirferry bench` export (514,031 resources, raw landing
// only, 2 cores, memory_limit 48-64MB, GOMEMLIMIT 128MiB), one process:
//
//	path                                             wall      CPU      peak RSS
//	staged Parquet (Snappy), one INSERT at Commit    6.2 s     9.2 s    230 MiB
//	  + plain Parquet, no statistics, plain INSERT   5.5 s     8.0 s    220 MiB
//	  + raw rows streamed in 128 MiB parts, 1 thread 5.0 s     7.8 s    230 MiB
//	  + ROW_GROUP_SIZE 16384                         4.7-5.1 s 7.4 s    230 MiB
//	  + recycled Parquet page buffers (PoolAllocator) 4.1-4.2 s 6.5 s   245 MiB
//	  + no stored-row DELETE on a first load         3.9-4.0 s 6.0 s    242 MiB
//	  + a part cut early when the loader is idle     4.0-4.4 s 6.4 s    235 MiB
//	  + transform batches from pipeline.Buffers      3.7-3.9 s 5.7-5.9 s 225-237 MiB
//
// With the 46 default views (--views default, same export and settings):
//
//	path                                             wall      CPU      peak RSS
//	all of the above                                 16.9 s    25.2 s   361 MiB
//	  + dictionary, not FSST, for text columns       (commit 7.7 -> 6.8 s at 500 MB; 1.5 s less at 100 MB)
//	  + transform batches from pipeline.Buffers      16.7 s    24.3 s   344 MiB
//	  + staged batches held, one write per row group 14.4-14.6 s 21.0 s 330-339 MiB
//	  + columns of a select share sub-expressions    13.4-14.7 s 19.5 s 305-318 MiB (a noisier day)
//	  + views streamed into empty tables             11.7-12.6 s 18.3 s 320-340 MiB
//	  + resource keys stored uncompressed            11.0-11.4 s 17.6 s 305-330 MiB
//
// (Streaming the views moved most of their INSERTs, 3.2 s of DuckDB
// time, into the transform: Commit went from 5.7-6.2 s to 2.8-3.8 s, of
// which COMMIT itself is 1.2-1.7 s and winners 0.3-0.4 s. The loader is
// then busy about 80% of the transform, so a smaller streamPartBytes (4
// MiB) or a larger one (16 MiB) made no difference. A dictionary over
// _resource_id and id, unique per resource, cost 0.5 s of Commit and
// saved 1 MB of 747.)
//
// (The held batches also stopped the Go heap growing with the input, from
// 60 to 100 MB live over the run, which the Parquet writer's open row
// groups had caused: each column of each table kept page and encoder
// buffers between writes.)
//
// (The last step is for view-heavy runs, where the transform is slower
// than the loader: with the 46 default views on 100 MB it cut Commit's
// tail from 2.4-2.9 s to 1.9-2.1 s. The raw-only runs above differ
// within this VM's noise.)
//
// Where the views' time goes, on the same 511 MB (two A/B rounds, one
// process each): raw landing only 3.5-3.7 s and 4.9-5.3 CPU-s; with the
// views evaluated and their batches dropped before the sink 6.6 s and
// 10.6-10.7 CPU-s; with them loaded 11.3-11.8 s and 17.5-18.2 CPU-s.
// Evaluating the views costs about 5.5 CPU-s and loading them about 7.
// Most of the loading is DuckDB's INSERT itself: the observation view's
// 249,318 rows of 43 columns took 1.31 s to INSERT from an in-memory TEMP
// table and 1.28 s from staged Parquet (0.75 s into uncompressed columns,
// 0.96 s into dictionary ones, with 16,384-row groups). A cheaper staging
// format (CSV: 1.40 s) would not help; the rest is the Go Parquet
// writer (about 2.5 CPU-s) and the kernel copying the spool. With 46
// view tables each holding an unfinished row group, DuckDB spills 600-800
// MB to its temp files under memory_limit 64MB; write_buffer_row_group_count
// 1, ROW_GROUP_SIZE 8192, or memory_limit 128MB (398 MiB RSS) cut the
// spill but not the time: all within 16.7-19.1 CPU-s, like the default.
//
// `fhirferry bench --floor` measures DuckDB's share alone: the load's
// 1,529,276 view rows, INSERTed from uncompressed Parquet into tables this
// sink created, one transaction, one thread, nothing else running, take
// 4.1-4.8 s and 4.0-4.8 CPU-s (two threads: 4.0 s, 4.7 CPU-s; reading the
// Parquet is 0.5 of it). With the raw landing's DuckDB time (about 2.1
// CPU-s in cgo on the same connection) that is 6-7 s of statements one
// run's transaction must execute one after another: already the whole
// 6.3 s within which the pipeline would have to finish to load at 1.5 times
// read_json's speed, before any view is evaluated. Uncompressed view
// columns would take 3.2 CPU-s, for a file 2.7 times larger.
//
// Earlier, on 120 MB, the DuckDB Appender into TEMP tables was as fast as
// staged Parquet, but it held the whole run in DuckDB's memory (or its
// uncompressed spill files) and needed 1.4 GB RSS at the 500 MB scale, so
// it was removed; an Arrow scan needs the duckdb_arrow build tag, off in
// `go test ./...` and the demo. Parts of 32 MiB overlapped more but cost DuckDB 4.0 s
// of statements against 3.4 s for 128 MiB. Two DuckDB threads during the
// stream were 20% slower than one: the transform had the cores, and a
// parallel INSERT writes its row groups twice (optimistically, then again
// at the checkpoint), which also left the file 300 MB larger.
//
// # Concurrency
//
// DuckDB allows one process per database file, and within the process
// conflicting writers abort. A Sink therefore serves one writer at a time:
// Begin, Prepare and ReplaceTable wait (or fail with the context) while a
// Txn is open. Each Txn holds one connection of its own. Read-only queries
// through [Sink.DB] may run at any time and see only committed runs.
//
// # Memory
//
// memory_limit bounds DuckDB's buffer pool, not the process: on the 511 MB
// `fhirferry bench` export (--views none, 2 threads, memory_limit 96MB) the
// commit phase peaked at 332 MiB RSS with DuckDB's default allocator
// caching, and at 273 MiB with allocator_flush_threshold 16MB and
// allocator_background_threads on, which New sets, at the same speed.
// The raw stream's loader runs on one locked OS thread, so DuckDB's
// per-thread allocator caches exist once (20-50 MiB less peak RSS).
//
// Configuration (configs.DuckDBSink): path (required; the config package
// defaults it to <data_dir>/warehouse.duckdb), threads, memory_limit
// (DuckDB settings, which the config derives from memory_budget when
// unset; memory_limit bounds DuckDB's memory, spilling to Path + ".tmp",
// and needs about 128 MiB for the default views: see
// configs.MinDuckDBMemory) and stream_threads; the sink's staging_bytes
// arrives as sinks.Env.StagingBytes.
// Building needs cgo.
package duckdb

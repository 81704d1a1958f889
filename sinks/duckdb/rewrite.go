package duckdb

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/schemas"
)

// A DELETE in DuckDB keeps, until the transaction commits, a version
// record for every 2048-row vector it touches (2048 transaction ids, 16
// KiB), allocated in 256 KiB blocks per row group, held in the buffer
// pool and never spilled. With this sink's 16,384-row groups a touched row
// group pins a whole block, however few of its rows go. The changes of an
// incremental run are spread over the warehouse, so its deletes touch
// nearly every row group of every table they reach, and the memory they
// pin grows with the warehouse, not with the run: 16 bytes per stored row.
// Measured: one deleted row in each of 82 row groups failed under 24 MiB
// and committed under 32 MiB; a 5 GB warehouse's first incremental run
// (107,783 changed resources) ran out of 192 MiB at the 25th view with
// 172 MiB of base_table memory pinned. On such a warehouse that is more
// than a 512 MiB budget gives DuckDB. So a commit plans its deletes: while
// the row groups they would touch fit the commit's memory, a view's
// replaced rows are deleted; beyond that, the views that would pin the
// most are rewritten instead, copying the rows that stay into a new table
// (streamed, spilled to disk as needed) that replaces the old one in the
// same transaction. A rewrite costs time in proportion to the table, so it
// is the exception a commit takes only when the DELETE would not fit.
const (
	vectorRows      = 2048
	vectorInfoBytes = 16 << 10
	versionBlock    = 256 << 10
	// rowGroupPin is what the deletes in one row group pin: the blocks
	// that hold its vectors' records.
	rowGroupPin = versionBlock * ((rowGroupSize/vectorRows*vectorInfoBytes + versionBlock - 1) / versionBlock)
	// minDeleteReserve is what a commit keeps for everything else it
	// holds (the appends' last row groups, hash tables, scans): half the
	// commit memory, and never less than this.
	minDeleteReserve = 64 << 20
)

// planDeletes decides which views a commit rewrites rather than deletes
// from (ap.rewrite), from the keys the run replaces or deletes per
// resource type and the tables' sizes. It plans nothing when DuckDB has no
// memory_limit of ours (its default is most of the machine).
func (t *Txn) planDeletes(ctx context.Context, tx *sql.Tx, ap *applied) error {
	limit := t.s.memoryLimit
	if t.commitMemory {
		limit = t.s.commitMemory
	}
	mem, err := configs.ParseByteSize(limit)
	if (limit == "" || err != nil) && !t.s.rewriteAll {
		return nil //nolint:nilerr // no limit of ours, or one we cannot read: DuckDB's to enforce
	}
	allow := int64(mem) - max(int64(mem)/2, minDeleteReserve)
	if t.s.rewriteAll {
		allow = -1
	}
	keys, err := t.changedKeys(ctx, tx)
	if err != nil {
		return err
	}
	rows, err := tableRows(ctx, tx)
	if err != nil {
		return err
	}
	touched := func(table string, keys int64) int64 {
		return min(keys, (rows[table]+rowGroupSize-1)/rowGroupSize)
	}
	var total int64
	for _, n := range keys {
		total += n
	}
	// The raw table's deletes always stay deletes: rewriting the JSON of
	// every resource would cost far more than any view.
	var views []viewCost
	for _, v := range t.s.tables.Views() {
		if st := t.stages[v.Name]; st != nil && len(st.streamed) > 0 {
			continue // a streamed view held no stored rows (see fixup)
		}
		if c := touched(v.Name, keys[v.ResourceType]); c > 0 {
			views = append(views, viewCost{v.Name, c})
		}
	}
	ap.rewrite = chooseRewrites(allow, touched(schemas.RawTable, total), views)
	var need int64
	for _, c := range views {
		need += c.rowGroups
	}
	t.s.log.Debug("commit delete plan", "run", t.run.RunID, "keys", total, "raw_row_groups", touched(schemas.RawTable, total),
		"view_row_groups", need, "allow_mib", allow>>20, "rewrite", rewriteNames(ap))
	if len(ap.rewrite) > 0 {
		t.s.log.Info("the commit's deletes would pin more memory than DuckDB has; rewriting the largest views instead",
			"run", t.run.RunID, "views", rewriteNames(ap), "memory_limit", limit)
	}
	return nil
}

// viewCost is the row groups a view's DELETE would touch.
type viewCost struct {
	view      string
	rowGroups int64
}

// chooseRewrites picks the views to rewrite so that the row groups the
// remaining deletes touch (rawRowGroups included, which always stay
// deletes) fit allow bytes: the costliest first, as few as it takes. nil
// when the deletes fit.
func chooseRewrites(allow, rawRowGroups int64, views []viewCost) map[string]bool {
	need := rawRowGroups * rowGroupPin
	for _, c := range views {
		need += c.rowGroups * rowGroupPin
	}
	views = slices.Clone(views)
	slices.SortStableFunc(views, func(a, b viewCost) int { return cmp.Compare(b.rowGroups, a.rowGroups) })
	var out map[string]bool
	for _, c := range views {
		if need <= allow {
			break
		}
		if out == nil {
			out = map[string]bool{}
		}
		out[c.view] = true
		need -= c.rowGroups * rowGroupPin
	}
	return out
}

// changedKeys counts the stored resources the run replaces or deletes, by
// type: the rows of each view that its commit removes belong to them.
func (t *Txn) changedKeys(ctx context.Context, tx *sql.Tx) (map[string]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT resource_type, count(*) FROM (
		SELECT resource_type FROM win WHERE stored UNION ALL SELECT resource_type FROM gone) GROUP BY ALL`)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	out := map[string]int64{}
	for rows.Next() {
		var typ string
		var n int64
		if err := rows.Scan(&typ, &n); err != nil {
			return nil, err
		}
		out[typ] = n
	}
	return out, rows.Err()
}

// tableRows is DuckDB's row estimate of every table of the warehouse.
func tableRows(ctx context.Context, tx *sql.Tx) (map[string]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT table_name, estimated_size FROM duckdb_tables()
		WHERE database_name = current_database() AND schema_name = 'main' AND NOT temporary`)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			return nil, err
		}
		out[name] = n
	}
	return out, rows.Err()
}

// rewriteView replaces view v's table, in the commit's transaction, with a
// copy without the rows of the keys the run replaces or deletes: the
// rewrite planDeletes chose instead of a DELETE. The copy has the
// table's declared columns (compression and NOT NULL included) and any
// older column the stored table still has, and the table's comments.
func (t *Txn) rewriteView(ctx context.Context, tx *sql.Tx, v *schemas.Table) error {
	defs, err := columnDefs(v.StoredFields(), false)
	if err != nil {
		return err
	}
	tmp := quote(v.Name + "__rewrite")
	qs := []string{"DROP TABLE IF EXISTS " + tmp, "CREATE TABLE " + tmp + " (" + defs + ")"}
	extra, err := extraColumns(ctx, tx, v)
	if err != nil {
		return err
	}
	for _, c := range extra {
		qs = append(qs, "ALTER TABLE "+tmp+" ADD COLUMN "+c)
	}
	V, id := quote(v.Name), quote(schemas.ColResourceID)
	qs = append(qs,
		`INSERT INTO `+tmp+` BY NAME SELECT v.* FROM `+V+` v ANTI JOIN (
			SELECT id FROM win WHERE resource_type = `+lit(v.ResourceType)+` UNION ALL
			SELECT id FROM gone WHERE resource_type = `+lit(v.ResourceType)+`) k
			ON v.namespace = `+lit(t.run.Namespace)+` AND v.`+id+` = k.id`,
		"DROP TABLE "+V,
		"ALTER TABLE "+tmp+" RENAME TO "+V,
	)
	for _, q := range qs {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	t.s.rewrites.Add(1)
	return comment(ctx, tx, v, nil)
}

// extraColumns lists, as "name type", the columns the stored table of v
// has that its declaration no longer does (never dropped, see
// ensureTable).
func extraColumns(ctx context.Context, tx *sql.Tx, v *schemas.Table) ([]string, error) {
	declared := map[string]bool{}
	for _, f := range v.StoredFields() {
		declared[f.Name] = true
	}
	rows, err := tx.QueryContext(ctx, `SELECT column_name, data_type FROM duckdb_columns()
		WHERE database_name = current_database() AND schema_name = 'main' AND table_name = ? ORDER BY column_index`, v.Name)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, err
		}
		if !declared[name] {
			out = append(out, quote(name)+" "+typ)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("columns of %s: %w", v.Name, err)
	}
	return out, nil
}

// rewriteNames lists the rewritten views, sorted, for logs and tests.
func rewriteNames(ap *applied) string {
	var out []string
	for n := range ap.rewrite {
		out = append(out, n)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

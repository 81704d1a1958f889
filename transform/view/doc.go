// Package view compiles and runs SQL-on-FHIR v2 ViewDefinitions (2.0,
// 2.1-pre and the 3.0.0-ballot form) over resources parsed with fastjson,
// producing generic rows (Eval) or Arrow columns (AppendRows).
//
// Compile validates the definition statically and reports every problem at
// once with its JSON location: missing or unknown resource, non-string or
// unparseable FHIRPath, undefined %constants, constants without value[x],
// duplicate column names, unionAll branches whose columns differ in name
// or order, more than one of forEach/forEachOrNull/repeat, sql-name
// violations and unsupported ansi/type tags. Columns are ordered as the
// spec requires (own columns, nested selects, unionAll from branch 0) and
// the Arrow schema is derived from the definition alone.
//
// Evaluation follows the spec's processing algorithm: where clauses must
// yield true (empty drops the resource, a non-boolean is an error),
// sibling selects are cross-joined, forEachOrNull yields one null row
// (with %rowIndex 0), unionAll concatenates, repeat walks depth-first
// pre-order with a depth limit, and %rowIndex is the index within the
// enclosing iteration. Runtime problems — several values in a
// non-collection column, a value that does not fit its column — are
// *RowError values naming the view and column; AppendRows converts all of
// a resource's rows before appending any, so a rejected resource leaves
// the builder untouched.
//
// Type mapping (Arrow): boolean → bool; integer, positiveInt, unsignedInt
// → int32; integer64 → int64; instant → timestamp[us, UTC]; decimal →
// utf8 with the exact JSON text; date, dateTime, time and the string-like
// types → utf8 in FHIR form (partial dates are legal); complex types →
// utf8 JSON; collection columns → list<element>. The column tag ansi/type
// overrides: BOOLEAN, INTEGER, BIGINT, DOUBLE, DECIMAL(p,s), DATE,
// TIMESTAMP [WITH TIME ZONE], TIME, VARCHAR/TEXT; it is also copied into
// the field metadata ("ansi/type", next to "fhir/type"). Limits a tag
// sets beyond the storage type (VARCHAR(n) and CHAR(n) lengths in
// characters, SMALLINT, REAL, JSON text) are checked here too, so a SQL
// sink's cast never truncates or fails at commit. A partial date in
// a DATE/TIMESTAMP column is an error by default; see WithPartialDates.
package view

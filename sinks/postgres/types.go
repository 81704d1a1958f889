package postgres

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/fhirferry/fhirferry/schemas"
)

// column is one table column: the type it is staged as (what binary COPY of
// the Arrow values produces) and the type it is stored as (the same, unless
// an "ansi/type" hint names another SQL type; then INSERT casts).
type column struct {
	name   string
	stage  string // PostgreSQL type of the staging column
	store  string // PostgreSQL type of the target column
	null   bool   // nullable
	asJSON bool   // values are JSON text or nested values sent as jsonb
}

func (c column) quoted() string { return pgx.Identifier{c.name}.Sanitize() }

// selectExpr is the expression that reads the column from a staging alias,
// cast to the stored type when it differs.
func (c column) selectExpr(alias string) string {
	if c.stage == c.store {
		return alias + "." + c.quoted()
	}
	return fmt.Sprintf("CAST(%s.%s AS %s)", alias, c.quoted(), c.store)
}

// ansiType accepts SQL type names made of words and an optional (p[,s]); it
// keeps the hint from injecting anything else into DDL.
var ansiType = regexp.MustCompile(`^[A-Za-z][A-Za-z ]*(\(\s*\d+\s*(,\s*\d+\s*)?\))?$`)

// ansiAliases maps ANSI or engine type names PostgreSQL does not spell the same way.
var ansiAliases = map[string]string{
	"DOUBLE":   "double precision",
	"TINYINT":  "smallint",
	"DATETIME": "timestamp",
	"STRING":   "text",
	"BLOB":     "bytea",
	"BINARY":   "bytea",
	"CLOB":     "text",
}

// columnFor maps an Arrow field to PostgreSQL types.
func columnFor(f arrow.Field) (column, error) {
	c := column{name: f.Name, null: f.Nullable}
	if schemas.IsJSON(f) {
		c.asJSON = true
	} else {
		t, asJSON, err := pgType(f.Type)
		if err != nil {
			return c, fmt.Errorf("column %q: %w", f.Name, err)
		}
		c.stage, c.asJSON = t, asJSON
	}
	c.store = c.stage
	if c.asJSON {
		// JSON is staged as text and parsed by the cast at commit, so a
		// malformed document fails the commit with the step that read it,
		// and COPY stays a plain byte copy.
		c.stage, c.store = "text", "jsonb"
	}
	if hint, ok := f.Metadata.GetValue("ansi/type"); ok && !c.asJSON && !strings.HasSuffix(c.stage, "[]") {
		hint = strings.TrimSpace(hint)
		if !ansiType.MatchString(hint) {
			return c, fmt.Errorf("column %q: ansi/type %q is not a SQL type name", f.Name, hint)
		}
		if a, ok := ansiAliases[strings.ToUpper(hint)]; ok {
			hint = a
		}
		c.store = strings.ToLower(hint)
	}
	return c, nil
}

// pgType is the natural PostgreSQL type of an Arrow type; asJSON is true
// when values are sent as jsonb (nested lists, structs, maps).
func pgType(dt arrow.DataType) (string, bool, error) {
	switch t := dt.(type) {
	case *arrow.StringType, *arrow.LargeStringType:
		return "text", false, nil
	case *arrow.BooleanType:
		return "boolean", false, nil
	case *arrow.Int8Type, *arrow.Int16Type, *arrow.Uint8Type:
		return "smallint", false, nil
	case *arrow.Int32Type, *arrow.Uint16Type:
		return "integer", false, nil
	case *arrow.Int64Type, *arrow.Uint32Type:
		return "bigint", false, nil
	case *arrow.Float32Type:
		return "real", false, nil
	case *arrow.Float64Type:
		return "double precision", false, nil
	case *arrow.Date32Type:
		return "date", false, nil
	case *arrow.Time64Type:
		return "time", false, nil
	case *arrow.Decimal128Type:
		return fmt.Sprintf("numeric(%d,%d)", t.Precision, t.Scale), false, nil
	case *arrow.TimestampType:
		if t.TimeZone == "" {
			return "timestamp", false, nil
		}
		return "timestamptz", false, nil
	case *arrow.BinaryType:
		return "bytea", false, nil
	case *arrow.ListType:
		et, asJSON, err := pgType(t.Elem())
		if err != nil || asJSON || strings.HasSuffix(et, "[]") || et == "bytea" {
			return "jsonb", true, nil
		}
		return et + "[]", false, nil
	case *arrow.StructType, *arrow.MapType, *arrow.LargeListType, *arrow.FixedSizeListType:
		return "jsonb", true, nil
	}
	return "", false, fmt.Errorf("arrow type %s has no PostgreSQL mapping", dt)
}

// jsonGetter reads row i of a as JSON text: strings as they are, nested
// values marshalled.
func jsonGetter(a arrow.Array) func(i int) any {
	if s, ok := a.(*array.String); ok {
		return func(i int) any {
			if s.IsNull(i) {
				return nil
			}
			return s.Value(i)
		}
	}
	return func(i int) any {
		if a.IsNull(i) {
			return nil
		}
		b, err := json.Marshal(a.GetOneForMarshal(i))
		if err != nil {
			return nil
		}
		return string(b)
	}
}

// getter returns a function reading row i of a as a value pgx encodes into
// the column's staging type (nil for NULL).
func getter(a arrow.Array, c column) (func(i int) any, error) {
	if c.asJSON {
		return jsonGetter(a), nil
	}
	var get func(i int) any
	switch v := a.(type) {
	case *array.String:
		get = func(i int) any { return v.Value(i) }
	case *array.LargeString:
		get = func(i int) any { return v.Value(i) }
	case *array.Boolean:
		get = func(i int) any { return v.Value(i) }
	case *array.Int8:
		get = func(i int) any { return int16(v.Value(i)) }
	case *array.Int16:
		get = func(i int) any { return v.Value(i) }
	case *array.Uint8:
		get = func(i int) any { return int16(v.Value(i)) }
	case *array.Int32:
		get = func(i int) any { return v.Value(i) }
	case *array.Uint16:
		get = func(i int) any { return int32(v.Value(i)) }
	case *array.Int64:
		get = func(i int) any { return v.Value(i) }
	case *array.Uint32:
		get = func(i int) any { return int64(v.Value(i)) }
	case *array.Float32:
		get = func(i int) any { return v.Value(i) }
	case *array.Float64:
		get = func(i int) any { return v.Value(i) }
	case *array.Binary:
		get = func(i int) any { return v.Value(i) }
	case *array.Date32:
		get = func(i int) any { return v.Value(i).ToTime().UTC() }
	case *array.Time64:
		ns := int64(v.DataType().(*arrow.Time64Type).Unit.Multiplier())
		get = func(i int) any { return pgtype.Time{Microseconds: int64(v.Value(i)) * ns / 1000, Valid: true} }
	case *array.Decimal128:
		exp := -v.DataType().(*arrow.Decimal128Type).Scale
		get = func(i int) any { return pgtype.Numeric{Int: v.Value(i).BigInt(), Exp: exp, Valid: true} }
	case *array.Timestamp:
		unit := v.DataType().(*arrow.TimestampType).Unit
		get = func(i int) any { return v.Value(i).ToTime(unit).UTC() }
	case *array.List:
		vals := v.ListValues()
		elem, err := getter(vals, column{})
		if err != nil {
			return nil, err
		}
		get = func(i int) any {
			start, end := v.ValueOffsets(i)
			out := make([]any, 0, end-start)
			for j := start; j < end; j++ {
				out = append(out, elem(int(j)))
			}
			return out
		}
	default:
		return nil, fmt.Errorf("arrow type %s has no PostgreSQL mapping", a.DataType())
	}
	return func(i int) any {
		if a.IsNull(i) {
			return nil
		}
		return get(i)
	}, nil
}

// recordSource streams an Arrow record into pgx.CopyFrom without copying it.
type recordSource struct {
	n    int
	row  int
	gets []func(int) any
	vals []any
}

func newRecordSource(rec arrow.RecordBatch, cols []column) (*recordSource, error) {
	src := &recordSource{n: int(rec.NumRows()), row: -1, vals: make([]any, len(cols))}
	sc := rec.Schema()
	for _, c := range cols {
		idx := sc.FieldIndices(c.name)
		if len(idx) == 0 {
			return nil, fmt.Errorf("batch has no column %q", c.name)
		}
		g, err := getter(rec.Column(idx[0]), c)
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", c.name, err)
		}
		src.gets = append(src.gets, g)
	}
	return src, nil
}

func (s *recordSource) Next() bool { s.row++; return s.row < s.n }

// Values reuses one slice: pgx encodes a row before asking for the next.
func (s *recordSource) Values() ([]any, error) {
	for j, g := range s.gets {
		s.vals[j] = g(s.row)
	}
	return s.vals, nil
}

func (s *recordSource) Err() error { return nil }

var _ pgx.CopyFromSource = (*recordSource)(nil)

// ColumnType is the PostgreSQL type of the column the sink stores f in.
func ColumnType(f arrow.Field) (string, error) {
	c, err := columnFor(f)
	return c.store, err
}

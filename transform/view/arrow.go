package view

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/valyala/fastjson"
)

// Value is one cell of a generic row (see Eval): nil, bool, int64,
// json.Number (decimals, exact text), string (text and FHIR temporal
// values), json.RawMessage (complex values) or []Value (collections).
type Value = any

// Metadata keys on the Arrow fields of a view's schema.
const (
	// MetaANSIType carries the column's ansi/type tag so SQL sinks can
	// honour it (e.g. VARCHAR(64), DECIMAL(10,2)).
	MetaANSIType = "ansi/type"
	// MetaFHIRType carries the column's FHIR type.
	MetaFHIRType = "fhir/type"
)

func (v *View) buildSchema() *arrow.Schema {
	fields := make([]arrow.Field, len(v.cols))
	for i, col := range v.cols {
		dt := v.conv[i].arrowType()
		if col.Collection {
			dt = arrow.ListOf(dt)
		}
		var keys, vals []string
		if col.Type != "" {
			keys, vals = append(keys, MetaFHIRType), append(vals, col.Type)
		}
		if a := col.Tag("ansi/type"); a != "" {
			keys, vals = append(keys, MetaANSIType), append(vals, a)
		}
		fields[i] = arrow.Field{Name: col.Name, Type: dt, Nullable: true, Metadata: arrow.NewMetadata(keys, vals)}
	}
	return arrow.NewSchema(fields, nil)
}

// ArrowSchema returns the schema of the view's columns, derived from the
// definition alone. FHIR types map as: boolean → bool; integer,
// positiveInt, unsignedInt → int32; integer64 → int64; instant →
// timestamp[us, UTC]; decimal and every other primitive (dates included,
// since partial dates are legal) → utf8 holding the FHIR text exactly;
// complex types → utf8 JSON. An ansi/type tag overrides: BOOLEAN, INTEGER,
// BIGINT, DOUBLE, DECIMAL(p,s), DATE, TIMESTAMP, TIME, VARCHAR. Collection
// columns are lists of the element type.
func (v *View) ArrowSchema() *arrow.Schema { return v.schema }

func (v *View) getState() *state   { return v.states.Get().(*state) }
func (v *View) putState(st *state) { v.states.Put(st) }

// Eval evaluates the view on one parsed resource and calls emit with each
// output row (a fresh slice, in column order). Resources of another type
// produce no rows. Runtime errors are *RowError.
func (v *View) Eval(res *fastjson.Value, emit func(row []Value) error) error {
	st := v.getState()
	defer v.putState(st)
	return v.run(st, res, func() error {
		row := make([]Value, len(v.cols))
		for j := range v.cols {
			cv := &v.conv[j]
			cells := st.cells[cv.src]
			switch {
			case st.isNull[cv.src]:
			case v.cols[j].Collection:
				list := make([]Value, 0, len(cells))
				for _, it := range cells {
					val, err := cv.value(it)
					if err != nil {
						return &RowError{View: v.label(), Column: cv.col, Err: err}
					}
					list = append(list, val)
				}
				row[j] = list
			case len(cells) == 1:
				val, err := cv.value(cells[0])
				if err != nil {
					return &RowError{View: v.label(), Column: cv.col, Err: err}
				}
				row[j] = val
			}
		}
		return emit(row)
	})
}

// AppendRows evaluates res and appends its rows to b's fields
// [off, off+len(Columns())); for each row it calls onRow first so the
// caller fills its own leading columns (resource id, sequence). All of a
// resource's rows are converted before any is appended, so on error b is
// unchanged and the resource can be rejected as a whole. It returns the
// number of rows appended. b's fields from off on must match ArrowSchema.
func (v *View) AppendRows(res *fastjson.Value, b *array.RecordBuilder, off int, onRow func()) (int, error) {
	st := v.getState()
	defer v.putState(st)
	st.rows, st.elems, st.nrows = st.rows[:0], st.elems[:0], 0
	n := len(v.cols)
	err := v.run(st, res, func() error {
		for j := 0; j < n; j++ {
			cv := &v.conv[j]
			cells := st.cells[cv.src]
			var sc scalar
			switch {
			case st.isNull[cv.src]:
				sc.null = true
			case cv.collection:
				sc.lo = int32(len(st.elems))
				for _, it := range cells {
					e, err := cv.convert(it)
					if err != nil {
						return &RowError{View: v.label(), Column: cv.col, Err: err}
					}
					st.elems = append(st.elems, e)
				}
				sc.hi = int32(len(st.elems))
			case len(cells) == 0:
				sc.null = true
			default:
				s, err := cv.convert(cells[0])
				if err != nil {
					return &RowError{View: v.label(), Column: cv.col, Err: err}
				}
				sc = s
			}
			st.rows = append(st.rows, sc)
		}
		st.nrows++
		return nil
	})
	if err != nil {
		return 0, err
	}
	if off < 0 || off+n > b.Schema().NumFields() {
		return 0, fmt.Errorf("view %s: builder has %d fields, need %d from offset %d", v.label(), b.Schema().NumFields(), n, off)
	}
	for r := 0; r < st.nrows; r++ {
		if onRow != nil {
			onRow()
		}
		row := st.rows[r*n : (r+1)*n]
		for j := range row {
			fb := b.Field(off + j)
			cv := &v.conv[j]
			sc := &row[j]
			if cv.collection {
				lb := fb.(*array.ListBuilder)
				if sc.null {
					lb.AppendNull()
					continue
				}
				lb.Append(true)
				vb := lb.ValueBuilder()
				for _, e := range st.elems[sc.lo:sc.hi] {
					appendScalar(vb, cv.kind, &e)
				}
				continue
			}
			appendScalar(fb, cv.kind, sc)
		}
	}
	return st.nrows, nil
}

func appendScalar(b array.Builder, k outKind, sc *scalar) {
	if sc.null {
		b.AppendNull()
		return
	}
	switch k {
	case outBool:
		b.(*array.BooleanBuilder).Append(sc.i != 0)
	case outInt32:
		b.(*array.Int32Builder).Append(int32(sc.i))
	case outInt64:
		b.(*array.Int64Builder).Append(sc.i)
	case outFloat64:
		b.(*array.Float64Builder).Append(sc.f)
	case outDecimal128:
		b.(*array.Decimal128Builder).Append(sc.d)
	case outDate32:
		b.(*array.Date32Builder).Append(arrow.Date32(sc.i))
	case outTimestamp:
		b.(*array.TimestampBuilder).Append(arrow.Timestamp(sc.i))
	case outTime64:
		b.(*array.Time64Builder).Append(arrow.Time64(sc.i))
	default:
		b.(*array.StringBuilder).Append(sc.s)
	}
}

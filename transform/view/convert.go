package view

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/decimal128"

	"github.com/fhirferry/fhirferry/transform/fhirpath"
)

type outKind uint8

const (
	outString outKind = iota
	outBool
	outInt32
	outInt64
	outFloat64
	outDecimal128
	outDate32
	outTimestamp
	outTime64
)

// converter turns FHIRPath items into the column's storage type.
type converter struct {
	col        string
	fhirType   string
	kind       outKind
	json       bool // complex FHIR type: stored as JSON text
	prec, scal int32
	partial    PartialPolicy
	ansi       string
	collection bool
	// src is the output column whose cells this column converts: its own,
	// or for a precision column (precision true) its date column's.
	src       int
	precision bool
	// Limits an ansi/type tag sets beyond the storage type, checked here so
	// a value that does not fit is the view's reject, not a failed cast
	// that would fail the whole run in a SQL sink: maxLen characters for
	// VARCHAR(n)/CHAR(n), int16 for SMALLINT, float32 for REAL, and valid
	// JSON text for JSON.
	maxLen   int
	smallint bool
	real     bool
	jsonText bool
}

// scalar is one converted cell; lo/hi index the state's elems for lists.
type scalar struct {
	null   bool
	i      int64
	f      float64
	s      string
	d      decimal128.Num
	lo, hi int32
}

var (
	decimalTag = regexp.MustCompile(`^(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)$`)
	lengthTag  = regexp.MustCompile(`^(?:VARCHAR|CHARACTER VARYING|CHAR|CHARACTER)\s*\(\s*(\d+)\s*\)$`)
)

func newConverter(col Column, cfg config) (converter, error) {
	cv := converter{col: col.Name, fhirType: col.Type, partial: cfg.partial, collection: col.Collection}
	cv.kind, cv.json = fhirStorage(col.Type)
	cv.ansi = col.Tag("ansi/type")
	ansi := strings.ToUpper(strings.Join(strings.Fields(cv.ansi), " "))
	if ansi == "" {
		if cfg.warehouse {
			cv.warehouseStorage()
		}
		return cv, nil
	}
	if cv.json && !isVarchar(ansi) && ansi != "TEXT" && ansi != "JSON" {
		return cv, fmt.Errorf("ansi/type %q does not fit complex type %s", cv.ansi, col.Type)
	}
	return cv, cv.applyANSI(ansi)
}

// fhirStorage is the storage of a column of FHIR type t with no ansi/type
// tag; json is true for complex types, stored as JSON text.
func fhirStorage(t string) (kind outKind, json bool) {
	switch {
	case t == "boolean":
		return outBool, false
	case t == "integer" || t == "positiveInt" || t == "unsignedInt":
		return outInt32, false
	case t == "integer64":
		return outInt64, false
	case t == "instant":
		return outTimestamp, false
	case t == "" || fhirpath.IsPrimitiveType(t):
		return outString, false
	}
	return outString, true // complex types and backbone element ids
}

// warehouseStorage sets the storage WarehouseTypes gives an untagged
// column.
func (cv *converter) warehouseStorage() {
	switch cv.fhirType {
	case "integer", "positiveInt", "unsignedInt", "integer64":
		cv.kind = outInt64
	case "decimal":
		cv.kind = outFloat64
	case "date":
		cv.kind, cv.partial = outDate32, PartialLowBoundary
	case "dateTime", "instant":
		cv.kind, cv.partial = outTimestamp, PartialLowBoundary
	}
}

// precisionOf is the precision of a FHIR date, dateTime or instant as
// written: year, month, day or time. The date column's own converter has
// validated the value.
func precisionOf(s string) string {
	switch {
	case len(s) <= 4:
		return "year"
	case len(s) <= 7:
		return "month"
	case len(s) <= 10:
		return "day"
	}
	return "time"
}

// isVarchar reports whether the normalised ANSI type is VARCHAR(n) or
// CHARACTER VARYING(n), with or without a length.
func isVarchar(ansi string) bool {
	return strings.HasPrefix(ansi, "VARCHAR") || strings.HasPrefix(ansi, "CHARACTER VARYING")
}

// applyANSI sets the storage an ansi/type tag asks for; ansi is the tag
// upper-cased with its blanks normalised.
func (cv *converter) applyANSI(ansi string) error {
	switch ansi {
	case "BOOLEAN":
		cv.kind = outBool
	case "INTEGER", "INT", "SMALLINT":
		cv.kind, cv.smallint = outInt32, ansi == "SMALLINT"
	case "BIGINT":
		cv.kind = outInt64
	case "DOUBLE", "DOUBLE PRECISION", "FLOAT", "REAL":
		cv.kind, cv.real = outFloat64, ansi == "REAL"
	case "DECIMAL", "NUMERIC":
		cv.kind, cv.prec, cv.scal = outDecimal128, 38, 9
	case "DATE":
		cv.kind = outDate32
	case "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMP WITHOUT TIME ZONE":
		cv.kind = outTimestamp
	case "TIME", "TIME WITHOUT TIME ZONE":
		cv.kind = outTime64
	case "TEXT", "JSON":
		return cv.applyText(ansi)
	default:
		if m := decimalTag.FindStringSubmatch(ansi); m != nil {
			return cv.applyDecimal(m)
		}
		if isVarchar(ansi) || strings.HasPrefix(ansi, "CHAR") {
			return cv.applyText(ansi)
		}
		return fmt.Errorf("unsupported ansi/type %q", cv.ansi)
	}
	return nil
}

// applyDecimal sets DECIMAL(p[,s]) storage from decimalTag's match m.
func (cv *converter) applyDecimal(m []string) error {
	p, _ := strconv.Atoi(m[1])
	s, _ := strconv.Atoi(m[2])
	if p < 1 || p > 38 || s > p {
		return fmt.Errorf("ansi/type %q: precision must be 1..38 and scale <= precision", cv.ansi)
	}
	cv.kind, cv.prec, cv.scal = outDecimal128, int32(p), int32(s)
	return nil
}

// applyText sets text storage for TEXT, JSON, VARCHAR and CHAR types and
// the limits they put on the values.
func (cv *converter) applyText(ansi string) error {
	cv.kind = outString
	if m := lengthTag.FindStringSubmatch(ansi); m != nil {
		n, err := strconv.Atoi(m[1])
		if err != nil || n < 1 {
			return fmt.Errorf("ansi/type %q: length must be at least 1", cv.ansi)
		}
		cv.maxLen = n
	}
	cv.jsonText = ansi == "JSON" && !cv.json
	return nil
}

// arrowType is the column's Arrow element type.
func (cv *converter) arrowType() arrow.DataType {
	switch cv.kind {
	case outBool:
		return arrow.FixedWidthTypes.Boolean
	case outInt32:
		return arrow.PrimitiveTypes.Int32
	case outInt64:
		return arrow.PrimitiveTypes.Int64
	case outFloat64:
		return arrow.PrimitiveTypes.Float64
	case outDecimal128:
		return &arrow.Decimal128Type{Precision: cv.prec, Scale: cv.scal}
	case outDate32:
		return arrow.FixedWidthTypes.Date32
	case outTimestamp:
		return &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	case outTime64:
		return arrow.FixedWidthTypes.Time64us
	}
	return arrow.BinaryTypes.String
}

func (cv *converter) mismatch(it fhirpath.Item, want string) error {
	v := it.Str()
	if it.Kind() == fhirpath.KindObject {
		v = "{...}"
	} else if len(v) > 64 {
		v = v[:64] + "..."
	}
	return fmt.Errorf("%s value %q does not fit %s", it.Kind(), v, want)
}

func isNum(it fhirpath.Item) bool {
	return it.Kind() == fhirpath.KindInteger || it.Kind() == fhirpath.KindDecimal
}

// convert maps one item to the column's storage type.
func (cv *converter) convert(it fhirpath.Item) (scalar, error) {
	if cv.precision {
		return scalar{s: precisionOf(it.Str())}, nil
	}
	switch cv.kind {
	case outBool:
		if it.Kind() != fhirpath.KindBool {
			return scalar{}, cv.mismatch(it, "BOOLEAN")
		}
		return scalar{i: it.Int()}, nil
	case outInt32, outInt64:
		return cv.convertInt(it)
	case outFloat64:
		return cv.convertFloat(it)
	case outDecimal128:
		return cv.convertDecimal(it)
	case outDate32:
		return cv.convertDate(it)
	case outTimestamp:
		return cv.convertTimestamp(it)
	case outTime64:
		return cv.convertTime(it)
	}
	return cv.convertText(it)
}

func (cv *converter) convertInt(it fhirpath.Item) (scalar, error) {
	if it.Kind() != fhirpath.KindInteger {
		return scalar{}, cv.mismatch(it, "an integer column")
	}
	if cv.kind == outInt32 && (it.Int() > math.MaxInt32 || it.Int() < math.MinInt32) {
		return scalar{}, cv.mismatch(it, "INTEGER (32-bit)")
	}
	if cv.smallint && (it.Int() > math.MaxInt16 || it.Int() < math.MinInt16) {
		return scalar{}, cv.mismatch(it, "SMALLINT")
	}
	return scalar{i: it.Int()}, nil
}

func (cv *converter) convertFloat(it fhirpath.Item) (scalar, error) {
	if !isNum(it) {
		return scalar{}, cv.mismatch(it, "DOUBLE")
	}
	f, err := strconv.ParseFloat(it.Str(), 64)
	if err != nil {
		return scalar{}, cv.mismatch(it, "DOUBLE")
	}
	if cv.real && math.Abs(f) > math.MaxFloat32 {
		return scalar{}, cv.mismatch(it, "REAL")
	}
	return scalar{f: f}, nil
}

func (cv *converter) convertDecimal(it fhirpath.Item) (scalar, error) {
	if !isNum(it) {
		return scalar{}, cv.mismatch(it, "DECIMAL")
	}
	n, err := decimal128.FromString(it.Str(), cv.prec, cv.scal)
	if err != nil || !n.FitsInPrecision(cv.prec) {
		return scalar{}, cv.mismatch(it, fmt.Sprintf("DECIMAL(%d,%d)", cv.prec, cv.scal))
	}
	return scalar{d: n}, nil
}

// convertDate, convertTimestamp and convertTime leave values that are
// valid but too partial for the column to the PartialPolicy.
func (cv *converter) convertDate(it fhirpath.Item) (scalar, error) {
	if !isTemporalOrString(it.Kind()) {
		return scalar{}, cv.mismatch(it, "DATE")
	}
	s := it.Str()
	if i := strings.IndexByte(s, 'T'); i >= 0 {
		s = s[:i] // a dateTime's calendar date as written
	}
	if d, ok := fhirpath.ParseDate(s); ok {
		return scalar{i: int64(d)}, nil
	}
	return cv.partialValue(it, "DATE")
}

func (cv *converter) convertTimestamp(it fhirpath.Item) (scalar, error) {
	if !isTemporalOrString(it.Kind()) {
		return scalar{}, cv.mismatch(it, "TIMESTAMP")
	}
	if t, ok := fhirpath.ParseInstant(it.Str()); ok {
		return scalar{i: t.UnixMicro()}, nil
	}
	return cv.partialValue(it, "TIMESTAMP")
}

func (cv *converter) convertTime(it fhirpath.Item) (scalar, error) {
	if !isTemporalOrString(it.Kind()) {
		return scalar{}, cv.mismatch(it, "TIME")
	}
	if ns, ok := fhirpath.ParseTime(it.Str()); ok {
		return scalar{i: ns / 1000}, nil
	}
	return cv.partialValue(it, "TIME")
}

// convertText converts to text: primitives as written, complex values as
// JSON, within the limits of the column's ansi/type.
func (cv *converter) convertText(it fhirpath.Item) (scalar, error) {
	var str string
	switch k := it.Kind(); {
	case k == fhirpath.KindObject:
		if !cv.json && cv.fhirType != "" {
			return scalar{}, fmt.Errorf("a complex value does not fit primitive type %s (declare the column's complex type)", cv.fhirType)
		}
		str = string(it.JSON().MarshalTo(nil))
	case cv.json:
		return scalar{}, cv.mismatch(it, "complex type "+cv.fhirType)
	case k == fhirpath.KindBool:
		str = strconv.FormatBool(it.Bool())
	default:
		str = it.Str()
	}
	if cv.maxLen > 0 && len(str) > cv.maxLen && utf8.RuneCountInString(str) > cv.maxLen {
		return scalar{}, cv.mismatch(it, cv.ansi)
	}
	if cv.jsonText && !json.Valid([]byte(str)) {
		return scalar{}, cv.mismatch(it, "JSON")
	}
	return scalar{s: str}, nil
}

func isTemporalOrString(k fhirpath.Kind) bool {
	return k == fhirpath.KindString || k == fhirpath.KindDate || k == fhirpath.KindDateTime || k == fhirpath.KindTime
}

// partialValue applies the PartialPolicy to a value that is valid but not
// precise enough for a typed temporal column.
func (cv *converter) partialValue(it fhirpath.Item, want string) (scalar, error) {
	kind := fhirpath.KindDateTime
	if cv.kind == outTime64 {
		kind = fhirpath.KindTime
	}
	if !fhirpath.ValidTemporal(kind, it.Str()) {
		return scalar{}, cv.mismatch(it, want)
	}
	switch cv.partial {
	case PartialNull:
		return scalar{null: true}, nil
	case PartialLowBoundary:
		low, ok := fhirpath.LowBoundaryUTC(it.Str(), kind)
		if !ok {
			return scalar{}, cv.mismatch(it, want)
		}
		switch cv.kind {
		case outDate32:
			d, _ := fhirpath.ParseDate(low[:10])
			return scalar{i: int64(d)}, nil
		case outTime64:
			ns, _ := fhirpath.ParseTime(low)
			return scalar{i: ns / 1000}, nil
		}
		t, _ := fhirpath.ParseInstant(low)
		return scalar{i: t.UnixMicro()}, nil
	}
	return scalar{}, fmt.Errorf("partial value %q does not fit %s (precision too low)", it.Str(), want)
}

// value converts an item to the generic row value returned by Eval: nil,
// bool, int64, json.Number (decimals, exact), string (text and temporal
// values in FHIR form) or json.RawMessage (complex values).
func (cv *converter) value(it fhirpath.Item) (Value, error) {
	sc, err := cv.convert(it)
	if err != nil {
		return nil, err
	}
	if cv.precision {
		return sc.s, nil
	}
	switch it.Kind() {
	case fhirpath.KindBool:
		if cv.kind == outString && cv.fhirType != "" && cv.fhirType != "boolean" {
			return strconv.FormatBool(it.Bool()), nil
		}
		return it.Bool(), nil
	case fhirpath.KindInteger:
		if cv.kind == outString && cv.fhirType != "" && cv.fhirType != "decimal" {
			return strings.Clone(it.Str()), nil
		}
		if cv.fhirType == "decimal" {
			return json.Number(strings.Clone(it.Str())), nil
		}
		return it.Int(), nil
	case fhirpath.KindDecimal:
		if cv.kind == outString && cv.fhirType != "" && cv.fhirType != "decimal" {
			return strings.Clone(it.Str()), nil
		}
		return json.Number(strings.Clone(it.Str())), nil
	case fhirpath.KindObject:
		return json.RawMessage(it.JSON().MarshalTo(nil)), nil
	}
	return strings.Clone(it.Str()), nil
}

package view

import (
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fastjson"
)

const encounterView = `{"name":"encounter","resource":"Encounter","select":[{"column":[
  {"name":"id","path":"getResourceKey()","type":"id"},
  {"name":"finished","path":"status = 'finished'","type":"boolean"},
  {"name":"start","path":"period.start","type":"dateTime","tag":[{"name":"ansi/type","value":"TIMESTAMP WITH TIME ZONE"}]},
  {"name":"start_text","path":"period.start","type":"dateTime"},
  {"name":"day","path":"period.start","type":"dateTime","tag":[{"name":"ansi/type","value":"DATE"}]},
  {"name":"minutes","path":"length.value","type":"decimal","tag":[{"name":"ansi/type","value":"DECIMAL(10,2)"}]},
  {"name":"minutes_text","path":"length.value","type":"decimal"},
  {"name":"n_types","path":"type.coding.count()","type":"integer"},
  {"name":"codes","path":"type.coding.code","type":"code","collection":true}]}]}`

func buildRecord(t *testing.T, mem memory.Allocator, v *View, resources []string) (arrow.RecordBatch, []error) {
	t.Helper()
	fields := append([]arrow.Field{{Name: "_resource_id", Type: arrow.BinaryTypes.String}, {Name: "_seq", Type: arrow.PrimitiveTypes.Int64}},
		v.ArrowSchema().Fields()...)
	b := array.NewRecordBuilder(mem, arrow.NewSchema(fields, nil))
	defer b.Release()
	var p fastjson.Parser
	var errs []error
	for line, r := range resources {
		res, err := p.Parse(r)
		require.NoError(t, err)
		id := string(res.GetStringBytes("id"))
		_, err = v.AppendRows(res, b, 2, func() {
			b.Field(0).(*array.StringBuilder).Append(id)
			b.Field(1).(*array.Int64Builder).Append(int64(line + 1))
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	return b.NewRecordBatch(), errs
}

func TestArrowSchema(t *testing.T) {
	v, err := Compile([]byte(encounterView))
	require.NoError(t, err)
	s := v.ArrowSchema()
	want := map[string]string{
		"id": "utf8", "finished": "bool", "start": "timestamp[us, tz=UTC]", "start_text": "utf8", "day": "date32",
		"minutes": "decimal(10, 2)", "minutes_text": "utf8", "n_types": "int32", "codes": "list<item: utf8, nullable>",
	}
	require.Equal(t, len(want), s.NumFields())
	for _, f := range s.Fields() {
		require.Equal(t, want[f.Name], f.Type.String(), f.Name)
		require.True(t, f.Nullable)
	}
	f, _ := s.FieldsByName("start")
	ansi, ok := f[0].Metadata.GetValue(MetaANSIType)
	require.True(t, ok)
	require.Equal(t, "TIMESTAMP WITH TIME ZONE", ansi)
	ft, _ := f[0].Metadata.GetValue(MetaFHIRType)
	require.Equal(t, "dateTime", ft)

	iv, err := Compile([]byte(`{"resource":"Observation","select":[{"column":[{"name":"issued","path":"issued","type":"instant"},
	  {"name":"big","path":"valueInteger","type":"integer64"},{"name":"d","path":"1.5","type":"decimal","tag":[{"name":"ansi/type","value":"double precision"}]}]}]}`))
	require.NoError(t, err)
	require.Equal(t, "timestamp[us, tz=UTC]", iv.ArrowSchema().Field(0).Type.String())
	require.Equal(t, "int64", iv.ArrowSchema().Field(1).Type.String())
	require.Equal(t, "float64", iv.ArrowSchema().Field(2).Type.String())
}

func TestAppendRows(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	v, err := Compile([]byte(encounterView))
	require.NoError(t, err)
	// fixtures[1] has a partial period.start (2021-06): rejected by default.
	rec, errs := buildRecord(t, mem, v, fixtures)
	defer rec.Release()
	require.Len(t, errs, 1)
	require.ErrorContains(t, errs[0], "view encounter: column start: partial value \"2021-06\" does not fit TIMESTAMP")
	require.EqualValues(t, 1, rec.NumRows(), "the rejected resource must leave no partial row")

	require.Equal(t, "e1", rec.Column(0).(*array.String).Value(0))
	require.EqualValues(t, 1, rec.Column(1).(*array.Int64).Value(0))
	require.True(t, rec.Column(3).(*array.Boolean).Value(0))
	wantStart := time.Date(2020, 1, 2, 9, 0, 0, 0, time.UTC)
	require.Equal(t, wantStart.UnixMicro(), int64(rec.Column(4).(*array.Timestamp).Value(0)))
	require.Equal(t, "2020-01-02T10:00:00+01:00", rec.Column(5).(*array.String).Value(0))
	require.Equal(t, arrow.Date32FromTime(time.Date(2020, 1, 2, 0, 0, 0, 0, time.UTC)), rec.Column(6).(*array.Date32).Value(0))
	require.EqualValues(t, 9000, rec.Column(7).(*array.Decimal128).Value(0).BigInt().Int64(), "90.0 at scale 2")
	require.Equal(t, "90.0", rec.Column(8).(*array.String).Value(0))
	require.EqualValues(t, 2, rec.Column(9).(*array.Int32).Value(0))
	codes := rec.Column(10).(*array.List)
	lo, hi := codes.ValueOffsets(0)
	vals := codes.ListValues().(*array.String)
	var got []string
	for i := lo; i < hi; i++ {
		got = append(got, vals.Value(int(i)))
	}
	require.Equal(t, []string{"185349003", "CU"}, got)
}

func TestPartialPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy PartialPolicy
		null   bool
		want   time.Time
	}{
		{PartialNull, true, time.Time{}},
		{PartialLowBoundary, false, time.Date(2021, 6, 1, 0, 0, 0, 0, time.UTC)},
	} {
		mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
		v, err := Compile([]byte(encounterView), WithPartialDates(tc.policy))
		require.NoError(t, err)
		rec, errs := buildRecord(t, mem, v, fixtures[:2])
		require.Empty(t, errs)
		require.EqualValues(t, 2, rec.NumRows())
		start := rec.Column(4).(*array.Timestamp)
		day := rec.Column(6).(*array.Date32)
		require.Equal(t, tc.null, start.IsNull(1))
		require.Equal(t, tc.null, day.IsNull(1))
		if !tc.null {
			require.Equal(t, tc.want.UnixMicro(), int64(start.Value(1)))
			require.Equal(t, arrow.Date32FromTime(tc.want), day.Value(1))
		}
		// e2 has no codings: an empty list, not a null one.
		require.False(t, rec.Column(10).IsNull(1))
		lo, hi := rec.Column(10).(*array.List).ValueOffsets(1)
		require.Equal(t, lo, hi)
		rec.Release()
		mem.AssertSize(t, 0)
	}
}

func TestAppendRowsTypeErrors(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	v, err := Compile([]byte(`{"resource":"Encounter","select":[{"column":[{"name":"id","path":"id"}]},
	  {"forEach":"participant","column":[{"name":"n","path":"%resource.length.value","type":"decimal","tag":[{"name":"ansi/type","value":"DECIMAL(3,1)"}]}]}]}`))
	require.NoError(t, err)
	res := `{"resourceType":"Encounter","id":"x","length":{"value":1234.5},"participant":[{},{}]}`
	rec, errs := buildRecord(t, mem, v, []string{res})
	defer rec.Release()
	require.Len(t, errs, 1)
	require.ErrorContains(t, errs[0], "column n:")
	require.EqualValues(t, 0, rec.NumRows())
}

// TestAppendRowsANSILimits: a value that its column's ansi/type cannot hold
// (a longer text than VARCHAR(n), an int beyond SMALLINT, a float beyond
// REAL, text that is not JSON) is the view's error for that resource, named
// by column, so no SQL sink meets it as a failed cast at commit.
func TestAppendRowsANSILimits(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	v, err := Compile([]byte(`{"resource":"Patient","select":[{"column":[
	  {"name":"family","path":"name.family.first()","type":"string","tag":[{"name":"ansi/type","value":"VARCHAR(5)"}]},
	  {"name":"births","path":"multipleBirth.ofType(integer)","type":"integer","tag":[{"name":"ansi/type","value":"SMALLINT"}]},
	  {"name":"weight","path":"extension.value.ofType(decimal).first()","type":"decimal","tag":[{"name":"ansi/type","value":"REAL"}]},
	  {"name":"doc","path":"gender","type":"code","tag":[{"name":"ansi/type","value":"JSON"}]}]}]}`))
	require.NoError(t, err)
	ok := `{"resourceType":"Patient","id":"ok","name":[{"family":"Müßig"}],"multipleBirthInteger":2,
	  "extension":[{"url":"w","valueDecimal":70.5}],"gender":"1"}`
	cases := []struct{ res, col, want string }{
		{`{"resourceType":"Patient","id":"a","name":[{"family":"Abernathy"}]}`, "family", "VARCHAR(5)"},
		{`{"resourceType":"Patient","id":"b","multipleBirthInteger":40000}`, "births", "SMALLINT"},
		{`{"resourceType":"Patient","id":"c","extension":[{"url":"w","valueDecimal":1e39}]}`, "weight", "REAL"},
		{`{"resourceType":"Patient","id":"d","gender":"female"}`, "doc", "JSON"},
	}
	for _, c := range cases {
		rec, errs := buildRecord(t, mem, v, []string{ok, c.res})
		require.Len(t, errs, 1, c.res)
		require.ErrorContains(t, errs[0], "column "+c.col+":")
		require.ErrorContains(t, errs[0], "does not fit "+c.want)
		require.EqualValues(t, 1, rec.NumRows(), "only the resource that fits has a row")
		require.Equal(t, "Müßig", rec.Column(2).(*array.String).Value(0), "5 characters fit VARCHAR(5), whatever their bytes")
		rec.Release()
	}
}

// WarehouseTypes: typed storage for untagged columns, tags still win, and
// a precision column after the view's own per date or dateTime column,
// read from the same cells (also for collections and Eval).
func TestWarehouseTypes(t *testing.T) {
	const def = `{"name":"w","resource":"Encounter","select":[{"column":[
	  {"name":"id","path":"getResourceKey()","type":"id"},
	  {"name":"start","path":"period.start","type":"dateTime"},
	  {"name":"start_text","path":"period.start","type":"dateTime","tag":[{"name":"ansi/type","value":"VARCHAR"}]},
	  {"name":"minutes","path":"length.value","type":"decimal"},
	  {"name":"n_types","path":"type.coding.count()","type":"integer"},
	  {"name":"day","path":"period.start.toString().substring(0, 10)","type":"date"},
	  {"name":"starts","path":"period.start","type":"dateTime","collection":true}]}]}`
	v, err := Compile([]byte(def), WarehouseTypes())
	require.NoError(t, err)
	var got []string
	for _, f := range v.ArrowSchema().Fields() {
		got = append(got, f.Name+" "+f.Type.String())
	}
	require.Equal(t, []string{
		"id utf8", "start timestamp[us, tz=UTC]", "start_text utf8", "minutes float64", "n_types int64", "day date32",
		"starts list<item: timestamp[us, tz=UTC], nullable>",
		"start_precision utf8", "day_precision utf8", "starts_precision list<item: utf8, nullable>",
	}, got)
	require.Equal(t, "start", v.Columns()[7].PrecisionOf)
	require.NotEmpty(t, v.Columns()[7].Description)

	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	rec, errs := buildRecord(t, mem, v, fixtures[:2])
	defer rec.Release()
	require.Empty(t, errs)
	col := func(name string) arrow.Array { return rec.Column(2 + v.ArrowSchema().FieldIndices(name)[0]) }
	start := col("start").(*array.Timestamp)
	require.Equal(t, time.Date(2020, 1, 2, 9, 0, 0, 0, time.UTC), start.Value(0).ToTime(arrow.Microsecond))
	require.Equal(t, time.Date(2021, 6, 1, 0, 0, 0, 0, time.UTC), start.Value(1).ToTime(arrow.Microsecond), "earliest instant of 2021-06")
	require.Equal(t, "time", col("start_precision").(*array.String).Value(0))
	require.Equal(t, "month", col("start_precision").(*array.String).Value(1))
	require.Equal(t, "2021-06", col("start_text").(*array.String).Value(1))
	require.InDelta(t, 90.0, col("minutes").(*array.Float64).Value(0), 0)
	require.True(t, col("minutes").IsNull(1))
	require.Equal(t, int64(2), col("n_types").(*array.Int64).Value(0))
	require.Equal(t, "day", col("day_precision").(*array.String).Value(0))
	require.Equal(t, "month", col("day_precision").(*array.String).Value(1))
	sp := col("starts_precision").(*array.List)
	require.Equal(t, `["month"]`, sp.ValueStr(1))

	// Eval gives the same precision values.
	var p fastjson.Parser
	res, err := p.Parse(fixtures[1])
	require.NoError(t, err)
	require.NoError(t, v.Eval(res, func(row []Value) error {
		require.Equal(t, "month", row[7])
		require.Equal(t, []Value{"month"}, row[9])
		return nil
	}))

	// A name the precision column needs is taken: a compile error, not a
	// silently dropped column.
	_, err = Compile([]byte(`{"name":"w","resource":"Patient","select":[{"column":[
	  {"name":"birth","path":"birthDate","type":"date"},{"name":"birth_precision","path":"id","type":"string"}]}]}`), WarehouseTypes())
	require.ErrorContains(t, err, "birth_precision")
	// Without the option nothing changes: dates stay text as written.
	plain, err := Compile([]byte(def))
	require.NoError(t, err)
	require.Len(t, plain.Columns(), 7)
}

// Columns without a type get the one their path resolves to in the FHIR
// R4 definitions (inside forEach too); what depends on the data stays
// text.
func TestWarehouseTypesInferred(t *testing.T) {
	const def = `{"name":"w","resource":"Observation","select":[{"column":[
	  {"name":"id","path":"getResourceKey()"},
	  {"name":"issued","path":"issued"},
	  {"name":"value","path":"value.ofType(Quantity).value"},
	  {"name":"low","path":"referenceRange.first().low.value"},
	  {"name":"anything","path":"value"},
	  {"name":"has_code","path":"code.coding.exists()"}]},
	  {"forEach":"component","column":[{"name":"comp_value","path":"value.ofType(Quantity).value"},
	    {"name":"comp_code","path":"code.coding.first().code"}]}]}`
	v, err := Compile([]byte(def), WarehouseTypes())
	require.NoError(t, err)
	got := map[string]string{}
	for _, f := range v.ArrowSchema().Fields() {
		got[f.Name] = f.Type.String()
	}
	require.Equal(t, map[string]string{
		"id": "utf8", "issued": "timestamp[us, tz=UTC]", "value": "float64", "low": "float64", "anything": "utf8",
		"has_code": "bool", "comp_value": "float64", "comp_code": "utf8",
	}, got)
	require.Equal(t, "decimal", v.Columns()[2].Type)
	require.Equal(t, "code", v.Columns()[7].Type)
	// The generic engine (the conformance suite's) leaves them untyped.
	plain, err := Compile([]byte(def))
	require.NoError(t, err)
	require.Empty(t, plain.Columns()[1].Type)
}

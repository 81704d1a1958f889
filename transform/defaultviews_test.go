// The default view pack compiled and run by the view engine: these tests
// live with the transform, which may import schemas (not the other way).
package transform_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fastjson"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/transform/view"
)

// viewDoc is the part of a ViewDefinition the pack's conventions concern.
type viewDoc struct {
	ResourceType string    `json:"resourceType"`
	URL          string    `json:"url"`
	Name         string    `json:"name"`
	Status       string    `json:"status"`
	Description  string    `json:"description"`
	FHIRVersion  []string  `json:"fhirVersion"`
	Resource     string    `json:"resource"`
	Select       []selDoc  `json:"select"`
	Where        []whereDc `json:"where"`
}

type whereDc struct {
	Path string `json:"path"`
}

type selDoc struct {
	Column        []colDoc `json:"column"`
	Select        []selDoc `json:"select"`
	UnionAll      []selDoc `json:"unionAll"`
	ForEach       string   `json:"forEach"`
	ForEachOrNull string   `json:"forEachOrNull"`
}

type colDoc struct {
	Name        string `json:"name"`
	Path        string `json:"path"`
	Type        string `json:"type"`
	Description string `json:"description"`
	Collection  bool   `json:"collection"`
	Tag         []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"tag"`
}

func (v viewDoc) columns() []colDoc {
	var out []colDoc
	var walk func(s selDoc)
	walk = func(s selDoc) {
		out = append(out, s.Column...)
		for _, c := range s.Select {
			walk(c)
		}
		if len(s.UnionAll) > 0 {
			walk(s.UnionAll[0])
		}
	}
	for _, s := range v.Select {
		walk(s)
	}
	return out
}

func decodeView(t *testing.T, vf schemas.ViewFile) viewDoc {
	t.Helper()
	var v viewDoc
	require.NoError(t, json.Unmarshal(vf.JSON, &v), vf.Source)
	return v
}

var snake = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// The tables the task promises an analyst on day one.
var requiredViews = map[string]string{
	"patient": "Patient", "encounter": "Encounter", "condition": "Condition",
	"observation": "Observation", "observation_component": "Observation",
	"procedure": "Procedure", "medication_request": "MedicationRequest",
	"immunization": "Immunization", "allergy_intolerance": "AllergyIntolerance",
	"diagnostic_report": "DiagnosticReport", "document_reference": "DocumentReference",
	"claim": "Claim", "explanation_of_benefit": "ExplanationOfBenefit", "coverage": "Coverage",
	"practitioner": "Practitioner", "organization": "Organization", "location": "Location",
	"care_plan": "CarePlan", "care_team": "CareTeam",
	"patient_identifier": "Patient", "condition_category": "Condition",
	"condition_coding": "Condition", "observation_coding": "Observation", "encounter_type": "Encounter",
}

// Resource types whose views carry no patient_id (they are not about one patient).
var noPatient = map[string]bool{"Patient": true, "Practitioner": true, "Organization": true, "Location": true}

func TestDefaultViewsWellFormed(t *testing.T) {
	views := schemas.DefaultViews()
	require.GreaterOrEqual(t, len(views), len(requiredViews))
	byName := map[string]viewDoc{}
	for i, vf := range views {
		if i > 0 {
			require.Less(t, views[i-1].Name, vf.Name, "DefaultViews must be sorted by name")
		}
		v := decodeView(t, vf)
		byName[v.Name] = v
		src := vf.Source
		require.Equal(t, "default:"+v.Name+".json", src, "file name must be the view name")
		require.Equal(t, vf.Name, v.Name)
		require.Equal(t, "ViewDefinition", v.ResourceType, src)
		require.Equal(t, "active", v.Status, src)
		require.NotEmpty(t, v.Description, src)
		require.NotEmpty(t, v.URL, src)
		require.Equal(t, []string{"4.0.1"}, v.FHIRVersion, src)
		require.Regexp(t, `^[A-Z][A-Za-z]+$`, v.Resource, src)
		require.Empty(t, v.Where, "%s: default views keep every resource", src)

		cols := v.columns()
		require.NotEmpty(t, cols, src)
		require.Equal(t, "id", cols[0].Name, "%s: the resource key comes first", src)
		require.Equal(t, "getResourceKey()", cols[0].Path, src)
		seen := map[string]bool{}
		hasPatient := false
		for _, c := range cols {
			where := src + " column " + c.Name
			require.Regexp(t, snake, c.Name, where)
			require.False(t, seen[c.Name], "%s: duplicate column", where)
			seen[c.Name] = true
			require.NotEmpty(t, c.Path, where)
			require.NotEmpty(t, c.Type, "%s: shareable views type every column", where)
			require.NotEmpty(t, c.Description, where)
			require.False(t, c.Collection, "%s: default views stay tabular (no list columns)", where)
			if c.Name == "patient_id" {
				hasPatient = true
			}
			if strings.HasSuffix(c.Name, "_id") {
				require.Contains(t, c.Path, "getReferenceKey("+refTypeOf(c.Name)+")",
					"%s: an X_id column holds the reference key of an X", where)
			}
			// Partial dates are legal FHIR, so date and dateTime stay text;
			// only instants (always complete) get a timestamp type.
			switch c.Type {
			case "date", "dateTime":
				require.Empty(t, c.Tag, "%s: a typed date column would reject partial dates", where)
			case "instant":
				require.Len(t, c.Tag, 1, where)
				require.Equal(t, "ansi/type", c.Tag[0].Name, where)
				require.Equal(t, "TIMESTAMP WITH TIME ZONE", c.Tag[0].Value, where)
			}
			require.NotContains(t, c.Path, "attachment.data", "%s: attachment data is never copied", where)
			require.NotContains(t, c.Path, "text.div", "%s: narrative is not an analytics column", where)
		}
		if !noPatient[v.Resource] {
			require.True(t, hasPatient, "%s: needs a patient_id column", src)
		}
	}
	for name, res := range requiredViews {
		v, ok := byName[name]
		require.True(t, ok, "default view %s is missing", name)
		require.Equal(t, res, v.Resource, name)
	}
	// Spot checks of conventions an analyst relies on.
	cols := map[string]bool{}
	for _, c := range byName["patient"].columns() {
		cols[c.Name] = true
	}
	for _, want := range []string{"gender", "birth_date", "deceased", "race_code", "ethnicity_code", "birthsex",
		"family_name", "given_names", "address_city", "address_state", "address_postal_code", "address_country",
		"marital_status_code", "language_code", "organization_id"} {
		require.True(t, cols[want], "patient.%s", want)
	}
	comp := byName["observation_component"]
	require.Equal(t, "component", comp.Select[1].ForEach)
}

// refTypeOf maps a key column name to the resource type it references:
// the longest trailing run of words naming a type (care_team_id →
// CareTeam, parent_organization_id → Organization).
func refTypeOf(col string) string {
	words := strings.Split(strings.TrimSuffix(col, "_id"), "_")
	special := map[string]string{"prescription": "MedicationRequest"}
	for i := range words {
		name := strings.Join(words[i:], "_")
		if t, ok := special[name]; ok {
			return t
		}
		var b strings.Builder
		for _, w := range words[i:] {
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		}
		switch t := b.String(); t {
		case "Patient", "Encounter", "Practitioner", "Organization", "Location", "Condition",
			"Observation", "Claim", "Coverage", "Medication", "CareTeam", "MedicationRequest":
			return t
		}
	}
	return "?" + col
}

func TestDefaultViewsCompile(t *testing.T) {
	for _, vf := range schemas.DefaultViews() {
		v, err := view.Compile(vf.JSON, view.WarehouseTypes())
		require.NoError(t, err, vf.Source)
		doc := decodeView(t, vf)
		require.Equal(t, vf.Name, v.Name)
		require.Equal(t, doc.Resource, v.Resource)
		cols := doc.columns()
		// The warehouse's columns: the view's own, then a precision column
		// per date or dateTime column, in the same order.
		var precision []string
		for _, c := range cols {
			if c.Type == "date" || c.Type == "dateTime" {
				precision = append(precision, c.Name+"_precision")
			}
		}
		sch := v.ArrowSchema()
		require.Len(t, v.Columns(), len(cols)+len(precision), vf.Source)
		require.Equal(t, len(cols)+len(precision), sch.NumFields(), vf.Source)
		for i, name := range precision {
			f := sch.Field(len(cols) + i)
			require.Equal(t, name, f.Name, vf.Source)
			require.Equal(t, arrow.STRING, f.Type.ID(), "%s.%s", vf.Name, name)
		}
		for i, c := range cols {
			require.Equal(t, c.Name, sch.Field(i).Name, vf.Source)
			want, ok := map[string]arrow.Type{
				"instant": arrow.TIMESTAMP, "dateTime": arrow.TIMESTAMP, "date": arrow.DATE32,
				"decimal": arrow.FLOAT64, "integer": arrow.INT64, "positiveInt": arrow.INT64, "unsignedInt": arrow.INT64,
				"boolean": arrow.BOOL, "string": arrow.STRING, "code": arrow.STRING, "uri": arrow.STRING,
				"url": arrow.STRING, "id": arrow.STRING, "base64Binary": arrow.STRING,
			}[c.Type]
			require.True(t, ok, "%s.%s: type %q has no expected storage", vf.Name, c.Name, c.Type)
			require.Equal(t, want, sch.Field(i).Type.ID(), "%s.%s", vf.Name, c.Name)
		}
	}
}

// A partial birth date (legal FHIR) must load, not reject the patient: as
// its earliest day, with the precision beside it.
func TestDefaultViewsKeepPartialDates(t *testing.T) {
	line := `{"resourceType":"Patient","id":"p1","birthDate":"1970-03","deceasedDateTime":"2020",
	  "meta":{"lastUpdated":"2024-01-02T03:04:05.123+01:00"}}`
	rows := evalOne(t, "patient", line)
	require.Len(t, rows, 1)
	require.Equal(t, "p1", rows[0]["id"])
	require.Equal(t, "1970-03-01", rows[0]["birth_date"])
	require.Equal(t, "month", rows[0]["birth_date_precision"])
	require.Equal(t, "2020-01-01T00:00:00Z", rows[0]["deceased_datetime"])
	require.Equal(t, "year", rows[0]["deceased_datetime_precision"])
	full := evalOne(t, "patient", `{"resourceType":"Patient","id":"p2","birthDate":"1970-03-15","deceasedDateTime":"2020-02-03T04:05:06+02:00"}`)
	require.Equal(t, "1970-03-15", full[0]["birth_date"])
	require.Equal(t, "day", full[0]["birth_date_precision"])
	require.Equal(t, "2020-02-03T02:05:06Z", full[0]["deceased_datetime"])
	require.Equal(t, "time", full[0]["deceased_datetime_precision"])
	none := evalOne(t, "patient", `{"resourceType":"Patient","id":"p3"}`)
	require.Empty(t, none[0]["birth_date"])
	require.Empty(t, none[0]["birth_date_precision"])
	require.Equal(t, "true", rows[0]["deceased"])
	require.Equal(t, "2024-01-02T02:04:05.123Z", rows[0]["last_updated"])
}

// US Core race/ethnicity/birth sex come from extensions, which the sample
// data lacks; this resource has them.
func TestDefaultViewsUSCore(t *testing.T) {
	line := `{"resourceType":"Patient","id":"p2","extension":[
	  {"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-race","extension":[
	    {"url":"ombCategory","valueCoding":{"system":"urn:oid:2.16.840.1.113883.6.238","code":"2106-3","display":"White"}},
	    {"url":"ombCategory","valueCoding":{"system":"urn:oid:2.16.840.1.113883.6.238","code":"2028-9","display":"Asian"}},
	    {"url":"detailed","valueCoding":{"system":"urn:oid:2.16.840.1.113883.6.238","code":"2039-6","display":"Japanese"}},
	    {"url":"text","valueString":"White, Japanese"}]},
	  {"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity","extension":[
	    {"url":"ombCategory","valueCoding":{"system":"urn:oid:2.16.840.1.113883.6.238","code":"2186-5","display":"Not Hispanic or Latino"}},
	    {"url":"text","valueString":"Not Hispanic or Latino"}]},
	  {"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex","valueCode":"F"}],
	  "name":[{"use":"maiden","family":"Old"},{"use":"official","family":"Smith","given":["Ann","Marie"]}],
	  "deceasedBoolean":false}`
	rows := evalOne(t, "patient", line)
	require.Len(t, rows, 1)
	r := rows[0]
	require.Equal(t, "2106-3", r["race_code"])
	require.Equal(t, "White", r["race_display"])
	require.Equal(t, "White, Japanese", r["race_text"])
	require.Equal(t, "2186-5", r["ethnicity_code"])
	require.Equal(t, "F", r["birthsex"])
	require.Equal(t, "Smith", r["family_name"])
	require.Equal(t, "Ann Marie", r["given_names"])
	require.Equal(t, "false", r["deceased"])

	race := evalOne(t, "patient_race", line)
	require.Len(t, race, 3)
	require.Equal(t, []string{"2106-3", "2028-9", "2039-6"}, []string{race[0]["race_code"], race[1]["race_code"], race[2]["race_code"]})
	require.Equal(t, "detailed", race[2]["race_kind"])
}

func TestDefaultViewsBloodPressureComponents(t *testing.T) {
	line := `{"resourceType":"Observation","id":"bp","status":"final","subject":{"reference":"Patient/p1"},
	  "code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"effectiveDateTime":"2020-05-01T10:00:00Z",
	  "component":[
	   {"code":{"coding":[{"system":"http://loinc.org","code":"8480-6","display":"Systolic"}]},"valueQuantity":{"value":120.5,"unit":"mm[Hg]"}},
	   {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4","display":"Diastolic"}]},"valueQuantity":{"value":80,"unit":"mm[Hg]"}}]}`
	rows := evalOne(t, "observation_component", line)
	require.Len(t, rows, 2)
	require.Equal(t, "8480-6", rows[0]["code_code"])
	require.Equal(t, "120.5", rows[0]["value_quantity_value"])
	require.Equal(t, "8462-4", rows[1]["code_code"])
	require.Equal(t, "80", rows[1]["value_quantity_value"])
	for _, r := range rows {
		require.Equal(t, "bp", r["id"])
		require.Equal(t, "p1", r["patient_id"])
		require.Equal(t, "85354-9", r["observation_code"])
	}
}

// evalOne runs default view name over one resource through the Arrow path
// the pipeline uses and returns its rows as text ("" for null).
func evalOne(t *testing.T, name, line string) []map[string]string {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	v := compileDefault(t, name)
	b := array.NewRecordBuilder(mem, v.ArrowSchema())
	defer b.Release()
	res := fastjson.MustParse(line)
	_, err := v.AppendRows(res, b, 0, func() {})
	require.NoError(t, err)
	rec := b.NewRecordBatch()
	defer rec.Release()
	var out []map[string]string
	for r := 0; r < int(rec.NumRows()); r++ {
		m := map[string]string{}
		for c := 0; c < int(rec.NumCols()); c++ {
			m[rec.ColumnName(c)] = cellString(rec.Column(c), r)
		}
		out = append(out, m)
	}
	return out
}

func compileDefault(t *testing.T, name string) *view.View {
	t.Helper()
	for _, vf := range schemas.DefaultViews() {
		if vf.Name == name {
			v, err := view.Compile(vf.JSON, view.WarehouseTypes())
			require.NoError(t, err)
			return v
		}
	}
	t.Fatalf("no default view %s", name)
	return nil
}

// cellString renders an Arrow cell as text: decimals as written, instants
// in UTC RFC 3339, null as "".
func cellString(a arrow.Array, i int) string {
	if a.IsNull(i) {
		return ""
	}
	switch x := a.(type) {
	case *array.String:
		return x.Value(i)
	case *array.Boolean:
		return strconv.FormatBool(x.Value(i))
	case *array.Int32:
		return strconv.FormatInt(int64(x.Value(i)), 10)
	case *array.Int64:
		return strconv.FormatInt(x.Value(i), 10)
	case *array.Float64:
		return strconv.FormatFloat(x.Value(i), 'f', -1, 64)
	case *array.Timestamp:
		unit := x.DataType().(*arrow.TimestampType).Unit
		return x.Value(i).ToTime(unit).UTC().Format("2006-01-02T15:04:05.999999Z07:00")
	case *array.Date32:
		return x.Value(i).ToTime().Format("2006-01-02")
	}
	return a.ValueStr(i)
}

// Sample exports: every default view must load every resource of its type
// with no error, one row per resource for top-level views, and the row
// count an independent walk of the JSON predicts for child views. Simple
// columns (plain paths, first(), ofType(), reference keys) must equal the
// JSON value on every row.
func TestDefaultViewsOnSampleData(t *testing.T) {
	dirs := map[string]string{}
	for _, env := range []string{"FHIRFERRY_SAMPLE_DIR", "FHIRFERRY_SAMPLE100_DIR"} {
		if d := os.Getenv(env); d != "" {
			dirs[env] = d
		}
	}
	if len(dirs) == 0 {
		t.Skip("FHIRFERRY_SAMPLE_DIR and FHIRFERRY_SAMPLE100_DIR are unset")
	}
	for env, dir := range dirs {
		t.Run(env, func(t *testing.T) {
			checked := 0
			for _, vf := range schemas.DefaultViews() {
				doc := decodeView(t, vf)
				p := filepath.Join(dir, doc.Resource+".ndjson")
				if _, err := os.Stat(p); err != nil {
					t.Logf("%s: no %s in %s", vf.Name, doc.Resource, dir)
					continue
				}
				checked++
				t.Run(vf.Name, func(t *testing.T) { checkSample(t, vf, doc, p) })
			}
			require.Greater(t, checked, 10)
		})
	}
}

// keyColumns names, per view, key columns and the JSON field each must
// hold, written independently of the view definitions: a view that takes
// encounter_id from the wrong field fails here even though its path runs.
var keyColumns = map[string]map[string]string{
	"patient": {"gender": "gender", "birth_date": "birthDate"},
	"encounter": {"patient_id": "subject.getReferenceKey(Patient)", "period_start": "period.start",
		"class_code": "class.code", "type_code": "type.first().coding.first().code",
		"organization_id": "serviceProvider.getReferenceKey(Organization)"},
	"condition": {"patient_id": "subject.getReferenceKey(Patient)", "encounter_id": "encounter.getReferenceKey(Encounter)",
		"code_code": "code.coding.first().code", "onset_datetime": "onsetDateTime"},
	"observation": {"patient_id": "subject.getReferenceKey(Patient)", "encounter_id": "encounter.getReferenceKey(Encounter)",
		"code_code": "code.coding.first().code", "value_quantity_value": "valueQuantity.value",
		"value_quantity_code": "valueQuantity.code", "effective_datetime": "effectiveDateTime", "issued": "issued"},
	"observation_component": {"patient_id": "subject.getReferenceKey(Patient)"},
	"procedure": {"patient_id": "subject.getReferenceKey(Patient)", "encounter_id": "encounter.getReferenceKey(Encounter)",
		"code_code": "code.coding.first().code", "performed_period_start": "performedPeriod.start"},
	"medication_request": {"patient_id": "subject.getReferenceKey(Patient)", "encounter_id": "encounter.getReferenceKey(Encounter)",
		"medication_code": "medicationCodeableConcept.coding.first().code", "authored_on": "authoredOn"},
	"immunization": {"patient_id": "patient.getReferenceKey(Patient)", "vaccine_code": "vaccineCode.coding.first().code",
		"occurrence_datetime": "occurrenceDateTime"},
	"allergy_intolerance": {"patient_id": "patient.getReferenceKey(Patient)", "code_code": "code.coding.first().code"},
	"diagnostic_report": {"patient_id": "subject.getReferenceKey(Patient)", "encounter_id": "encounter.getReferenceKey(Encounter)",
		"code_code": "code.coding.first().code", "issued": "issued"},
	"document_reference": {"patient_id": "subject.getReferenceKey(Patient)", "type_code": "type.coding.first().code", "date": "date"},
	"claim": {"patient_id": "patient.getReferenceKey(Patient)", "total_value": "total.value",
		"billable_period_start": "billablePeriod.start"},
	"explanation_of_benefit": {"patient_id": "patient.getReferenceKey(Patient)", "claim_id": "claim.getReferenceKey(Claim)"},
	"care_plan":              {"patient_id": "subject.getReferenceKey(Patient)", "encounter_id": "encounter.getReferenceKey(Encounter)"},
	"care_team":              {"patient_id": "subject.getReferenceKey(Patient)", "encounter_id": "encounter.getReferenceKey(Encounter)"},
	"organization":           {"name": "name"},
	"practitioner":           {"gender": "gender"},
}

func checkSample(t *testing.T, vf schemas.ViewFile, doc viewDoc, path string) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	v, err := view.Compile(vf.JSON, view.WarehouseTypes())
	require.NoError(t, err)
	cols := doc.columns()

	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	b := array.NewRecordBuilder(mem, v.ArrowSchema())
	defer b.Release()
	resources, rows, wantRows := 0, 0, 0
	nonNull := make([]int, len(cols))
	simple := 0
	keys := map[int]string{}
	for c, col := range cols {
		if src, ok := keyColumns[vf.Name][col.Name]; ok {
			keys[c] = src
		}
	}
	require.Len(t, keys, len(keyColumns[vf.Name]), "keyColumns names a column %s lacks", vf.Name)
	keyHits := map[int]int{}

	// Resources are appended in batches (one Arrow record per batch keeps
	// the checked allocator's bookkeeping cheap) and then checked row by
	// row against their own JSON.
	type pending struct {
		res       *fastjson.Value
		line      int
		off, rows int
	}
	const batch = 512
	parsers := make([]fastjson.Parser, batch)
	var batchRes []pending
	batchRows := 0
	check := func() {
		rec := b.NewRecordBatch()
		defer rec.Release()
		total := 0
		for _, pr := range batchRes {
			total += pr.rows
		}
		require.Equal(t, total, int(rec.NumRows()))
		for _, pr := range batchRes {
			where := func(what string) func() string {
				return func() string { return fmt.Sprintf("%s line %d %s", path, pr.line, what) }
			}
			want := expectedRows(doc, pr.res)
			wantRows += want
			require.Equal(t, want, pr.rows, "%s line %d: rows", path, pr.line)
			for r := pr.off; r < pr.off+pr.rows; r++ {
				for c, col := range cols {
					got := cellString(rec.Column(c), r)
					if got != "" {
						nonNull[c]++
					}
					if src, ok := keys[c]; ok {
						want, ok := oracle(pr.res, src)
						require.True(t, ok, src)
						requireSameValue(t, col, want, got, where("key column "+col.Name))
						if want != "" {
							keyHits[c]++
						}
					}
					if r > pr.off || !isTopLevel(doc, col.Name) {
						continue
					}
					want, ok := oracle(pr.res, col.Path)
					if !ok {
						continue
					}
					simple++
					requireSameValue(t, col, want, got, where("column "+col.Name))
				}
			}
		}
		batchRes, batchRows = batchRes[:0], 0
	}
	for lineNo := 1; sc.Scan(); lineNo++ {
		res, err := parsers[len(batchRes)].ParseBytes(sc.Bytes())
		require.NoError(t, err)
		if string(res.GetStringBytes("resourceType")) != doc.Resource {
			continue
		}
		resources++
		n, err := v.AppendRows(res, b, 0, func() {})
		require.NoError(t, err, "%s line %d", path, lineNo)
		batchRes = append(batchRes, pending{res: res, line: lineNo, off: batchRows, rows: n})
		batchRows += n
		rows += n
		if len(batchRes) == batch {
			check()
		}
	}
	check()
	require.NoError(t, sc.Err())
	require.Greater(t, resources, 0)
	require.Equal(t, wantRows, rows)
	if !isChild(doc) {
		require.Equal(t, resources, rows, "one row per resource")
		require.Greater(t, simple, 0)
	}
	for c := range keys {
		require.Positive(t, keyHits[c], "%s.%s is never set in this sample", vf.Name, cols[c].Name)
	}
	// Keys are never null.
	for c, col := range cols {
		if col.Name == "id" {
			require.Equal(t, rows, nonNull[c], "%s: id is null on some rows", vf.Name)
		}
	}
	t.Logf("%s: %d resources, %d rows, %d simple cells compared", vf.Name, resources, rows, simple)
}

func isChild(doc viewDoc) bool {
	for _, s := range doc.Select {
		if s.ForEach != "" || s.ForEachOrNull != "" {
			return true
		}
	}
	return false
}

// isTopLevel reports whether column name sits in a select with no forEach
// (so it is evaluated on the resource itself).
func isTopLevel(doc viewDoc, name string) bool {
	for _, s := range doc.Select {
		if s.ForEach != "" || s.ForEachOrNull != "" {
			continue
		}
		for _, c := range s.Column {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

// expectedRows predicts a view's row count from the JSON alone: a forEach
// over a dotted path yields one row per item; a nested forEachOrNull at
// least one per outer item. Non-simple forEach paths are evaluated by the
// oracle's collection walk where possible.
func expectedRows(doc viewDoc, res *fastjson.Value) int {
	rows := 1
	for _, s := range doc.Select {
		if s.ForEach == "" {
			continue
		}
		items, ok := walk([]*fastjson.Value{res}, s.ForEach)
		if !ok {
			return -1
		}
		n := 0
		for _, it := range items {
			m := 1
			for _, sub := range s.Select {
				if sub.ForEachOrNull != "" {
					inner, _ := walk([]*fastjson.Value{it}, sub.ForEachOrNull)
					m *= max(1, len(inner))
				}
			}
			n += m
		}
		rows *= n
	}
	return rows
}

var (
	reExt      = regexp.MustCompile(`^extension\('([^']+)'\)$`)
	reWhereURL = regexp.MustCompile(`^where\(url = '([^']+)' or url = '([^']+)'\)$`)
	reField    = regexp.MustCompile(`^[a-zA-Z]+$`)
)

// walk evaluates a restricted path (fields, first(), ofType(T),
// extension('url') and one where-on-url form) over JSON; ok is false for
// anything else.
func walk(in []*fastjson.Value, path string) ([]*fastjson.Value, bool) {
	cur := in
	for _, seg := range pathSegments(path) {
		var next []*fastjson.Value
		switch {
		case seg == "first()":
			if len(cur) > 0 {
				next = cur[:1]
			}
		case strings.HasPrefix(seg, "ofType(") && strings.HasSuffix(seg, ")"):
			return nil, false // handled by the caller with the field name
		case reExt.MatchString(seg):
			url := reExt.FindStringSubmatch(seg)[1]
			for _, v := range cur {
				for _, e := range v.GetArray("extension") {
					if string(e.GetStringBytes("url")) == url {
						next = append(next, e)
					}
				}
			}
		case reWhereURL.MatchString(seg):
			m := reWhereURL.FindStringSubmatch(seg)
			for _, e := range cur {
				if u := string(e.GetStringBytes("url")); u == m[1] || u == m[2] {
					next = append(next, e)
				}
			}
		case reField.MatchString(seg):
			for _, v := range cur {
				x := v.Get(seg)
				if x == nil {
					continue
				}
				if x.Type() == fastjson.TypeArray {
					next = append(next, x.GetArray()...)
				} else {
					next = append(next, x)
				}
			}
		default:
			return nil, false
		}
		cur = next
	}
	return cur, true
}

// segCache memoises pathSegments: the sample test walks the same few
// hundred paths over tens of thousands of resources.
var segCache sync.Map

// pathSegments rewrites x.ofType(T) on a choice element to the key x + T
// and splits the path into steps.
func pathSegments(path string) []string {
	if v, ok := segCache.Load(path); ok {
		return v.([]string)
	}
	p := path
	if m := reOfType.FindStringSubmatch(p); m != nil {
		p = m[1] + m[2] + strings.ToUpper(m[3][:1]) + m[3][1:] + m[4]
	}
	segs := splitPath(p)
	segCache.Store(path, segs)
	return segs
}

// splitPath splits on dots outside parentheses and quotes.
func splitPath(p string) []string {
	var out []string
	depth, quote, start := 0, false, 0
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\'':
			quote = !quote
		case quote:
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == '.' && depth == 0:
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return append(out, p[start:])
}

var reOfType = regexp.MustCompile(`^(.*?)([a-zA-Z]+)\.ofType\(([A-Za-z]+)\)(.*)$`)

// oracle computes a top-level column's value straight from the JSON for
// simple paths; ok is false when the path is not simple enough.
func oracle(res *fastjson.Value, path string) (val string, ok bool) {
	if path == "getResourceKey()" {
		return string(res.GetStringBytes("id")), true
	}
	refType := ""
	if i := strings.LastIndex(path, ".getReferenceKey("); i >= 0 {
		rest := path[i+len(".getReferenceKey("):]
		if !strings.HasSuffix(rest, ")") || strings.Contains(rest, ".") {
			return "", false
		}
		refType = strings.TrimSuffix(rest, ")")
		path = path[:i] + ".reference"
	}
	if strings.ContainsAny(path, "'=%$ ") || strings.Contains(path, "join(") || strings.Contains(path, "exists(") {
		return "", false
	}
	items, ok := walk([]*fastjson.Value{res}, path)
	if !ok || len(items) > 1 {
		return "", false
	}
	if len(items) == 0 {
		return "", true
	}
	x := items[0]
	if refType != "" {
		ref := string(x.GetStringBytes())
		parts := strings.Split(ref, "/")
		if len(parts) < 2 || parts[len(parts)-2] != refType {
			return "", true
		}
		return parts[len(parts)-1], true
	}
	switch x.Type() {
	case fastjson.TypeString:
		return string(x.GetStringBytes()), true
	case fastjson.TypeNumber, fastjson.TypeTrue, fastjson.TypeFalse:
		return x.String(), true
	}
	return "", false
}

// requireSameValue compares a cell with the oracle's text for col's type;
// where is only formatted on a mismatch (it runs for every cell).
func requireSameValue(t *testing.T, col colDoc, want, got string, whereFn func() string) {
	t.Helper()
	if want == got {
		return
	}
	where := whereFn()
	if want == "" || got == "" {
		require.Equal(t, want, got, where)
		return
	}
	switch col.Type {
	case "decimal":
		w, err1 := strconv.ParseFloat(want, 64)
		g, err2 := strconv.ParseFloat(got, 64)
		require.NoError(t, err1, where)
		require.NoError(t, err2, where)
		require.LessOrEqual(t, math.Abs(w-g), 1e-9*math.Max(1, math.Abs(w)), where)
	case "date":
		require.Len(t, got, 10, where)
		require.True(t, strings.HasPrefix(got, want), "%s: %s is not the earliest day of %s", where, got, want)
	case "instant", "dateTime":
		if len(want) <= 10 { // a partial dateTime: its earliest instant, in UTC
			want += "-01-01T00:00:00Z"[len(want)-4:]
		}
		w, err := time.Parse(time.RFC3339Nano, want)
		require.NoError(t, err, where)
		g, err := time.Parse(time.RFC3339Nano, got)
		require.NoError(t, err, where)
		require.True(t, w.Truncate(time.Microsecond).Equal(g), "%s: %s != %s", where, want, got)
	default:
		require.Equal(t, want, got, where)
	}
}

package view

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fastjson"
)

// Resources unlike the conformance fixtures: Encounters, Conditions and a
// nested CarePlan-like QuestionnaireResponse.
var fixtures = []string{
	`{"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":"AMB"},
	  "subject":{"reference":"Patient/p1"},"period":{"start":"2020-01-02T10:00:00+01:00","end":"2020-01-02T11:30:00+01:00"},
	  "type":[{"coding":[{"system":"http://snomed.info/sct","code":"185349003","display":"Check up"},{"system":"local","code":"CU"}]}],
	  "participant":[{"individual":{"reference":"Practitioner/d1"}},{"individual":{"reference":"Practitioner/d2"}}],
	  "length":{"value":90.0,"unit":"min"}}`,
	`{"resourceType":"Encounter","id":"e2","status":"in-progress","class":{"code":"EMER"},
	  "subject":{"reference":"http://other.org/fhir/Patient/p2/_history/3"},"period":{"start":"2021-06"}}`,
	`{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},"onsetDateTime":"2019-03-04",
	  "code":{"coding":[{"system":"http://snomed.info/sct","code":"44054006"}]}}`,
	`{"resourceType":"QuestionnaireResponse","id":"q1","status":"completed","item":[
	   {"linkId":"a","item":[{"linkId":"a.1","answer":[{"valueInteger":4,"item":[{"linkId":"a.1.x"}]}]}]},
	   {"linkId":"b","answer":[{"valueBoolean":true}]}]}`,
}

func evalAll(t *testing.T, def string) ([]string, error) {
	t.Helper()
	v, err := Compile([]byte(def))
	require.NoError(t, err)
	var out []string
	var p fastjson.Parser
	for _, f := range fixtures {
		res, err := p.Parse(f)
		require.NoError(t, err)
		err = v.Eval(res, func(row []Value) error {
			m := map[string]any{}
			for i, c := range v.Columns() {
				m[c.Name] = row[i]
			}
			out = append(out, canonical(m))
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func TestViewFeatures(t *testing.T) {
	tests := []struct {
		name string
		def  string
		want []string
	}{
		{"forEach over codings with reference key",
			`{"resource":"Encounter","select":[{"column":[{"name":"id","path":"getResourceKey()"},{"name":"pat","path":"subject.getReferenceKey(Patient)"}]},
			  {"forEach":"type.coding","column":[{"name":"sys","path":"system"},{"name":"code","path":"code"},{"name":"i","path":"%rowIndex"}]}]}`,
			[]string{`{"code":"185349003","i":0,"id":"e1","pat":"p1","sys":"http://snomed.info/sct"}`,
				`{"code":"CU","i":1,"id":"e1","pat":"p1","sys":"local"}`}},
		{"forEachOrNull keeps encounters without types",
			`{"resource":"Encounter","select":[{"column":[{"name":"id","path":"id"},{"name":"pat","path":"subject.getReferenceKey()"}]},
			  {"forEachOrNull":"type.coding.where(system = %sct)","column":[{"name":"code","path":"code"},{"name":"i","path":"%rowIndex"}]}],
			  "constant":[{"name":"sct","valueUri":"http://snomed.info/sct"}]}`,
			[]string{`{"code":"185349003","i":0,"id":"e1","pat":"p1"}`, `{"code":null,"i":0,"id":"e2","pat":"p2"}`}},
		{"where with date constant and collection column",
			`{"resource":"Encounter","where":[{"path":"period.start >= %since"}],
			  "constant":[{"name":"since","valueDate":"2020-01-01"}],
			  "select":[{"column":[{"name":"id","path":"id"},{"name":"docs","path":"participant.individual.getReferenceKey(Practitioner)","collection":true},
			  {"name":"minutes","path":"length.value","type":"decimal"}]}]}`,
			[]string{`{"docs":["d1","d2"],"id":"e1","minutes":90}`, `{"docs":[],"id":"e2","minutes":null}`}},
		{"unionAll of two sources with literal kind",
			`{"resource":"Encounter","select":[{"column":[{"name":"id","path":"id"}],"unionAll":[
			  {"column":[{"name":"kind","path":"'class'"},{"name":"code","path":"class.code"}]},
			  {"forEach":"type.coding","column":[{"name":"kind","path":"'type'"},{"name":"code","path":"code"}]}]}]}`,
			[]string{`{"code":"AMB","id":"e1","kind":"class"}`, `{"code":"185349003","id":"e1","kind":"type"}`,
				`{"code":"CU","id":"e1","kind":"type"}`, `{"code":"EMER","id":"e2","kind":"class"}`}},
		{"repeat flattens nested items with answers",
			`{"resource":"QuestionnaireResponse","select":[{"repeat":["item","answer.item"],"column":[{"name":"link","path":"linkId"},
			  {"name":"n","path":"%rowIndex"},{"name":"answer","path":"answer.value.ofType(integer)","type":"integer"}]}]}`,
			[]string{`{"answer":null,"link":"a","n":0}`, `{"answer":4,"link":"a.1","n":1}`, `{"answer":null,"link":"a.1.x","n":2}`,
				`{"answer":null,"link":"b","n":3}`}},
		{"choice types, boundaries and arithmetic",
			`{"resource":"Condition","select":[{"column":[{"name":"onset","path":"onset.ofType(dateTime)","type":"dateTime"},
			  {"name":"lo","path":"onset.ofType(dateTime).lowBoundary()","type":"dateTime"},
			  {"name":"is_dt","path":"onset is dateTime"},{"name":"n","path":"code.coding.count() * 2 + 1"}]}]}`,
			[]string{`{"is_dt":true,"lo":"2019-03-04T00:00:00.000+14:00","n":3,"onset":"2019-03-04"}`}},
		{"sibling forEach cross join",
			`{"resource":"Encounter","select":[{"forEach":"participant","column":[{"name":"doc","path":"individual.reference"}]},
			  {"forEach":"type.coding","column":[{"name":"code","path":"code"}]}]}`,
			[]string{`{"code":"185349003","doc":"Practitioner/d1"}`, `{"code":"185349003","doc":"Practitioner/d2"}`,
				`{"code":"CU","doc":"Practitioner/d1"}`, `{"code":"CU","doc":"Practitioner/d2"}`}},
		{"complex column type is JSON",
			`{"resource":"Encounter","where":[{"path":"id = 'e1'"}],"select":[{"column":[{"name":"cls","path":"class","type":"Coding"}]}]}`,
			[]string{`{"cls":{"code":"AMB"}}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := evalAll(t, tt.def)
			require.NoError(t, err)
			want := make([]string, len(tt.want))
			for i, w := range tt.want {
				want[i] = canonical(json.RawMessage(w))
			}
			require.ElementsMatch(t, want, got)
		})
	}
}

func TestRuntimeErrors(t *testing.T) {
	tests := []struct{ name, def, msg string }{
		{"multiple values", `{"name":"enc","resource":"Encounter","select":[{"column":[{"name":"code","path":"type.coding.code"}]}]}`,
			"view enc: column code: multiple values found"},
		{"where not boolean", `{"resource":"Encounter","where":[{"path":"class.code"}],"select":[{"column":[{"name":"id","path":"id"}]}]}`,
			"must yield a boolean"},
		{"integer column gets a string", `{"resource":"Encounter","select":[{"column":[{"name":"s","path":"status","type":"integer"}]}]}`,
			"column s: String value \"finished\" does not fit an integer column"},
		{"boolean column gets a code", `{"resource":"Encounter","select":[{"column":[{"name":"s","path":"status","type":"boolean"}]}]}`,
			"does not fit BOOLEAN"},
		{"fhirpath singleton error", `{"resource":"Encounter","select":[{"column":[{"name":"x","path":"type.coding.code < 'x'"}]}]}`,
			"column x: fhirpath"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := evalAll(t, tt.def)
			require.ErrorContains(t, err, tt.msg)
			var re *RowError
			require.ErrorAs(t, err, &re)
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, def string
		msgs      []string
	}{
		{"not an object", `[1]`, []string{"not a JSON object"}},
		{"bad json", `{"resource":`, []string{"invalid JSON"}},
		{"missing resource and select", `{"name":"v1"}`, []string{"view v1:", "resource: missing", "select: missing"}},
		{"unknown resource", `{"resource":"Patiente","select":[{"column":[{"name":"id","path":"id"}]}]}`, []string{`unknown FHIR resource type "Patiente"`}},
		{"bad sql names", `{"name":"my-view","resource":"Patient","select":[{"column":[{"name":"1id","path":"id"}]}]}`,
			[]string{"name: \"my-view\" is not a valid sql-name", "select[0].column[0].name: must be a sql-name"}},
		{"duplicate column across selects", `{"name":"dup","resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]},{"forEach":"name","column":[{"name":"id","path":"family"}]}]}`,
			[]string{"view dup:", `column "id" is defined more than once`}},
		{"union mismatch names", `{"resource":"Patient","select":[{"unionAll":[{"column":[{"name":"a","path":"id"}]},{"column":[{"name":"b","path":"id"}]}]}]}`,
			[]string{"select[0].unionAll[1]: unionAll branches must have the same columns"}},
		{"bad fhirpath in nested column", `{"resource":"Patient","select":[{"select":[{"column":[{"name":"a","path":"name.where("}]}]}]}`,
			[]string{"select[0].select[0].column[0].path: fhirpath:"}},
		{"undefined constant", `{"resource":"Patient","constant":[{"name":"x","valueString":"1"}],"select":[{"forEach":"name.where(use = %y)","column":[{"name":"a","path":"id"}]}]}`,
			[]string{"select[0].forEach: fhirpath: undefined variable %y"}},
		{"constant without value", `{"resource":"Patient","constant":[{"name":"x"}],"select":[{"column":[{"name":"a","path":"id"}]}]}`,
			[]string{`constant[0]: constant "x" has no value[x]`}},
		{"constant with wrong JSON type", `{"resource":"Patient","constant":[{"name":"x","valueInteger":"3"}],"select":[{"column":[{"name":"a","path":"id"}]}]}`,
			[]string{"constant[0].valueInteger: must be an integer"}},
		{"two iteration directives", `{"resource":"Patient","select":[{"forEach":"name","repeat":["name"],"column":[{"name":"a","path":"id"}]}]}`,
			[]string{"select[0]: at most one of forEach, forEachOrNull and repeat"}},
		{"forEach not a string", `{"resource":"Patient","select":[{"forEach":1}]}`, []string{"select[0].forEach: must be a FHIRPath string"}},
		{"collection not boolean", `{"resource":"Patient","select":[{"column":[{"name":"a","path":"id","collection":"yes"}]}]}`,
			[]string{"select[0].column[0].collection: must be a boolean"}},
		{"unsupported ansi type", `{"resource":"Patient","select":[{"column":[{"name":"a","path":"id","tag":[{"name":"ansi/type","value":"GEOMETRY"}]}]}]}`,
			[]string{`column a: unsupported ansi/type "GEOMETRY"`}},
		{"where path missing", `{"resource":"Patient","where":[{}],"select":[{"column":[{"name":"a","path":"id"}]}]}`,
			[]string{"where[0].path: missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := Compile([]byte(tt.def))
			require.Error(t, err)
			require.Nil(t, v)
			for _, m := range tt.msgs {
				require.ErrorContains(t, err, m)
			}
		})
	}
}

func TestColumnsAndInference(t *testing.T) {
	v, err := Compile([]byte(`{"resource":"Observation","resourceType":"ViewDefinition","identifier":[{"value":"x"}],
	  "select":[{"column":[{"name":"id","path":"getResourceKey()"},{"name":"has","path":"value.exists()"},{"name":"q","path":"value.ofType(Quantity)"},
	  {"name":"n","path":"component.count()","tags":[{"name":"ansi/type","value":"BIGINT"}]},
	  {"name":"t","path":"effective","type":"http://hl7.org/fhir/StructureDefinition/dateTime","description":"when"}]}]}`))
	require.NoError(t, err)
	var got []string
	for _, c := range v.Columns() {
		got = append(got, c.Name+":"+c.Type)
	}
	require.Equal(t, []string{"id:string", "has:boolean", "q:Quantity", "n:integer", "t:dateTime"}, got)
	require.Equal(t, "BIGINT", v.Columns()[3].Tag("ansi/type"))
	require.Equal(t, "when", v.Columns()[4].Description)
}

// TestHarnessDetectsMismatch makes sure the conformance comparison can fail.
func TestHarnessDetectsMismatch(t *testing.T) {
	res := []json.RawMessage{json.RawMessage(`{"resourceType":"Patient","id":"a","active":true}`)}
	def := json.RawMessage(`{"resource":"Patient","select":[{"column":[{"name":"id","path":"id"},{"name":"n","path":"1.0","type":"decimal"}]}]}`)
	require.NoError(t, runCase(res, def, []any{map[string]any{"id": "a", "n": 1}}, nil, false, nil))
	require.Error(t, runCase(res, def, []any{map[string]any{"id": "b", "n": 1}}, nil, false, nil))
	require.Error(t, runCase(res, def, []any{map[string]any{"id": "a", "n": 1.5}}, nil, false, nil))
	require.Error(t, runCase(res, def, nil, nil, true, nil))
	two := 2
	require.Error(t, runCase(res, def, nil, &two, false, nil))
	require.Error(t, runCase(res, def, nil, nil, false, []string{"n", "id"}))
}

func TestConcurrentEval(t *testing.T) {
	v, err := Compile([]byte(`{"resource":"Encounter","select":[{"column":[{"name":"id","path":"id"}]},{"forEach":"type.coding","column":[{"name":"code","path":"code"}]}]}`))
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p fastjson.Parser
			for i := 0; i < 200; i++ {
				res, _ := p.Parse(fixtures[0])
				n := 0
				if err := v.Eval(res, func(row []Value) error {
					if row[0] != "e1" {
						return &RowError{Err: errUnexpected(row)}
					}
					n++
					return nil
				}); err != nil {
					errs <- err
					return
				}
				if n != 2 {
					errs <- errUnexpected(n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

type unexpected struct{ v any }

func (u unexpected) Error() string { return "unexpected " + strings.TrimSpace(canonical(u.v)) }

func errUnexpected(v any) error { return unexpected{v} }

package fhirpath

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fastjson"
)

const patient = `{"resourceType":"Patient","id":"p1","active":true,"gender":"female","birthDate":"1974-12",
"name":[{"use":"official","family":"Chalmers","given":["Peter","James"]},{"use":"usual","given":["Jim"]}],
"deceasedBoolean":false,
"telecom":[{"system":"phone","value":"555"},{"system":"email","value":"a@b"}],
"managingOrganization":{"reference":"Organization/o1"},
"generalPractitioner":[{"reference":"http://x.org/fhir/Practitioner/pr1/_history/2"},{"display":"nobody"},{"reference":"urn:uuid:abc","type":"Practitioner"}],
"extension":[{"url":"http://e/race","extension":[{"url":"ombCategory","valueCoding":{"code":"2106-3"}}]},{"url":"http://e/sex","valueCode":"F"}],
"multipleBirthInteger":2}`

const observation = `{"resourceType":"Observation","id":"o1","status":"final",
"valueQuantity":{"value":7.20,"unit":"mmol/L"},"effectiveDateTime":"2021-03-04T10:11:12+02:00",
"issued":"2021-03-04T08:11:12.000Z","component":[{"valueInteger":3},{"valueString":"x"}],
"referenceRange":[{"low":{"value":2},"high":{"value":3}}]}`

// render turns a result collection into a compact, comparable string.
func render(items []Item) string {
	parts := make([]string, 0, len(items))
	for _, it := range items {
		switch it.k {
		case KindBool:
			if it.Bool() {
				parts = append(parts, "true")
			} else {
				parts = append(parts, "false")
			}
		case KindObject:
			parts = append(parts, "{"+it.typ+"}")
		case KindString:
			parts = append(parts, "'"+it.s+"'")
		default:
			parts = append(parts, it.k.String()+":"+it.s)
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func eval(t *testing.T, res, expr string, opts *Options) (string, error) {
	t.Helper()
	var p fastjson.Parser
	v, err := p.Parse(res)
	require.NoError(t, err)
	e, err := Compile(expr, opts)
	if err != nil {
		return "", err
	}
	c := NewCtx()
	out, err := e.EvalResource(c, v)
	return render(out), err
}

func TestEval(t *testing.T) {
	consts := &Options{
		Constants: map[string]Item{
			"use": String("official"), "idx": Integer(1), "bd": Temporal(KindDate, "1974-12"),
			"day": Temporal(KindDate, "1974-12-25"), "limit": Decimal("7.2"),
		},
		Vars: []string{"rowIndex"},
	}
	tests := []struct {
		res, expr, want string
	}{
		{patient, "id", "['p1']"},
		{patient, "Patient.id", "['p1']"},
		{patient, "name.given", "['Peter','James','Jim']"},
		{patient, "name.given.first()", "['Peter']"},
		{patient, "name.given.last()", "['Jim']"},
		{patient, "name[1].given", "['Jim']"},
		{patient, "name[%idx].use", "['usual']"},
		{patient, "name[5].given", "[]"},
		{patient, "name.where(use = %use).family", "['Chalmers']"},
		{patient, "name.where(use = 'nope').exists()", "[false]"},
		{patient, "name.exists(given = 'Jim')", "[true]"},
		{patient, "name.given.count()", "[Integer:3]"},
		{patient, "name.given.join(', ')", "['Peter, James, Jim']"},
		{patient, "name.given.join()", "['PeterJamesJim']"},
		{patient, "identifier.value.join(',')", "[]"},
		{patient, "telecom.empty()", "[false]"},
		{patient, "photo.empty()", "[true]"},
		{patient, "(gender = 'male').not()", "[true]"},
		{patient, "deceased.ofType(boolean)", "[false]"},
		{patient, "deceased.ofType(dateTime)", "[]"},
		{patient, "multipleBirth.ofType(integer) + 1", "[Integer:3]"},
		{patient, "birthDate = %bd", "[true]"},
		{patient, "birthDate = %day", "[]"},      // different precision: unknown
		{patient, "birthDate < @1975", "[true]"}, // year precision decides
		{patient, "birthDate.lowBoundary()", "[Date:1974-12-01]"},
		{patient, "birthDate.highBoundary()", "[Date:1974-12-31]"},
		{patient, "managingOrganization.getReferenceKey()", "['o1']"},
		{patient, "managingOrganization.getReferenceKey(Patient)", "[]"},
		{patient, "generalPractitioner.getReferenceKey(Practitioner)", "['pr1','abc']"},
		{patient, "getResourceKey()", "['p1']"},
		{patient, "getResourceKey() = 'p1'", "[true]"},
		{patient, "extension('http://e/sex').value.ofType(code)", "['F']"},
		{patient, "extension('http://e/race').extension('ombCategory').value.ofType(Coding).code", "['2106-3']"},
		{patient, "active and gender = 'female'", "[true]"},
		{patient, "active and {}", "[]"},
		{patient, "false and {}", "[false]"},
		{patient, "true or {}", "[true]"},
		{patient, "{} or false", "[]"},
		{patient, "true xor true", "[false]"},
		{patient, "false implies {}", "[true]"},
		{patient, "{} implies true", "[true]"},
		{patient, "'a' & {} & 'b'", "['ab']"},
		{patient, "'a' + 'b'", "['ab']"},
		{patient, "7 div 2 + 7 mod 2", "[Integer:4]"},
		{patient, "1 / 3", "[Decimal:0.33333333]"},
		{patient, "-2.5 * 2", "[Decimal:-5]"},
		{patient, "1.0 = 1", "[true]"},
		{patient, "1.10 > 1.1", "[false]"},
		{patient, "'b' > 'a'", "[true]"},
		{patient, "%rowIndex", "[]"},
		{patient, "telecom.system | 'phone' | 'fax'", "['phone','email','fax']"},
		{patient, "'email' in telecom.system", "[true]"},
		{patient, "telecom.system contains 'sms'", "[false]"},
		{patient, "name.select(given.first())", "['Peter','Jim']"},
		{patient, "name.all(given.exists())", "[true]"},
		{patient, "iif(active, 'y', 'n')", "['y']"},
		{patient, "gender.upper().substring(1, 2)", "['EM']"},
		{patient, "gender is string", "[true]"},
		{patient, "name.first() is HumanName", "[false]"},
		{patient, "$this.id", "['p1']"},
		{patient, "%resource.id", "['p1']"},
		{observation, "value.ofType(Quantity).value", "[Decimal:7.20]"},
		{observation, "value.value < %limit", "[false]"},
		{observation, "value.value = %limit", "[true]"},
		{observation, "value.ofType(Quantity).value.lowBoundary()", "[Decimal:7.195]"},
		{observation, "value.ofType(Quantity).value.highBoundary()", "[Decimal:7.205]"},
		{observation, "effective.ofType(dateTime).lowBoundary()", "[DateTime:2021-03-04T10:11:12.000+02:00]"},
		{observation, "effective = @2021-03-04T08:11:12Z", "[true]"},
		{observation, "effective > issued", "[false]"},
		{observation, "effective.ofType(Period)", "[]"},
		{observation, "component.value.ofType(integer)", "[Integer:3]"},
		{observation, "component.value", "[Integer:3,'x']"},
		{observation, "referenceRange.high.value / referenceRange.low.value", "[Decimal:1.5]"},
		{observation, "referenceRange.high.value - referenceRange.low.value", "[Integer:1]"},
		{observation, "@T12:34.lowBoundary()", "[Time:12:34:00.000]"},
		{observation, "@T12:34:56.highBoundary()", "[Time:12:34:56.999]"},
		{observation, "@2010-10-10T.lowBoundary()", "[DateTime:2010-10-10T00:00:00.000+14:00]"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			got, err := eval(t, tt.res, tt.expr, consts)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestEvalErrors(t *testing.T) {
	tests := []struct{ expr, msg string }{
		{"name.given and true", "single item"},
		{"name.given < 'x'", "single item"},
		{"gender + 1", "not defined"},
		{"name.first() < 1", "cannot compare"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			_, err := eval(t, patient, tt.expr, nil)
			require.ErrorContains(t, err, tt.msg)
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct{ expr, msg string }{
		{"@@", "literal"},
		{"name.", "expected a name"},
		{"name.where(", "end of expression"},
		{"foo()", "unknown function"},
		{"first(1)", "arguments"},
		{"%nope", "undefined variable %nope"},
		{"'abc", "unterminated string"},
		{"name[0", "expected \"]\""},
		{"ofType('x' + 1)", "type name"},
		{"", "empty expression"},
		{strings.Repeat("(", 500) + "1" + strings.Repeat(")", 500), "nested too deeply"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			_, err := Compile(tt.expr, nil)
			require.ErrorContains(t, err, tt.msg)
		})
	}
}

func TestEvalAllocations(t *testing.T) {
	var p fastjson.Parser
	v, err := p.Parse(observation)
	require.NoError(t, err)
	e, err := Compile("code.coding.where(system = 'x').code | subject.getReferenceKey(Patient) | value.ofType(Quantity).unit", nil)
	require.NoError(t, err)
	c := NewCtx()
	r := Resource(v)
	focus := []Item{r}
	dst := make([]Item, 0, 8)
	allocs := testing.AllocsPerRun(100, func() {
		c.Reset(r)
		if _, err := e.Eval(c, focus, dst[:0]); err != nil {
			t.Fatal(err)
		}
	})
	require.LessOrEqual(t, allocs, 1.0, "evaluation should not allocate in steady state")
}

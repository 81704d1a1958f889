package fhirpath

import (
	"testing"

	"github.com/valyala/fastjson"
)

// FuzzParse checks that no expression makes the parser, compiler or
// evaluator panic, and that compiled expressions evaluate deterministically.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"name.given.first()", "name.where(use = 'official').family", "value.ofType(Quantity).value",
		"extension('http://x').value.ofType(Coding).code", "a.b[0].c", "1 + 2 * 3 div 4 mod 5",
		"@2020-01-01T10:00:00.000+02:00 > @2020", "@T12:00", "(gender = 'male').not()",
		"subject.getReferenceKey(Patient) = getResourceKey()", "name.given.join(', ')",
		"birthDate.lowBoundary()", "1.0.highBoundary()", "x is FHIR.Quantity", "a | b | c",
		"true and false or {} implies 1 > 2 xor 'a' ~ 'A'", "%resource.id", "$this", "`div`.x",
		"'\\u0041\\n'", "-(1.5)", "5 'mg'", "4 days", "iif(a, b, c)", "name.select(given).skip(1).take(2)",
	} {
		f.Add(s)
	}
	var p fastjson.Parser
	res, err := p.Parse(patient)
	if err != nil {
		f.Fatal(err)
	}
	opts := &Options{Constants: map[string]Item{"c": Integer(1)}, Vars: []string{"rowIndex"}}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Compile(src, opts)
		if err != nil {
			if e != nil {
				t.Fatalf("error with non-nil expression")
			}
			return
		}
		c := NewCtx()
		out1, err1 := e.EvalResource(c, res)
		r1 := render(out1)
		out2, err2 := e.EvalResource(c, res)
		if (err1 == nil) != (err2 == nil) || r1 != render(out2) {
			t.Fatalf("non-deterministic evaluation of %q", src)
		}
	})
}

package view

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/valyala/fastjson"
)

// FuzzCompile checks that no ViewDefinition makes the compiler or the
// runner panic, and that a compiled view's rows fit its Arrow schema.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		encounterView,
		`{"resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]}]}`,
		`{"resource":"Encounter","constant":[{"name":"c","valueInteger":0}],"where":[{"path":"type.exists()"}],
		  "select":[{"forEachOrNull":"type.coding[%c]","column":[{"name":"i","path":"%rowIndex"}],
		  "unionAll":[{"column":[{"name":"a","path":"code"}]},{"repeat":["coding"],"column":[{"name":"a","path":"system"}]}]}]}`,
		`{"resource":"QuestionnaireResponse","select":[{"repeat":["item","answer.item"],"column":[{"name":"l","path":"linkId","collection":true}]}]}`,
		`{}`, `[]`, `{"resource":1}`, `{"resource":"Patient","select":[{"forEach":1}]}`,
	} {
		f.Add([]byte(s))
	}
	if dir := os.Getenv("SOF_TESTS_DIR"); dir != "" {
		// Seed with the suite's views as well.
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		var p fastjson.Parser
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				continue
			}
			v, err := p.ParseBytes(b)
			if err != nil {
				continue
			}
			for _, tc := range v.GetArray("tests") {
				if view := tc.Get("view"); view != nil {
					f.Add(view.MarshalTo(nil))
				}
			}
		}
	}
	var p fastjson.Parser
	mem := memory.NewGoAllocator()
	f.Fuzz(func(t *testing.T, def []byte) {
		v, err := Compile(def)
		if err != nil {
			return
		}
		b := array.NewRecordBuilder(mem, v.ArrowSchema())
		defer b.Release()
		for _, r := range fixtures {
			res, err := p.Parse(r)
			if err != nil {
				t.Fatal(err)
			}
			_ = v.Eval(res, func([]Value) error { return nil })
			n, err := v.AppendRows(res, b, 0, nil)
			if err != nil && n != 0 {
				t.Fatalf("error with %d rows appended", n)
			}
		}
		rec := b.NewRecordBatch()
		defer rec.Release()
		for i := 0; i < int(rec.NumCols()); i++ {
			if rec.Column(i).Len() != int(rec.NumRows()) {
				t.Fatalf("column %d has %d values for %d rows", i, rec.Column(i).Len(), rec.NumRows())
			}
		}
	})
}

package view

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/valyala/fastjson"
)

const observationView = `{"name":"observation","resource":"Observation","select":[
 {"column":[
  {"name":"id","path":"getResourceKey()","type":"id"},
  {"name":"status","path":"status","type":"code"},
  {"name":"patient_id","path":"subject.getReferenceKey(Patient)","type":"string"},
  {"name":"encounter_id","path":"encounter.getReferenceKey(Encounter)","type":"string"},
  {"name":"category","path":"category.coding.where(system = 'http://terminology.hl7.org/CodeSystem/observation-category').code.first()","type":"code"},
  {"name":"effective","path":"effective.ofType(dateTime)","type":"dateTime","tag":[{"name":"ansi/type","value":"TIMESTAMP WITH TIME ZONE"}]},
  {"name":"issued","path":"issued","type":"instant"},
  {"name":"value_quantity","path":"value.ofType(Quantity).value","type":"decimal"},
  {"name":"value_unit","path":"value.ofType(Quantity).code","type":"code"},
  {"name":"value_code","path":"value.ofType(CodeableConcept).coding.code.first()","type":"code"}]},
 {"forEach":"code.coding","column":[
  {"name":"code_system","path":"system","type":"uri"},
  {"name":"code","path":"code","type":"code"},
  {"name":"display","path":"display","type":"string"}]}]}`

func loadLines(b *testing.B, file string) [][]byte {
	dir := os.Getenv("FHIRFERRY_SAMPLE100_DIR")
	if dir == "" {
		b.Skip("FHIRFERRY_SAMPLE100_DIR not set")
	}
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		b.Fatal(err)
	}
	var lines [][]byte
	for _, l := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			lines = append(lines, l)
		}
	}
	return lines
}

// BenchmarkViewObservation measures parse + view + Arrow append over real
// Synthea Observations: one fastjson parse per resource, as in the pipeline.
func BenchmarkViewObservation(b *testing.B) {
	lines := loadLines(b, "Observation.ndjson")
	v, err := Compile([]byte(observationView))
	if err != nil {
		b.Fatal(err)
	}
	var size int64
	for _, l := range lines {
		size += int64(len(l)) + 1
	}
	mem := memory.NewGoAllocator()
	fields := append([]arrow.Field{{Name: "_resource_id", Type: arrow.BinaryTypes.String}}, v.ArrowSchema().Fields()...)
	schema := arrow.NewSchema(fields, nil)
	var p fastjson.Parser
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	rows, resources := 0, 0
	for i := 0; i < b.N; i++ {
		rb := array.NewRecordBuilder(mem, schema)
		for _, l := range lines {
			res, err := p.ParseBytes(l)
			if err != nil {
				b.Fatal(err)
			}
			id := res.GetStringBytes("id")
			n, err := v.AppendRows(res, rb, 1, func() { rb.Field(0).(*array.StringBuilder).BinaryBuilder.Append(id) })
			if err != nil {
				b.Fatal(err)
			}
			rows += n
			resources++
			if rb.Field(0).Len() >= 64<<10 {
				rb.NewRecordBatch().Release()
			}
		}
		rb.NewRecordBatch().Release()
		rb.Release()
	}
	b.ReportMetric(float64(resources)/b.Elapsed().Seconds(), "resources/s")
	b.ReportMetric(float64(rows)/float64(resources), "rows/resource")
}

// BenchmarkViewParseOnly is the baseline: the fastjson parse alone.
func BenchmarkViewParseOnly(b *testing.B) {
	lines := loadLines(b, "Observation.ndjson")
	var size int64
	for _, l := range lines {
		size += int64(len(l)) + 1
	}
	var p fastjson.Parser
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, l := range lines {
			if _, err := p.ParseBytes(l); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*len(lines))/b.Elapsed().Seconds(), "resources/s")
}

package transform

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/valyala/fastjson"

	"github.com/fhirferry/fhirferry/schemas"
)

// sharedTypes are resource types that live outside any one patient's
// compartment even when they mention a patient (a Group lists members,
// a Practitioner or Organization serves many): purging a former member
// never removes them.
var sharedTypes = map[string]bool{
	"Practitioner": true, "PractitionerRole": true, "Organization": true, "Location": true,
	"HealthcareService": true, "Endpoint": true, "Medication": true, "Substance": true,
	"Group": true,
}

// Shared reports whether a resource type is kept whoever leaves.
func Shared(resourceType string) bool { return sharedTypes[resourceType] }

// PatientRefs returns the ids of the Patients a resource's JSON refers to
// (every `reference` element at any depth, relative, absolute or
// versioned), without duplicates.
func PatientRefs(resource []byte) ([]string, error) {
	var p fastjson.Parser
	v, err := p.ParseBytes(resource)
	if err != nil {
		return nil, fmt.Errorf("resource JSON: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	var walk func(v *fastjson.Value)
	walk = func(v *fastjson.Value) {
		switch v.Type() {
		case fastjson.TypeObject:
			o, _ := v.Object()
			o.Visit(func(k []byte, c *fastjson.Value) {
				if string(k) == "reference" && c.Type() == fastjson.TypeString {
					if typ, id, ok := refKey(string(c.GetStringBytes())); ok && typ == "Patient" && !seen[id] {
						seen[id] = true
						out = append(out, id)
					}
					return
				}
				walk(c)
			})
		case fastjson.TypeArray:
			a, _ := v.Array()
			for _, c := range a {
				walk(c)
			}
		}
	}
	walk(v)
	return out, nil
}

// Key is a resource's type and id.
type Key struct{ Type, ID string }

// DeletedBatch builds a batch of deletions for keys, as a `deleted` file
// of the run would (schemas.Deleted), with file naming where they come
// from. The caller owns the batch.
func DeletedBatch(mem memory.Allocator, o Origin, file string, keys []Key) schemas.Batch {
	b := array.NewRecordBuilder(mem, schemas.Deleted.Schema)
	defer b.Release()
	for _, k := range keys {
		b.Field(0).(*array.StringBuilder).Append(k.Type)
		b.Field(1).(*array.StringBuilder).Append(k.ID)
		appendProvenance(b, 2, o, file, 0)
	}
	return schemas.Batch{Table: schemas.Deleted, Rec: b.NewRecordBatch()}
}

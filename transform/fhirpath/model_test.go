package fhirpath

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// ElementType walks paths through the R4 definitions: members, backbone
// elements, subsetting functions, ofType on choices, unions.
func TestElementType(t *testing.T) {
	for _, tc := range []struct{ ctx, path, want string }{
		{"Patient", "birthDate", "date"},
		{"Patient", "Patient.birthDate", "date"},
		{"Patient", "gender", "code"},
		{"Patient", "name.first().family", "string"},
		{"Patient", "name.where(use = 'official').given", "string"},
		{"Patient", "name", "HumanName"},
		{"Patient", "deceased", ""}, // a choice: depends on the data
		{"Patient", "deceased.ofType(dateTime)", "dateTime"},
		{"Patient", "multipleBirth.ofType(integer)", "integer"},
		{"Patient", "contact", "BackboneElement"},
		{"Patient", "contact.name.family", "string"},
		{"Observation", "value.ofType(Quantity).value", "decimal"},
		{"Observation", "referenceRange.low.value", "decimal"},
		{"Observation", "component.code.coding.code", "code"},
		{"Observation", "issued", "instant"},
		{"Observation", "effective.ofType(dateTime)", "dateTime"},
		{"Observation", "status | status", "code"},
		{"Observation", "status | issued", ""},
		{"Observation", "code.coding.exists()", "boolean"},
		{"Observation", "component.count()", "integer"},
		{"Observation", "subject.getReferenceKey(Patient)", "string"},
		{"MedicationRequest", "dispenseRequest.numberOfRepeatsAllowed", "unsignedInt"},
		{"MedicationRequest", "dosageInstruction.timing.repeat.frequency", "positiveInt"},
		{"Encounter", "class.code", "code"},
		{"Encounter", "length.value", "decimal"},
		{"Encounter", "nosuchelement", ""},
		{"HumanName", "family", "string"},
		{"Patient.contact", "gender", "code"},
		{"", "birthDate", ""},
	} {
		e, err := Compile(tc.path, nil)
		require.NoError(t, err, tc.path)
		require.Equal(t, tc.want, e.ElementType(tc.ctx), "%s on %s", tc.path, tc.ctx)
	}
	e, err := Compile("contact.where(name.exists())", nil)
	require.NoError(t, err)
	require.Equal(t, "Patient.contact", e.ElementContext("Patient"), "a forEach's context is the backbone element's path")
}

package transform

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
)

func TestPatientRefs(t *testing.T) {
	refs, err := PatientRefs([]byte(`{"resourceType":"Provenance","id":"x",
		"target":[{"reference":"Patient/a"},{"reference":"https://ehr.example/fhir/Patient/b/_history/3"},{"reference":"Encounter/e"}],
		"agent":[{"who":{"reference":"Practitioner/p"},"onBehalfOf":{"reference":"Patient/a"}}],
		"entity":[{"what":{"display":"reference","reference":"urn:uuid:1"}}],
		"note":"Patient/c is not a reference"}`))
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, refs)

	refs, err = PatientRefs([]byte(`{"resourceType":"Practitioner","id":"p"}`))
	require.NoError(t, err)
	require.Empty(t, refs)

	_, err = PatientRefs([]byte(`{"resourceType":`))
	require.Error(t, err)

	require.True(t, Shared("Organization"))
	require.False(t, Shared("Observation"))
}

func TestDeletedBatch(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	b := DeletedBatch(mem, Origin{Source: "s", ExportID: "e", TransactionTime: "tt"}, "former members",
		[]Key{{"Patient", "a"}, {"Observation", "o"}})
	defer b.Release()
	require.EqualValues(t, 2, b.Rec.NumRows())
	require.Equal(t, "Observation", b.Rec.Column(0).(*array.String).Value(1))
	require.Equal(t, "o", b.Rec.Column(1).(*array.String).Value(1))
	require.Equal(t, "former members", b.Rec.Column(5).(*array.String).Value(0))
	require.True(t, b.Rec.Schema().Equal(b.Table.Schema))
}

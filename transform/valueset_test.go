package transform

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/klauspost/compress/gzip"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
)

const vsA1c = `{"resourceType":"ValueSet","url":"http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.464.1003.198.12.1013",
 "name":"HbA1cLaboratoryTest","version":"20240101",
 "expansion":{"contains":[
  {"system":"http://loinc.org","version":"2.77","code":"4548-4","display":"Hemoglobin A1c"},
  {"system":"http://loinc.org","code":"17856-6"}]}}`

// A package Bundle: a Library to skip, a value set whose expansion nests
// an abstract grouper, and one with a compose only.
const vsBundle = `{"resourceType":"Bundle","type":"collection","entry":[
 {"resource":{"resourceType":"Library","id":"lib"}},
 {"resource":{"resourceType":"ValueSet","url":"http://example.org/vs/office","title":"Office Visit",
   "identifier":[{"system":"urn:ietf:rfc:3986","value":"urn:oid:2.16.840.1.113883.3.464.1003.101.12.1001"}],
   "expansion":{"contains":[{"abstract":true,"code":"grp","display":"group","contains":[
     {"system":"http://www.ama-assn.org/go/cpt","code":"99202"},
     {"system":"http://snomed.info/sct","code":"185349003","contains":[{"system":"http://snomed.info/sct","code":"185463005"}]}]}]}}},
 {"resource":{"resourceType":"ValueSet","url":"http://example.org/vs/intensional","name":"Intensional","compose":{"include":[{"system":"http://loinc.org"}]}}}]}`

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

func gzipped(t *testing.T, s string) string {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write([]byte(s))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.String()
}

func TestReadValueSetsFolder(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a1c.json", vsA1c)
	writeFile(t, dir, "pkg/bundle.json", vsBundle)
	// The same value set again, as NDJSON and gzipped: identical, so kept once.
	writeFile(t, dir, "more/again.ndjson.gz", gzipped(t, strings.ReplaceAll(vsA1c, "\n", "")+"\n"))
	writeFile(t, dir, "notes.txt", "not read")

	load, err := ReadValueSets(dir)
	require.NoError(t, err)
	require.Equal(t, 3, load.Files)
	require.Equal(t, []string{"Intensional (http://example.org/vs/intensional)"}, load.Unexpanded)
	require.Len(t, load.Sets, 2)
	byURL := map[string]ValueSet{}
	for _, vs := range load.Sets {
		byURL[vs.URL] = vs
	}
	a1c := byURL["http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.464.1003.198.12.1013"]
	require.Equal(t, "2.16.840.1.113883.3.464.1003.198.12.1013", a1c.OID, "OID from the VSAC url")
	require.Equal(t, "HbA1cLaboratoryTest", a1c.Name)
	require.Equal(t, []Code{{"http://loinc.org", "2.77", "4548-4", "Hemoglobin A1c"}, {"http://loinc.org", "", "17856-6", ""}}, a1c.Codes)
	office := byURL["http://example.org/vs/office"]
	require.Equal(t, "2.16.840.1.113883.3.464.1003.101.12.1001", office.OID, "OID from the urn:oid identifier")
	require.Equal(t, "Office Visit", office.Name, "title when there is no name")
	require.Equal(t, []string{"99202", "185349003", "185463005"}, codesOf(office), "nested codes flattened, the abstract grouper left out")
}

func codesOf(vs ValueSet) []string {
	var out []string
	for _, c := range vs.Codes {
		out = append(out, c.Code)
	}
	return out
}

func TestReadValueSetsErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		files map[string]string
		want  []string
	}{
		"conflict": {map[string]string{"a.json": vsA1c, "b.json": strings.Replace(vsA1c, "17856-6", "99999-9", 1)},
			[]string{"HbA1cLaboratoryTest", "a.json", "b.json", "other codes"}},
		"not a value set": {map[string]string{"p.json": `{"resourceType":"Patient","id":"x"}`}, []string{"p.json", `"Patient"`}},
		"bad json":        {map[string]string{"v.ndjson": vsA1c[:40] + "\n"}, []string{"v.ndjson", "resource 1"}},
		"no url":          {map[string]string{"v.json": `{"resourceType":"ValueSet","name":"Nameless"}`}, []string{"v.json", "Nameless", "no url"}},
		"no system": {map[string]string{"v.json": `{"resourceType":"ValueSet","url":"u","expansion":{"contains":[{"code":"c1"}]}}`},
			[]string{"v.json", `"c1"`, "no system"}},
		"empty folder": {map[string]string{"x.txt": "x"}, []string{"no .json or .ndjson files"}},
	} {
		t.Run(name, func(t *testing.T) {
			d := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			for f, body := range tc.files {
				writeFile(t, d, f, body)
			}
			_, err := ReadValueSets(d)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
	_, err := ReadValueSets(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestValueSetBatches(t *testing.T) {
	load, err := ReadValueSets(writeFile(t, t.TempDir(), "b.json", vsBundle))
	require.NoError(t, err)
	var rows []string
	var sizes []int
	err = ValueSetBatches(load.Sets, 2, func(b schemas.Batch) error {
		defer b.Rec.Release()
		require.Same(t, schemas.ValueSetCodes, b.Table)
		require.True(t, b.Rec.Schema().Equal(schemas.ValueSetCodes.Schema))
		sizes = append(sizes, int(b.Rec.NumRows()))
		for i := range int(b.Rec.NumRows()) {
			var cells []string
			for c := range int(b.Rec.NumCols()) {
				col := b.Rec.Column(c).(*array.String)
				if col.IsNull(i) {
					cells = append(cells, "NULL")
				} else {
					cells = append(cells, col.Value(i))
				}
			}
			rows = append(rows, strings.Join(cells, "|"))
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []int{2, 1}, sizes)
	require.Equal(t, []string{
		"http://example.org/vs/office|2.16.840.1.113883.3.464.1003.101.12.1001|Office Visit|NULL|http://www.ama-assn.org/go/cpt|NULL|99202|NULL",
		"http://example.org/vs/office|2.16.840.1.113883.3.464.1003.101.12.1001|Office Visit|NULL|http://snomed.info/sct|NULL|185349003|NULL",
		"http://example.org/vs/office|2.16.840.1.113883.3.464.1003.101.12.1001|Office Visit|NULL|http://snomed.info/sct|NULL|185463005|NULL",
	}, rows)
}

// TestReadValueSetsMeasureKit reads the eCQM kit's 93 value sets and
// checks each against its file read independently.
func TestReadValueSetsMeasureKit(t *testing.T) {
	dir := os.Getenv("FHIRFERRY_VALUESETS_DIR")
	if dir == "" {
		t.Skip("FHIRFERRY_VALUESETS_DIR is not set")
	}
	load, err := ReadValueSets(dir)
	require.NoError(t, err)
	require.Empty(t, load.Unexpanded)
	files, err := filepath.Glob(filepath.Join(dir, "valueset-*.json"))
	require.NoError(t, err)
	require.Len(t, load.Sets, len(files))
	for _, vs := range load.Sets {
		require.Equal(t, "valueset-"+vs.OID+".json", filepath.Base(vs.File))
		b, err := os.ReadFile(vs.File)
		require.NoError(t, err)
		var raw struct {
			Expansion struct {
				Contains []json.RawMessage `json:"contains"`
			} `json:"expansion"`
		}
		require.NoError(t, json.Unmarshal(b, &raw))
		require.Len(t, vs.Codes, len(raw.Expansion.Contains), vs.Name)
	}
}

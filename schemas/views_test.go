package schemas_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
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
				require.Contains(t, c.Path, "getReferenceKey(", "%s: *_id columns are reference keys", where)
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

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

const minimalView = `{"resourceType":"ViewDefinition","name":%q,"resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]}]}`

func view(name string) string { return strings.Replace(minimalView, "%q", `"`+name+`"`, 1) }

func TestLoadViewDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "b.json", view("zeta"))
	writeFile(t, dir, "a.JSON", view("alpha"))
	writeFile(t, dir, "notes.txt", "not a view")
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.json"), 0o700))

	got, err := schemas.LoadViewDir(dir)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "alpha", got[0].Name)
	require.Equal(t, filepath.Join(dir, "a.JSON"), got[0].Source)
	require.Equal(t, view("alpha"), string(got[0].JSON))
	require.Equal(t, "zeta", got[1].Name)
}

func TestLoadViewDirErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string // substring of the error, after the file path
	}{
		{"syntax", "{\n  \"name\": \"x\",\n  \"resource\": \"Patient\" \"select\": []\n}", "bad.json: line 3, column 25: invalid character"},
		{"not object", `[1,2]`, "bad.json: line 1, column 1: a ViewDefinition must be a JSON object"},
		{"name type", `{"name": 5}`, "bad.json: line 1, column 10: name is number, want string"},
		{"no name", `{"resource":"Patient"}`, "bad.json: name: missing"},
		{"bad name", `{"name":"my view"}`, `bad.json: name: "my view" is not a valid table name`},
		{"reserved", `{"name":"fhir_resources"}`, `bad.json: name: "fhir_resources" is a fhirferry system table`},
		{"other resource", `{"resourceType":"Patient","name":"p"}`, `bad.json: resourceType is "Patient", want ViewDefinition`},
		{"empty", ``, "bad.json: line 1, column 1: unexpected end of JSON input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "good.json", view("good"))
			writeFile(t, dir, "bad.json", tt.body)
			_, err := schemas.LoadViewDir(dir)
			require.Error(t, err)
			require.Contains(t, err.Error(), filepath.Join(dir, tt.want))
		})
	}

	t.Run("duplicate", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, "one.json", view("same"))
		writeFile(t, dir, "two.json", view("same"))
		_, err := schemas.LoadViewDir(dir)
		require.EqualError(t, err, filepath.Join(dir, "two.json")+`: view name "same" is already defined by `+filepath.Join(dir, "one.json"))
	})
	t.Run("every bad file is reported", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, "x.json", `{`)
		writeFile(t, dir, "y.json", `{}`)
		_, err := schemas.LoadViewDir(dir)
		require.ErrorContains(t, err, "x.json")
		require.ErrorContains(t, err, "y.json")
	})
	t.Run("missing dir", func(t *testing.T) {
		_, err := schemas.LoadViewDir(filepath.Join(t.TempDir(), "nope"))
		require.ErrorIs(t, err, os.ErrNotExist)
		require.ErrorContains(t, err, "views dir")
	})
}

func TestResolveViews(t *testing.T) {
	defaults := schemas.DefaultViews()
	dir := t.TempDir()
	writeFile(t, dir, "patient.json", view("patient"))
	writeFile(t, dir, "mine.json", view("mine"))

	all, err := schemas.ResolveViews(true, dir)
	require.NoError(t, err)
	require.Len(t, all, len(defaults)+1)
	names := map[string]schemas.ViewFile{}
	for _, v := range all {
		names[v.Name] = v
	}
	require.Equal(t, view("patient"), string(names["patient"].JSON), "a user view replaces the default of the same name")
	require.Equal(t, filepath.Join(dir, "mine.json"), names["mine"].Source)
	require.Equal(t, "default:encounter.json", names["encounter"].Source)

	only, err := schemas.ResolveViews(false, dir)
	require.NoError(t, err)
	require.Len(t, only, 2)
	require.Equal(t, "mine", only[0].Name)

	none, err := schemas.ResolveViews(false, "")
	require.NoError(t, err)
	require.Empty(t, none)

	_, err = schemas.ResolveViews(true, filepath.Join(dir, "missing"))
	require.Error(t, err)
}

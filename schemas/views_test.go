package schemas_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
)

func TestLoadViewDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "b.json", minView("zeta"))
	writeFile(t, dir, "a.JSON", minView("alpha"))
	writeFile(t, dir, "notes.txt", "not a view")
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.json"), 0o700))

	got, err := schemas.LoadViewDir(dir)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "alpha", got[0].Name)
	require.Equal(t, filepath.Join(dir, "a.JSON"), got[0].Source)
	require.Equal(t, minView("alpha"), string(got[0].JSON))
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
			writeFile(t, dir, "good.json", minView("good"))
			writeFile(t, dir, "bad.json", tt.body)
			_, err := schemas.LoadViewDir(dir)
			require.Error(t, err)
			require.Contains(t, err.Error(), filepath.Join(dir, tt.want))
		})
	}

	t.Run("duplicate", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, "one.json", minView("same"))
		writeFile(t, dir, "two.json", minView("same"))
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
	writeFile(t, dir, "patient.json", minView("patient"))
	writeFile(t, dir, "mine.json", minView("mine"))

	all, err := schemas.ResolveViews(true, dir)
	require.NoError(t, err)
	require.Len(t, all, len(defaults)+1)
	names := map[string]schemas.ViewFile{}
	for _, v := range all {
		names[v.Name] = v
	}
	require.Equal(t, minView("patient"), string(names["patient"].JSON), "a user view replaces the default of the same name")
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

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

const minimalView = `{"resourceType":"ViewDefinition","name":%q,"resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]}]}`

func minView(name string) string { return strings.Replace(minimalView, "%q", `"`+name+`"`, 1) }

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
)

// runViews runs `fhirferry views args...` in-process and returns stdout,
// stderr and the error.
func runViews(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := newViewsCmd(&globals{})
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

const patientView = `{
  "resourceType": "ViewDefinition", "name": "pt", "resource": "Patient", "status": "active",
  "select": [{"column": [
    {"name": "id", "path": "getResourceKey()", "type": "string"},
    {"name": "gender", "path": "gender", "type": "code"},
    {"name": "active", "path": "active", "type": "boolean"},
    {"name": "family", "path": "name.first().family", "type": "string"}
  ]}]
}`

const nameView = `{
  "resourceType": "ViewDefinition", "name": "pt_name", "resource": "Patient",
  "select": [{"column": [{"name": "id", "path": "getResourceKey()", "type": "string"}]},
             {"forEach": "name", "column": [{"name": "given", "path": "given.join(' ')", "type": "string"}]}]
}`

const input = `{"resourceType":"Patient","id":"p1","gender":"female","active":true,"name":[{"family":"O'Hara, Jr","given":["Ann","Lee"]},{"given":["Annie"]}]}
{"resourceType":"Observation","id":"o1","status":"final"}

{"resourceType":"Patient","id":"p2","active":false}
`

func TestViewsList(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.json", patientView)
	write(t, dir, "b.json", nameView)
	cfg := write(t, t.TempDir(), "config.yaml", fmt.Sprintf("views:\n  defaults: false\n  dir: %s\n", dir))

	out, _, err := runViews(t, "list", "--config", cfg)
	require.NoError(t, err)
	want := fmt.Sprintf(`NAME     RESOURCE  COLUMNS  SOURCE
pt       Patient   4        %s
pt_name  Patient   2        %s
`, filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json"))
	require.Equal(t, want, out)

	// Default pack: one line per view, with the column count of its JSON.
	out, _, err = runViews(t, "list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	defaults := schemas.DefaultViews()
	require.Len(t, lines, len(defaults)+1)
	for i, vf := range defaults {
		f := strings.Fields(lines[i+1])
		require.Equal(t, []string{vf.Name, resourceOf(vf.JSON), fmt.Sprint(countColumns(t, vf.JSON)), vf.Source}, f)
	}

	// --dir adds the user's views to the defaults.
	out, _, err = runViews(t, "list", "--dir", dir)
	require.NoError(t, err)
	require.Len(t, strings.Split(strings.TrimSuffix(out, "\n"), "\n"), len(defaults)+3)
	require.Contains(t, out, "pt_name")
}

func countColumns(t *testing.T, b []byte) int {
	var v struct{ Select []json.RawMessage }
	require.NoError(t, json.Unmarshal(b, &v))
	var count func(raw json.RawMessage) int
	count = func(raw json.RawMessage) int {
		var s struct {
			Column   []json.RawMessage
			Select   []json.RawMessage
			UnionAll []json.RawMessage
		}
		require.NoError(t, json.Unmarshal(raw, &s))
		n := len(s.Column)
		for _, x := range s.Select {
			n += count(x)
		}
		if len(s.UnionAll) > 0 {
			n += count(s.UnionAll[0])
		}
		return n
	}
	n := 0
	for _, s := range v.Select {
		n += count(s)
	}
	return n
}

func TestViewsListReportsBrokenViews(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.json", patientView)
	write(t, dir, "bad.json", `{"name":"bad","resource":"Patient","select":[{"column":[{"name":"x","path":"name.(("}]}]}`)
	out, _, err := runViews(t, "list", "--dir", dir)
	require.Error(t, err)
	require.Contains(t, err.Error(), "1 of")
	require.Contains(t, err.Error(), filepath.Join(dir, "bad.json"))
	var ec interface{ ExitCode() int }
	require.True(t, errors.As(err, &ec))
	require.Equal(t, 1, ec.ExitCode())
	require.Regexp(t, `(?m)^bad\s+Patient\s+-\s+`+regexpQuote(filepath.Join(dir, "bad.json"))+`$`, out)
}

func regexpQuote(s string) string {
	return strings.NewReplacer(`.`, `\.`, `/`, `\/`).Replace(s)
}

func TestViewsValidate(t *testing.T) {
	dir := t.TempDir()
	good := write(t, dir, "good.json", patientView)
	out, _, err := runViews(t, "validate", good)
	require.NoError(t, err)
	require.Equal(t, "1 views are valid\n", out)

	// Every default view validates.
	defDir := t.TempDir()
	for _, vf := range schemas.DefaultViews() {
		write(t, defDir, vf.Name+".json", string(vf.JSON))
	}
	out, _, err = runViews(t, "validate", defDir)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%d views are valid\n", len(schemas.DefaultViews())), out)

	bad := write(t, dir, "bad.json", `{
  "resourceType": "ViewDefinition", "name": "broken", "resource": "Patient",
  "select": [{"column": [
    {"name": "id", "path": "id"},
    {"name": "c", "path": "%nope"},
    {"name": "x", "path": "name.where("}
  ]}]
}`)
	noRes := write(t, dir, "nores.json", `{"name": "nores", "select": [{"column": [{"name": "id", "path": "id"}]}]}`)
	badName := write(t, dir, "badname.json", `{"name": "fhir_resources", "resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}`)
	out, _, err = runViews(t, "validate", good, bad, noRes, badName)
	require.Error(t, err)
	require.Equal(t, "3 of 4 views are invalid", err.Error())
	var ec interface{ ExitCode() int }
	require.True(t, errors.As(err, &ec))
	require.Equal(t, 1, ec.ExitCode())
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	// broken: undefined constant and bad FHIRPath, both reported.
	var brokenLines []string
	for _, l := range lines {
		if strings.HasPrefix(l, bad+": view broken: ") {
			brokenLines = append(brokenLines, l)
		}
	}
	require.GreaterOrEqual(t, len(brokenLines), 2, out)
	require.Contains(t, out, bad+": view broken: select[0].column[1].path: ")
	require.Contains(t, out, "nope")
	require.Contains(t, out, bad+": view broken: select[0].column[2].path: ")
	require.Contains(t, out, "name.where(")
	require.Contains(t, out, noRes+": view nores: ")
	require.Contains(t, out, "resource")
	require.Contains(t, out, badName+`: name: "fhir_resources" is a fhirferry system table`)
	require.NotContains(t, out, good)

	dup := write(t, t.TempDir(), "dup.json", `{"name":"d","resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]},{"column":[{"name":"id","path":"gender"}]}]}`)
	out, _, err = runViews(t, "validate", dup)
	require.EqualError(t, err, "1 of 1 views are invalid")
	require.Equal(t, dup+": view d: select: column \"id\" is defined more than once\n", out)

	_, _, err = runViews(t, "validate", filepath.Join(dir, "missing.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestViewsRun(t *testing.T) {
	dir := t.TempDir()
	vp := write(t, dir, "pt.json", patientView)
	in := write(t, dir, "in.ndjson", input)

	out, errOut, err := runViews(t, "run", "--view", vp, "--format", "csv", in)
	require.NoError(t, err)
	require.Equal(t, "id,gender,active,family\np1,female,true,\"O'Hara, Jr\"\np2,,false,\n", out)
	require.Equal(t, "2 rows\n", errOut)

	out, _, err = runViews(t, "run", "--view", vp, "--format", "ndjson", in)
	require.NoError(t, err)
	require.Equal(t, `{"id":"p1","gender":"female","active":true,"family":"O'Hara, Jr"}
{"id":"p2","gender":null,"active":false,"family":null}
`, out)

	out, _, err = runViews(t, "run", "--view", vp, "--format", "json", in)
	require.NoError(t, err)
	var arr []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &arr))
	require.Equal(t, []map[string]any{
		{"id": "p1", "gender": "female", "active": true, "family": "O'Hara, Jr"},
		{"id": "p2", "gender": nil, "active": false, "family": nil},
	}, arr)

	out, _, err = runViews(t, "run", "--view", vp, in) // table is the default
	require.NoError(t, err)
	require.Equal(t, `id  gender  active  family
--  ------  ------  ----------
p1  female  true    O'Hara, Jr
p2  NULL    false   NULL
`, out)

	// A child view over gzip input, limited to 2 rows.
	np := write(t, dir, "name.json", nameView)
	gz := filepath.Join(dir, "in.ndjson.gz")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err = zw.Write([]byte(input))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	require.NoError(t, os.WriteFile(gz, buf.Bytes(), 0o600))
	out, errOut, err = runViews(t, "run", "--view", np, "--format", "csv", gz)
	require.NoError(t, err)
	require.Equal(t, "id,given\np1,Ann Lee\np1,Annie\n", out)
	require.Equal(t, "2 rows\n", errOut)
	out, _, err = runViews(t, "run", "--view", np, "--format", "csv", "--limit", "1", gz)
	require.NoError(t, err)
	require.Equal(t, "id,given\np1,Ann Lee\n", out)

	// An empty result is still valid JSON.
	empty := write(t, dir, "empty.ndjson", `{"resourceType":"Observation","id":"o"}`)
	out, _, err = runViews(t, "run", "--view", vp, "--format", "json", empty)
	require.NoError(t, err)
	require.JSONEq(t, `[]`, out)
}

func TestViewsRunErrors(t *testing.T) {
	dir := t.TempDir()
	vp := write(t, dir, "pt.json", patientView)
	in := write(t, dir, "bad.ndjson", "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n{\"resourceType\":\"Patient\",\"id\":\n")
	out, _, err := runViews(t, "run", "--view", vp, "--format", "csv", in)
	require.ErrorContains(t, err, in+": line 2: invalid JSON")
	require.Equal(t, "id,gender,active,family\np1,,,\n", out, "rows before the bad line are printed")

	// More than one value in a single-valued column is reported with its line.
	multi := write(t, dir, "multi.json", `{"name":"m","resource":"Patient","select":[{"column":[{"name":"g","path":"name.given","type":"string"}]}]}`)
	two := write(t, dir, "two.ndjson", `{"resourceType":"Patient","id":"p","name":[{"given":["a","b"]}]}`)
	_, _, err = runViews(t, "run", "--view", multi, two)
	require.ErrorContains(t, err, two+": line 1: ")

	_, _, err = runViews(t, "run", "--view", vp, "--format", "xml", in)
	require.ErrorContains(t, err, `--format "xml"`)

	bad := write(t, dir, "broken.json", `{"name":"b"}`)
	_, _, err = runViews(t, "run", "--view", bad, in)
	require.ErrorContains(t, err, bad+": ")

	_, _, err = runViews(t, "run", in)
	require.ErrorContains(t, err, `"view" not set`)
}

func TestViewsDescribe(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.json", `{"resourceType":"ViewDefinition","name":"pt","resource":"Patient","description":"My patients.",
	  "select":[{"column":[
	    {"name":"id","path":"getResourceKey()","type":"id","description":"The key."},
	    {"name":"born","path":"birthDate","type":"date","description":"Birth date."},
	    {"name":"n","path":"name.count()","type":"integer"},
	    {"name":"exact","path":"multipleBirthInteger","type":"integer","tag":[{"name":"ansi/type","value":"DECIMAL(10,2)"}]}]}]}`)
	out, _, err := runViews(t, "describe", "pt", "--dir", dir)
	require.NoError(t, err)
	rows := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 {
			rows[f[0]] = f
		}
	}
	require.True(t, strings.HasPrefix(out, "pt (Patient)\nMy patients.\n"), out)
	require.Equal(t, []string{"born", "DATE", "date", "date", "Birth", "date."}, rows["born"])
	require.Equal(t, []string{"n", "BIGINT", "bigint", "integer"}, rows["n"])
	require.Equal(t, "DECIMAL(10,2)", rows["exact"][1])
	require.Equal(t, "decimal(10,2)", rows["exact"][2])
	require.Equal(t, []string{"born_precision", "VARCHAR", "text", "code", "Precision"}, rows["born_precision"][:5])
	require.Contains(t, out, "namespace ")
	require.Less(t, strings.Index(out, "exact"), strings.Index(out, "born_precision"), "precision columns follow the view's own")

	_, _, err = runViews(t, "describe", "nope")
	var ee *exitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 2, ee.code)
	require.ErrorContains(t, err, "observation")
}

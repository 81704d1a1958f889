package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestValueSetsLoad loads a folder named by the config, then one given on
// the command line, and reports what it left out.
func TestValueSetsLoad(t *testing.T) {
	dir := t.TempDir()
	vs := filepath.Join(dir, "vs")
	require.NoError(t, os.Mkdir(vs, 0o755))
	write(t, vs, "a.json", `{"resourceType":"Bundle","entry":[
	  {"resource":{"resourceType":"ValueSet","url":"http://cts.nlm.nih.gov/fhir/ValueSet/1.2.3","name":"A",
	    "expansion":{"contains":[{"system":"http://loinc.org","code":"1-8"},{"system":"http://loinc.org","code":"2-6"}]}}},
	  {"resource":{"resourceType":"ValueSet","url":"http://example.org/b","name":"B","compose":{}}}]}`)
	cfg := write(t, dir, "c.yaml", "data_dir: data\nmeasures:\n  valuesets: vs\nsinks:\n  - {name: duck, type: duckdb, duckdb: {path: w.duckdb}}\n")
	run := func(args ...string) (string, error) {
		cmd := newValueSetsCmd(&globals{logLevel: "error"})
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(args)
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		err := cmd.ExecuteContext(t.Context())
		return out.String(), err
	}
	out, err := run("load", "--config", cfg)
	require.NoError(t, err)
	require.Equal(t, "loaded 1 value sets (2 codes) from 1 files in "+vs+" into duck\n"+
		"  left out, no expansion: B (http://example.org/b)\n", out)

	_, err = run("load", "--config", cfg, filepath.Join(dir, "nowhere"))
	require.ErrorContains(t, err, "nowhere")
	noVS := write(t, dir, "d.yaml", "data_dir: data\nsinks:\n  - {name: duck, type: duckdb, duckdb: {path: w.duckdb}}\n")
	_, err = run("load", "--config", noVS)
	require.ErrorContains(t, err, "give PATH or set measures.valuesets")
}

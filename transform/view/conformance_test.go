package view

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fastjson"
)

// sofTestFile is one file of the SQL-on-FHIR v2 conformance suite.
type sofTestFile struct {
	Title     string            `json:"title"`
	Resources []json.RawMessage `json:"resources"`
	Tests     []struct {
		Title         string          `json:"title"`
		Tags          []string        `json:"tags"`
		View          json.RawMessage `json:"view"`
		Expect        []any           `json:"expect"`
		ExpectCount   *int            `json:"expectCount"`
		ExpectError   bool            `json:"expectError"`
		ExpectColumns []string        `json:"expectColumns"`
	} `json:"tests"`
}

type reportResult struct {
	Passed bool   `json:"passed"`
	Error  string `json:"error,omitempty"`
}

type reportTest struct {
	Name   string       `json:"name"`
	Result reportResult `json:"result"`
}

type reportFile struct {
	Tests []reportTest `json:"tests"`
}

// TestConformance runs the official SQL-on-FHIR v2 test suite from
// $SOF_TESTS_DIR and, when $SOF_REPORT is set, writes test_report.json.
func TestConformance(t *testing.T) {
	dir := os.Getenv("SOF_TESTS_DIR")
	if dir == "" {
		t.Skip("SOF_TESTS_DIR not set")
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	require.NoError(t, err)
	report := map[string]*reportFile{}
	total, passed := 0, 0
	for _, path := range files {
		base := filepath.Base(path)
		if strings.HasSuffix(base, ".schema.json") {
			continue
		}
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		var tf sofTestFile
		require.NoError(t, json.Unmarshal(raw, &tf), base)
		rf := &reportFile{}
		report[base] = rf
		for _, tc := range tf.Tests {
			tc := tc
			t.Run(base+"/"+tc.Title, func(t *testing.T) {
				total++
				err := runCase(tf.Resources, tc.View, tc.Expect, tc.ExpectCount, tc.ExpectError, tc.ExpectColumns)
				res := reportResult{Passed: err == nil}
				if err != nil {
					res.Error = err.Error()
				} else {
					passed++
				}
				rf.Tests = append(rf.Tests, reportTest{Name: tc.Title, Result: res})
				require.NoError(t, err)
			})
		}
	}
	t.Logf("SQL-on-FHIR conformance: %d/%d passed", passed, total)
	if out := os.Getenv("SOF_REPORT"); out != "" {
		b, err := json.MarshalIndent(report, "", "  ")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(out, b, 0o644))
	}
}

func runCase(resources []json.RawMessage, viewDef json.RawMessage, expect []any, expectCount *int, expectError bool, expectColumns []string) error {
	rows, cols, err := runView(viewDef, resources)
	if expectError {
		if err == nil {
			return fmt.Errorf("expected an error, got %d rows", len(rows))
		}
		return nil
	}
	if err != nil {
		return err
	}
	if expectColumns != nil && strings.Join(cols, ",") != strings.Join(expectColumns, ",") {
		return fmt.Errorf("columns %v, want %v", cols, expectColumns)
	}
	if expectCount != nil && len(rows) != *expectCount {
		return fmt.Errorf("%d rows, want %d", len(rows), *expectCount)
	}
	if expect == nil {
		return nil
	}
	got := make([]string, len(rows))
	for i, r := range rows {
		got[i] = canonical(r)
	}
	want := make([]string, len(expect))
	for i, r := range expect {
		want[i] = canonical(r)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		return fmt.Errorf("rows differ (order ignored)\n got: %s\nwant: %s", strings.Join(got, " "), strings.Join(want, " "))
	}
	return nil
}

// runView compiles def and evaluates it over resources, returning rows as
// column-name maps.
func runView(def json.RawMessage, resources []json.RawMessage) ([]map[string]any, []string, error) {
	v, err := Compile(def)
	if err != nil {
		return nil, nil, err
	}
	var names []string
	for _, c := range v.Columns() {
		names = append(names, c.Name)
	}
	var rows []map[string]any
	var p fastjson.Parser
	for _, r := range resources {
		res, err := p.ParseBytes(r)
		if err != nil {
			return nil, nil, err
		}
		err = v.Eval(res, func(row []Value) error {
			m := make(map[string]any, len(row))
			for i, val := range row {
				m[names[i]] = val
			}
			rows = append(rows, m)
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return rows, names, nil
}

// canonical renders a value as JSON with sorted keys and numbers
// normalised exactly (5 == 5.0, 0.95 as 19/20), so rows compare by value.
func canonical(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("!%v", err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var x any
	if err := d.Decode(&x); err != nil {
		return fmt.Sprintf("!%v", err)
	}
	var sb strings.Builder
	writeCanonical(&sb, x)
	return sb.String()
}

func writeCanonical(sb *strings.Builder, x any) {
	switch t := x.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		sb.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(sb, "%q:", k)
			writeCanonical(sb, t[k])
		}
		sb.WriteByte('}')
	case []any:
		sb.WriteByte('[')
		for i, e := range t {
			if i > 0 {
				sb.WriteByte(',')
			}
			writeCanonical(sb, e)
		}
		sb.WriteByte(']')
	case json.Number:
		if r, ok := new(big.Rat).SetString(t.String()); ok {
			sb.WriteString("n:" + r.RatString())
			return
		}
		sb.WriteString(t.String())
	default:
		b, _ := json.Marshal(t)
		sb.Write(b)
	}
}

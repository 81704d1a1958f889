package main

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDemo runs `fhirferry demo` (SMART auth, initial and incremental Group
// export into DuckDB) and checks its account of what happened.
func TestDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"demo", "--dir", dir, "--patients", "8"})
	require.NoError(t, root.Execute(), out.String())
	s := out.String()
	require.Contains(t, s, "SMART Backend Services")
	// The server's clock starts today (UTC midnight) and moves a day on.
	today := time.Now().UTC().Truncate(24 * time.Hour)
	day := func(t time.Time) string { return regexp.QuoteMeta(t.Format("2006-01-02")) + `T00:00:00(\.000)?Z` }
	require.Regexp(t, `demo\s+success\s+-\s+`+day(today), s, "run 1 is a full export")
	require.Regexp(t, `demo\s+success\s+`+day(today)+`\s+`+day(today.AddDate(0, 0, 1)), s, "run 2 starts at run 1's transactionTime")
	require.Regexp(t, `deleted\s+\S+/\S+: no longer in the warehouse`, s)
	require.Regexp(t, `updated\s+\S+/\S+: version 2, lastUpdated `+regexp.QuoteMeta(today.AddDate(0, 0, 1).Format("2006-01-02")), s)
	m := regexp.MustCompile(`(?m)^  (female|male)\s+(\d+)\s+(\d+)`).FindAllStringSubmatch(s, -1)
	require.NotEmpty(t, m, "the sample query returns rows")
	patients := 0
	for _, row := range m {
		n, _ := strconv.Atoi(row[2])
		patients += n
	}
	require.Positive(t, patients)
	require.Contains(t, s, "duckdb -readonly "+filepath.Join(dir, "warehouse.duckdb"))
	mm := regexp.MustCompile(`demo: Group membership: (\d+) members of Group/cohort in group_member; (\d+) new member\(s\) back-filled, (\d+) left the Group \((\d+) resources of theirs purged\)`).FindStringSubmatch(s)
	require.NotNil(t, mm, "the demo reports the membership run 2 recorded")
	require.Equal(t, []string{"3", "1"}, mm[2:4], "two new patients and one existing patient join, one leaves")
	purged, _ := strconv.Atoi(mm[4])
	require.Positive(t, purged, "the leaver's data is purged")
}

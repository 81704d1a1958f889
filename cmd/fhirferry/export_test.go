package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
)

// exportTestAuth accepts one static bearer token.
type exportTestAuth struct{ token string }

func (exportTestAuth) Routes(*http.ServeMux, string) {}
func (a exportTestAuth) Authorize(r *http.Request) error {
	if r.Header.Get("Authorization") != "Bearer "+a.token {
		return errors.New("invalid token")
	}
	return nil
}

func exportTestRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stderr bytes.Buffer
	root := newRoot()
	root.SetArgs(append([]string{"export"}, args...))
	root.SetErr(&stderr)
	root.SetOut(&stderr)
	err := root.ExecuteContext(t.Context())
	return stderr.String(), err
}

func exportTestLines(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	var n int64
	for sc.Scan() {
		n++
	}
	require.NoError(t, sc.Err())
	return n
}

func TestExportCommandDownloadsAFolder(t *testing.T) {
	const token = "s3cret-token-value"
	s, err := bulktest.NewServer(bulktest.Options{Patients: 6, FileMaxResources: 30, Auth: exportTestAuth{token},
		Faults: bulktest.Faults{ErrorFiles: 1, File5xx: 2}})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
	out := filepath.Join(t.TempDir(), "dl")
	stderr, err := exportTestRun(t, "--base-url", s.BaseURL(), "--level", "group", "--group", "cohort",
		"--auth-token-file", tokenFile, "--out", out, "--min-wait", "1ms", "--max-wait", "10ms", "--log-level", "debug")
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "warning: the server reported 1 error file(s)")

	var m struct {
		TransactionTime string
		Output, Error   []struct {
			Type  string
			Count int64
		}
	}
	raw, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &m))
	require.NotEmpty(t, m.TransactionTime)
	var total int64
	for i, o := range m.Output {
		p := filepath.Join(out, filepath.FromSlash(strings.Join([]string{strconv.Itoa(i + 1), o.Type, "ndjson"}, ".")))
		require.Equal(t, o.Count, exportTestLines(t, p), p)
		total += o.Count
	}
	require.Len(t, m.Error, 1)
	require.EqualValues(t, 1, exportTestLines(t, filepath.Join(out, "error", "1.OperationOutcome.ndjson")))
	st := s.Stats()
	require.Equal(t, 1, st.KickOffs)
	require.Equal(t, 1, st.Deletes, "DELETE once every file is stored")

	status, err := os.ReadFile(filepath.Join(out, "status-url.txt"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(status), s.BaseURL()), string(status))
	logb, err := os.ReadFile(filepath.Join(out, "log.ndjson"))
	require.NoError(t, err)
	require.Contains(t, string(logb), `"msg":"file stored"`)
	require.NotContains(t, string(logb)+stderr, token, "tokens never reach logs")
	require.NotContains(t, string(logb), `"resourceType"`, "resource contents never reach logs")
	_, err = os.Stat(filepath.Join(out, ".spool"))
	require.True(t, os.IsNotExist(err), "spool removed")
	require.Positive(t, total)
}

func TestExportCommandResumesAStatusURL(t *testing.T) {
	s, err := bulktest.NewServer(bulktest.Options{Patients: 4, PollsBeforeComplete: 2})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	c, err := fetch.New(fetch.Options{BaseURL: s.BaseURL()})
	require.NoError(t, err)
	status, err := c.KickOff(t.Context(), fetch.Request{Level: fetch.LevelSystem, Types: []string{"Patient", "Condition"}})
	require.NoError(t, err) // ...and then the first process was killed

	out := t.TempDir()
	// A file already stored by the killed run is not fetched again.
	require.NoError(t, os.WriteFile(filepath.Join(out, "1.Patient.ndjson"), []byte(`{"resourceType":"Patient","id":"kept"}`+"\n"), 0o644))
	stderr, err := exportTestRun(t, "--base-url", s.BaseURL(), "--status-url", status, "--out", out, "--no-delete",
		"--min-wait", "1ms", "--max-wait", "10ms")
	require.NoError(t, err, stderr)
	st := s.Stats()
	require.Equal(t, 1, st.KickOffs, "resumed, not restarted")
	require.Zero(t, st.Deletes)
	require.Len(t, st.Downloads, 1, "only the missing file was downloaded")
	b, err := os.ReadFile(filepath.Join(out, "1.Patient.ndjson"))
	require.NoError(t, err)
	require.Contains(t, string(b), `"kept"`)
	require.Positive(t, exportTestLines(t, filepath.Join(out, "2.Condition.ndjson")))

	_, err = exportTestRun(t, "--out", out)
	require.ErrorContains(t, err, "--base-url")
	_, err = exportTestRun(t, "--base-url", s.BaseURL(), "--level", "group")
	require.ErrorContains(t, err, "--group")
}
